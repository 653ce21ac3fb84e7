"""MTLD against a hand-worked example (McCarthy & Jarvis 2010: forward and
backward factor counts, TTR threshold 0.72, partial factor for the remainder)
and against a naive slice-and-count reference on random texts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cherrybench.metrics.mtld import MTLD, mtld, words
from cherrybench.records import Record, Turn


def test_hand_worked_example():
    # tokens: red blue red one two three one
    # forward:  red blue red -> TTR 2/3 <= 0.72: factor 1, restart;
    #           one two three one -> TTR 3/4 = 0.75 left over: partial (1 - 0.75) / (1 - 0.72) = 0.892857
    #           MTLD_fwd = 7 / 1.892857 = 3.698113
    # backward: one three two one blue red blue -> TTRs 1, 1, 1, .75, .8, .833, 5/7 = .714 <= 0.72:
    #           factor 1 at the last word, nothing left over: MTLD_bwd = 7 / 1 = 7
    # MTLD = (3.698113 + 7) / 2 = 5.349057
    text = "Red, blue... RED! One two three; one."
    assert words(text) == ["red", "blue", "red", "one", "two", "three", "one"]
    forward = 7 / (1 + (1 - 3 / 4) / (1 - 0.72))
    assert forward == pytest.approx(3.698113, abs=1e-6)
    assert mtld(words(text)) == pytest.approx((forward + 7) / 2)
    assert mtld(words(text)) == pytest.approx(5.349057, abs=1e-6)


def naive_direction(tokens, threshold):
    factors, start = 0.0, 0
    for end in range(1, len(tokens) + 1):
        segment = tokens[start:end]
        if len(set(segment)) / len(segment) <= threshold:
            factors += 1
            start = end
    rest = tokens[start:]
    if rest:
        factors += (1 - len(set(rest)) / len(rest)) / (1 - threshold)
    return len(tokens) / factors if factors else len(tokens)


@pytest.mark.parametrize("threshold", [0.72, 0.6])
def test_matches_naive_reference_on_random_texts(threshold):
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(12)]
    for _ in range(200):
        tokens = list(rng.choice(vocab, size=int(rng.integers(1, 80))))
        expected = (naive_direction(tokens, threshold) + naive_direction(tokens[::-1], threshold)) / 2
        assert mtld(tokens, threshold) == pytest.approx(expected)


def test_metric_columns_and_edge_cases():
    records = [
        Record("a", [Turn("q", "Red, blue... RED! One two three; one.")]),
        Record("b", [Turn("q", "Paris is the capital")]),  # no repeat: one factor, MTLD = length (ours)
        Record("c", [Turn("q", "")]),
        Record("d", [Turn("q", "red blue red"), Turn("q2", "one two three one")]),  # answers joined
        Record("e", [Turn("q", "... !!")]),
    ]
    table = MTLD().compute(records, ctx=None)
    assert list(table.columns) == ["mtld", "mtld_reason"]
    assert table["mtld"][0] == pytest.approx(5.349057, abs=1e-6)
    assert table["mtld"][1] == 4.0
    assert math.isnan(table["mtld"][2]) and table["mtld_reason"][2] == "empty_response"
    assert table["mtld"][3] == pytest.approx(table["mtld"][0])
    assert table["mtld_reason"][4] == "empty_response"
    with pytest.raises(ValueError, match="threshold"):
        MTLD(threshold=1.5).compute(records, ctx=None)
