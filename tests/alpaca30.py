"""Thirty Alpaca-format records (instruction, input, output), written for the tests
in the style of the Alpaca data (tasks with and without an input, short and long
answers, one near-duplicate pair, one answer a small model scores badly): the
pool the selector tests of IterIT, GraphFilter, InsTag and Instruction Node
select from, so no test depends on files outside the repository."""

from __future__ import annotations

from cherrybench.records import Dataset, Record, Turn

ROWS = [
    ("Give three tips for staying healthy.", "",
     "1. Eat a balanced diet with plenty of fruit and vegetables.\n2. Exercise regularly.\n3. Sleep seven to nine hours."),
    ("What are the three primary colors?", "", "The three primary colors are red, blue and yellow."),
    ("Describe the structure of an atom.", "",
     "An atom has a nucleus of protons and neutrons, surrounded by electrons that move in shells around it."),
    ("How can we reduce air pollution?", "",
     "We can reduce air pollution by using public transport, switching to renewable energy and planting trees."),
    ("Translate the sentence into French.", "Where is the train station?", "Où est la gare ?"),
    ("Rewrite the sentence in the passive voice.", "The chef cooked a delicious meal.",
     "A delicious meal was cooked by the chef."),
    ("Classify the following animal as a mammal, bird or reptile.", "Penguin", "A penguin is a bird."),
    ("Write a haiku about autumn leaves.", "",
     "Red leaves drift and fall\nwhispering to the cold ground\nthe year says goodbye"),
    ("Summarize the paragraph in one sentence.",
     "Bees pollinate many crops. Without them, farmers would lose a large part of their harvest, "
     "and food prices would rise.",
     "Bees matter to farming because their pollination keeps harvests large and food cheap."),
    ("Generate a list of five creative names for a coffee shop.", "",
     "1. The Daily Grind\n2. Bean There\n3. Brew Haven\n4. Mocha Moon\n5. The Steamy Cup"),
    ("Explain why the sky is blue.", "",
     "Sunlight scatters off the molecules of the air, and blue light, with its short wavelength, scatters most."),
    ("Explain why the sky looks blue during the day.", "",
     "Air molecules scatter the short blue wavelengths of sunlight more than the red ones, so the sky looks blue."),
    ("Find the sum of the numbers.", "4, 8, 15, 16, 23, 42", "The sum is 108."),
    ("Write a Python function that reverses a string.", "",
     "def reverse(text):\n    return text[::-1]"),
    ("Name the capital of Australia.", "", "The capital of Australia is Canberra."),
    ("Suggest a healthy breakfast for a busy morning.", "",
     "Overnight oats with yogurt, berries and a spoon of nuts: ready in the fridge when you wake up."),
    ("Convert the temperature from Celsius to Fahrenheit.", "25 degrees Celsius", "25 degrees Celsius is 77 degrees Fahrenheit."),
    ("Compose a short, polite email declining a meeting invitation.", "",
     "Dear Ms. Lee,\nThank you for the invitation. Unfortunately I cannot attend on Thursday. "
     "Could we find another time next week?\nBest regards,\nSam"),
    ("Identify the main verb in the sentence.", "The children played in the park all afternoon.",
     "The main verb is \"played\"."),
    ("Give an example of a renewable energy source and explain how it works.", "",
     "Wind power: the wind turns the blades of a turbine, which drives a generator that makes electricity."),
    ("Create a riddle whose answer is a shadow.", "",
     "I follow you all day but vanish at night. What am I? A shadow."),
    ("Sort the words in alphabetical order.", "pear, apple, mango, banana", "apple, banana, mango, pear"),
    ("What does the acronym NASA stand for?", "", "NASA stands for National Aeronautics and Space Administration."),
    ("Describe a sunset over the ocean in two sentences.", "",
     "The sun sank into the sea and set the waves on fire with orange and pink. "
     "Then the colors faded to violet and the first stars came out."),
    ("List three advantages of learning a second language.", "",
     "It opens job opportunities, it makes travel easier, and it keeps the brain active."),
    ("Edit the sentence to correct the grammar.", "She don't like going to school on mondays.",
     "She doesn't like going to school on Mondays."),
    ("Propose a title for an article about urban gardening.", "", "Green Roofs and Balcony Beans: Growing Food in the City"),
    ("Calculate the area of a circle with a radius of 3 centimeters.", "",
     "The area is pi times 3 squared, about 28.27 square centimeters."),
    ("Say yes.", "", "Yes"),
    ("Outline the steps to plant a tree.", "",
     "1. Pick a sunny spot.\n2. Dig a hole twice as wide as the root ball.\n3. Set the tree in it and fill with soil."
     "\n4. Water it well and add mulch."),
]


def alpaca30() -> Dataset:
    """The thirty records, ids "0".."29" in this order."""
    return Dataset([Record(str(i), [Turn(q, a, x)]) for i, (q, x, a) in enumerate(ROWS)], None, "alpaca", "json")
