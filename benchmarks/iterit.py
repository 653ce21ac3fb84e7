"""Selection time of static IterIT (the `iterit` selector: TF-IDF of the eligible
responses, then the lazy-heap greedy with column decay delta = 0.1) at 10k and
100k records, against a vectorized eager greedy that recomputes every diversity
with one sparse matrix-vector product per pick (time-boxed, extrapolated
linearly in picks). Same pools as benchmarks/graphfilter.py (real Alpaca-format
records, recombined beyond them); IFD is a seeded uniform stand-in on
0.3..1.2, so about 3 in 4 records are eligible (IFD < 1).

    python benchmarks/iterit.py                 # 10k (budget 1k) and 100k (budget 10k)
    python benchmarks/iterit.py --sizes 10000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from graphfilter import DEFAULT_DATA, Ctx, eager_greedy, pool  # benchmarks/graphfilter.py


def main() -> None:
    from cherrybench.selectors import SELECTORS, Budget
    from cherrybench.selectors.greedy_coverage import greedy_decayed_coverage, tie_ranks
    from cherrybench.selectors.iterit import response_text, tfidf_rows

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--budget", type=float, default=0.1, help="fraction of the pool (default 0.1)")
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--data", type=Path, action="append", help="Alpaca-format files (default: shared data)")
    parser.add_argument("--naive-seconds", type=float, default=20.0, help="time box of the eager greedy")
    args = parser.parse_args()
    for n in args.sizes:
        dataset = pool(n, args.data or DEFAULT_DATA)
        ifd = np.random.default_rng(1).uniform(0.3, 1.2, n)
        scores = pd.DataFrame({"id": [r.id for r in dataset.records], "ifd": ifd, "ifd_reason": None})
        start = time.perf_counter()
        selection = SELECTORS.get("iterit")(delta=args.delta).select(scores, Budget(args.budget), Ctx(dataset))
        total = time.perf_counter() - start
        k = len(selection.ids)
        eligible = np.flatnonzero(ifd < 1)
        start = time.perf_counter()
        matrix = tfidf_rows([response_text(dataset.records[i]) for i in eligible]).tocsr()
        build = time.perf_counter() - start
        quality, ranks, stats = ifd[eligible], tie_ranks([dataset.records[i].id for i in eligible]), {}
        start = time.perf_counter()
        picked, _ = greedy_decayed_coverage(matrix, quality, k, args.delta, ranks, stats)
        lazy = time.perf_counter() - start
        assert [dataset.records[eligible[i]].id for i in picked] == selection.ids
        picks, slow = eager_greedy(matrix, quality, k, args.delta, ranks, args.naive_seconds)
        print(f"iterit {n} records ({len(eligible)} eligible), budget {k}, delta {args.delta}: selector {total:.1f} s "
              f"in all; TF-IDF {build:.1f} s ({matrix.shape[1]} n-grams, {matrix.nnz} entries), lazy greedy "
              f"{lazy:.1f} s ({stats['evaluations']} evaluations); eager greedy {picks} picks in {slow:.1f} s "
              f"-> ~{slow * k / max(picks, 1):.0f} s extrapolated")

if __name__ == "__main__":
    main()
