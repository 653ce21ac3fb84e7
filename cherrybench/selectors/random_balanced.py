"""Balanced random baseline (the baseline large-scale selection studies find
hard to beat, Ivison et al. 2025): a seeded random sample with an equal share
of the budget for every group, so that a selector's gain over it is not a mere
change in the mix of sources or topics.

Groups (`by`): `field`, the value of a record field (e.g. Dolly's `category`,
or a `source` column of a merged file; a record without it is an error), or
`cluster`, KMeans (`n_clusters`, seeded, scikit-learn) over the embedder's
vectors of the record (`text`, MiniLM by default, cached).

Equal shares (ours): the budget is split evenly over the groups; a group
smaller than its share gives all its records and the rest is split again over
the others (water-filling), and what is left when fewer units remain than
groups goes one each to a seeded random choice of groups. Within a group the
records are a seeded uniform sample. The ids come back in input order.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, records_for, report


def equal_shares(sizes: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """How many records each group gives: as equal as the group sizes allow, summing to min(k, total)."""
    counts = [0] * len(sizes)
    remaining = min(k, sum(sizes))
    open_groups = [g for g, n in enumerate(sizes) if n > 0]
    while remaining > 0 and open_groups:
        share = remaining // len(open_groups)
        if share == 0:
            for g in rng.permutation(open_groups)[:remaining]:
                counts[int(g)] += 1
            break
        for g in open_groups:
            take = min(share, sizes[g] - counts[g])
            counts[g] += take
            remaining -= take
        open_groups = [g for g in open_groups if counts[g] < sizes[g]]
    return counts


def _label(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


@register_selector()
class RandomBalanced(Selector):
    """Random, with an equal share of the budget per group: a record field's values or embedding clusters."""

    name = "random_balanced"

    def __init__(self, by: str = "cluster", field: str = "source", n_clusters: int = 8,
                 embedder: str | None = None, text: str = "conversation", seed: int = 0):
        self.by = by
        self.field = field
        self.n_clusters = n_clusters
        self.embedder = embedder
        self.text = text
        self.seed = seed

    def check_params(self) -> None:
        from cherrybench.embedders import TEXTS

        self.check_choice("by", ("cluster", "field"))
        self.check_number("n_clusters", 1, integer=True)
        self.check_choice("text", TEXTS)
        self.check_number("seed", 0, integer=True)
        if not isinstance(self.field, str) or not self.field:
            raise ValueError(f"{self.who}: parameter field must be a record field name, got {self.field!r}")

    def selection_inputs(self, records: list) -> object:
        """The grouping field's values (a raw field, outside the records' content hash)."""
        if self.by != "field":
            return None
        return [[r.id, _label(r.raw[self.field]) if self.field in r.raw else None] for r in records]

    def groups(self, scores, ctx) -> list[str]:
        """Each row's group label."""
        records = records_for(scores, ctx, self.name)
        if self.by == "field":
            labels = []
            for record in records:
                if self.field not in record.raw:
                    raise ValueError(f"selector {self.name!r} (by=field): record {record.id!r} "
                                     f"({record.where or 'no location'}) has no field {self.field!r}")
                labels.append(_label(record.raw[self.field]))
            return labels
        if self.n_clusters > len(records):
            raise ValueError(f"selector {self.name!r}: n_clusters {self.n_clusters} exceeds the {len(records)} "
                             "records; give --param n_clusters=N with a smaller N")
        from sklearn.cluster import KMeans

        from cherrybench.embedders import embed

        vectors = embed(records, self.embedder, self.text, ctx)
        found = KMeans(n_clusters=self.n_clusters, n_init=10, random_state=self.seed).fit_predict(vectors)
        return [f"cluster{int(c)}" for c in found]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        labels = np.asarray(self.groups(scores, ctx), dtype=object)
        names = sorted(set(labels))
        members = [np.flatnonzero(labels == name) for name in names]
        rng = np.random.default_rng(self.seed)
        counts = equal_shares([len(m) for m in members], budget.resolve(len(scores)), rng)
        picked = np.sort(np.concatenate([rng.choice(m, size=c, replace=False) for m, c in zip(members, counts)]))
        picked = picked.astype(int)
        ids = scores["id"].iloc[picked].tolist()
        groups = {name: {"size": int(len(m)), "kept": int(c)} for name, m, c in zip(names, members, counts)}
        return Selection(ids, report(self, scores, ids, Counter({"not_sampled": len(scores) - len(ids)}), budget,
                                     extra={"groups": groups, "n_groups": len(names)}))
