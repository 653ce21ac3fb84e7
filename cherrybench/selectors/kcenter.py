"""k-center greedy coverage selection (MoDS step 2, also usable alone): a seeded
random first center, then the record farthest from every chosen center."""

from __future__ import annotations

from collections import Counter

from cherrybench.diversity import kcenter_greedy
from cherrybench.embedders import embed
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, records_for, report


@register_selector()
class KCenter(Selector):
    """k-center greedy over record embeddings (Euclidean or cosine), seeded first center."""

    name = "kcenter"

    def __init__(self, embedder: str | None = None, text: str = "instruction", metric: str = "euclidean",
                 seed: int = 0):
        self.embedder = embedder
        self.text = text
        self.metric = metric
        self.seed = seed

    def check_params(self) -> None:
        from cherrybench.embedders import TEXTS

        self.check_choice("metric", ("euclidean", "cosine"))
        self.check_choice("text", TEXTS)
        self.check_number("seed", 0, integer=True)

    def select(self, scores, budget: Budget, ctx) -> Selection:
        k = budget.resolve(len(scores))
        vectors = embed(records_for(scores, ctx, self.name), self.embedder, self.text, ctx)
        picked = kcenter_greedy(vectors, k, seed=self.seed, metric=self.metric)
        ids = scores["id"].iloc[picked].tolist()
        excluded = Counter({"over_budget": len(scores) - len(ids)})
        return Selection(ids, report(self, scores, ids, excluded, budget,
                                     extra={"embedder": self.embedder or "all-MiniLM-L6-v2"}))
