"""KNN-k: a record's mean distance to its k nearest neighbours in a sentence
embedding space, over the whole pool (InstructMining's KNN-6). A pool-level
metric: the same record scores differently in another pool.

Neighbours come from scikit-learn's NearestNeighbors; the record itself is
never its own neighbour, but an exact duplicate is (distance 0). Records with
identical content are scored once (the scoring core collapses them), so the
pool is the set of distinct records.
"""

from __future__ import annotations

import numpy as np

from cherrybench.metrics import register_metric
from cherrybench.metrics.base import Metric


@register_metric(aliases=("knn6", "knn_distance"))
class KNN(Metric):
    """Mean distance to the k nearest neighbours in the pool (all-MiniLM-L6-v2 by default)."""

    name = "knn"
    columns = {"knn_distance": "higher"}
    needs = ("embedder",)
    per_record = False
    volatile = ("n_jobs",)

    def __init__(self, k: int = 6, embedder: str | None = None, text: str = "conversation",
                 distance: str = "euclidean", n_jobs: int | None = None):
        self.k = k
        self.embedder = embedder
        self.text = text
        self.distance = distance
        self.n_jobs = n_jobs

    def check_params(self) -> None:
        from cherrybench.embedders import TEXTS

        self.check_number("k", 1, integer=True)
        self.check_choice("text", TEXTS)

    def fingerprints(self, ctx) -> dict:
        from cherrybench.embedders import resolve_embedder

        return {"embedder": resolve_embedder(self.embedder).fingerprint(ctx)}

    def compute(self, records, ctx):
        from sklearn.neighbors import NearestNeighbors

        from cherrybench.embedders import embed

        self.check_params()  # also run by from_options, before any scoring
        column = "knn_distance"
        if len(records) <= self.k:
            return self.frame([self.nan_row(f"pool_smaller_than_{self.k + 1}")] * len(records))
        vectors = embed(records, self.embedder, self.text, ctx).astype(np.float64)
        index = NearestNeighbors(n_neighbors=self.k, metric=self.distance, n_jobs=self.n_jobs).fit(vectors)
        distances, _ = index.kneighbors()  # no query: each point's neighbours exclude itself
        return self.frame([{column: float(d.mean()), self.reason_column: None} for d in distances])
