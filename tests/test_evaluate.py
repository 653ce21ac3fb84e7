"""Per-record eval losses against a naive reference: the real SmolLM2's own
full forward pass over each record, one record at a time."""

import numpy as np
import pytest
import torch

from cherrybench.evaluate import eval_loss, eval_losses, pooled_loss
from cherrybench.prompts import tokenize_record
from cherrybench.records import Record, Turn

RECORDS = [
    Record("short", [Turn("Name a colour.", "Blue is a calm colour.")]),
    Record("long", [Turn("Explain rain.", "Water vapour condenses into droplets that grow heavy and fall as rain "
                                           "when clouds cannot hold them any longer.")]),
    Record("one", [Turn("Say A.", "A")]),  # one answer token: nothing after the first to score
    Record("input", [Turn("Add the numbers.", "Five.", "2 and 3")]),
]


@pytest.mark.slow
def test_per_record_losses_equal_the_models_own_forward_and_pool_by_tokens(ctx, lm):
    table = eval_losses(None, RECORDS, max_length=128, ctx=ctx)
    assert list(table["id"]) == [r.id for r in RECORDS]
    expected_sum, expected_n = [], []
    for record in RECORDS:
        tok = tokenize_record(record, lm, "alpaca", 128)
        if tok.reason:
            expected_sum.append(np.nan)
            expected_n.append(0)
            continue
        ids = torch.tensor([tok.sequence])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(ids).logits[0].double(), -1)
        turn = tok.turns[0]
        losses = [-float(logp[p - 1, tok.sequence[p]]) for p in range(turn.start + 1, turn.start + len(turn.answer))]
        expected_sum.append(sum(losses))
        expected_n.append(len(losses))
    assert list(table["n_tokens"]) == expected_n
    np.testing.assert_allclose(table["loss_sum"], expected_sum, rtol=1e-4)
    np.testing.assert_allclose(table["loss_mean"], np.array(expected_sum) / np.maximum(expected_n, 1), rtol=1e-4)
    assert table.loc[2, "reason"] == "answer_too_short" and np.isnan(table.loc[2, "loss_sum"])
    pooled = np.nansum(expected_sum) / sum(expected_n)  # every token once: the long answer weighs more
    assert pooled_loss(table) == pytest.approx(pooled, rel=1e-6)
    assert eval_loss(None, RECORDS, max_length=128, ctx=ctx) == pytest.approx(pooled, rel=1e-6)
    assert pooled != pytest.approx(np.nanmean(table["loss_mean"]), rel=1e-3)  # not a mean of record means


def test_a_non_finite_loss_makes_the_pooled_loss_nan_with_its_reason():
    import pandas as pd

    from cherrybench.evaluate import pooled_loss_problem

    table = pd.DataFrame({"id": ["a", "b", "c"], "n_tokens": [4, 0, 2], "loss_sum": [8.0, np.nan, 3.0]})
    assert pooled_loss(table) == pytest.approx(11.0 / 6) and pooled_loss_problem(table) is None  # b: no tokens
    diverged = table.assign(loss_sum=[8.0, np.nan, np.nan])  # c has tokens but no loss: not a loss of 0
    assert np.isnan(pooled_loss(diverged))
    assert pooled_loss_problem(diverged) == "non_finite_loss on 1 of 2 records"
    empty = table.assign(n_tokens=[0, 0, 0])
    assert np.isnan(pooled_loss(empty)) and pooled_loss_problem(empty) == "no_answer_tokens"


@pytest.mark.slow
def test_cached_eval_losses_are_the_computed_ones_keyed_by_content(ctx):
    """Stored beside the model: the first call stores what it computed (NaN and reason kept), a
    second reads the store (shown by marking the stored value), and an edited eval record is a
    new key, not a stale hit."""
    import json

    from cherrybench.evaluate import cached_eval_losses
    from cherrybench.store import ArtifactStore

    fresh = eval_losses(None, RECORDS, max_length=128, ctx=ctx)
    first = cached_eval_losses(None, RECORDS, max_length=128, ctx=ctx)
    assert list(first["id"]) == list(fresh["id"]) and list(first["n_tokens"]) == list(fresh["n_tokens"])
    np.testing.assert_allclose(first["loss_sum"], fresh["loss_sum"], rtol=1e-6)
    assert list(first["reason"].fillna("")) == list(fresh["reason"].fillna(""))
    (stored,) = ArtifactStore("eval_losses").root.glob("*.json")
    entry = json.loads(stored.read_text())
    entry["value"][0]["loss_sum"] += 1.0  # a mark only a read of the store can return
    stored.write_text(json.dumps(entry))
    again = cached_eval_losses(None, RECORDS, max_length=128, ctx=ctx)
    assert again.loc[0, "loss_sum"] == pytest.approx(fresh.loc[0, "loss_sum"] + 1.0)
    assert again.loc[1, "loss_sum"] == pytest.approx(fresh.loc[1, "loss_sum"]) and np.isnan(again.loc[2, "loss_sum"])
    edited = [RECORDS[0], Record("long", [Turn("Explain rain.", "Clouds get heavy and the water falls.")]), *RECORDS[2:]]
    changed = cached_eval_losses(None, edited, max_length=128, ctx=ctx)
    assert len(list(ArtifactStore("eval_losses").root.glob("*.json"))) == 2
    assert changed.loc[0, "loss_sum"] == pytest.approx(fresh.loc[0, "loss_sum"])  # computed anew, not the mark
    assert changed.loc[1, "loss_sum"] != pytest.approx(fresh.loc[1, "loss_sum"])
