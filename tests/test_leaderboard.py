"""Leaderboard aggregation from MLflow runs: mean and spread over seeds, one
row per selector, a rerun of the same configuration counted once, and NaN
metrics shown with their reason."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from cherrybench.runners import tracking
from cherrybench.runners.leaderboard import build_leaderboard, write_leaderboard

pytestmark = pytest.mark.slow  # each test creates an MLflow SQLite store (its migrations take seconds)


def log_child(client, exp_id, selector, seed, key, metrics, status="FINISHED", tags=None):
    run = client.create_run(exp_id, tags={tracking.ROLE_TAG: "child", tracking.SELECTOR_TAG: selector,
                                          tracking.SEED_TAG: str(seed), tracking.KEY_TAG: key, **(tags or {})})
    for name, value in metrics.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id, status)


@pytest.fixture()
def client(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_mean_and_spread_over_seeds(client, tmp_path):
    exp = client.create_experiment("board", artifact_location=(tmp_path / "art").as_uri())
    log_child(client, exp, "ifd", 0, "k-ifd-0", {"heldout.eval_loss": 1.0, "n_selected": 4})
    log_child(client, exp, "ifd", 1, "k-ifd-1", {"heldout.eval_loss": 2.0, "n_selected": 4})
    log_child(client, exp, "ifd", 1, "k-ifd-1", {"heldout.eval_loss": 9.0, "n_selected": 4})  # rerun: latest counts
    log_child(client, exp, "random", 0, "k-rnd-0", {"heldout.eval_loss": 1.2, "n_selected": 4},
              tags={f"{tracking.NAN_TAG}vic.eval_loss": "no_reference_answers"})
    log_child(client, exp, "longest", 0, "k-long-0", {"heldout.eval_loss": 0.5}, status="FAILED")  # not counted

    board = build_leaderboard(client, "board").set_index("selector")
    assert list(board.index) == ["random", "ifd"]  # sorted by held-out eval loss, lower first
    # hand-worked: ifd seeds give 1.0 and 9.0 -> mean 5.0, sample std sqrt(((1-5)^2 + (9-5)^2) / 1) = 5.657
    assert board.loc["ifd", "seeds"] == 2
    assert board.loc["ifd", "heldout.eval_loss mean"] == pytest.approx(5.0)
    assert board.loc["ifd", "heldout.eval_loss std"] == pytest.approx(math.sqrt(32))
    assert math.isnan(board.loc["random", "heldout.eval_loss std"])  # one seed: no spread

    md, csv = write_leaderboard(board.reset_index(), "board", tmp_path / "lb", "cherrybench compare --selectors ifd")
    text = md.read_text()
    assert "cherrybench compare --selectors ifd" in text
    assert "| ifd | 2 | 4 ± 0 | 5 ± 5.7 |  |  |" in text
    assert "| random | 1 | 4 | 1.2 | NaN | vic.eval_loss: NaN (no_reference_answers) |" in text
    assert csv.read_text().splitlines()[0].startswith("selector,seeds,")


def test_missing_experiment_is_a_clear_error(client):
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'"):
        build_leaderboard(client, "nope")
