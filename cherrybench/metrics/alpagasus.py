"""AlpaGasus (Chen et al. 2023): a judge rates each (instruction, input,
response) 0..5 for accuracy, read as the expected value over the digits 0..5
like Deita (SPEC). Multi-turn records: mean over turns (ours).

The prompt is the paper's system and user prompt; "ours": rendered as plain
text ending in `Score: ` so that the next token is the rating.
"""

from __future__ import annotations

from cherrybench.metrics import register_metric
from cherrybench.metrics.judge import PromptJudge

ALPAGASUS_PROMPT = (
    "We would like to request your feedback on the performance of AI assistant in response to the instruction "
    "and the given input displayed following.\n\n"
    "Instruction: {instruction}\nInput: {input}\nResponse: {output}\n\n"
    "Please rate according to the accuracy of the response to the instruction and the input. Each assistant "
    "receives a score on a scale of 0 to 5, where a higher score indicates higher level of accuracy. Please first "
    "output a single line containing value indicating the scores. In the subsequent line, please provide a "
    "comprehensive explanation of your evaluation, avoiding any potential bias.\n\nScore: "
)


@register_metric()
class AlpaGasus(PromptJudge):
    """AlpaGasus accuracy rating 0..5 by an LM judge (expected value over the digits)."""

    name = "alpagasus"
    columns = {"alpagasus": "higher"}
    template = ALPAGASUS_PROMPT
    low = 0
    high = 5
