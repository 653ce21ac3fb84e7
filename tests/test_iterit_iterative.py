"""Iterative IterIT (`compare --selectors iterit --param iterative=true`): epoch 1
trains on the static picks; before epoch 2 the window of u x k records is rescored
with the weights being trained and re-picked inside it. Checked against IFDs
computed independently by the engine on a copy of the epoch-1 weights saved from
disk, and against IterIT's own pick on those IFDs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cherrybench.cli import main
from cherrybench.metrics.ifd import IFD
from cherrybench.records import Dataset
from cherrybench.scoring import score_metric
from cherrybench.selectors.iterit import iterit_pick
from cherrybench.selectors.iterit_iterative import IterITReselect, epoch_table, live_scores
from alpaca30 import alpaca30


def test_epoch_table_lays_out_every_epoch_of_the_window():
    log = [{"epoch": 2, "ifd": [0.5, None, 0.9], "picks": [2, 0]}]
    table = epoch_table(log, ["a", "b", "c"], {"a": 0.7, "b": 0.8, "c": 0.95}, ["b"])
    assert table["epoch"].tolist() == [1, 1, 1, 2, 2, 2] and table["id"].tolist() == ["a", "b", "c"] * 2
    assert table["picked"].tolist() == [False, True, False, True, False, True]
    assert table["pick_order"].tolist()[3:] == [1, pd.NA, 0] and table["pick_order"].tolist()[1] == 0
    assert table["ifd"].tolist()[:3] == [0.7, 0.8, 0.95] and np.isnan(table["ifd"][4])


def test_iterative_must_be_true_or_false(capsys):
    assert main(["compare", "--selectors", "iterit", "--param", "iterative=maybe",
                 "--tracking-uri", "sqlite:///unused.db"]) == 2
    assert "iterative" in capsys.readouterr().err


@pytest.mark.slow
def test_live_scores_are_the_engines_on_the_same_weights(ctx, lm):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    records = alpaca30().records[:6]
    metric = IFD(max_length=64)
    expected = score_metric(Dataset(records, None, "alpaca", "json"), metric, ctx)["ifd"].to_numpy(float)
    assert np.allclose(live_scores(metric, records, lm.model, lm.tokenizer)["ifd"], expected, rtol=1e-6)
    # a LoRA model is read through its base model: fresh adapters (B = 0) leave the scores as they were
    fresh = AutoModelForCausalLM.from_pretrained(lm.ref.directory, dtype=torch.float32)
    peft = get_peft_model(fresh, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).train()
    assert np.allclose(live_scores(metric, records, peft, lm.tokenizer)["ifd"], expected, rtol=1e-5)
    assert peft.training  # its mode restored


@pytest.mark.slow
def test_each_epoch_repicks_from_ifds_rescored_with_the_current_weights(tmp_path, monkeypatch, ctx):
    from mlflow.tracking import MlflowClient

    from cherrybench.context import Context
    from cherrybench.finetune import training_summary
    from cherrybench.records import load_dataset

    monkeypatch.chdir(tmp_path)
    pool = alpaca30()
    data = tmp_path / "pool.json"
    data.write_text(json.dumps([{"instruction": r.turns[0].instruction, "input": r.turns[0].input,
                                 "output": r.turns[0].output} for r in pool.records[:12]]))
    saved = []
    original = IterITReselect.choose

    def saving_choose(self, epoch, model, tokenizer):  # keep a copy of the weights it rescored with
        path = tmp_path / f"before-epoch{epoch}"
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        saved.append(path)
        return original(self, epoch, model, tokenizer)

    monkeypatch.setattr(IterITReselect, "choose", saving_choose)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["compare", "--data", str(data), "--eval-size", "2", "--selectors", "iterit", "--no-baselines",
                 "--param", "iterative=true", "--budget", "2", "--epochs", "2", "--learning-rate", "1e-3",
                 "--max-length", "64", "--gen-size", "0", "--train-batch-size", "2", "--no-progress", "--device",
                 "cpu", "--experiment", "it", "--tracking-uri", uri]) == 0
    assert len(saved) == 1  # rescored once: before epoch 2

    client = MlflowClient(uri)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("it").experiment_id])
              if r.data.tags.get("cherrybench.role") == "child"]
    assert run.info.run_name == "iterit-2-seed0" and run.data.params["selector.iterative"] == "True"
    assert run.data.params["train.epochs"] == "2.0" and run.data.metrics["n_selected"] == 2
    assert run.data.metrics["iterit_rescore_seconds"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "iterit_epochs.json" in artifacts
    assert "tables/iterit_epochs.json" in {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "iterit_epochs.json", str(tmp_path)))
                        .read_text())
    window, (first, second) = logged["window"], logged["epochs"]
    selected = json.loads(Path(client.download_artifacts(run.info.run_id, "selected_ids.json", str(tmp_path)))
                          .read_text())
    assert len(window) == 6 and window[:2] == selected == first["picks"]  # u = 3: 3 x k, the static picks first
    assert set(second["picks"]) <= set(window) and 1 <= len(second["picks"]) <= 2

    # independently: the engine's IFD of the window with the weights saved before epoch 2
    by_id = {r.id: r for r in load_dataset(data).records}
    records = [by_id[i] for i in window]
    later = score_metric(Dataset(records, None, "alpaca", "json"), IFD(max_length=64),
                         Context(model=str(saved[0]), device="cpu", progress=False))["ifd"].to_numpy(float)
    base = score_metric(Dataset(records, None, "alpaca", "json"), IFD(max_length=64), ctx)["ifd"].to_numpy(float)
    assert [first["ifd"][i] for i in window] == pytest.approx(base.tolist(), rel=1e-6)  # epoch 1: the base model's
    assert [second["ifd"][i] for i in window] == pytest.approx(later.tolist(), rel=1e-5)
    assert np.abs(later - base).max() > 1e-3  # training moved them: the rescoring is not the base scores again
    picks, _ = iterit_pick(records, later, 2, 0.1)
    assert second["picks"] == [window[p] for p in picks]
    # the trained model's summary holds the same log (a cached model keeps it)
    summary = training_summary(Path(run.data.tags["cherrybench.model_dir"]))
    assert [e["epoch"] for e in summary["epochs"]] == [2] and summary["epochs"][0]["picks"] == picks
