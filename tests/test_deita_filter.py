"""Deita's repr filter equals a brute-force reference (several seeds, duplicated
points, equal evol_scores), and the selector runs on real records with the real
judge and embedder."""

import numpy as np
import pandas as pd
import pytest

from cherrybench.diversity import normalize, repr_filter
from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners.select import run_selection
from cherrybench.selectors import SELECTORS, Budget
from cherrybench.selectors.base import rank


def brute_repr_filter(vectors, scores, ids, tau, budget):
    """Sort by score desc (ties by id), then compare each candidate with every accepted one."""
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    accepted = []
    for i in order:
        if len(accepted) == budget:
            break
        a = vectors[i] / np.linalg.norm(vectors[i])
        if all(float(np.dot(a, vectors[j] / np.linalg.norm(vectors[j]))) <= tau for j in accepted):
            accepted.append(i)
    return [ids[i] for i in accepted]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("chunk", [3, 64, 1024])
def test_repr_filter_matches_brute_force(seed, chunk):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 5))
    x = centers[rng.integers(0, 6, size=120)] + 0.3 * rng.normal(size=(120, 5))  # clusters: many rejections
    x[100:110] = x[:10]  # exact duplicates
    scores = rng.integers(0, 8, size=120).astype(float)  # many equal scores
    ids = [f"r{i:03d}" for i in rng.permutation(120)]
    table = pd.DataFrame({"id": ids, "evol_score": scores})
    ranked = rank(table, "evol_score", descending=True)
    order = ranked.index.to_numpy()
    for tau, budget in [(0.9, 30), (0.5, 100), (0.99, 10)]:
        got = [ids[i] for i in repr_filter(normalize(x), order, tau, budget, chunk=chunk)]
        assert got == brute_repr_filter(x, scores, ids, tau, budget)


def test_repr_filter_rejects_duplicates_and_stops_at_budget():
    x = np.repeat(np.eye(4), 3, axis=0)  # four directions, three copies each
    assert repr_filter(x, np.arange(12), 0.9, 10) == [0, 3, 6, 9]
    assert repr_filter(x, np.arange(12), 1.0, 5) == [0, 1, 2, 3, 4]  # similarity 1 <= tau 1 is accepted


@pytest.mark.slow
def test_deita_selector_on_real_records(ctx):
    pairs = [("How do I bake bread?", "Mix flour, water, yeast and salt, knead, let it rise, and bake at 220C."),
             ("How do I bake bread?", "Mix flour, water, yeast and salt, knead, let it rise, and bake at 220C."),
             ("What is the capital of Peru?", "Lima."),
             ("Write a haiku about autumn.", "Red leaves drift and fall\ncold wind hums through empty trees\nthe year exhales slow"),
             ("Explain what a hash table is.", "A hash table maps keys to values using a hash function to pick a bucket.")]
    records = [Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate(pairs)]
    records.append(Record("mt", [Turn("Hi, who are you?", "I am an assistant."), Turn("Can you count to 3?", "1, 2, 3.")]))
    dataset = Dataset(records, None, "alpaca", "json")
    selection, table = run_selection(dataset, SELECTORS.get("deita")(), Budget.parse("5"), ctx)
    assert not {"0", "1"} <= set(selection.ids)  # identical records: at most one survives tau 0.9
    ranked = rank(table, "evol_score", descending=True)["id"].tolist()
    assert selection.ids == [i for i in ranked if i in selection.ids]  # kept in evol_score order
    assert selection.report["excluded"].get("cosine>0.9", 0) >= (1 if len(selection.ids) == 5 else 0)
    assert selection.report["n_kept"] + selection.report["n_excluded"] == 6
