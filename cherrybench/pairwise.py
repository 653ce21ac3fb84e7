"""Pairwise judging of two models' answers, both orders to cancel position
bias, and the winning score (wins - losses) / n + 1 of the IFD and AlpaGasus papers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

PAIRWISE_PROMPT = (
    "You are a fair judge. Compare two responses to the same question and decide which one is more helpful, "
    "accurate and relevant.\n\n#Question#:\n{question}\n\n#Response 1#:\n{first}\n\n#Response 2#:\n{second}\n\n"
    "Which response is better? Answer with 1 or 2.\n##Better response: "
)


@dataclass(frozen=True)
class PairwiseResult:
    wins: int
    ties: int
    losses: int
    clipped: int = 0  # pairs whose question or an answer lost its tail to fit the judge's prompt

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def winning_score(self) -> float:
        """(wins - losses) / n + 1: 1 is a draw overall, 2 wins every prompt, 0 loses every one."""
        return (self.wins - self.losses) / self.n + 1 if self.n else float("nan")

    def as_metrics(self, prefix: str) -> dict:
        return {f"{prefix}wins": self.wins, f"{prefix}ties": self.ties, f"{prefix}losses": self.losses,
                f"{prefix}winning_score": self.winning_score, f"{prefix}clipped": self.clipped}


def outcome(prefers_a_when_first: bool, prefers_a_when_second: bool) -> str:
    """A wins only if preferred in both orders, loses only if rejected in both."""
    if prefers_a_when_first and prefers_a_when_second:
        return "win"
    if not prefers_a_when_first and not prefers_a_when_second:
        return "loss"
    return "tie"


def tally(outcomes: list[str], clipped: int = 0) -> PairwiseResult:
    return PairwiseResult(wins=outcomes.count("win"), ties=outcomes.count("tie"), losses=outcomes.count("loss"),
                          clipped=clipped)


def _clip(lm, text: str, tokens: int | None) -> tuple[str, bool]:
    """The text cut to its first `tokens` tokens, and whether it was cut."""
    ids = lm.encode(text)
    if tokens is None or len(ids) <= tokens:
        return text, False
    return lm.tokenizer.decode(ids[:tokens]), True


def judge_pairs(lm, questions: list[str], answers_a: list[str], answers_b: list[str],
                max_length: int | None = None) -> PairwiseResult:
    """Compare A against B on each question with the judge LM's next-token
    logits for "1" and "2", in both orders. `max_length` is the judge's own
    prompt budget (`judge_max_length`, never the training length): the question
    keeps its first half and each answer its first quarter of that many tokens;
    the result counts the pairs that lost text."""
    from cherrybench.lm import digit_token_ids

    one_two = digit_token_ids(lm, 1, 2)  # raises, naming the judge, when a digit has no token of its own
    if not len(questions) == len(answers_a) == len(answers_b):
        raise ValueError(f"{len(questions)} questions, {len(answers_a)} and {len(answers_b)} answers: counts differ")
    clipped = 0
    if max_length:
        cut = [(_clip(lm, q, max_length // 2), _clip(lm, a, max_length // 4), _clip(lm, b, max_length // 4))
               for q, a, b in zip(questions, answers_a, answers_b)]
        questions, answers_a, answers_b = ([c[k][0] for c in cut] for k in range(3))
        clipped = sum(any(part[1] for part in c) for c in cut)
        if clipped:
            log.warning("pairwise judging: %d of %d pairs lost text to fit judge_max_length=%d",
                        clipped, len(cut), max_length)
    sequences = []
    for q, a, b in zip(questions, answers_a, answers_b):
        sequences.append(lm.encode(PAIRWISE_PROMPT.format(question=q, first=a, second=b)))
        sequences.append(lm.encode(PAIRWISE_PROMPT.format(question=q, first=b, second=a)))
    logits = lm.last_token_logits(sequences, one_two)
    outcomes = []
    for i in range(len(questions)):
        a_first = logits[2 * i, 0] > logits[2 * i, 1]
        a_second = logits[2 * i + 1, 1] > logits[2 * i + 1, 0]
        outcomes.append(outcome(bool(a_first), bool(a_second)))
    return tally(outcomes, clipped)
