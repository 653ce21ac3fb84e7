"""IterIT (static): the lazy-heap greedy equals a naive implementation of the SPEC
(a dense TF-IDF matrix, every diversity recomputed every step, columns decayed by
delta), the edge cases of delta, the selector's exclusions and report, and a real
run on 30 Alpaca records with the embedded model's IFD."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from cherrybench.records import Dataset, Record, Turn
from cherrybench.selectors import SELECTORS, Budget
from cherrybench.selectors.iterit import iterit_pick


def naive_iterit(responses, ifd, ids, k, delta):
    """The SPEC step by step: eligible IFD < 1; TF-IDF (1-3 grams, scikit-learn defaults)
    over the eligible responses; k times: D = row sums of the decayed matrix, take the
    highest IFD x D (ties by id), decay the pick's columns, drop it."""
    eligible = [i for i in range(len(ifd)) if not math.isnan(ifd[i]) and ifd[i] < 1]
    x = TfidfVectorizer(ngram_range=(1, 3)).fit_transform([responses[i] for i in eligible]).toarray()
    weight = np.ones(x.shape[1])
    left, picks = list(range(len(eligible))), []
    while left and len(picks) < k:
        def priority(j):
            return ifd[eligible[j]] * math.fsum((x[j] * weight).tolist())
        best = min(left, key=lambda j: (-priority(j), ids[eligible[j]]))
        picks.append(eligible[best])
        left.remove(best)
        weight[x[best] > 0] *= delta
    return picks


def random_pool(seed: int, n: int):
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "fast", "blue", "sky", "is", "red", "apple", "tree"]
    responses = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) for _ in range(n)]
    responses[4] = responses[9]  # identical responses tie when their IFDs do
    ifd = [rng.choice([0.3, 0.5, 0.5, 0.8, 0.95, 1.0, 1.4, float("nan")]) for _ in range(n)]
    ifd[4] = ifd[9] = 0.5
    ids = [f"r{i:02d}" for i in rng.sample(range(n), n)]
    return responses, ifd, ids


def records_of(responses, ids):
    return [Record(i, [Turn(f"Question {i}?", text)]) for i, text in zip(ids, responses)]


@pytest.mark.parametrize("delta", [0.1, 0.0, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_lazy_greedy_equals_naive(seed, delta):
    responses, ifd, ids = random_pool(seed, 45)
    picked, excluded = iterit_pick(records_of(responses, ids), ifd, 25, delta)
    assert picked == naive_iterit(responses, ifd, ids, 25, delta)
    n_eligible = sum(1 for v in ifd if v < 1)
    assert excluded["no_ifd"] == sum(1 for v in ifd if math.isnan(v))
    assert excluded["ifd>=1"] == sum(1 for v in ifd if v >= 1)
    assert excluded["over_budget"] == n_eligible - len(picked) == max(0, n_eligible - 25)


def test_delta_one_is_a_plain_ranking_by_ifd_times_row_sum():
    responses, ifd, ids = random_pool(7, 30)
    picked, _ = iterit_pick(records_of(responses, ids), ifd, 30, delta=1.0)
    eligible = [i for i in range(30) if ifd[i] < 1]
    x = TfidfVectorizer(ngram_range=(1, 3)).fit_transform([responses[i] for i in eligible])
    priority = {i: ifd[i] * math.fsum(x[j].data.tolist()) for j, i in enumerate(eligible)}
    assert picked == sorted(eligible, key=lambda i: (-priority[i], ids[i]))


def test_delta_zero_moves_away_from_a_picked_response():
    """Two near copies and one different response, IFD alike: without decay the copies
    come first and second; with delta = 0 the different one comes second."""
    responses = ["the cat sat on the mat today", "the cat sat on the mat", "dogs run quickly in parks"]
    ids = ["a", "b", "c"]
    ifd = [0.5, 0.5, 0.5]
    order_static, _ = iterit_pick(records_of(responses, ids), ifd, 3, delta=1.0)
    order_decay, _ = iterit_pick(records_of(responses, ids), ifd, 3, delta=0.0)
    assert order_static[:2] == [0, 1]
    assert order_decay[:2] == [0, 2]


def test_selector_reports_exclusions_by_reason():
    responses, ifd, ids = random_pool(3, 20)
    records = records_of(responses, ids)
    table = pd.DataFrame({"id": ids, "ifd": ifd,
                          "ifd_reason": [("answer_too_short" if math.isnan(v) else None) for v in ifd]})

    class Ctx:
        dataset = Dataset(records, None, "alpaca", "json")

    selection = SELECTORS.get("iterit")().select(table, Budget.parse("5"), Ctx())
    assert selection.ids == [ids[i] for i in naive_iterit(responses, ifd, ids, 5, 0.1)]
    excluded = selection.report["excluded"]
    assert excluded.get("no_ifd:answer_too_short", 0) == sum(1 for v in ifd if math.isnan(v))
    assert excluded.get("ifd>=1", 0) == sum(1 for v in ifd if v >= 1)
    assert "no_ifd" not in excluded
    assert selection.report["n_kept"] + selection.report["n_excluded"] == 20
    assert selection.report["n_candidates"] == sum(1 for v in ifd if v < 1)


def test_a_larger_budget_extends_the_same_picks():
    """What the iterative variant relies on: the first k of a k x u ranking are the k picks."""
    responses, ifd, ids = random_pool(11, 40)
    records = records_of(responses, ids)
    short, _ = iterit_pick(records, ifd, 6)
    long, _ = iterit_pick(records, ifd, 18)
    assert long[:6] == short


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="delta"):
        SELECTORS.get("iterit").from_options({"delta": 1.5})
    with pytest.raises(ValueError, match="parameter u"):
        SELECTORS.get("iterit").from_options({"u": 0})


@pytest.mark.slow
def test_iterit_on_30_alpaca_records(ctx):
    from alpaca30 import alpaca30
    from cherrybench.runners.select import run_selection

    dataset = alpaca30()
    selection, table = run_selection(dataset, SELECTORS.get("iterit")(max_length=128), Budget.parse("6"), ctx)
    responses = [r.output for r in dataset.records]
    ifd = table["ifd"].astype(float).tolist()
    assert selection.ids == [table["id"][i] for i in naive_iterit(responses, ifd, table["id"].tolist(), 6, 0.1)]
    report = selection.report
    assert report["n_kept"] == 6 and report["n_kept"] + report["n_excluded"] == 30
    assert report["excluded"]["no_ifd:answer_too_short"] == 1  # "Say yes." -> "Yes", one token
    assert all(table.set_index("id").loc[selection.ids, "ifd"] < 1)
