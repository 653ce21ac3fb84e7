"""Built-in score selectors on hand-made tables, against hand-worked answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cherrybench.selectors import SELECTORS, Budget


def table(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], **columns})


def test_budget_parsing():
    assert Budget.parse("0.05").resolve(200) == 10
    assert Budget.parse("1000").resolve(200) == 200
    assert Budget.parse(3).resolve(10) == 3
    for bad in ("0", "-1", "1.5", "abc"):
        with pytest.raises(ValueError, match="budget"):
            Budget.parse(bad)


def test_ifd_drops_nan_and_at_least_one_then_top_k():
    scores = table(ifd=[0.5, 1.0, np.nan, 0.9, 1.3, 0.7, 0.9],
                   ifd_reason=[None, None, "empty_answer", None, None, None, None])
    sel = SELECTORS.get("ifd")().select(scores, Budget.parse("3"), None)
    assert sel.ids == ["r3", "r6", "r5"]  # 0.9, 0.9 (tie broken by id), 0.7
    assert sel.report["excluded"] == {"ifd>=1": 2, "no_ifd:empty_answer": 1, "over_budget": 1}
    assert sel.report["kept_score_range"] == [0.7, 0.9]


def test_ifd_cherry_rule_takes_fraction_of_valid():
    scores = table(ifd=[0.1, 0.2, 0.3, 0.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0], ifd_reason=[None] * 10)
    of_all = SELECTORS.get("ifd")().select(scores, Budget.parse("0.5"), None)
    of_valid = SELECTORS.get("ifd")(of_valid=True).select(scores, Budget.parse("0.5"), None)
    assert of_all.ids == ["r3", "r2", "r1", "r0"]  # 5 allowed, only 4 valid
    assert of_valid.ids == ["r3", "r2"]  # half of the 4 valid


def test_superfiltering_ranks_by_ifd_ppl():
    scores = table(ifd=[0.5, 0.6, 0.7], ifd_ppl=[0.9, 0.2, 0.4], ifd_reason=[None] * 3)
    assert SELECTORS.get("superfiltering")().select(scores, Budget.parse("2"), None).ids == ["r0", "r2"]


def test_longest_breaks_ties_by_id():
    scores = table(response_length=[10.0, 50.0, 50.0, 5.0], length_reason=[None] * 4)
    sel = SELECTORS.get("longest")().select(scores, Budget.parse("2"), None)
    assert sel.ids == ["r1", "r2"]
    assert sel.report["n_kept"] == 2 and sel.report["excluded"] == {"over_budget": 2}


def test_topk_either_direction_and_threshold():
    scores = table(ppl=[3.0, 1.0, 2.0, np.nan], ifd_reason=[None, None, None, "prompt_too_long"])
    assert SELECTORS.get("topk")(column="ppl", descending=False).select(scores, Budget.parse("2"), None).ids == ["r1", "r2"]
    assert SELECTORS.get("topk")(column="ppl", descending=True).select(scores, Budget.parse("1"), None).ids == ["r0"]
    with pytest.raises(ValueError, match="column 'ppl' declares no direction"):  # ppl is "none": say which way
        SELECTORS.get("topk")(column="ppl").select(scores, Budget.parse("1"), None)
    sel = SELECTORS.get("threshold")(column="ppl", minimum=1.5, descending=True).select(scores, Budget.parse("0.99"), None)
    assert sel.ids == ["r0", "r2"]
    assert sel.report["excluded"] == {"no_ppl:prompt_too_long": 1, "ppl<1.5": 1}


def test_ranking_follows_the_declared_direction():
    """Without `descending`, topk ranks by the direction the metric declares for the column."""
    from cherrybench.metrics import METRICS

    assert METRICS.get("ifd").columns["ifd"] == "higher" and METRICS.get("instructmining").columns["instructmining"] == "lower"
    ifd = table(ifd=[0.2, 0.9, 0.5], ifd_reason=[None] * 3)
    assert SELECTORS.get("topk")(column="ifd").select(ifd, Budget.parse("2"), None).ids == ["r1", "r2"]
    mined = table(instructmining=[0.2, 0.9, 0.5], instructmining_reason=[None] * 3)
    selector = SELECTORS.get("topk")(column="instructmining")
    selector.requires = lambda: [METRICS.get("instructmining")(rule="paper-v1")]  # building it loads no rule
    assert selector.select(mined, Budget.parse("2"), None).ids == ["r0", "r2"]
    assert SELECTORS.get("instructmining")().select(mined, Budget.parse("2"), None).ids == ["r0", "r2"]


def test_random_is_seeded_and_in_input_order():
    scores = table(x=list(range(100)))
    a = SELECTORS.get("random")(seed=7).select(scores, Budget.parse("0.1"), None).ids
    b = SELECTORS.get("random")(seed=7).select(scores, Budget.parse("0.1"), None).ids
    c = SELECTORS.get("random")(seed=8).select(scores, Budget.parse("0.1"), None).ids
    assert a == b and a != c and len(a) == 10 and len(set(a)) == 10
    assert a == sorted(a, key=lambda s: int(s[1:]))


def test_missing_column_is_a_clear_error():
    with pytest.raises(ValueError, match=r"selector 'ifd' needs score columns \['ifd'\]"):
        SELECTORS.get("ifd")().select(table(x=[1.0]), Budget.parse("1"), None)


def test_an_exclusion_names_the_reason_of_the_metric_that_scored_the_column():
    """A --scores table of several metrics: a record NaN under both is excluded by ifd for
    ifd's reason, not for the first reason column of the table."""
    table = pd.DataFrame({"id": ["a", "b", "c"], "evol_score": [np.nan, 3.0, 4.0],
                          "deita_reason": ["judge_failed", None, None], "ifd": [np.nan, 0.5, 0.6],
                          "ifd_ppl": [np.nan, 0.7, 0.8], "ifd_reason": ["prompt_too_long", None, None]})
    assert SELECTORS.get("ifd").from_options({}).select(table, Budget.parse("2"), None).report["excluded"] == \
        {"no_ifd:prompt_too_long": 1}
    assert SELECTORS.get("superfiltering").from_options({}).select(
        table, Budget.parse("2"), None).report["excluded"] == {"no_ifd_ppl:prompt_too_long": 1}


def test_topk_hands_the_runs_options_to_its_columns_metric(tmp_path):
    """`--param threshold=0.3` with topk over mtld reaches MTLD (it used to be accepted and ignored):
    the scores topk reads are those MTLD scores on its own with the same options."""
    from cherrybench.context import Context
    from cherrybench.metrics import METRICS

    ctx = Context(model=None, device="cpu", progress=False)
    for selector in ("topk", "threshold"):
        options = {"column": "mtld", "threshold": 0.3, "minimum": 0.0}
        (metric,) = SELECTORS.get(selector).from_options(options).requires()
        assert metric.threshold == 0.3
        assert metric.cache_key(ctx, "pool") == METRICS.get("mtld").from_options(options).cache_key(ctx, "pool")
        assert metric.cache_key(ctx, "pool") != METRICS.get("mtld").from_options({}).cache_key(ctx, "pool")
