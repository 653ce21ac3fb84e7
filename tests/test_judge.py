"""Judge readout against a hand computation from raw logits, prompts against
SPEC's strings character for character, per-turn aggregation, batching."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cherrybench.metrics import METRICS
from cherrybench.metrics.alpagasus import ALPAGASUS_PROMPT
from cherrybench.metrics.deita import COMPLEXITY_PROMPT, QUALITY_PROMPT
from cherrybench.lm import digit_token_ids
from cherrybench.metrics.judge import PromptJudge
from cherrybench.records import Record, Turn

# copied from SPEC.md, "Deita"
SPEC_COMPLEXITY = ("You are a helpful assistant. Please identify the complexity score of the following user query. "
                   "\n##Query: {instruction}  \n##Complexity: ")
SPEC_QUALITY = ("You are a helpful assistant. Please identify the quality score of the Response corresponding to "
                "the Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: ")

RECORDS = [
    Record("a", [Turn("What is 2+2?", "4")]),
    Record("b", [Turn("Write a poem about the sea.", "The sea is blue and wide, it rolls with every tide.")]),
    Record("c", [Turn("Translate to French", "Bonjour", "hello")]),
    Record("mt", [Turn("Hi, who are you?", "I am an assistant."), Turn("Count to three.", "1, 2, 3.")]),
]


def test_prompts_equal_spec():
    assert COMPLEXITY_PROMPT == SPEC_COMPLEXITY
    assert QUALITY_PROMPT == SPEC_QUALITY
    assert "{instruction}" in ALPAGASUS_PROMPT and "{input}" in ALPAGASUS_PROMPT and ALPAGASUS_PROMPT.endswith("Score: ")


def hand_expected_value(lm, text, low, high):
    """A full forward pass of the whole prompt, softmax over the digit logits at the last position."""
    ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = lm.model(input_ids=ids, logits_to_keep=1).logits[0, -1].double()
    digits = [lm.tokenizer(str(i), add_special_tokens=False)["input_ids"][0] for i in range(low, high + 1)]
    probs = torch.softmax(logits[digits], dim=0).numpy()
    return float(np.dot(probs, np.arange(low, high + 1)))


@pytest.mark.slow
def test_deita_readout_equals_hand_computation(ctx, lm):
    records = [RECORDS[2], RECORDS[3]]  # one with an input, one multi-turn
    table = METRICS.get("deita")().compute(records, ctx)
    for r, record in enumerate(records):
        complexity, quality = [], []
        for turn in record.turns:
            q = turn.instruction + ("\n" + turn.input if turn.input else "")
            complexity.append(hand_expected_value(lm, SPEC_COMPLEXITY.format(instruction=q), 1, 6))
            quality.append(hand_expected_value(lm, SPEC_QUALITY.format(instruction=q, output=turn.output), 1, 6))
        assert table.at[r, "deita_complexity"] == pytest.approx(np.mean(complexity), abs=1e-4)
        assert table.at[r, "deita_quality"] == pytest.approx(np.mean(quality), abs=1e-4)
        assert table.at[r, "evol_score"] == pytest.approx(sum(c * q for c, q in zip(complexity, quality)), abs=1e-3)
        assert 1 <= table.at[r, "deita_complexity"] <= 6
    assert table["deita_reason"].isna().all()


@pytest.mark.slow
def test_alpagasus_readout_uses_digits_zero_to_five(ctx, lm):
    table = METRICS.get("alpagasus")().compute(RECORDS[2:3], ctx)
    for r, record in enumerate(RECORDS[2:3]):
        t = record.turns[0]
        text = ALPAGASUS_PROMPT.format(instruction=t.instruction, input=t.input, output=t.output)
        assert table.at[r, "alpagasus"] == pytest.approx(hand_expected_value(lm, text, 0, 5), abs=1e-4)


@pytest.mark.slow
def test_generic_judge_template_and_batch_invariance(ctx, lm):
    judge = METRICS.get("judge")(template="Q: {query}\nA: {output}\nRate 1-4: ", low=1, high=4)
    together = judge.compute(RECORDS[:3], ctx)["judge_score"].to_numpy()
    alone = np.array([judge.compute([r], ctx)["judge_score"].iloc[0] for r in RECORDS[:3]])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    t = RECORDS[1].turns[0]
    expected = hand_expected_value(lm, f"Q: {t.query}\nA: {t.output}\nRate 1-4: ", 1, 4)
    assert together[1] == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_long_fields_are_cut_but_the_template_end_stays(ctx, lm):
    long = Record("long", [Turn("Summarise this. " + "word " * 400, "A summary.")])
    judge = METRICS.get("deita")(judge_max_length=128)
    ids, cut = judge.encode_prompt(lm, QUALITY_PROMPT, long, long.turns[0])
    assert cut and len(ids) <= 128
    assert lm.tokenizer.decode(ids).endswith("A summary. \n##Quality: ")
    assert np.isfinite(judge.compute([long], ctx)["deita_quality"].iloc[0])


def sentencepiece_like(digits: str):
    """A real fast tokenizer with Llama-2's normalizer (a "▁" prepended, spaces as "▁"): a lone
    digit encodes as ["▁", digit]; the digits in `digits` have a piece of their own."""
    from tokenizers import Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁": 1, **{d: 2 + i for i, d in enumerate(digits)}}
    for ch in "Score:":
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    return SimpleNamespace(tokenizer=tokenizer, ref=SimpleNamespace(spec="sentencepiece-like"),
                           encode=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_digit_after_a_prepended_space_piece_reads_its_own_piece():
    lm = sentencepiece_like("123456")
    assert lm.encode("1") == [1, lm.tokenizer.convert_tokens_to_ids("1")]  # two tokens alone
    ids = digit_token_ids(lm, 1, 6)
    # what the model emits after the prompt: the last token of "Score: 1" .. "Score: 6"
    assert ids == [lm.encode(f"Score: {d}")[-1] for d in range(1, 7)]
    assert len(set(ids)) == 6


def test_a_digit_without_a_token_of_its_own_is_an_error():
    lm = sentencepiece_like("12345")  # no "6"
    assert lm.encode("6") == [1, 0]  # "▁" and <unk>
    with pytest.raises(ValueError, match="digit 6 is 2 tokens .* and no token of its own"):
        digit_token_ids(lm, 1, 6)
    with pytest.raises(ValueError, match="0 <= low < high <= 9"):
        digit_token_ids(lm, 1, 10)


def test_a_digit_that_encodes_as_unknown_is_an_error():
    lm = sentencepiece_like("12345")
    plain = SimpleNamespace(tokenizer=lm.tokenizer, ref=lm.ref, encode=lambda text: lm.encode(text)[1:])  # no "▁"
    assert plain.encode("6") == [0]
    with pytest.raises(ValueError, match="digit 6 is 1 tokens"):
        digit_token_ids(plain, 1, 6)
@pytest.mark.slow
def test_subclassing_for_another_prompt(ctx):
    class Naturalness(PromptJudge):
        name = "naturalness_test"
        columns = {"naturalness_test": "higher"}
        template = "Is this reply natural?\n{output}\nScore (1-5): "
        high = 5

    scores = Naturalness().compute(RECORDS[:2], ctx)
    assert list(scores.columns) == ["naturalness_test", "naturalness_test_reason"]
    assert ((scores["naturalness_test"] >= 1) & (scores["naturalness_test"] <= 5)).all()
    with pytest.raises(ValueError, match="unknown fields"):
        METRICS.get("judge")(template="{question}").compute(RECORDS[:1], ctx)


def test_the_training_length_does_not_reach_the_judges():
    """`--max-length` is the scoring model's and the fine-tune's sequence length; a judge reads
    prompts up to its own `judge_max_length` (a Deita quality prompt holds a whole answer)."""
    from cherrybench.selectors import SELECTORS

    shared = {"max_length": 256}
    assert SELECTORS.get("deita").from_options(shared).requires()[0].judge_max_length == 2048
    assert SELECTORS.get("alpagasus").from_options(shared).requires()[0].judge_max_length == 2048
    assert SELECTORS.get("ifd").from_options(shared).requires()[0].max_length == 256
    assert SELECTORS.get("mods").from_options(shared).reward().inputs()[0].judge_max_length == 2048  # its judge fallback
    own = {"max_length": 256, "judge_max_length": 4096}
    assert SELECTORS.get("deita").from_options(own).requires()[0].judge_max_length == 4096
