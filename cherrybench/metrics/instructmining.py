"""InstructMining's rule as a metric: each record's predicted log eval loss
under a linear rule (a fitted rule file, or the published `paper-v1`, `paper-v1-offline` (no reward model) /
`paper-v2`). Lower is better. The indicators are the metric's declared inputs:
the scoring core scores them first (cached, shared with every other use) and
hands their columns over.

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
    chunk_size = 4096  # a linear rule over columns already scored: cheap per record

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

    def check_params(self) -> None:
        self.load()  # the rule file exists, parses, and its indicators can be scored with these settings

    def load(self):
        from cherrybench.regress.rules import load_rule

        rule = load_rule(self.rule, self.overrides())
        missing = rule.missing(self.overrides())
        if missing:
            raise ValueError(f"rule {self.rule!r} needs indicators that are not available: " + "; ".join(missing))
        return rule

    def inputs(self) -> list:
        """The rule's indicators: scored (and cached) by the scoring core before this metric."""
        from cherrybench.regress.indicators import build_metrics

        return build_metrics(self.load().indicators, self.overrides())

    def fingerprints(self, ctx) -> dict:
        return {"rule": self.load().fingerprint}  # the indicators' keys enter through `inputs`

    def compute(self, records, ctx, inputs=None):
        import numpy as np

        from cherrybench.regress.indicators import indicator_values

        rule = self.load()
        values, reasons = indicator_values(inputs, rule.indicators)
        predicted = rule.predict(values).to_numpy()
        rows = [{"instructmining": float(p), self.reason_column: None} if np.isfinite(p) and why is None
                else self.nan_row(why or "nan_prediction") for p, why in zip(predicted, reasons)]
        return self.frame(rows)
