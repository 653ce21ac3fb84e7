"""Generic selectors over any score column: top-k and threshold."""

from __future__ import annotations

from cherrybench.metrics import METRICS
from cherrybench.registry import UnknownNameError
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector


def metric_for_column(column: str, options: dict | None = None) -> list:
    """The metric that outputs `column` (columns are metric aliases), if any."""
    try:
        cls = METRICS.get(column)
    except UnknownNameError:
        return []
    return [cls.from_options(options or {})]


class _ColumnRule(RankingSelector):
    """Any column; which way is better comes from `descending` or, unset, from the metric's declared direction."""

    def score_column(self) -> str:
        return self.column

    @classmethod
    def from_options(cls, options: dict):
        """Also keep the run's options for the column's metric: `--param threshold=0.3` or
        `--max-length` reach it as they would reach that metric scored on its own."""
        obj = super().from_options(options)
        obj.metric_options = dict(options)
        return obj

    def requires(self):
        return metric_for_column(self.column, dict(getattr(self, "metric_options", {}), model=self.model))

    def higher_is_better(self) -> bool:
        return super().higher_is_better() if self.descending is None else bool(self.descending)


@register_selector()
class TopK(_ColumnRule):
    """Keep the `budget` best records by `column` (its declared direction unless `descending` is given)."""

    name = "topk"

    def __init__(self, column: str = "ifd", descending: bool | None = None, model: str | None = None):
        self.column = column
        self.descending = descending
        self.model = model


@register_selector()
class Threshold(_ColumnRule):
    """Keep records with minimum <= column <= maximum; over budget, the best by `column` first."""

    name = "threshold"

    def __init__(self, column: str = "ifd", minimum: float | None = None, maximum: float | None = None,
                 descending: bool | None = None, model: str | None = None):
        self.column = column
        self.minimum = minimum
        self.maximum = maximum
        self.descending = descending
        self.model = model

    def check_params(self) -> None:
        if self.minimum is None and self.maximum is None:
            raise ValueError("selector 'threshold' needs minimum or maximum (--param minimum=X and/or maximum=Y)")
        self.check_number("minimum", optional=True)
        self.check_number("maximum", optional=True)
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"selector 'threshold': minimum {self.minimum:g} is above maximum {self.maximum:g}: "
                             "nothing could be kept")

    def filters(self, scores):
        self.check_params()  # also run by from_options, before any scoring
        values = scores[self.column].astype(float)
        out = []
        if self.minimum is not None:
            out.append((f"{self.column}<{self.minimum:g}", values < self.minimum))
        if self.maximum is not None:
            out.append((f"{self.column}>{self.maximum:g}", values > self.maximum))
        return out
