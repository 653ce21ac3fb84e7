"""Deita selection (Liu et al. 2024): rank by evol_score, then the repr filter
keeps a record only if its cosine similarity to every record already accepted
is <= tau, until the budget is reached (SPEC)."""

from __future__ import annotations

import numpy as np

from cherrybench.diversity import normalize, repr_filter
from cherrybench.embedders import embed
from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics.deita import Deita
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector, records_for


@register_selector()
class DeitaSelector(RankingSelector):
    """Deita: evol_score order, skip records too similar (cosine > tau) to one already kept."""

    name = "deita"
    column = "evol_score"

    def __init__(self, judge: str | None = None, embedder: str | None = None, text: str = "conversation",
                 tau: float = 0.9, chat: bool = False, judge_max_length: int = JUDGE_MAX_LENGTH):
        self.judge = judge
        self.embedder = embedder
        self.text = text
        self.tau = tau
        self.chat = chat
        self.judge_max_length = judge_max_length

    def check_params(self) -> None:
        from cherrybench.embedders import TEXTS

        self.check_number("tau", 0, 1, low_open=True)
        self.check_choice("text", TEXTS)

    def requires(self):
        return [Deita(judge=self.judge, chat=self.chat, judge_max_length=self.judge_max_length)]

    def pick(self, ranked, k, ctx, excluded):
        vectors = normalize(embed(records_for(ranked, ctx, self.name), self.embedder, self.text, ctx))
        accepted = repr_filter(vectors, np.arange(len(ranked)), self.tau, k)
        ids = ranked["id"].iloc[accepted].tolist()
        # records after the last accepted one were never examined once the budget was full
        examined = int(accepted[-1]) + 1 if len(ids) == k and ids else len(ranked)
        excluded[f"cosine>{self.tau:g}"] += examined - len(ids)
        excluded["over_budget"] += len(ranked) - examined
        return ids

    def report_extra(self) -> dict:
        return {"embedder": self.embedder or "all-MiniLM-L6-v2"}
