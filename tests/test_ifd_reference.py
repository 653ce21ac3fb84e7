"""Batched cas/das/ifd/ppl equal a naive one-record-at-a-time implementation
(full logits, one turn at a time, templates typed from SPEC) on the real model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cherrybench.metrics.ifd import IFD
from cherrybench.records import Record, Turn

pytestmark = pytest.mark.slow  # every test here loads a real model

# typed from SPEC, independently of cherrybench.prompts
WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
              "Write a response that appropriately completes the request.\n\n### Instruction:\n{i}\n\n### Input:\n{x}"
              "\n\n### Response:")
NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\n{i}\n\n### Response:")


def naive_prompt(turn: Turn, fmt: str) -> str:
    if fmt == "alpaca":
        return WITH_INPUT.format(i=turn.instruction, x=turn.input) if turn.input else NO_INPUT.format(i=turn.instruction)
    return f"{turn.instruction}\n{turn.input}\n" if turn.input else f"{turn.instruction}\n"


def mean_answer_loss(model, ids: list[int], first_answer: int) -> tuple[float, int]:
    """Mean CE over ids[first_answer + 1:], from a full forward with the full LM head."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    losses = [-logp[p - 1, ids[p]].item() for p in range(first_answer + 1, len(ids))]
    return float(np.mean(losses)), len(losses)


def naive_scores(lm, record: Record, fmt: str, max_length: int) -> dict:
    tok = lm.tokenizer
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    history: list[int] = []
    per_turn = []
    for t, turn in enumerate(record.turns):
        piece = naive_prompt(turn, fmt) if t == 0 else "\n\n" + naive_prompt(turn, fmt)
        context = history + enc(piece)
        answer = enc(turn.output)
        history = context + answer
        kept = answer[: max(0, max_length - len(context))]
        if len(kept) < 2:
            continue
        cas, n = mean_answer_loss(lm.model, context + kept, len(context))
        das, n2 = mean_answer_loss(lm.model, kept, 0)
        assert n == n2 == len(kept) - 1
        per_turn.append((n, cas, das))
    if not per_turn:
        return {}
    w = np.array([p[0] for p in per_turn], float)
    cas = np.average([p[1] for p in per_turn], weights=w)
    das = np.average([p[2] for p in per_turn], weights=w)
    ifd = np.average([p[1] / p[2] for p in per_turn], weights=w)
    return {"cas": cas, "das": das, "ifd": ifd, "ifd_ppl": math.exp(cas) / math.exp(das), "ppl": math.exp(das)}


RECORDS = [
    Record("plain", [Turn("Name three primary colors.", "Red, blue and yellow are the three primary colors.")]),
    Record("with_input", [Turn("Translate the sentence to French.", "Je suis un étudiant.", input="I am a student.")]),
    Record("long", [Turn("Write a short story about a robot.",
                         "Once upon a time there was a small robot named Bolt who lived in a quiet workshop. " * 6)]),
    Record("multi", [Turn("What is 2 + 2?", "2 + 2 equals 4."),
                     Turn("And times three?", "4 times 3 is 12."),
                     Turn("Thanks!", "You are welcome, happy to help with arithmetic.")]),
    Record("empty", [Turn("Say nothing.", "")]),
    Record("one_token", [Turn("Reply with a period.", ".")]),
    Record("huge_prompt", [Turn("Summarise: " + "lorem ipsum dolor sit amet " * 40, "It is filler text.")]),
]


@pytest.mark.parametrize("fmt,max_length", [("alpaca", 512), ("alpaca", 64), ("plain", 48)])
def test_batched_equals_naive(ctx, lm, fmt, max_length):
    metric = IFD(prompt=fmt, max_length=max_length)
    table = metric.compute(RECORDS, ctx)
    assert list(table.columns) == metric.output_columns
    checked = 0
    for row, record in zip(table.to_dict("records"), RECORDS):
        expected = naive_scores(lm, record, fmt, max_length)
        if not expected:
            assert math.isnan(row["ifd"]) and row["ifd_reason"], record.id
            continue
        for column, value in expected.items():
            assert row[column] == pytest.approx(value, abs=1e-4, rel=1e-4), (record.id, column)
        assert row["ifd_reason"] is None
        checked += 1
    assert checked >= 4  # the scorable records really were compared


def test_unscorable_reasons(ctx):
    table = IFD(prompt="alpaca", max_length=64).compute(RECORDS, ctx).set_index(
        np.array([r.id for r in RECORDS]))
    assert table.loc["empty", "ifd_reason"] == "empty_answer"
    assert table.loc["one_token", "ifd_reason"] == "answer_too_short"
    assert table.loc["huge_prompt", "ifd_reason"] == "prompt_too_long"
    assert table.loc[["empty", "one_token", "huge_prompt"], ["cas", "das", "ifd", "ppl"]].isna().all().all()


def test_truncation_cuts_both_passes_alike(ctx, lm):
    """With max_length cutting the long answer, das is the loss of the same kept tokens."""
    record = RECORDS[2]
    prompt_ids = lm.encode(naive_prompt(record.turns[0], "alpaca"))
    answer_ids = lm.encode(record.turns[0].output)
    max_length = len(prompt_ids) + 10
    row = IFD(prompt="alpaca", max_length=max_length).compute([record], ctx).iloc[0]
    das, n = mean_answer_loss(lm.model, answer_ids[:10], 0)
    assert n == 9
    assert row["das"] == pytest.approx(das, abs=1e-5)


def test_results_do_not_depend_on_batch_size(ctx, lm):
    metric = IFD(prompt="alpaca", max_length=128)
    old = lm.batch_tokens
    try:
        lm.batch_tokens = 128
        small = metric.compute(RECORDS, ctx)
        lm.batch_tokens = 1 << 16
        big = metric.compute(RECORDS, ctx)
    finally:
        lm.batch_tokens = old
    np.testing.assert_allclose(small["ifd"].to_numpy(float), big["ifd"].to_numpy(float), rtol=1e-5, equal_nan=True)


def test_multi_turn_ifd_ppl_is_the_pooled_ratio_and_may_cross_1_unlike_ifd():
    """README, Method notes: two turns of one token-weight each, (CAS, DAS) = (0.5, 1.0), (3.2, 2.5)."""
    import math

    from cherrybench.metrics.ifd import IFD

    out = IFD()._aggregate([(1, 0.5, 1.0), (1, 3.2, 2.5)])
    assert out["ifd"] == pytest.approx((0.5 / 1.0 + 3.2 / 2.5) / 2)  # 0.89: the instructions help
    assert out["ifd_ppl"] == pytest.approx(math.exp((0.5 + 3.2) / 2 - (1.0 + 2.5) / 2))  # 1.105: pooled, above 1
