"""Instruction Node: the count parsed from fixed judge answers (NaN with a reason
when none parses), the top-N selector on a fixed table, and the real path: the
embedded judge on 30 Alpaca records, every result labelled with the judge, its
answers kept in the score cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cherrybench.metrics.instruction_node import InstructionNode, parse_node_count
from cherrybench.selectors import SELECTORS, Budget


@pytest.mark.parametrize("text,count", [
    ("Nodes: 5\n- write\n- poem", 5),
    ("Nodes:12", 12),
    ("  nodes : 3 (write, list, colours)", 3),
    ("Nodes: 7, Object: sky", 7),
    ("Nodes: N\n- write", None),  # the placeholder copied, no count
    ("Nodes: N1, N2", None),
    ("Nodes: 0", None),  # a tree has a node
    ("Nodes: 42abc", None),
    ("The tree has 5 nodes.", None),  # the count must open the answer, as asked
    ("", None),
])
def test_parse_node_count(text, count):
    assert parse_node_count(text) == count


def test_multi_turn_is_the_mean_and_any_unparsable_turn_is_nan():
    metric = InstructionNode()
    assert metric.combine(["Nodes: 4", "Nodes: 7\n- a"])["instruction_node"] == 5.5
    bad = metric.combine(["Nodes: 4", "Nodes: N"])
    assert np.isnan(bad["instruction_node"]) and bad["instruction_node_reason"] == "unparsable_node_count"


def test_selector_keeps_top_counts_ties_by_id_and_names_the_judge():
    table = pd.DataFrame({"id": ["a", "b", "c", "d", "e"],
                          "instruction_node": [3.0, 5.0, np.nan, 5.0, 1.0],
                          "instruction_node_judge": ["J (abc)"] * 5,
                          "instruction_node_text": ["[]"] * 5,
                          "instruction_node_reason": [None, None, "unparsable_node_count", None, None]})
    selection = SELECTORS.get("instruction_node")().select(table, Budget.parse("3"), None)
    assert selection.ids == ["b", "d", "a"]
    assert selection.report["excluded"] == {"no_instruction_node:unparsable_node_count": 1, "over_budget": 1}
    assert selection.report["judge"] == ["J (abc)"]


@pytest.mark.slow
def test_instruction_node_on_30_alpaca_records(ctx):
    from alpaca30 import alpaca30
    from cherrybench.runners.select import run_selection
    from cherrybench.scoring import score

    dataset = alpaca30()
    selector = SELECTORS.get("instruction_node")(max_new_tokens=8)  # the count comes first
    selection, table = run_selection(dataset, selector, Budget.parse("6"), ctx)
    ref = ctx.model_ref(None)
    label = f"{ref.directory.name} ({ref.fingerprint[:12]})"
    assert set(table["instruction_node_judge"]) == {label} and selection.report["judge"] == [label]
    for row in table.itertuples():
        (answer,) = json.loads(row.instruction_node_text)
        count = parse_node_count(answer)
        if count is None:
            assert np.isnan(row.instruction_node) and row.instruction_node_reason == "unparsable_node_count"
        else:
            assert row.instruction_node == count and row.instruction_node_reason is None
    parsed = table[table["instruction_node"].notna()]
    ranked = parsed.sort_values(["instruction_node", "id"], ascending=[False, True])
    assert selection.ids == ranked["id"].head(6).tolist()
    report = selection.report
    assert report["n_kept"] == min(6, len(parsed)) and report["n_kept"] + report["n_excluded"] == 30
    assert report["excluded"].get("no_instruction_node:unparsable_node_count", 0) == 30 - len(parsed)

    lm = ctx.lm()
    calls = lm.forward_calls
    again = score(dataset, selector.requires(), ctx)  # from the score cache, answers included
    assert lm.forward_calls == calls
    # the same values; text read back from the cache's Parquet shards is pandas' string dtype
    pd.testing.assert_frame_equal(again[table.columns], table, check_dtype=False)
