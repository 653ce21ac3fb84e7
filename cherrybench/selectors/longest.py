"""Long Is More for Alignment (Zhao et al. 2024): the longest responses, in tokens."""

from __future__ import annotations

from cherrybench.metrics.length import Length
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, nan_exclusions, rank, report, require_columns

COLUMN = "response_length"


@register_selector()
class Longest(Selector):
    name = "longest"

    def __init__(self, model: str | None = None):
        self.model = model

    def requires(self):
        return [Length(model=self.model)]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        require_columns(scores, [COLUMN], self.name)
        ok, excluded = nan_exclusions(scores, COLUMN)
        k = budget.resolve(len(scores))
        ids = rank(scores[ok], COLUMN, descending=True)["id"].head(k).tolist()
        excluded["over_budget"] += int(ok.sum()) - len(ids)
        return Selection(ids, report(self, scores, ids, excluded, budget, COLUMN))
