"""ROUGE-L against hand-computed LCS F-measures and the rouge-score package
called directly; cosine against hand values and scipy; unscorable records are
NaN with a reason, never 0."""

from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer
from scipy.spatial.distance import cosine

from cherrybench.answer_metrics import embedding_similarity, rouge_l


def test_rouge_l_by_hand():
    preds = ["The cat sat on the mat.", "red green blue black", "Cats running!", "Apples and pears"]
    refs = ["the cat is on the mat", "red blue white", "a cat runs", "plums and apples"]
    values, reasons = rouge_l(preds, refs)
    assert reasons == [None] * 4
    # 1: LCS "the cat on the mat" = 5 of 6 and 6 tokens: P = R = F = 5/6
    # 2: LCS "red blue" = 2; P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7
    # 3: stemmed "cat run" vs "a cat run": LCS 2; P = 1, R = 2/3, F = 4/5 (no stemming: LCS 0)
    # 4: order matters: LCS "and" or "apples" = 1 of 3: F = 1/3
    assert values == pytest.approx([5 / 6, 4 / 7, 4 / 5, 1 / 3])


def test_rouge_l_matches_library():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    preds = ["Paris is the capital of France.", "It depends on the dataset size",
             "The answers were computed quickly"]
    refs = ["The capital of France is Paris.", "the size of the dataset matters",
            "answer computed quick"]
    values, _ = rouge_l(preds, refs)
    want = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    assert values == pytest.approx(want)
    assert 0 < values.min() and values.max() < 1  # the cases are partial matches


def test_rouge_l_unscorable_references_are_nan_and_empty_answers_zero():
    preds = ["", "   ", "an answer", "", "日本語の答え", "...", "fine", ""]
    refs = ["a reference", "a reference", "", "", "東京", "a reference", "fine", "東京"]
    values, reasons = rouge_l(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert reasons == [None, None, "empty_reference", "empty_reference", "reference_without_tokens", None, None,
                       "reference_without_tokens"]
    assert np.isnan(values[2:5]).all() and np.isnan(values[7])  # the reference decides: the same for every model
    # said nothing, or text without a word in common: a real zero, as rouge-score itself scores it
    assert list(values[[0, 1, 5]]) == [0.0, 0.0, 0.0] == [scorer.score("a reference", p)["rougeL"].fmeasure
                                                         for p in ("", "   ", "...")]
    assert values[6] == 1.0
    with pytest.raises(ValueError):
        rouge_l(["a"], ["a", "b"])


def test_embedding_similarity():
    p = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [0.0, 0.0], [1.0, 2.0], [1.0, 0.0]])
    r = np.array([[1.0, 1.0], [-1.0, -1.0], [6.0, 8.0], [1.0, 0.0], [2.0, 1.0], [np.nan, 0.0]])
    values, reasons = embedding_similarity(p, r)
    assert values[:3] == pytest.approx([1 / np.sqrt(2), -1.0, 1.0])
    assert values[4] == pytest.approx(1 - cosine(p[4], r[4]))
    assert values[4] == pytest.approx(4 / 5)
    assert np.isnan(values[3]) and np.isnan(values[5])
    assert reasons == [None, None, None, "zero_vector", None, "non_finite_vector"]


def test_embedding_similarity_blank_texts():
    p = np.ones((3, 4))
    values, reasons = embedding_similarity(p, p, predictions=["ok", " ", "ok"], references=["ok", "ok", ""])
    assert reasons == [None, None, "empty_reference"]
    assert values[0] == pytest.approx(1.0) and values[1] == 0.0 and np.isnan(values[2])  # said nothing: unrelated
    with pytest.raises(ValueError):
        embedding_similarity(np.ones((2, 3)), np.ones((2, 4)))
