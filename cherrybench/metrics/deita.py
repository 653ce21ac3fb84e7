"""Deita complexity and quality (Liu et al. 2024): the exact prompts the released
scorers were trained on, read as the expected value over the digits 1..6, per
turn; `evol_score` = sum over turns of complexity_t x quality_t (SPEC).

Any model can judge (`judge`, default the scoring model, zero-shot); point it at
hkust-nlp/deita-complexity-scorer or deita-quality-scorer for the released ones.
"""

from __future__ import annotations

import numpy as np

from cherrybench.metrics import register_metric
from cherrybench.metrics.judge import PromptJudge, turn_fields


def deita_fields(record, turn) -> dict:
    """Deita's {instruction} is the whole user query (instruction, then input when there is one)."""
    fields = turn_fields(record, turn)
    fields["instruction"] = turn.query
    return fields

COMPLEXITY_PROMPT = (
    "You are a helpful assistant. Please identify the complexity score of the following user query. \n"
    "##Query: {instruction}  \n##Complexity: "
)
QUALITY_PROMPT = (
    "You are a helpful assistant. Please identify the quality score of the Response corresponding to the Question. \n"
    " #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "
)


@register_metric(aliases=("evol_score", "deita_complexity", "deita_quality"))
class Deita(PromptJudge):
    """Deita complexity (of Q) and quality (of A given Q) per turn, and their evol_score."""

    name = "deita"
    columns = {"deita_complexity": "higher", "deita_quality": "higher", "evol_score": "higher"}

    def fields(self, record, turn):
        return deita_fields(record, turn)

    def templates(self):
        return {"complexity": (COMPLEXITY_PROMPT, 1, 6), "quality": (QUALITY_PROMPT, 1, 6)}

    def combine(self, per_turn: dict[str, np.ndarray]) -> dict:
        complexity, quality = per_turn["complexity"], per_turn["quality"]
        return {"deita_complexity": float(complexity.mean()), "deita_quality": float(quality.mean()),
                "evol_score": float(np.sum(complexity * quality))}


@register_metric()
class JudgeQuality(PromptJudge):
    """The judge's quality of each answer (Deita's quality prompt alone, mean over turns): eval answers and the reward fallback."""

    name = "judge_quality"
    columns = {"judge_quality": "higher"}
    template = QUALITY_PROMPT

    def fields(self, record, turn):
        return deita_fields(record, turn)
