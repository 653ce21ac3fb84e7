"""AlpaGasus selection (Chen et al. 2023): keep judge scores >= threshold
(4.5 in the paper), then the top k by score."""

from __future__ import annotations

from cherrybench.metrics.alpagasus import AlpaGasus
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, nan_exclusions, rank, report, require_columns


@register_selector()
class AlpaGasusSelector(Selector):
    """AlpaGasus: judge accuracy rating >= threshold, best first, up to the budget."""

    name = "alpagasus"

    def __init__(self, judge: str | None = None, threshold: float = 4.5, chat: bool = False,
                 max_length: int = 2048):
        self.judge = judge
        self.threshold = threshold
        self.chat = chat
        self.max_length = max_length

    def requires(self):
        return [AlpaGasus(judge=self.judge, chat=self.chat, max_length=self.max_length)]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        require_columns(scores, ["alpagasus"], self.name)
        ok, excluded = nan_exclusions(scores, "alpagasus")
        low = ok & (scores["alpagasus"].astype(float) < self.threshold)
        excluded[f"alpagasus<{self.threshold:g}"] += int(low.sum())
        ok &= ~low
        k = budget.resolve(len(scores))
        ids = rank(scores[ok], "alpagasus", descending=True)["id"].head(k).tolist()
        excluded["over_budget"] += int(ok.sum()) - len(ids)
        return Selection(ids, report(self, scores, ids, excluded, budget, "alpagasus"))
