"""k-center greedy equals a brute-force reference (ties included), and the
selector runs on real records with the real MiniLM embedder."""

import numpy as np
import pytest

from cherrybench.diversity import kcenter_greedy
from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners.select import run_selection
from cherrybench.selectors import SELECTORS, Budget


def brute_kcenter(points, k, first, metric):
    """Literal definition: distances recomputed from scratch for every candidate and every pick."""
    pts = [np.asarray(p, dtype=np.float64) for p in points]
    if metric == "cosine":
        pts = [p / np.linalg.norm(p) for p in pts]

    def dist(a, b):
        if metric == "cosine":
            return 1.0 - float(np.dot(a, b))
        return float(np.sqrt(np.sum((a - b) ** 2)))

    chosen = [first]
    while len(chosen) < min(k, len(pts)):
        best, best_d = None, -1.0
        for i in range(len(pts)):
            if i in chosen:
                continue
            d = min(dist(pts[i], pts[c]) for c in chosen)
            if d > best_d:  # strict: ties keep the lowest index
                best, best_d = i, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kcenter_matches_brute_force_on_random_data(seed, metric):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 8))
    x = np.concatenate([x, x[:10]])  # duplicated points
    first = int(np.random.default_rng(seed).integers(len(x)))
    assert kcenter_greedy(x, 15, seed=seed, metric=metric) == brute_kcenter(x, 15, first, metric)


@pytest.mark.parametrize("seed", [0, 5])
def test_kcenter_ties_on_an_integer_grid(seed):
    """Small integer coordinates give exactly equal distances: ties must go to the lowest index."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(40, 3)).astype(np.float64)  # many duplicates and equal distances
    first = int(np.random.default_rng(seed).integers(len(x)))
    got = kcenter_greedy(x, 12, seed=seed)
    assert got == brute_kcenter(x, 12, first, "euclidean")
    assert len(set(got)) == len(got)


def test_kcenter_float32_matches_reference_and_seed_matters():
    x = np.random.default_rng(7).normal(size=(200, 16)).astype(np.float32)
    first = int(np.random.default_rng(3).integers(len(x)))
    assert kcenter_greedy(x, 20, seed=3) == brute_kcenter(x, 20, first, "euclidean")
    assert kcenter_greedy(x, 20, seed=3) != kcenter_greedy(x, 20, seed=4)
    assert len(kcenter_greedy(x[:5], 10)) == 5


@pytest.mark.slow
def test_kcenter_selector_on_real_records(ctx):
    qs = ["How do I bake bread?", "How do I bake a loaf of bread?", "What is the capital of Peru?",
          "Explain quantum entanglement.", "Write a poem about autumn leaves.", "How can I bake bread at home?"]
    records = [Record(str(i), [Turn(q, "ok")]) for i, q in enumerate(qs)]
    dataset = Dataset(records, None, "alpaca", "json")
    selector = SELECTORS.get("kcenter")(seed=0)
    selection, _ = run_selection(dataset, selector, Budget.parse("3"), ctx)
    assert len(selection.ids) == 3 and selection.report["excluded"] == {"over_budget": 3}
    breads = {"0", "1", "5"}
    assert len(breads & set(selection.ids)) <= 1  # near-duplicate questions cover each other
