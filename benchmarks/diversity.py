"""Times of the vectorized diversity selectors against a naive per-record
Python loop doing the same work, on random unit vectors (384 dims, MiniLM's).

    python benchmarks/diversity.py                # full sizes: deita 100k/10k, k-center 50k/1000
    python benchmarks/diversity.py --scale 0.1    # quicker

The repr-filter data is clustered (many near-duplicates get rejected) so the
filter does real work; the naive loops run on a slice and are extrapolated
linearly in the number of records examined, which favours them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cherrybench.diversity import facility_location, kcenter_greedy, normalize, repr_filter


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(1, n // 50), dim))
    spread = rng.uniform(0.2, 0.5, size=len(centers))  # tight clusters collapse, loose ones survive
    member = rng.integers(0, len(centers), size=n)
    points = centers[member] + spread[member, None] * rng.normal(size=(n, dim))
    return normalize(points.astype(np.float32))


def naive_repr_filter(unit, tau, budget, limit_seconds):
    """One candidate at a time against every accepted vector, in Python."""
    accepted, start, examined = [], time.perf_counter(), 0
    for i in range(len(unit)):
        if len(accepted) == budget or time.perf_counter() - start > limit_seconds:
            break
        examined += 1
        if all(float(unit[i] @ unit[j]) <= tau for j in accepted):
            accepted.append(i)
    return accepted, examined, time.perf_counter() - start


def naive_kcenter(x, k, limit_seconds):
    """Per pick, the distance of every record to every chosen center, in Python loops over records."""
    chosen, start = [0], time.perf_counter()
    while len(chosen) < k and time.perf_counter() - start < limit_seconds:
        best, best_d = None, -1.0
        for i in range(len(x)):
            d = min(float(np.sum((x[i] - x[c]) ** 2)) for c in chosen)
            if d > best_d and i not in chosen:
                best, best_d = i, d
        chosen.append(best)
    return chosen, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (default 1)")
    parser.add_argument("--naive-seconds", type=float, default=20.0, help="time box for each naive loop")
    args = parser.parse_args()
    dim = 384

    n, budget = int(100_000 * args.scale), int(10_000 * args.scale)
    unit = clustered(n, dim, 0)
    start = time.perf_counter()
    accepted = repr_filter(unit, np.arange(n), 0.9, budget)
    fast = time.perf_counter() - start
    examined_fast = accepted[-1] + 1 if len(accepted) == budget else n
    _, examined, slow = naive_repr_filter(unit, 0.9, budget, args.naive_seconds)
    print(f"deita repr filter  {n} x {dim}, budget {budget}, tau 0.9: vectorized {fast:.2f} s "
          f"(kept {len(accepted)}, examined {examined_fast}); naive loop {slow:.1f} s for {examined} examined "
          f"-> ~{slow * examined_fast / max(examined, 1):.0f} s extrapolated")

    n, k = int(50_000 * args.scale), int(1_000 * args.scale)
    x = np.random.default_rng(1).normal(size=(n, dim)).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        start = time.perf_counter()
        kcenter_greedy(x, k, seed=0, metric=metric)
        print(f"k-center greedy    {n} x {dim}, k {k}, {metric}: vectorized {time.perf_counter() - start:.2f} s")
    chosen, slow = naive_kcenter(x, k, args.naive_seconds)
    # pick p costs about p x n distance evaluations: the total grows as k^2 / 2
    print(f"k-center naive loop: {len(chosen)} centers in {slow:.1f} s "
          f"-> ~{slow * (k / max(len(chosen), 1)) ** 2:.0f} s extrapolated to k {k}")

    n, k = int(5_000 * args.scale), int(500 * args.scale)
    start = time.perf_counter()
    facility_location(clustered(n, dim, 2), k)
    print(f"facility location  {n} x {dim}, k {k}, lazy greedy: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
