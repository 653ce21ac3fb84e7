"""Long Is More for Alignment (Zhao et al. 2024): the longest responses, in tokens."""

from __future__ import annotations

from cherrybench.metrics.length import Length
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector


@register_selector()
class Longest(RankingSelector):
    """The records with the longest responses (tokens of the scoring tokenizer)."""

    name = "longest"
    column = "response_length"

    def __init__(self, model: str | None = None):
        self.model = model

    def requires(self):
        return [Length(model=self.model)]
