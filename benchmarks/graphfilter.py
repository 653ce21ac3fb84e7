"""Selection time of GraphFilter (the `graphfilter` selector: n-gram graph of the
instructions, then the lazy-heap greedy) at 10k and 100k records, against a
vectorized eager greedy that recomputes every priority with one sparse
matrix-vector product per pick (time-boxed and extrapolated linearly in picks).

    python benchmarks/graphfilter.py                 # 10k (budget 1k) and 100k (budget 10k)
    python benchmarks/graphfilter.py --sizes 10000   # one size

Records: the instructions (and inputs, responses) of the Alpaca-format files in
`../shared/data/alpaca/` (`--data` to change): the first 10k as they are; larger
pools are recombined from them (seeded: the first half of one record's words, the
second half of another's), which keeps real n-gram statistics with many repeats.
Quality is a seeded uniform stand-in for IFD-PPL: the time of scoring is not
selection time (see score_throughput.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cherrybench.records import Dataset, Record, Turn, load_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = [REPO.parent / "shared/data/alpaca" / name
                for name in ("alpaca_random_9k.json", "dolly_alpagasus_3k.json", "lima_1k_fastchat.json")]


def recombine(a: str, b: str) -> str:
    wa, wb = a.split(), b.split()
    return " ".join(wa[: len(wa) // 2] + wb[len(wb) // 2:])


def pool(n: int, data: list[Path], seed: int = 0) -> Dataset:
    """n single-turn records: the real ones first, then seeded recombinations of them."""
    real = [r.turns[0] for path in data if path.is_file() for r in load_dataset(str(path)).records]
    if not real:
        raise SystemExit(f"no records in {', '.join(map(str, data))}; give --data FILE")
    turns = real[:n]
    rng = np.random.default_rng(seed)
    while len(turns) < n:
        a, b = rng.integers(len(real), size=2)
        turns.append(Turn(recombine(real[a].instruction, real[b].instruction),
                          recombine(real[a].output, real[b].output), recombine(real[a].input, real[b].input)))
    return Dataset([Record(str(i), [t]) for i, t in enumerate(turns)], None, "alpaca", "json")


class Ctx:
    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.progress = False


def eager_greedy(graph, quality, k: int, delta: float, tie_rank, seconds: float) -> tuple[int, float]:
    """Every pick: all priorities from scratch (graph @ weights), the best (ties by rank),
    decay its columns; stops after `seconds`. Returns (picks made, seconds)."""
    weight = np.ones(graph.shape[1])
    taken = np.zeros(graph.shape[0], dtype=bool)
    start = time.perf_counter()
    picks = 0
    while picks < k and time.perf_counter() - start < seconds:
        priority = np.where(taken, -1.0, quality * (graph @ weight))
        best = np.flatnonzero(priority == priority.max())
        i = best[np.argmin(tie_rank[best])]
        taken[i] = True
        weight[graph.indices[graph.indptr[i]: graph.indptr[i + 1]]] *= delta
        picks += 1
    return picks, time.perf_counter() - start


def main() -> None:
    from cherrybench.selectors import SELECTORS, Budget
    from cherrybench.selectors.graphfilter import instruction_text, ngram_graph
    from cherrybench.selectors.greedy_coverage import greedy_decayed_coverage, tie_ranks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--budget", type=float, default=0.1, help="fraction of the pool (default 0.1)")
    parser.add_argument("--data", type=Path, action="append", help="Alpaca-format files (default: shared data)")
    parser.add_argument("--naive-seconds", type=float, default=20.0, help="time box of the eager greedy")
    args = parser.parse_args()
    for n in args.sizes:
        dataset = pool(n, args.data or DEFAULT_DATA)
        rng = np.random.default_rng(1)
        scores = pd.DataFrame({"id": [r.id for r in dataset.records], "ifd_ppl": rng.uniform(0.3, 1.2, n),
                               "ifd_reason": None})
        start = time.perf_counter()
        selection = SELECTORS.get("graphfilter")().select(scores, Budget(args.budget), Ctx(dataset))
        total = time.perf_counter() - start
        k = len(selection.ids)
        start = time.perf_counter()
        graph, _ = ngram_graph([instruction_text(r) for r in dataset.records])
        build = time.perf_counter() - start
        quality, ranks, stats = scores["ifd_ppl"].to_numpy(), tie_ranks(scores["id"].tolist()), {}
        start = time.perf_counter()
        picked, _ = greedy_decayed_coverage(graph, quality, k, 0.0, ranks, stats)
        lazy = time.perf_counter() - start
        assert [str(i) for i in picked] == selection.ids
        picks, slow = eager_greedy(graph, quality, k, 0.0, ranks, args.naive_seconds)
        print(f"graphfilter {n} records, budget {k}: selector {total:.1f} s in all; graph {build:.1f} s "
              f"({selection.report['n_ngrams']} n-grams, {graph.nnz} edges), lazy greedy {lazy:.1f} s "
              f"({stats['evaluations']} evaluations); eager greedy {picks} picks in {slow:.1f} s "
              f"-> ~{slow * k / max(picks, 1):.0f} s extrapolated")

if __name__ == "__main__":
    main()
