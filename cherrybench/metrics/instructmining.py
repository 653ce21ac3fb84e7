"""InstructMining's rule as a metric: each record's predicted log eval loss
under a linear rule (a fitted rule file, or the published `paper-v1` /
`paper-v2`). Lower is better. The indicators are scored through the common
scoring core, so they are cached and shared with every other use.

A rule whose indicators cannot be computed here fails before any scoring and
names the missing ones. A record with a missing indicator gets NaN and the
reason `no_<indicator>:<why>`.
"""

from __future__ import annotations

from cherrybench.metrics import register_metric
from cherrybench.metrics.base import Metric


@register_metric()
class InstructMining(Metric):
    """Predicted log eval loss of a record under an InstructMining rule (lower is better)."""

    name = "instructmining"
    columns = {"instructmining": "lower"}
    needs = ("lm", "embedder", "judge", "reward")
    chunk_size = 100_000  # the indicators chunk their own work; a pool-level one needs the whole pool

    def __init__(self, rule: str = "paper-v1", model: str | None = None, judge: str | None = None,
                 reward_model: str | None = None, embedder: str | None = None, max_length: int | None = None):
        self.rule = rule
        self.model = model
        self.judge = judge
        self.reward_model = reward_model
        self.embedder = embedder
        self.max_length = max_length

    def overrides(self) -> dict:
        return {"model": self.model, "judge": self.judge, "reward_model": self.reward_model,
                "embedder": self.embedder, "max_length": self.max_length}

    def load(self):
        from cherrybench.regress.rules import load_rule

        rule = load_rule(self.rule, self.overrides())
        missing = rule.missing(self.overrides())
        if missing:
            raise ValueError(f"rule {self.rule!r} needs indicators that are not available: " + "; ".join(missing))
        return rule

    def indicator_metrics(self, rule=None) -> list:
        from cherrybench.regress.indicators import build_metrics

        rule = rule or self.load()
        return build_metrics(rule.indicators, self.overrides())

    @property
    def per_record(self) -> bool:  # pool-level when one of its indicators is (KNN)
        return all(m.per_record for m in self.indicator_metrics())

    def fingerprints(self, ctx) -> dict:
        from cherrybench.fingerprint import hash_json

        rule = self.load()
        return {"rule": rule.fingerprint,
                **{m.name: hash_json({"params": m.get_params(), "models": m.fingerprints(ctx)})
                   for m in self.indicator_metrics(rule)}}

    def compute(self, records, ctx):
        import numpy as np

        from cherrybench.records import Dataset
        from cherrybench.regress.indicators import indicator_values
        from cherrybench.scoring import score

        rule = self.load()
        table = score(Dataset(records, None, "alpaca", "json"), self.indicator_metrics(rule), ctx)
        values, reasons = indicator_values(table, rule.indicators)
        predicted = rule.predict(values).to_numpy()
        rows = [{"instructmining": float(p), self.reason_column: None} if np.isfinite(p) and why is None
                else self.nan_row(why or "nan_prediction") for p, why in zip(predicted, reasons)]
        return self.frame(rows)
