"""GraphFilter: the lazy-heap greedy equals a brute-force greedy written from the
SPEC (its own n-grams, document frequencies and coverage, every priority
recomputed every step), a hand-worked graph, Q = 1 is greedy set cover, and a
real run on 30 Alpaca records with the embedded model's IFD-PPL."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pandas as pd
import pytest

from cherrybench.records import Dataset, Record, Turn
from cherrybench.selectors import SELECTORS, Budget
from cherrybench.selectors.graphfilter import graphfilter_greedy

WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def ngrams(text: str) -> list[str]:
    words = WORD.findall(text.lower())
    return [" ".join(words[i: i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)]


def brute_force(texts, quality, ids, k, candidates=None):
    """Every step: each remaining record's priority from scratch over the n-grams nobody
    picked yet; the highest wins, ties by id. N and df count every text; only `candidates`
    (default all) can be picked."""
    grams = [ngrams(t) for t in texts]
    df = {}
    for g in grams:
        for v in set(g):
            df[v] = df.get(v, 0) + 1
    n = len(texts)
    covered, left, picks = set(), list(range(n) if candidates is None else candidates), []
    while left and len(picks) < k:
        def priority(i):
            counts = {}
            for v in grams[i]:
                counts[v] = counts.get(v, 0) + 1
            return quality[i] * math.fsum(c * math.log(n / df[v]) for v, c in counts.items() if v not in covered)
        best = min(left, key=lambda i: (-priority(i), ids[i]))
        picks.append(best)
        left.remove(best)
        covered |= set(grams[best])
    return picks


def random_pool(seed: int, n: int):
    rng = random.Random(seed)
    words = ["write", "poem", "about", "the", "sea", "list", "three", "colours", "explain", "why", "sky", "blue"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 7))) for _ in range(n)]
    texts[3] = texts[5]  # identical instructions tie exactly
    texts[7] = "?!"  # no word at all: diversity 0
    quality = [rng.choice([0.5, 1.0, 1.0, 2.0, 0.0]) for _ in range(n)]
    ids = [f"r{i:02d}" for i in rng.sample(range(n), n)]  # ids not in input order
    return texts, quality, ids


@pytest.mark.parametrize("seed", range(6))
def test_lazy_heap_equals_brute_force(seed):
    texts, quality, ids = random_pool(seed, 40)
    picks, values, _ = graphfilter_greedy(texts, quality, 30, ids)
    assert picks == brute_force(texts, quality, ids, 30)
    assert values == sorted(values, reverse=True)  # priorities only fall


def test_hand_worked_graph():
    """N = 4; n-grams in two records weigh log 2, in one record log 4 = 2 log 2.
    D: r0 = 3 log2, r1 = 8 log2, r2 = log2, r3 = 4 log2."""
    texts = ["alpha beta", "alpha beta gamma", "delta", "gamma delta"]
    ids = ["r0", "r1", "r2", "r3"]
    picks, values, n_grams = graphfilter_greedy(texts, [1, 1, 1, 1], 4, ids)
    assert n_grams == 8
    # r1 (8 log2); then r3 keeps delta + "gamma delta" (3 log2); then all is covered: ties by id
    assert picks == [1, 3, 0, 2]
    assert values == pytest.approx([8 * math.log(2), 3 * math.log(2), 0, 0])
    # quality reorders: r3 = 3 x 4 log2 first, then r1 = 1 x 7 log2 (gamma is covered) over r0 = 2 x 3 log2
    picks, values, _ = graphfilter_greedy(texts, [2, 1, 1, 3], 4, ids)
    assert picks == [3, 1, 0, 2]
    assert values == pytest.approx([12 * math.log(2), 7 * math.log(2), 0, 0])


def greedy_set_cover(sets: list[set], weight: dict, ids):
    """Textbook greedy weighted set cover: the set with the largest weight of uncovered
    elements, until everything is covered."""
    covered, order = set(), []
    universe = set().union(*sets)
    while covered != universe:
        best = min((i for i in range(len(sets)) if i not in order),
                   key=lambda i: (-sum(weight[v] for v in sets[i] - covered), ids[i]))
        order.append(best)
        covered |= sets[best]
    return order


def test_quality_one_is_greedy_set_cover():
    # each word once per instruction and no shared bigram: the weights are the n-grams' idf
    texts = ["red green", "blue", "green blue yellow", "red", "yellow purple", "purple", "orange"]
    ids = [f"c{i}" for i in range(len(texts))]
    sets = [set(ngrams(t)) for t in texts]
    df = {v: sum(v in s for s in sets) for v in set().union(*sets)}
    weight = {v: math.log(len(texts) / d) for v, d in df.items()}
    cover = greedy_set_cover(sets, weight, ids)
    picks, values, _ = graphfilter_greedy(texts, [1.0] * len(texts), len(texts), ids)
    assert picks[: len(cover)] == cover
    assert set().union(*(sets[i] for i in cover)) == set().union(*sets)
    assert all(v == 0 for v in values[len(cover):])  # after the cover nothing is left to gain


def selection_on(texts, quality, budget, column="ifd_ppl", **params):
    records = [Record(f"r{i}", [Turn(t, "An answer.")]) for i, t in enumerate(texts)]
    table = pd.DataFrame({"id": [r.id for r in records], column: quality,
                          f"{column}_reason": [None if np.isfinite(q) else "answer_too_short" for q in quality]})

    class Ctx:
        dataset = Dataset(records, None, "alpaca", "json")

    selector = SELECTORS.get("graphfilter")(column=column, **params)
    return selector.select(table, Budget.parse(str(budget)), Ctx())


def test_selector_excludes_unscored_and_negative_quality_and_reports_them():
    texts = ["alpha beta", "alpha beta gamma", "delta", "gamma delta", "epsilon"]
    selection = selection_on(texts, [1.0, np.nan, 1.0, -0.5, 2.0], 4)
    assert selection.report["excluded"] == {"no_ifd_ppl:answer_too_short": 1, "ifd_ppl<0": 1}
    # N = 5 and df over the pool, the excluded records included: alpha, beta and "alpha beta" are in
    # r0 and r1, delta in r2 and r3: r0 1 x 3 log(5/2) = 2.75, r4 2 x log 5 = 3.22, r2 1 x log(5/2) = 0.92
    assert selection.ids == ["r4", "r0", "r2"]
    assert selection.report["n_kept"] + selection.report["n_excluded"] == 5


def test_null_column_is_quality_one_and_needs_no_score():
    selector = SELECTORS.get("graphfilter")(column=None)
    assert selector.requires() == []
    texts = ["alpha beta", "alpha beta gamma", "delta", "gamma delta"]
    records = [Record(f"r{i}", [Turn(t, "An answer.")]) for i, t in enumerate(texts)]

    class Ctx:
        dataset = Dataset(records, None, "alpaca", "json")

    selection = selector.select(pd.DataFrame({"id": [r.id for r in records]}), Budget.parse("2"), Ctx())
    assert selection.ids == ["r1", "r3"] and selection.report["excluded"] == {"over_budget": 2}


@pytest.mark.slow
def test_graphfilter_on_30_alpaca_records(ctx):
    from alpaca30 import alpaca30
    from cherrybench.runners.select import run_selection

    dataset = alpaca30()
    selection, table = run_selection(dataset, SELECTORS.get("graphfilter")(max_length=128), Budget.parse("6"), ctx)
    usable = table["ifd_ppl"].notna()
    texts = [("\n".join(t.query for t in r.turns)) for r in dataset.records]
    expected = brute_force(texts, table["ifd_ppl"].tolist(), table["id"].tolist(), 6,
                           np.flatnonzero(usable).tolist())  # N and df over all 30, picks among the scored
    assert selection.ids == [table["id"].tolist()[i] for i in expected]
    report = selection.report
    assert report["n_kept"] == 6 and report["n_input"] == 30
    assert report["n_kept"] + report["n_excluded"] == 30 and report["n_ngrams"] > 100


def test_n_and_df_count_the_whole_pool_when_some_records_cannot_be_picked():
    """SPEC: log(N / df(v)) with N the pool size and df over the pool's records, also when
    some records have no usable quality (NaN): they weigh the n-grams, they are never picked."""
    for seed in range(40):
        texts, quality, ids = random_pool(seed, 24)
        candidates = sorted(random.Random(seed).sample(range(24), 15))
        expected = brute_force(texts, quality, ids, 8, candidates)
        picks, _, _ = graphfilter_greedy(texts, [quality[i] for i in candidates], 8, [ids[i] for i in candidates],
                                         candidates)
        assert [candidates[i] for i in picks] == expected, seed
