"""Winning score arithmetic and the both-orders rule."""

from __future__ import annotations

import pytest

from cherrybench.pairwise import PairwiseResult, judge_pairs, outcome, tally


def test_winning_score_hand_worked():
    # 3 wins, 1 tie, 1 loss over 5 prompts: (3 - 1) / 5 + 1 = 1.4
    result = tally(["win", "tie", "win", "loss", "win"])
    assert (result.wins, result.ties, result.losses, result.n) == (3, 1, 1, 5)
    assert result.winning_score == pytest.approx(1.4)
    assert PairwiseResult(0, 0, 4).winning_score == 0.0
    assert PairwiseResult(2, 0, 0).winning_score == 2.0
    assert result.as_metrics("x.")["x.winning_score"] == pytest.approx(1.4)


def test_both_orders_rule():
    assert outcome(True, True) == "win"
    assert outcome(False, False) == "loss"
    assert outcome(True, False) == outcome(False, True) == "tie"  # position bias cancels out


@pytest.mark.slow
def test_identical_answers_always_tie_with_real_judge(lm):
    """With A == B both orders read the same prompt, so whatever the judge
    prefers is a position, never an answer: every comparison is a tie."""
    questions = ["What is the capital of France?", "Name a prime number."]
    answers = ["Paris is the capital of France.", "Seven is prime."]
    result = judge_pairs(lm, questions, answers, answers)
    assert (result.wins, result.ties, result.losses) == (0, 2, 0)
    assert result.winning_score == 1.0


@pytest.mark.slow
def test_pairs_are_clipped_to_the_judges_budget_and_counted(lm):
    """The question keeps half of `max_length` tokens, each answer a quarter; a pair
    that lost text is counted, one that fits is not."""
    long_question = " ".join(f"word{i}" for i in range(200))
    questions, answers = ["Name a prime number.", long_question], ["Seven.", "Eleven."]
    assert len(lm.encode(long_question)) > 64 and len(lm.encode(questions[0])) < 32
    assert judge_pairs(lm, questions, answers, answers, max_length=128).clipped == 1
    assert judge_pairs(lm, questions, answers, answers, max_length=2048).clipped == 0
    long_answer = ["Seven. " * 40, "Eleven."]
    result = judge_pairs(lm, questions[:1] * 2, long_answer, answers, max_length=128)
    assert result.clipped == 1 and result.as_metrics("x.")["x.clipped"] == 1
