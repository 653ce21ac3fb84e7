"""InstructMining selection (Cao et al. 2023): keep the records whose predicted
log eval loss under the rule is lowest (the metric declares `lower` is better)."""

from __future__ import annotations

from cherrybench.metrics.instructmining import InstructMining
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector


@register_selector()
class InstructMiningSelector(RankingSelector):
    """The records with the lowest predicted log eval loss under a rule (file, paper-v1, paper-v1-offline or paper-v2)."""

    name = "instructmining"
    column = "instructmining"

    def __init__(self, rule: str = "paper-v1", model: str | None = None, judge: str | None = None,
                 reward_model: str | None = None, embedder: str | None = None, max_length: int | None = None):
        self.rule = rule
        self.model = model
        self.judge = judge
        self.reward_model = reward_model
        self.embedder = embedder
        self.max_length = max_length

    def requires(self):
        return [InstructMining(**self.get_params())]

    def report_extra(self) -> dict:
        return {"rule": self.rule}
