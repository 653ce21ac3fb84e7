"""What a selector is: given a score table and a budget, return ids and a
report of what was kept and what was excluded, and why."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from cherrybench.params import Parameterized
from cherrybench.registry import Registry


@dataclass(frozen=True)
class Budget:
    """A count (`1000`) or a fraction of the records (`0.05`)."""

    value: float

    @classmethod
    def parse(cls, text) -> "Budget":
        """`--budget`'s value: a positive whole count or a fraction strictly between 0 and 1.
        A count has no decimal point: `1.0` is refused rather than read as one record (it
        reads like the whole pool)."""
        if isinstance(text, Budget):
            return text
        expected = "a positive count (e.g. 1000) or a fraction in (0, 1) (e.g. 0.05)"
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"--budget must be {expected}, got {text!r}") from None
        if math.isfinite(value) and value >= 1 and isinstance(text, str) and "." in text:
            raise ValueError(f"--budget must be {expected}, got {text!r}: a number with a decimal point is a "
                             "fraction, which must be below 1; write a number of records as a whole count without "
                             f"one (e.g. {math.floor(value)}), and the whole pool as its number of records")
        if not math.isfinite(value) or value <= 0 or (value >= 1 and not value.is_integer()):
            raise ValueError(f"--budget must be {expected}, got {text!r}")
        return cls(value)

    @classmethod
    def distinct(cls, texts: list[str]) -> list[str]:
        """A comma list's budgets as typed, in order, each parsed: one typed twice is kept once,
        two spellings of the same budget (`0.1` and `0.10`) are refused, naming both, rather
        than run as two budgets that repeat the same trials."""
        seen: dict[float, str] = {}
        for text in dict.fromkeys(texts):
            value = cls.parse(text).value
            if value in seen:
                raise ValueError(f"--budget: {seen[value]!r} and {text!r} are the same budget; give it once")
            seen[value] = text
        return list(seen.values())

    def check(self, n: int, what: str = "records") -> int:
        """`resolve(n)`, refusing a budget that keeps nothing of `n` records (a fraction
        that rounds to 0, or an empty pool): such a run could only give an empty result."""
        k = self.resolve(n)
        if k < 1:
            if n < 1:
                raise ValueError(f"--budget {self}: there are no {what} to select from")
            raise ValueError(f"--budget {self} of {n} {what} rounds to 0 records; "
                             f"give a count, or a fraction above {0.5 / n:.3g}")
        return k

    @property
    def is_fraction(self) -> bool:
        return self.value < 1

    def resolve(self, n: int) -> int:
        """The number of records this budget allows out of `n`."""
        if self.is_fraction:
            return int(round(self.value * n))
        return min(int(self.value), n)

    def __str__(self) -> str:
        return f"{self.value:g}"


@dataclass
class Selection:
    ids: list[str]  # in the selector's rank order
    report: dict = field(default_factory=dict)


class Selector(Parameterized):
    """Subclass, set `name`, take explicit keyword parameters, and implement
    `requires` (the metrics whose columns it reads) and `select`."""

    name: ClassVar[str]
    kind = "selector"  # names the owner in parameter errors (Parameterized.check_params)

    def requires(self) -> list:
        """Metric instances to score before selecting (names resolve in the metric registry)."""
        return []

    def select(self, scores: pd.DataFrame, budget: Budget, ctx) -> Selection:
        raise NotImplementedError

    def selection_inputs(self, records: list) -> object:
        """What of the pool beyond its records' text (which the pool's fingerprint covers) decides
        this selector's subset, e.g. a raw field it groups by, as JSON-able data; None when nothing.
        `compare` folds it into a trial's selection key, so that editing it reruns the trial."""
        return None


class RankingSelector(Selector):
    """A selector that ranks records by one score column and keeps the best.

    The shared ending of topk, threshold, ifd, alpagasus, longest,
    instructmining and deita: require the column, exclude NaN rows (counted by
    reason), apply `filters`, rank best first in the column's declared
    direction (ties by id, so the result is deterministic) and let `pick` cut
    the ranked candidates to the budget. Subclasses set `column` (or override
    `score_column`), and override `filters` or `pick` where the method differs.
    """

    column: ClassVar[str] = ""

    def score_column(self) -> str:
        return self.column

    def higher_is_better(self) -> bool:
        """True when higher is better, from the direction the metric declares for the column."""
        column = self.score_column()
        for metric in self.requires():
            direction = type(metric).columns.get(column)
            if direction in ("higher", "lower"):
                return direction == "higher"
        raise ValueError(f"selector {self.name!r}: column {column!r} declares no direction (higher or lower); "
                         "say which way is better with --param descending=true or false")

    def filters(self, scores: pd.DataFrame) -> list[tuple[str, pd.Series]]:
        """(reason, mask of rows to exclude) pairs applied after the NaN exclusion."""
        return []

    def budget_base(self, scores: pd.DataFrame, usable: pd.Series) -> int:
        """How many records the budget's fraction is taken of (the whole table by default)."""
        return len(scores)

    def pick(self, ranked: pd.DataFrame, k: int, ctx, excluded: Counter) -> list[str]:
        """The ids kept from the ranked candidates; counts what it leaves out in `excluded`."""
        ids = ranked["id"].head(k).tolist()
        excluded["over_budget"] += len(ranked) - len(ids)
        return ids

    def report_extra(self) -> dict:
        return {}

    def select(self, scores: pd.DataFrame, budget: Budget, ctx) -> Selection:
        column = self.score_column()
        require_columns(scores, [column], self.name)
        usable, excluded = nan_exclusions(scores, column)
        for reason, mask in self.filters(scores):
            dropped = usable & mask
            excluded[reason] += int(dropped.sum())
            usable &= ~dropped
        ranked = rank(scores[usable], column, self.higher_is_better())
        ids = self.pick(ranked, budget.resolve(self.budget_base(scores, usable)), ctx, excluded)
        return Selection(ids, report(self, scores, ids, excluded, budget, column, extra=self.report_extra()))


def validate_selector(cls) -> None:
    if not isinstance(cls, type) or not issubclass(cls, Selector):
        raise TypeError(f"{cls!r} must subclass cherrybench.selectors.Selector")
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} must set `name`")


SELECTORS = Registry("selector", "cherrybench.selectors", validate=validate_selector)
register_selector = SELECTORS.register


def require_columns(scores: pd.DataFrame, columns: list[str], who: str) -> None:
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise ValueError(f"selector {who!r} needs score columns {missing}; the table has {list(scores.columns)}")


def nan_exclusions(scores: pd.DataFrame, column: str) -> tuple[pd.Series, Counter]:
    """Mask of rows with a usable score, and a count of the others by reason: a NaN as
    `no_<column>:<the metric's reason>` (`:nan` without one), +inf or -inf as `non_finite_<column>`."""
    values = scores[column]
    missing = values.isna()
    infinite = ~missing & ~np.isfinite(values.astype(float))
    reasons: Counter = Counter()
    if missing.any():
        reason_cols = _reason_columns(scores, column)
        for idx in scores.index[missing]:
            why = next((scores.at[idx, c] for c in reason_cols if isinstance(scores.at[idx, c], str)), None)
            reasons[f"no_{column}:{why or 'nan'}"] += 1
    if infinite.any():
        reasons[f"non_finite_{column}"] += int(infinite.sum())
    return ~(missing | infinite), reasons


def _reason_columns(scores: pd.DataFrame, column: str) -> list[str]:
    """The table's reason columns, the one of the metric that outputs `column` first (`ifd_ppl`:
    `ifd_reason`; `evol_score`: `deita_reason`), so a table of several metrics never gives a
    record another metric's reason."""
    from cherrybench.metrics import METRICS

    owners = [f"{name}_reason" for name in METRICS.names() if column in getattr(METRICS.get(name), "columns", {})]
    present = [c for c in scores.columns if c.endswith("_reason")]
    own = [c for c in owners if c in present]
    return own if own else present


def rank(scores: pd.DataFrame, column: str, descending: bool) -> pd.DataFrame:
    """Sort by a column, ties broken by id, so selections are deterministic."""
    key = scores[column] if not descending else -scores[column]
    return scores.assign(_key=key.astype(float)).sort_values(["_key", "id"], kind="mergesort").drop(columns="_key")


def records_for(scores: pd.DataFrame, ctx, who: str) -> list:
    """The records behind the score table's rows, in its order, for selectors that
    read the records themselves (embeddings, fine-tuning); `run_selection` puts
    the data set on the context as `ctx.dataset`."""
    dataset = getattr(ctx, "dataset", None)
    if dataset is None:
        raise ValueError(f"selector {who!r} reads the records themselves: run it through run_selection "
                         "(or set ctx.dataset to the data set)")
    by_id = {r.id: r for r in dataset.records}
    missing = [i for i in scores["id"] if i not in by_id]
    if missing:
        raise ValueError(f"selector {who!r}: score table ids not in the data set, e.g. {missing[:3]}")
    return [by_id[i] for i in scores["id"]]


def report(selector: Selector, scores: pd.DataFrame, kept_ids: list[str], excluded: Counter,
           budget: Budget, score_column: str | None = None, extra: dict | None = None) -> dict:
    """The selection report every selector writes."""
    out = {
        "selector": selector.name,
        "params": selector.get_params(),
        "budget": str(budget),
        "n_input": int(len(scores)),
        "n_kept": len(kept_ids),
        "excluded": {k: int(v) for k, v in sorted(excluded.items()) if v},
        "n_excluded": int(sum(excluded.values())),
    }
    if score_column is not None and kept_ids:
        kept = scores.set_index("id").loc[kept_ids, score_column].astype(float)
        out["score_column"] = score_column
        out["kept_score_range"] = [float(kept.min()), float(kept.max())]
        out["kept_score_mean"] = float(kept.mean())
    if extra:
        out.update(extra)
    return out
