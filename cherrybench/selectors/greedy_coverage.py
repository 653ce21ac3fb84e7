"""The greedy loop IterIT and GraphFilter share: records are rows of a
non-negative sparse matrix, a record's value is its quality times the sum of its
row under column weights, and taking a record multiplies the weight of every
column it has by `delta` (IterIT's decay; 0 removes the column, GraphFilter's
edge removal). Values only fall, so a max-heap with lazy updates is exact: a
popped record is re-valued and taken only if its value is still current.

Each value is the correctly rounded sum of its terms (`math.fsum`), so equal
rows tie exactly, whatever their column order, and ties go to the lower
`tie_rank` (the record id's rank)."""

from __future__ import annotations

import heapq
import math

import numpy as np


def greedy_decayed_coverage(matrix, quality, k: int, delta: float, tie_rank,
                            stats: dict | None = None) -> tuple[list[int], list[float]]:
    """Up to `k` row indices in pick order, and each pick's value when taken.

    matrix: scipy sparse (n x m), non-negative; quality: n non-negative numbers;
    delta in [0, 1]; tie_rank: n distinct integers, lower wins a tie. `stats`, if
    given, gets `evaluations`: how many values were computed (n at the start, then
    one per pop)."""
    from scipy import sparse

    rows = sparse.csr_matrix(matrix, dtype=np.float64)
    rows.sum_duplicates()
    quality = np.asarray(quality, dtype=np.float64)
    n = rows.shape[0]
    if len(quality) != n or len(tie_rank) != n:
        raise ValueError(f"quality ({len(quality)}) and tie_rank ({len(tie_rank)}) must have one entry per row ({n})")
    if n and (not np.all(np.isfinite(quality)) or quality.min() < 0 or rows.data.size and rows.data.min() < 0):
        raise ValueError("greedy coverage needs finite, non-negative quality and matrix entries "
                         "(values must only fall)")
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must lie in [0, 1], got {delta!r}")
    indptr, indices, data = rows.indptr, rows.indices, rows.data
    weight = np.ones(rows.shape[1], dtype=np.float64)

    def value(i: int) -> float:
        lo, hi = indptr[i], indptr[i + 1]
        return float(quality[i]) * math.fsum((data[lo:hi] * weight[indices[lo:hi]]).tolist())

    heap = [(-value(i), int(tie_rank[i]), i) for i in range(n)]
    heapq.heapify(heap)
    picks: list[int] = []
    values: list[float] = []
    evaluations = n
    while heap and len(picks) < k:
        stored, rank, i = heapq.heappop(heap)
        current = value(i)
        evaluations += 1
        if current != -stored:  # stale: its columns decayed since it was valued
            heapq.heappush(heap, (-current, rank, i))
            continue
        picks.append(i)
        values.append(current)
        columns = indices[indptr[i]: indptr[i + 1]]
        weight[columns] *= delta
    if stats is not None:
        stats["evaluations"] = evaluations
    return picks, values


def tie_ranks(ids) -> np.ndarray:
    """Each id's position in sorted order (ids are distinct strings): ties go to the lower id."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(len(ids))
    return ranks
