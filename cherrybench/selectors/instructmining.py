"""InstructMining selection (Cao et al. 2023): keep the records whose predicted
log eval loss under the rule is lowest."""

from __future__ import annotations

from cherrybench.metrics.instructmining import InstructMining as Rule
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, nan_exclusions, rank, report, require_columns

COLUMN = "instructmining"


@register_selector()
class InstructMining(Selector):
    """The records with the lowest predicted log eval loss under a rule (file, paper-v1 or paper-v2)."""

    name = "instructmining"

    def __init__(self, rule: str = "paper-v1", model: str | None = None, judge: str | None = None,
                 reward_model: str | None = None, embedder: str | None = None, max_length: int | None = None):
        self.rule = rule
        self.model = model
        self.judge = judge
        self.reward_model = reward_model
        self.embedder = embedder
        self.max_length = max_length

    def requires(self):
        return [Rule(**self.get_params())]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        require_columns(scores, [COLUMN], self.name)
        ok, excluded = nan_exclusions(scores, COLUMN)
        k = budget.resolve(len(scores))
        ids = rank(scores[ok], COLUMN, descending=False)["id"].head(k).tolist()
        excluded["over_budget"] += int(ok.sum()) - len(ids)
        return Selection(ids, report(self, scores, ids, excluded, budget, COLUMN, extra={"rule": self.rule}))
