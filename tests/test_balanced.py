"""Balanced random baselines: `random_balanced` (equal shares per field value or
embedding cluster) and `length_matched` (the response-length distribution of
another selector's subset)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cherrybench.cli import main
from cherrybench.context import Context
from cherrybench.records import load_dataset
from cherrybench.selectors import SELECTORS, Budget
from cherrybench.selectors.random_balanced import equal_shares

REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/alpaca/alpaca_random_9k.json"


def water_level(sizes: list[int], k: int) -> int:
    """Naive reference: the largest level L with sum(min(size, L)) <= k."""
    level = 0
    while level < max(sizes, default=0) and sum(min(s, level + 1) for s in sizes) <= k:
        level += 1
    return level


def test_equal_shares_hand_worked():
    counts = equal_shares([10, 2, 5], 9, np.random.default_rng(0))
    assert counts[1] == 2 and sorted([counts[0], counts[2]]) == [3, 4]  # 3 each, B gives its 2, one more to A or C
    assert equal_shares([3, 3], 10, np.random.default_rng(0)) == [3, 3]  # the budget exceeds the pool
    assert equal_shares([4, 0, 4], 4, np.random.default_rng(0)) == [2, 0, 2]


def test_equal_shares_matches_the_water_level_on_random_cases():
    rng = np.random.default_rng(1)
    for _ in range(300):
        sizes = rng.integers(0, 12, size=rng.integers(1, 7)).tolist()
        k = int(rng.integers(0, sum(sizes) + 5))
        counts = equal_shares(sizes, k, np.random.default_rng(int(rng.integers(1 << 30))))
        total = min(k, sum(sizes))
        level = water_level(sizes, total)
        assert sum(counts) == total, (sizes, k, counts)
        for size, count in zip(sizes, counts):  # each group: min(size, L), or L + 1 where it has more
            assert count == min(size, level) or (count == level + 1 and size > level), (sizes, k, counts, level)


def category_rows() -> list[dict]:
    cats = ["A"] * 10 + ["B"] * 2 + ["C"] * 5
    order = np.random.default_rng(2).permutation(len(cats))
    return [{"instruction": f"Task {i}", "input": "", "output": f"Answer {i}.", "category": cats[j]}
            for i, j in enumerate(order)]


def select_by_field(rows, budget, seed=0, tmp_path=None):
    dataset = load_dataset(str(write(tmp_path, rows)))
    ctx = Context(device="cpu", progress=False)
    ctx.dataset = dataset
    selector = SELECTORS.get("random_balanced").from_options({"by": "field", "field": "category", "seed": seed})
    table = pd.DataFrame({"id": [r.id for r in dataset.records]})
    return selector.select(table, Budget.parse(budget), ctx), dataset


def write(tmp_path, rows) -> Path:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(rows))
    return path


def test_random_balanced_by_field_gives_each_value_an_equal_share(tmp_path):
    rows = category_rows()
    selection, dataset = select_by_field(rows, "9", tmp_path=tmp_path)
    kept = Counter(rows[int(i)]["category"] for i in selection.ids)
    assert kept["B"] == 2 and sorted([kept["A"], kept["C"]]) == [3, 4]
    assert selection.ids == sorted(selection.ids, key=int)  # input order
    assert selection.report["groups"]["B"] == {"size": 2, "kept": 2}
    assert selection.report["excluded"] == {"not_sampled": 8}
    again, _ = select_by_field(rows, "9", tmp_path=tmp_path)
    other = {tuple(select_by_field(rows, "9", seed=s, tmp_path=tmp_path)[0].ids) for s in range(1, 6)}
    assert again.ids == selection.ids and len(other | {tuple(selection.ids)}) > 1


def test_random_balanced_missing_field_is_a_one_line_error(tmp_path, capsys):
    rows = category_rows()
    del rows[5]["category"]
    out = tmp_path / "sub.json"
    assert main(["select", "--data", str(write(tmp_path, rows)), "--selector", "random_balanced", "--param", "by=field",
                 "--param", "field=category", "--budget", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "record '5'" in err and "pool.json" in err and "no field 'category'" in err and not out.exists()


def test_random_balanced_bad_parameters_are_refused_before_work(tmp_path, capsys):
    path = write(tmp_path, category_rows())
    assert main(["select", "--data", str(path), "--selector", "random_balanced", "--param", "by=topic", "--budget", "4",
                 "--out", str(tmp_path / "o.json")]) == 2
    assert "parameter by must be one of 'cluster', 'field'" in capsys.readouterr().err


def test_length_matched_copies_the_reference_counts_per_length_bin(tmp_path):
    # lengths 1..20; 4 bins: edges 5.75, 10.5, 15.25 -> 1-5, 6-10, 11-15, 16-20
    # reference topk by ifd picks lengths 2, 7, 8, 19: one, two, none and one per bin
    lengths = np.arange(1, 21, dtype=float)
    ifd = np.full(20, 0.1)
    ifd[[1, 6, 7, 18]] = [0.9, 0.8, 0.7, 0.6]
    table = pd.DataFrame({"id": [f"r{i:02d}" for i in range(20)], "response_length": lengths, "ifd": ifd})
    selector = SELECTORS.get("length_matched").from_options({"reference": "topk", "bins": 4, "seed": 3})
    chosen = selector.select(table, Budget.parse("4"), Context(device="cpu", progress=False))
    picked = sorted(lengths[[int(i[1:]) for i in chosen.ids]])
    assert len(picked) == 4
    assert [sum(lo <= x <= hi for x in picked) for lo, hi in [(1, 5), (6, 10), (11, 15), (16, 20)]] == [1, 2, 0, 1]
    report = chosen.report
    assert report["reference"]["n_kept"] == 4 and report["bins"]["bin1"] == {"reference": 2, "kept": 2, "pool": 5}
    assert report["ks_statistic"] <= 0.5
    runs = {tuple(SELECTORS.get("length_matched").from_options({"reference": "topk", "bins": 4, "seed": s})
                  .select(table, Budget.parse("4"), None).ids) for s in range(6)}
    assert len(runs) > 1  # random within the bins


def test_length_matched_refuses_itself_as_reference():
    with pytest.raises(ValueError, match="cannot be length_matched itself"):
        SELECTORS.get("length_matched").from_options({"reference": "length_matched"})


@pytest.mark.slow
def test_balanced_baselines_on_30_real_records(tmp_path):
    """Each selects from 30 real Alpaca records with the real embedded models (MiniLM, SmolLM2)."""
    if not REAL_DATA.is_file():
        pytest.skip(f"{REAL_DATA} is not here")
    base = ["--data", str(REAL_DATA), "--pool-size", "30", "--budget", "10", "--no-progress", "--device", "cpu"]
    out = tmp_path / "balanced.json"
    assert main(["select", *base, "--selector", "random_balanced", "--param", "n_clusters=4", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "balanced.report.json").read_text())
    counts = [g["kept"] for g in report["groups"].values()]
    sizes = [g["size"] for g in report["groups"].values()]
    assert sum(sizes) == 30 and sum(counts) == 10 and report["n_groups"] == 4
    level = water_level(sizes, 10)
    assert all(c == min(s, level) or (c == level + 1 and s > level) for s, c in zip(sizes, counts))

    out = tmp_path / "matched.json"
    assert main(["select", *base, "--selector", "length_matched", "--param", "bins=3",
                 "--out", str(out)]) == 0
    report = json.loads((tmp_path / "matched.report.json").read_text())
    assert report["n_kept"] == report["reference"]["n_kept"] and 0 < report["n_kept"] <= 10
    assert all(b["kept"] == b["reference"] for b in report["bins"].values())


def test_editing_the_grouping_field_changes_compares_selection_key(tmp_path):
    """The pool's fingerprint covers the records' text, not a raw field; random_balanced by=field
    groups by one, so compare's selection key must see it (an edited label reruns the trial),
    while an edit to another raw field, or grouping by cluster, leaves the key as it was."""
    from cherrybench.finetune import TrainConfig
    from cherrybench.runners.compare import selection_key
    from cherrybench.runners.comparison import Comparison, Trial

    rows = category_rows()
    ctx = Context(model=None, device="cpu", progress=False)
    trial = Trial("random_balanced", "4", 0)

    def key(rows, **options) -> str:
        pool = load_dataset(write(tmp_path, rows))
        return selection_key(trial, Comparison(pool, [], TrainConfig(), ["4"]), ctx, options)

    relabelled = [dict(r) for r in rows]
    relabelled[0]["category"] = "other"
    noted = [dict(r, note="edited") for r in rows]
    assert load_dataset(write(tmp_path, relabelled)).fingerprint == load_dataset(write(tmp_path, rows)).fingerprint
    by_field = {"by": "field", "field": "category"}
    assert key(rows, **by_field) != key(relabelled, **by_field)
    assert key(rows, **by_field) == key(noted, **by_field)
    assert key(rows, by="cluster") == key(relabelled, by="cluster")
