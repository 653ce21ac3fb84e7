"""Deita selection (Liu et al. 2024): rank by evol_score, then the repr filter
keeps a record only if its cosine similarity to every record already accepted
is <= tau, until the budget is reached (SPEC)."""

from __future__ import annotations

import numpy as np

from cherrybench.diversity import normalize, repr_filter
from cherrybench.embedders import embed
from cherrybench.metrics.deita import Deita
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import (Budget, Selection, Selector, nan_exclusions, rank, records_for, report,
                                        require_columns)


@register_selector()
class DeitaSelector(Selector):
    """Deita: evol_score order, skip records too similar (cosine > tau) to one already kept."""

    name = "deita"

    def __init__(self, judge: str | None = None, embedder: str | None = None, text: str = "conversation",
                 tau: float = 0.9, chat: bool = False, max_length: int = 2048):
        self.judge = judge
        self.embedder = embedder
        self.text = text
        self.tau = tau
        self.chat = chat
        self.max_length = max_length

    def requires(self):
        return [Deita(judge=self.judge, chat=self.chat, max_length=self.max_length)]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        require_columns(scores, ["evol_score"], self.name)
        ok, excluded = nan_exclusions(scores, "evol_score")
        ranked = rank(scores[ok], "evol_score", descending=True)
        k = budget.resolve(len(scores))
        vectors = normalize(embed(records_for(ranked, ctx, self.name), self.embedder, self.text, ctx))
        accepted = repr_filter(vectors, np.arange(len(ranked)), self.tau, k)
        ids = ranked["id"].iloc[accepted].tolist()
        # records after the last accepted one were never examined once the budget was full
        examined = int(accepted[-1]) + 1 if len(ids) == k and ids else len(ranked)
        excluded[f"cosine>{self.tau:g}"] += examined - len(ids)
        excluded["over_budget"] += len(ranked) - examined
        return Selection(ids, report(self, scores, ids, excluded, budget, "evol_score",
                                     extra={"embedder": self.embedder or "all-MiniLM-L6-v2"}))
