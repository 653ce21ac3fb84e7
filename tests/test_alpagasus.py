"""AlpaGasus: threshold then top-k, against a hand reference on a given score
table, and a real run with the real SmolLM2 judge."""

import numpy as np
import pandas as pd
import pytest

from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners.select import run_selection
from cherrybench.selectors import SELECTORS, Budget

PAIRS = [("What is 2+2?", "4"), ("What is 2+2?", "5"), ("Name a colour.", "Blue."),
         ("Capital of France?", "Paris."), ("Capital of France?", "Berlin.")]
DATASET = Dataset([Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate(PAIRS)], None, "alpaca", "json")


def test_threshold_then_top_k_on_given_scores(ctx):
    given = pd.DataFrame({"id": [str(i) for i in range(5)], "alpagasus": [4.9, 4.5, np.nan, 4.7, 4.7],
                          "alpagasus_reason": [None, None, "prompt_too_long", None, None],
                          "_record_hash": [r.content_hash for r in DATASET.records]})  # scores of these records
    selector = SELECTORS.get("alpagasus")()
    selection, _ = run_selection(DATASET, selector, Budget.parse("2"), ctx, given=given)
    assert selection.ids == ["0", "3"]  # >= 4.5 kept: 0, 1, 3, 4; best two, ties by id
    assert selection.report["excluded"] == {"no_alpagasus:prompt_too_long": 1, "over_budget": 2}
    selection, _ = run_selection(DATASET, SELECTORS.get("alpagasus")(threshold=4.6), Budget.parse("0.99"), ctx,
                                 given=given)
    assert selection.ids == ["0", "3", "4"]
    assert selection.report["excluded"]["alpagasus<4.6"] == 1


@pytest.mark.slow
def test_real_judge_run(ctx):
    selection, table = run_selection(DATASET, SELECTORS.get("alpagasus")(threshold=0.0), Budget.parse("3"), ctx)
    scores = table.set_index("id")["alpagasus"]
    assert ((scores >= 0) & (scores <= 5)).all()
    expected = sorted(scores.index, key=lambda i: (-scores[i], i))[:3]
    assert selection.ids == expected
    strict, _ = run_selection(DATASET, SELECTORS.get("alpagasus")(), Budget.parse("3"), ctx)  # cached scores
    assert len(strict.ids) == int((scores >= 4.5).sum().clip(max=3))
    assert strict.report["n_kept"] + strict.report["n_excluded"] == 5
