"""Generic selectors over any score column: top-k and threshold."""

from __future__ import annotations

from collections import Counter

from cherrybench.metrics import METRICS
from cherrybench.registry import UnknownNameError
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, nan_exclusions, rank, report, require_columns


def metric_for_column(column: str, options: dict | None = None) -> list:
    """The metric that outputs `column` (columns are metric aliases), if any."""
    try:
        cls = METRICS.get(column)
    except UnknownNameError:
        return []
    return [cls.from_options(options or {})]


@register_selector()
class TopK(Selector):
    """Keep the `budget` records with the highest (or lowest) value of `column`."""

    name = "topk"

    def __init__(self, column: str = "ifd", descending: bool = True, model: str | None = None):
        self.column = column
        self.descending = descending
        self.model = model

    def requires(self):
        return metric_for_column(self.column, {"model": self.model})

    def select(self, scores, budget: Budget, ctx) -> Selection:
        require_columns(scores, [self.column], self.name)
        ok, excluded = nan_exclusions(scores, self.column)
        k = budget.resolve(len(scores))
        ranked = rank(scores[ok], self.column, self.descending)
        ids = ranked["id"].head(k).tolist()
        excluded["over_budget"] += int(ok.sum()) - len(ids)
        return Selection(ids, report(self, scores, ids, excluded, budget, self.column))


@register_selector()
class Threshold(Selector):
    """Keep records with minimum <= column <= maximum; over budget, the best by `column` first."""

    name = "threshold"

    def __init__(self, column: str = "ifd", minimum: float | None = None, maximum: float | None = None,
                 descending: bool = True, model: str | None = None):
        self.column = column
        self.minimum = minimum
        self.maximum = maximum
        self.descending = descending
        self.model = model

    def requires(self):
        return metric_for_column(self.column, {"model": self.model})

    def select(self, scores, budget: Budget, ctx) -> Selection:
        if self.minimum is None and self.maximum is None:
            raise ValueError("selector 'threshold' needs minimum or maximum")
        require_columns(scores, [self.column], self.name)
        ok, excluded = nan_exclusions(scores, self.column)
        values = scores[self.column].astype(float)
        if self.minimum is not None:
            low = ok & (values < self.minimum)
            excluded[f"{self.column}<{self.minimum:g}"] += int(low.sum())
            ok &= ~low
        if self.maximum is not None:
            high = ok & (values > self.maximum)
            excluded[f"{self.column}>{self.maximum:g}"] += int(high.sum())
            ok &= ~high
        k = budget.resolve(len(scores))
        ids = rank(scores[ok], self.column, self.descending)["id"].head(k).tolist()
        excluded["over_budget"] += int(ok.sum()) - len(ids)
        return Selection(ids, report(self, scores, ids, Counter(excluded), budget, self.column))
