"""The random baseline: a seeded uniform sample."""

from __future__ import annotations

from collections import Counter

import numpy as np

from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, report


@register_selector()
class RandomSample(Selector):
    """Random: a seeded uniform sample of the budget, in input order (the baseline every selector must beat)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def check_params(self) -> None:
        self.check_number("seed", 0, integer=True)

    def select(self, scores, budget: Budget, ctx) -> Selection:
        k = budget.resolve(len(scores))
        rng = np.random.default_rng(self.seed)
        picked = rng.choice(len(scores), size=k, replace=False)
        ids = scores["id"].iloc[np.sort(picked)].tolist()
        return Selection(ids, report(self, scores, ids, Counter({"not_sampled": len(scores) - k}), budget))
