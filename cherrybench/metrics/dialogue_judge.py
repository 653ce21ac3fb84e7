"""Naturalness, coherence and understandability of a response, the three
UniEval dialogue dimensions InstructMining uses as indicators.

UniEval (a T5 evaluator on the hub) is not available offline, so an LM judge
answers UniEval's three questions instead, rated 1..5 and read as the expected
value over the digit tokens (the shared judge readout, SPEC Deita), then mapped
to 0..1 as (E - 1) / 4 so the columns sit on UniEval's probability scale (ours).
A zero-shot judge is not UniEval: a rule fitted on UniEval scores (paper-v2)
applies to these columns only approximately.
"""

from __future__ import annotations

import numpy as np

from cherrybench.metrics import register_metric
from cherrybench.metrics.judge import PromptJudge

DIMENSIONS = {
    "naturalness": "Is this a natural response to the question?",
    "coherence": "Is this a coherent response given the question?",
    "understandability": "Is this an understandable response?",
}
TEMPLATE = ("You are evaluating a response in a conversation.\n\nQuestion:\n{query}\n\nResponse:\n{output}\n\n"
            "{question} Rate it from 1 (not at all) to 5 (completely).\nRating: ")
LOW, HIGH = 1, 5


def prompt(dimension: str) -> str:
    return TEMPLATE.replace("{question}", DIMENSIONS[dimension])


@register_metric(aliases=tuple(DIMENSIONS))
class DialogueJudge(PromptJudge):
    """UniEval's naturalness, coherence and understandability asked of an LM judge, on 0..1."""

    name = "dialogue_judge"
    columns = {d: "higher" for d in DIMENSIONS}

    def templates(self):
        return {d: (prompt(d), LOW, HIGH) for d in DIMENSIONS}

    def combine(self, per_turn: dict[str, np.ndarray]) -> dict:
        return {d: float((per_turn[d].mean() - LOW) / (HIGH - LOW)) for d in DIMENSIONS}
