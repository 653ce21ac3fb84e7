"""Drawing InstructMining's training subsets from one or several source files.

Subset i is drawn from its own generator seeded by (seed, i), so subset i is
the same whatever the number of subsets asked for: asking for more later, or
resuming, reuses the subsets already trained. Three ways to mix sources:

- `pooled`: n records uniformly from all sources together;
- `stratified`: an equal share from each source (the remainder to sources in a
  seeded order);
- `dirichlet`: each subset draws its own source proportions from a flat
  Dirichlet, so subsets range from one source to an even blend; this spreads
  the subsets' quality the way the paper's mixtures of data sets do (ours).
"""

from __future__ import annotations

import numpy as np

MIXES = ("pooled", "stratified", "dirichlet")


def _counts(rng: np.random.Generator, sizes: list[int], n: int, mix: str) -> list[int]:
    k = len(sizes)
    if mix == "stratified":
        counts = [n // k] * k
        for j in rng.permutation(k)[: n % k]:
            counts[j] += 1
    elif mix == "dirichlet":
        share = rng.dirichlet(np.ones(k)) * n
        counts = np.floor(share).astype(int)
        for j in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
            counts[j] += 1
        counts = counts.tolist()
    else:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    # a source too small for its share gives the rest to the others, in order
    counts = [min(c, s) for c, s in zip(counts, sizes)]
    short = n - sum(counts)
    for j in range(k):
        extra = min(short, sizes[j] - counts[j])
        counts[j] += extra
        short -= extra
    return counts


def draw_subsets(sources: dict[str, list[str]], n_subsets: int, size: int, seed: int = 0,
                 mix: str = "pooled") -> list[list[str]]:
    """`n_subsets` lists of `size` distinct ids each (in source order), from `sources`
    (name -> ids); the same (seed, i) always gives the same subset i."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    names = list(sources)
    total = sum(len(v) for v in sources.values())
    if size < 1 or size > total:
        raise ValueError(f"subset size must be between 1 and the pool's {total} records, got {size}")
    subsets = []
    for i in range(n_subsets):
        rng = np.random.default_rng([seed, i])
        if mix == "pooled" or len(names) == 1:
            everything = [x for name in names for x in sources[name]]
            picked = sorted(rng.choice(len(everything), size=size, replace=False).tolist())
            subsets.append([everything[j] for j in picked])
            continue
        counts = _counts(rng, [len(sources[name]) for name in names], size, mix)
        subset = []
        for name, count in zip(names, counts):
            picked = sorted(rng.choice(len(sources[name]), size=count, replace=False).tolist())
            subset += [sources[name][j] for j in picked]
        subsets.append(subset)
    return subsets
