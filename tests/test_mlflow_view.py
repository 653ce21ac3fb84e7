"""What the MLflow UI shows of a comparison, read back through MLflow's client
from a real `mlflow server`: the leaderboard as parent-run metrics and a
rendered table, the per-record tables, the pool, subsets and eval sets as
dataset inputs with their content fingerprints as digests, the step-wise
training loss, params logged once each, the experiment's kind and the link."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cherrybench.cli import main as cli_main
from cherrybench.finetune import DONE_MARKER, training_summary
from cherrybench.paths import cache_dir
from cherrybench.records import load_dataset
from cherrybench.runners import tracking
from cherrybench.runners.leaderboard_mlflow import VERDICT_NUMBERS, leaderboard_metrics


def context(dataset_input) -> str | None:
    return next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), None)


def test_experiment_link_for_a_server_and_a_local_store():
    assert tracking.experiment_link("http://127.0.0.1:5000/", "7") == \
        "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    local = tracking.experiment_link("sqlite:////tmp/x/mlflow.db", "3")
    assert local.startswith("mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db ")
    assert local.endswith("#/experiments/3?workflowType=machine_learning")


def test_leaderboard_metrics_names_and_verdict_numbers():
    from types import SimpleNamespace

    h = "heldout.eval_loss"
    table = pd.DataFrame([
        {"budget": "0.05", "selector": "ifd", h: 2.0, f"{h}_ci_low": 1.9, f"{h}_ci_high": 2.1,
         "vs_random_delta": -0.1, "vs_random_ci_low": -0.2, "vs_random_ci_high": -0.01, "vs_random_p_holm": 0.01,
         "verdict_vs_random": "better", "vs_full_delta": 0.05, "vs_full_ci_low": -0.02, "vs_full_ci_high": 0.1,
         "vs_full_p_holm": 0.4, "verdict_vs_full": "no difference", "heldout.rouge_l": 0.3,
         "heldout.rouge_l_ci_low": 0.25, "heldout.rouge_l_ci_high": 0.35, "heldout.rouge_l_vs_random_delta": 0.05,
         "heldout.rouge_l_verdict_vs_random": "better"},
        {"budget": "0.05", "selector": "random", h: 2.1, f"{h}_ci_low": 2.0, f"{h}_ci_high": 2.2,
         "vs_random_delta": np.nan, "vs_random_ci_low": np.nan, "vs_random_ci_high": np.nan,
         "vs_random_p_holm": np.nan, "verdict_vs_random": None, "vs_full_delta": 0.15, "vs_full_ci_low": 0.05,
         "vs_full_ci_high": 0.2, "vs_full_p_holm": 0.02, "verdict_vs_full": "worse", "heldout.rouge_l": 0.25,
         "heldout.rouge_l_ci_low": 0.2, "heldout.rouge_l_ci_high": 0.3, "heldout.rouge_l_vs_random_delta": np.nan,
         "heldout.rouge_l_verdict_vs_random": None},
    ])
    metrics = leaderboard_metrics(SimpleNamespace(headline=h, table=table, answers=["heldout.rouge_l"]))
    assert metrics["b0.05.ifd.heldout.eval_loss"] == 2.0 and metrics["b0.05.ifd.heldout.eval_loss.ci_low"] == 1.9
    assert metrics["b0.05.ifd.vs_random.delta"] == -0.1 and metrics["b0.05.ifd.vs_random.ci_high"] == -0.01
    assert metrics["b0.05.ifd.vs_random.verdict"] == 1 and metrics["b0.05.ifd.vs_full.verdict"] == 0
    assert metrics["b0.05.random.vs_full.verdict"] == -1
    assert metrics["b0.05.ifd.heldout.rouge_l"] == 0.3 and metrics["b0.05.ifd.heldout.rouge_l.ci_high"] == 0.35
    assert metrics["b0.05.ifd.heldout.rouge_l.vs_random.verdict"] == 1
    assert "b0.05.random.heldout.rouge_l.vs_random.delta" not in metrics
    assert not any(k.startswith("b0.05.random.vs_random") for k in metrics)  # no comparison with itself
    assert VERDICT_NUMBERS == {"better": 1, "no difference": 0, "worse": -1}


ARGS = ["--selectors", "longest", "--pool-size", "8", "--eval-size", "3", "--budget", "3", "--max-length", "64",
        "--gen-size", "1", "--max-new-tokens", "4", "--train-batch-size", "2", "--no-progress", "--device", "cpu"]


@pytest.mark.slow
def test_the_ui_gets_leaderboard_tables_inputs_and_loss_curves(mlflow_server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # --no-keep-models: the model reaches the server (--log-model) before it leaves the cache
    assert cli_main(["compare", "--experiment", "view", "--tracking-uri", mlflow_server, "--log-model",
                     "--no-keep-models", *ARGS]) == 0
    assert not list((cache_dir() / "finetuned").iterdir())
    out = capsys.readouterr().out
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("view")
    assert f"{mlflow_server}/#/experiments/{exp.experiment_id}?workflowType=machine_learning" in out
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("cherrybench.role") == "parent")
    children = {r.data.tags["cherrybench.selector"]: r for r in runs if r.data.tags.get("cherrybench.role") == "child"}
    assert set(children) == {"longest", "random", "full"}

    # the leaderboard on the parent run: metrics named b<budget>.<selector>...., and a rendered table
    metrics = parent.data.metrics
    for selector in ("longest", "random", "full"):
        assert 0 < metrics[f"b3.{selector}.heldout.eval_loss"] < 20
        assert metrics[f"b3.{selector}.heldout.eval_loss.ci_low"] <= metrics[f"b3.{selector}.heldout.eval_loss"]
    for ref in ("random", "full"):
        delta, low, high = (metrics[f"b3.longest.vs_{ref}.{k}"] for k in ("delta", "ci_low", "ci_high"))
        assert low <= delta <= high and metrics[f"b3.longest.vs_{ref}.verdict"] in (-1, 0, 1)
    assert metrics["b3.longest.vs_random.delta"] == pytest.approx(
        metrics["b3.longest.heldout.eval_loss"] - metrics["b3.random.heldout.eval_loss"])
    board = json.loads(Path(client.download_artifacts(parent.info.run_id, "leaderboard.json", str(tmp_path)))
                       .read_text())
    columns = board["columns"]
    assert columns[:7] == ["budget", "selector", "heldout eval_loss [95% CI]", "Δ vs random [95% CI]",
                           "verdict vs random", "Δ vs full [95% CI]", "verdict vs full"]
    assert not [c for c in columns if "." in c]  # the UI's table reads a `.` in a column name as a path
    rows = {row[1]: dict(zip(columns, row)) for row in board["data"]}
    assert set(rows) == {"longest", "random", "full"}
    loss = metrics["b3.longest.heldout.eval_loss"]
    assert rows["longest"]["heldout eval_loss [95% CI]"].startswith(f"{loss:.3f} [")
    assert rows["random"]["verdict vs random"] == "—"
    assert rows["longest"]["verdict vs full"] in ("better", "no difference", "worse")
    assert {"type": "table", "path": "leaderboard.json"} in json.loads(parent.data.tags["mlflow.loggedArtifacts"])

    # the pool and the eval set as inputs of the parent, digests = content fingerprints
    inputs = {(d.dataset.name, context(d)): d.dataset for d in client.get_run(parent.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {("pool", "training"), ("heldout", "eval")}
    pool_fp = children["full"].data.params["data_fingerprint"]  # the pool's Dataset.fingerprint[:16]
    assert inputs["pool", "training"].digest == pool_fp
    heldout_fp = inputs["heldout", "eval"].digest
    assert len(heldout_fp) == tracking.DIGEST_LENGTH

    steps = {}
    for name, run in children.items():
        run_id = run.info.run_id
        assert tracking.MODEL_DIR_TAG not in run.data.tags  # --no-keep-models: no path to a deleted model
        (tmp_path / f"{name}-model").mkdir()  # the training summary as the server holds it (--log-model)
        model_dir = Path(client.download_artifacts(run_id, f"model/{DONE_MARKER}", str(tmp_path / f"{name}-model")))
        model_dir = model_dir.parent
        params = run.data.params
        # each setting once: the seed only as train.seed, no 'None' strings, selector params under selector.
        assert params["train.seed"] == "0" and not [k for k in params if k.endswith("seed") and k != "train.seed"]
        assert "None" not in params.values() and "train.model" not in params
        # the subset as the training input, the eval set as the eval input, with content digests
        child_inputs = {context(d): d.dataset for d in client.get_run(run_id).inputs.dataset_inputs}
        assert child_inputs["eval"].name == "heldout" and child_inputs["eval"].digest == heldout_fp
        assert child_inputs["training"].name == f"{run.info.run_name}.subset"
        (tmp_path / name).mkdir()
        subset = load_dataset(client.download_artifacts(run_id, "subset.json", str(tmp_path / name)))
        assert child_inputs["training"].digest == subset.fingerprint[: tracking.DIGEST_LENGTH]
        if name == "full":
            assert child_inputs["training"].digest == pool_fp
        # the loss at every optimizer step, as the fine-tune logged it
        history = client.get_metric_history(run_id, "train_loss")
        losses = training_summary(model_dir)["loss_history"]
        assert losses and len(history) == len(losses)
        steps[name] = len(losses)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, len(losses) + 1))
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(losses)
        # per-record tables the UI renders, beside the parquet files
        tables = {a.path for a in client.list_artifacts(run_id, "tables")}
        assert tables == {"tables/heldout.per_record.json", "tables/heldout.answers.json"}
        losses_table = json.loads(Path(client.download_artifacts(run_id, "tables/heldout.per_record.json",
                                                                 str(tmp_path))).read_text())
        assert losses_table["columns"][:5] == ["id", "prompt", "reference", "answer", "answer_loss"]
        assert len(losses_table["data"]) == 3
        answers = json.loads(Path(client.download_artifacts(run_id, "tables/heldout.answers.json",
                                                            str(tmp_path))).read_text())
        assert {"id", "prompt", "reference", "answer", "rouge_l", "embedding_similarity"} <= set(answers["columns"])
        # the one answered record (--gen-size 1): its answer beside its loss; the others ''
        said = dict(zip(*[[row[answers["columns"].index(c)] for row in answers["data"]] for c in ("id", "answer")]))
        beside = {row[0]: row[3] for row in losses_table["data"]}
        assert len(said) == 1 and all(beside[i] == a for i, a in said.items())
        assert [a for i, a in beside.items() if i not in said] == ["", ""]
        logged = {a["path"] for a in json.loads(run.data.tags["mlflow.loggedArtifacts"])}
        assert {"tables/heldout.per_record.json", "tables/heldout.answers.json"} <= logged
        assert {a.path for a in client.list_artifacts(run_id, "eval")} == {
            "eval/heldout.per_record.parquet", "eval/heldout.answers.parquet"}
        # --log-model: the model directory on the server
        model_files = {Path(a.path).name for a in client.list_artifacts(run_id, "model")}
        assert {"config.json", "tokenizer.json", "cherrybench_finetune.json"} <= model_files
    assert steps["full"] >= 2  # batches of 2 over the pool: a curve, not one point
