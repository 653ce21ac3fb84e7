"""InsTag: parsing tagger answers (fixed texts), complexity, both selectors on
fixed tag lists against hand-worked orders, and the real path: the embedded
model tags 30 Alpaca records through the batched generation, every generated
answer kept in the score cache (a rerun generates nothing)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cherrybench.metrics.instag import InsTag, join_tags, parse_tags, split_tags
from cherrybench.selectors import SELECTORS, Budget
from cherrybench.selectors.instag import complexity_first_diverse


@pytest.mark.parametrize("text,tags", [
    ('[{"tag": "Translation", "explanation": "to French"}, {"tag": "greeting", "explanation": "hello"}]',
     ["translation", "greeting"]),
    # objects one after another, not in a list; a repeated tag in other case counts once
    ('{"tag": "math", "explanation": "a sum"}\n{"tag": "Math ", "explanation": "again"} {"tag": "list"}',
     ["math", "list"]),
    # cut off by max_new_tokens: the complete tags stay, the cut one is lost
    ('[{"tag": "poetry", "explanation": "a haiku"}, {"tag": "seas', ["poetry"]),
    # an explanation with unescaped quotes does not lose its tag; escapes are decoded
    ('[{"tag": "quote \\"test\\"", "explanation": "says "hi" twice"}]', ['quote "test"']),
    ('[{"tag":   "information\n  retrieval", "explanation": ""}]', ["information retrieval"]),
])
def test_parse_tags(text, tags):
    assert parse_tags(text) == tags


@pytest.mark.parametrize("text", ["The user query is about a song.", '[{"tag": ""}]', '[{"tag": "unfinished',
                                  "", '{"label": "math"}'])
def test_unparsable_answers_give_none(text):
    assert parse_tags(text) is None


def test_complexity_is_distinct_tags_over_turns_and_unparsable_is_nan():
    metric = InsTag()
    one = metric.combine(['[{"tag": "a"}, {"tag": "b"}]', '[{"tag": "B"}, {"tag": "c"}]'])
    assert one["instag_complexity"] == 3.0 and split_tags(one["instag_tags"]) == ["a", "b", "c"]
    assert one["instag_reason"] is None
    bad = metric.combine(['[{"tag": "a"}]', "no tags here"])
    assert np.isnan(bad["instag_complexity"]) and bad["instag_reason"] == "unparsable_tags"
    assert bad["instag_tags"] is None


def test_tags_cell_round_trips():
    tags = ["creative writing", "poetry", "nature"]
    assert split_tags(join_tags(tags)) == tags


def complexity_first_reference(tags: dict[str, list[str]], k: int) -> list[str]:
    """The SPEC's words as a loop over a sorted list: scan, take a record adding a new
    tag; reset the covered set when a pass ends short; fill by count when a pass adds nothing."""
    order = sorted(tags, key=lambda i: (-len(tags[i]), i))
    picked: list[str] = []
    while len(picked) < k:
        covered, before = set(), len(picked)
        for i in order:
            if i in picked or len(picked) == k:
                continue
            if set(tags[i]) - covered:
                picked.append(i)
                covered |= set(tags[i])
        if len(picked) == before:
            picked += [i for i in order if i not in picked][: k - len(picked)]
            break
    return picked


TAGS = {
    "a": ["math", "algebra", "word problem"],
    "b": ["math", "algebra"],
    "c": ["poetry", "nature", "creative writing"],
    "d": ["translation"],
    "e": ["math"],
    "f": ["poetry"],
    "g": ["translation", "french"],
    "h": ["math", "algebra", "word problem"],
}


def table_of(tags: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(tags), "instag_complexity": [float(len(t)) for t in tags.values()],
                         "instag_tags": [join_tags(t) for t in tags.values()],
                         "instag_reason": [None] * len(tags)})


def test_complexity_first_diverse_hand_worked():
    ids = sorted(TAGS, key=lambda i: (-len(TAGS[i]), i))  # a c h b g d e f
    picked, info = complexity_first_diverse(ids, [TAGS[i] for i in ids], 6)
    # pass 1: a (math, algebra, word problem), c (poetry...), g (translation, french); h b d e f add nothing
    # pass 2 (reset): h, b adds nothing new after h, d (translation), e adds nothing (math), f (poetry)
    assert [ids[i] for i in picked] == ["a", "c", "g", "h", "d", "f"]
    assert info == {"passes": 2, "filled_by_count": 0}
    assert [ids[i] for i in picked] == complexity_first_reference(TAGS, 6)


def test_complexity_first_diverse_fills_by_count_when_a_pass_adds_nothing():
    same = {"x": ["t"], "y": ["t"], "z": []}
    ids = sorted(same, key=lambda i: (-len(same[i]), i))
    picked, info = complexity_first_diverse(ids, [same[i] for i in ids], 3)
    assert [ids[i] for i in picked] == ["x", "y", "z"]  # x; reset: y; reset: z adds nothing: filled
    assert info == {"passes": 3, "filled_by_count": 1}


@pytest.mark.parametrize("k", range(1, 9))
def test_diverse_selector_matches_reference(k):
    selection = SELECTORS.get("instag_diverse")().select(table_of(TAGS), Budget.parse(str(k)), None)
    assert selection.ids == complexity_first_reference(TAGS, k)
    assert selection.report["n_kept"] == k and selection.report["excluded"].get("over_budget", 0) == 8 - k


def test_complexity_selector_keeps_most_tags_ties_by_id_and_reports_unparsable():
    table = table_of(TAGS)
    table.loc[table["id"] == "c", ["instag_complexity", "instag_tags", "instag_reason"]] = [
        np.nan, None, "unparsable_tags"]
    selection = SELECTORS.get("instag_complexity")().select(table, Budget.parse("3"), None)
    assert selection.ids == ["a", "h", "b"]
    assert selection.report["excluded"] == {"no_instag_complexity:unparsable_tags": 1, "over_budget": 4}


@pytest.mark.slow
def test_instag_on_30_alpaca_records_and_rerun_generates_nothing(ctx):
    from alpaca30 import alpaca30
    from cherrybench.runners.select import run_selection

    dataset = alpaca30()
    params = {"max_new_tokens": 24}  # the weak embedded tagger, briefly: its first tag or two
    lm = ctx.lm()
    calls = lm.forward_calls
    complexity, table = run_selection(dataset, SELECTORS.get("instag_complexity")(**params), Budget.parse("6"), ctx)
    assert lm.forward_calls > calls
    texts = [json.loads(t) for t in table["instag_text"]]
    assert all(len(t) == 1 and t[0].startswith('[{"tag": "') for t in texts)  # one answer per question
    for row, answer in zip(table.itertuples(), texts):
        tags = parse_tags(answer[0])
        if tags is None:
            assert np.isnan(row.instag_complexity) and row.instag_reason == "unparsable_tags"
        else:
            assert row.instag_complexity == len(tags) and split_tags(row.instag_tags) == tags
    parsed = table["instag_complexity"].notna()
    assert parsed.sum() >= 10  # the form is started for it: most answers give a tag
    ranked = table[parsed].sort_values(["instag_complexity", "id"], ascending=[False, True])
    assert complexity.ids == ranked["id"].head(6).tolist()
    assert complexity.report["n_kept"] + complexity.report["n_excluded"] == 30

    calls = lm.forward_calls  # the same metric again, for the diverse selector: all from the score cache
    diverse, again = run_selection(dataset, SELECTORS.get("instag_diverse")(**params), Budget.parse("6"), ctx)
    assert lm.forward_calls == calls
    # the same values; text read back from the cache's Parquet shards is pandas' string dtype
    pd.testing.assert_frame_equal(again, table, check_dtype=False)
    tags = {i: split_tags(t) for i, t in zip(table["id"], table["instag_tags"]) if isinstance(t, str)}
    assert diverse.ids == complexity_first_reference(tags, 6)
    assert diverse.report["n_kept"] + diverse.report["n_excluded"] == 30 and diverse.report["passes"] >= 1


def test_tagger_flag_reaches_the_metric_and_no_other_plugin():
    from cherrybench.cli import build_parser
    from cherrybench.metrics import METRICS
    from cherrybench.runners.options import plugin_options

    args = build_parser().parse_args(["score", "--data", "x.json", "--metrics", "instag,length", "--out", "s.parquet",
                                      "--tagger", "my-tagger-dir"])
    options = plugin_options(args)
    assert METRICS.get("instag").from_options(options).tagger == "my-tagger-dir"
    assert not hasattr(METRICS.get("length").from_options(options), "tagger")  # options go where they are taken
