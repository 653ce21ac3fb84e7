"""Superfiltering.D (Li et al. 2024): the top records by IFD from a small scorer,
then facility location (lazy greedy) over all-MiniLM-L6-v2 embeddings of
instruction + input + output picks a diverse subset of them (SPEC)."""

from __future__ import annotations

import math

from cherrybench.diversity import facility_location, normalize
from cherrybench.embedders import embed
from cherrybench.metrics.ifd import IFD
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import (Budget, Selection, Selector, nan_exclusions, rank, records_for, report,
                                        require_columns)


@register_selector()
class SuperfilteringD(Selector):
    """Superfiltering.D: top candidate_factor x budget by IFD-PPL (< 1), then facility location."""

    name = "superfiltering_d"

    def __init__(self, model: str | None = None, prompt: str = "plain", max_length: int = 512,
                 column: str = "ifd_ppl", candidate_factor: float = 2.0, embedder: str | None = None,
                 text: str = "conversation"):
        self.model = model
        self.prompt = prompt
        self.max_length = max_length
        self.column = column
        self.candidate_factor = candidate_factor  # ours: how many IFD-top records facility location sees
        self.embedder = embedder
        self.text = text

    def requires(self):
        return [IFD(model=self.model, prompt=self.prompt, max_length=self.max_length)]

    def check_params(self) -> None:
        from cherrybench.embedders import TEXTS

        self.check_number("candidate_factor", 1)
        self.check_choice("text", TEXTS)

    def select(self, scores, budget: Budget, ctx) -> Selection:
        self.check_params()  # also run by from_options, before any scoring
        require_columns(scores, [self.column], self.name)
        ok, excluded = nan_exclusions(scores, self.column)
        too_high = ok & (scores[self.column].astype(float) >= 1.0)
        excluded[f"{self.column}>=1"] += int(too_high.sum())
        ok &= ~too_high
        k = budget.resolve(len(scores))
        ranked = rank(scores[ok], self.column, descending=True)
        candidates = ranked.head(math.ceil(self.candidate_factor * k))
        excluded[f"below_top_{self.column}"] += len(ranked) - len(candidates)
        vectors = normalize(embed(records_for(candidates, ctx, self.name), self.embedder, self.text, ctx))
        picked = facility_location(vectors, k)
        ids = candidates["id"].iloc[picked].tolist()
        excluded["facility_location"] += len(candidates) - len(ids)
        return Selection(ids, report(self, scores, ids, excluded, budget, self.column,
                                     extra={"n_candidates": len(candidates),
                                            "embedder": self.embedder or "all-MiniLM-L6-v2"}))
