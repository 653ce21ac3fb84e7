"""KNN-6 against brute force: real all-MiniLM-L6-v2 vectors (encoded here
directly with sentence-transformers), all pairwise distances, the 6 smallest
to other records averaged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cherrybench.embedders import minilm_dir
from cherrybench.metrics.knn import KNN
from cherrybench.records import Dataset, Record, Turn
from cherrybench.scoring import score

pytestmark = pytest.mark.slow  # every test here loads a real model

TEXTS = [
    ("Name a primary colour.", "Red."), ("What is 2 + 2?", "4"), ("Translate 'hello' to French.", "Bonjour."),
    ("Give a synonym of happy.", "Joyful."), ("Write a haiku about rain.", "Soft rain on the roof, / ..."),
    ("What is the capital of Italy?", "Rome."), ("Name a mammal that flies.", "The bat."),
    ("Sort 3, 1, 2.", "1, 2, 3"), ("Who wrote Hamlet?", "William Shakespeare."),
    ("Define entropy in one line.", "A measure of disorder."), ("Name a prime above 10.", "11"),
]


def brute_force(texts, k):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    vectors = model.encode([f"{q}\n{a}" for q, a in texts], convert_to_numpy=True).astype(np.float64)
    out = []
    for i, v in enumerate(vectors):
        distances = sorted(float(np.sqrt(np.sum((v - w) ** 2))) for j, w in enumerate(vectors) if j != i)
        out.append(sum(distances[:k]) / k)
    return np.array(out)


def test_knn6_matches_brute_force_over_the_pool(ctx):
    records = [Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate(TEXTS)]
    table = score(Dataset(records, None, "alpaca", "json"), [KNN()], ctx, use_cache=False)
    np.testing.assert_allclose(table["knn_distance"].to_numpy(), brute_force(TEXTS, 6), rtol=1e-4)
    assert table["knn_reason"].isna().all()
    # pool-level: the same record among fewer neighbours scores differently
    smaller = score(Dataset(records[:8], None, "alpaca", "json"), [KNN()], ctx, use_cache=False)
    np.testing.assert_allclose(smaller["knn_distance"].to_numpy(), brute_force(TEXTS[:8], 6), rtol=1e-4)
    assert not np.allclose(smaller["knn_distance"].to_numpy(), table["knn_distance"].to_numpy()[:8])


def test_duplicates_collapse_and_small_pools_are_nan(ctx):
    records = [Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate(TEXTS[:8])]
    records.append(Record("dup", [Turn(*TEXTS[0])]))
    table = score(Dataset(records, None, "alpaca", "json"), [KNN(k=3)], ctx, use_cache=False)
    # the duplicate is one record of the pool, scored once: it is not its own neighbour
    assert table["knn_distance"].iloc[-1] == table["knn_distance"].iloc[0]
    np.testing.assert_allclose(table["knn_distance"].to_numpy()[:8], brute_force(TEXTS[:8], 3), rtol=1e-4)
    tiny = KNN().compute(records[:6], ctx)
    assert all(math.isnan(v) for v in tiny["knn_distance"])
    assert set(tiny["knn_reason"]) == {"pool_smaller_than_7"}
    with pytest.raises(ValueError, match="k must be"):
        KNN(k=0).compute(records, ctx)
