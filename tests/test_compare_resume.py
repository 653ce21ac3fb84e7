"""What a rerun of `compare` skips and what it runs again, the same for both engines: a
finished trial is skipped unless its answers would now be judged otherwise (another judge
or embedder at the same path: the evaluation key), its pairwise baseline runs again in this
invocation (its answers change), or it was judged without the baseline's answers and they
are here now; a baseline that kept no record resumes without a crash; a published subset
the size of a budget is judged against that budget's `random`; and the training precision
(bf16 on GPUs, fp32 on a CPU) is part of the fine-tune and trial keys, fp32 keys unchanged.
The rules are checked on a real MLflow store with logged runs; the slow tests run the real
command on a tiny pool (8 records, budget 2, --max-length 64, one answer of 4 tokens)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from alpaca30 import ROWS
from cherrybench.cli import main as cli_main
from cherrybench.context import Context
from cherrybench.finetune import TrainConfig, finetune_key
from cherrybench.fingerprint import hash_json
from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners import tracking
from cherrybench.runners.compare import Resume, evaluation_key, trial_key, trial_precision, trials
from cherrybench.runners.comparison import Comparison, PublishedSubset, Trial


# -- the training precision in the fine-tune and trial keys ------------------------------
def test_the_training_precision_enters_the_fine_tune_key_only_off_fp32():
    cpu, gpu = TrainConfig(device="cpu"), TrainConfig(device="cuda")
    settings = {k: v for k, v in asdict(cpu).items() if k not in ("model", "device", "neftune_alpha", "lora_targets")}
    assert cpu.fingerprint("base") == hash_json({"model": "base", "settings": settings})  # fp32: the key it had
    assert gpu.fingerprint("base") == hash_json({"model": "base", "settings": settings, "precision": "bfloat16"})
    assert cpu.fingerprint("base", "bfloat16") == gpu.fingerprint("base")  # given: the workers' precision
    records = [Record("a", [Turn("Say hi.", "Hi!")])]
    assert finetune_key(records, cpu, "base") != finetune_key(records, gpu, "base")  # bf16 models are not fp32 ones


def test_the_trial_key_carries_the_precision_its_engine_trains_in(tmp_path):
    pool = Dataset([Record(f"p{i}", [Turn(f"Question {i}?", f"Answer {i}.")]) for i in range(4)], None, "alpaca", "json")
    args = argparse.Namespace(gen_size=1, max_new_tokens=4, pairwise_baseline="random", brief_experience=False,
                              device="cpu")
    trial = Trial("longest", "2", 0)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # the base model: fingerprinted, never loaded

    def key(device, precision=None):
        comparison = Comparison(pool, [], TrainConfig(model=str(tmp_path), device=device, max_length=64), ["2"])
        return trial_key(trial, comparison, args, {}, precision) if precision else \
            trial_key(trial, comparison, args, {})

    assert key("cpu") == key("cpu", "float32") == key(None, "float32")  # fp32 on a CPU: the keys it had
    assert key("cuda") == key("cpu", "bfloat16") != key("cpu")  # bf16 on GPUs: another trial
    assert trial_precision(args) == "float32"  # --device cpu
    ray = argparse.Namespace(device=None)
    assert trial_precision(ray, gpus=1) == "bfloat16" and trial_precision(ray, gpus=0) == "float32"
    assert trial_precision(argparse.Namespace(device="cpu"), gpus=1) == "float32"  # --device cpu on a GPU cluster


# -- a published subset the size of a budget ----------------------------------------------
def test_a_subset_the_size_of_a_budget_shares_that_budgets_random_answers():
    pool = [Record(f"p{i}", [Turn(f"Question {i}?", f"Answer {i}.")]) for i in range(6)]
    comparison = Comparison(Dataset(pool, None, "alpaca", "json"), [], None, ["3", "0.5"])
    comparison.subsets = [PublishedSubset("three", "t.json", pool[:3], [r.id for r in pool[:3]]),
                          PublishedSubset("two", "w.json", pool[:2], [r.id for r in pool[:2]])]
    run = [(t.name, answers) for t, answers in trials(["random", "ifd"], [0], comparison)]
    assert [name for name, _ in run] == ["random-3-seed0", "ifd-3-seed0", "random-0.5-seed0", "ifd-0.5-seed0",
                                         "three-3-seed0", "random-2-seed0", "two-2-seed0"]
    by_name = dict(run)
    assert by_name["three-3-seed0"] is by_name["random-3-seed0"]  # judged against random at its size
    assert by_name["two-2-seed0"] is by_name["random-2-seed0"] is not by_name["random-3-seed0"]
    assert by_name["random-0.5-seed0"] is not by_name["random-3-seed0"]


# -- the evaluation key --------------------------------------------------------------------
def fake_model(path: Path, weights: bytes) -> str:
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(weights)
    return str(path)


def test_the_evaluation_key_follows_the_judge_and_embedder_weights_not_their_paths(tmp_path):
    evals = [type("Set", (), {"has_references": True})()]
    comparison = Comparison(None, evals, None, ["2"])
    judge = fake_model(tmp_path / "judge", b"weights one")

    def key(options, precision="float32", gen_size=1):  # a context per invocation, as compare makes
        ctx = Context(device="cpu", progress=False)
        return evaluation_key(comparison, argparse.Namespace(gen_size=gen_size), ctx, options, precision)

    first = key({"judge": judge})
    assert first == key({"judge": judge}) and first != key({})  # another judge
    fake_model(tmp_path / "judge", b"other weights two")  # new weights at the same path
    second = key({"judge": judge})
    assert second != first
    assert key({"judge": judge}, "bfloat16") != second  # the judge in bf16
    assert key({"judge": judge, "judge_max_length": 512}) != second
    embedder = fake_model(tmp_path / "embedder", b"lm")
    assert key({"judge": judge, "embedder": f"lm:mean:{embedder}"}) != second
    assert key({"judge": judge}, gen_size=0) is None  # no answers: nothing judged


# -- the rules, on a real MLflow store --------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.check_tracking(uri)
    exp_id = tracking.experiment_id(client, "resume", uri)
    with tracking.parent_run(exp_id, "parent", "cherrybench compare") as parent:
        def log(trial: Trial, tags: dict) -> str:
            with tracking.trial_run(exp_id, parent.info.run_id, trial.name, trial.key, tags) as run:
                return run.info.run_id
        yield client, exp_id, log


def test_a_finished_trial_judged_by_another_judge_runs_again_and_an_older_run_is_taken(store, capsys):
    client, exp_id, log = store
    args = argparse.Namespace(gen_size=1, pairwise_baseline="random")
    judged = Trial("ifd", "2", 0, key="k-judged")
    older = Trial("longest", "2", 0, key="k-older")
    run_id = log(judged, {tracking.EVALUATION_TAG: "judge-one"})
    log(older, {})  # logged before the evaluation key existed
    assert Resume(client, exp_id, args, "judge-one").finished(judged, {}).info.run_id == run_id
    assert Resume(client, exp_id, args, "judge-two").finished(judged, {}) is None
    assert f"[ifd-2-seed0] finished earlier in run {run_id}, but its answers were judged by another judge or " \
           "embedder" in capsys.readouterr().err
    assert Resume(client, exp_id, args, "judge-two").finished(older, {}) is not None  # taken as it is


def test_a_trial_is_run_again_when_its_pairwise_baseline_answers_changed_or_came(store, capsys):
    client, exp_id, log = store
    args = argparse.Namespace(gen_size=1, pairwise_baseline="random")
    baseline, trial = Trial("random", "2", 0, key="k-random"), Trial("ifd", "2", 0, key="k-ifd")
    unpaired = Trial("longest", "2", 0, key="k-longest")
    log(trial, {})
    log(unpaired, {tracking.UNPAIRED_TAG: "its pairwise baseline random-2-seed0 failed"})

    answers: dict = {}
    resume = Resume(client, exp_id, args)
    assert resume.finished(trial, answers) is not None and resume.finished(unpaired, answers) is not None
    answers["held"] = ["an answer"]  # the baseline's answers are here now (it finished since)
    assert resume.finished(trial, answers) is not None
    assert resume.finished(unpaired, answers) is None
    assert "[longest-2-seed0] finished earlier" in capsys.readouterr().err

    resume = Resume(client, exp_id, args)
    resume.baseline(baseline, answers, ran=True)  # the baseline runs again now: new answers
    assert resume.finished(trial, answers) is None
    assert resume.finished(trial, {}) is not None  # another seed or budget: another baseline
    assert "its pairwise baseline random-2-seed0 runs again" in capsys.readouterr().err
    quiet = Resume(client, exp_id, argparse.Namespace(gen_size=0, pairwise_baseline="random"))
    quiet.baseline(baseline, answers, ran=True)
    assert quiet.finished(trial, answers) is not None  # --gen-size 0: nothing judged pairwise


# -- the real command ---------------------------------------------------------------------
def write_alpaca(path: Path, rows) -> Path:
    path.write_text(json.dumps([{"id": f"{path.stem}{i}", "instruction": q, "input": x, "output": a}
                                for i, (q, x, a) in enumerate(rows)]))
    return path


def compare(tmp_path, experiment: str, *extra: str) -> int:
    pool = write_alpaca(tmp_path / "pool.json", ROWS[:8])
    held = write_alpaca(tmp_path / "held.json", ROWS[20:24])
    return cli_main(["compare", "--data", str(pool), "--eval", f"held:{held}", "--eval-size", "0",
                     "--budget", "2", "--max-length", "64", "--train-batch-size", "2", "--max-new-tokens", "4",
                     "--gen-size", "1", "--dedup", "off", "--no-progress", "--device", "cpu",
                     "--experiment", experiment, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "--leaderboard-dir", str(tmp_path / "boards"), *extra])


def children(tmp_path, experiment: str, selector: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get("cherrybench.role") == "child" and r.data.tags["cherrybench.selector"] == selector]
    return sorted(runs, key=lambda r: r.info.start_time)


@pytest.mark.slow  # fine-tunes SmolLM2 once, judges with a copy of it
def test_new_judge_weights_at_the_same_path_run_the_trials_again(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from cherrybench.models import resolve_model

    base = resolve_model(None).directory
    judge = tmp_path / "judge"
    judge.mkdir()
    for file in base.iterdir():
        (judge / file.name).write_bytes(file.read_bytes())
    args = ["--selectors", "longest", "--no-baselines", "--param", f"judge={judge}"]
    assert compare(tmp_path, "judge", *args) == 0
    assert compare(tmp_path, "judge", *args) == 0  # the same judge: skipped
    assert "[longest-2-seed0] finished earlier" in capsys.readouterr().err
    weights = load_file(judge / "model.safetensors")
    name = next(n for n in sorted(weights) if n.endswith("norm.weight"))
    weights[name] = weights[name] * 1.5
    save_file(weights, judge / "model.safetensors", metadata={"format": "pt"})  # new weights, same path
    assert compare(tmp_path, "judge", *args) == 0
    err = capsys.readouterr().err
    assert "[longest-2-seed0] finished earlier in run" in err and "judged by another judge or embedder" in err
    old, new = children(tmp_path, "judge", "longest")
    assert old.data.tags["cherrybench.key"] == new.data.tags["cherrybench.key"]  # the typed options are the same
    assert old.data.tags[tracking.EVALUATION_TAG] != new.data.tags[tracking.EVALUATION_TAG]
    assert old.data.tags["cherrybench.model_dir"] == new.data.tags["cherrybench.model_dir"]  # the cached model


@pytest.mark.slow  # fine-tunes SmolLM2 twice
def test_trials_are_judged_again_when_their_pairwise_baseline_runs(tmp_path, capsys):
    common = ["--no-baselines", "--pairwise-baseline", "random"]
    assert compare(tmp_path, "later", "--selectors", "longest", *common) == 0  # no baseline yet: not judged pairwise
    (first,) = children(tmp_path, "later", "longest")
    assert not [m for m in first.data.metrics if ".vs_random." in m]
    assert compare(tmp_path, "later", "--selectors", "random,longest", *common) == 0
    err = capsys.readouterr().err
    assert f"[longest-2-seed0] finished earlier in run {first.info.run_id}, but its pairwise baseline " \
           "random-2-seed0 runs again" in err
    old, new = children(tmp_path, "later", "longest")
    assert new.data.tags["cherrybench.key"] == old.data.tags["cherrybench.key"]
    metrics = new.data.metrics
    assert metrics["held.vs_random.wins"] + metrics["held.vs_random.ties"] + metrics["held.vs_random.losses"] == 1
    assert tracking.UNPAIRED_TAG not in new.data.tags
    assert compare(tmp_path, "later", "--selectors", "random,longest", *common) == 0  # nothing changed: skipped
    err = capsys.readouterr().err
    assert "[longest-2-seed0] finished earlier" in err and "runs again" not in err
    assert len(children(tmp_path, "later", "longest")) == 2


@pytest.mark.slow  # fine-tunes SmolLM2 once
def test_a_pairwise_baseline_that_kept_no_record_resumes(tmp_path, capsys, caplog):
    args = ["--selectors", "threshold,longest", "--param", "column=response_length", "--param", "minimum=1000000",
            "--no-baselines", "--pairwise-baseline", "threshold"]
    assert compare(tmp_path, "empty", *args) == 0
    capsys.readouterr()
    assert compare(tmp_path, "empty", *args) == 0  # before: generated answers with a model at "." and crashed
    err = capsys.readouterr().err
    assert "[threshold-2-seed0] finished earlier" in err and "[longest-2-seed0] finished earlier" in err
    assert "no answers.json and no model (it selected no record)" in caplog.text  # said, not silent
    (judged,) = children(tmp_path, "empty", "longest")  # its baseline still has no answers: nothing to redo
    assert judged.data.tags[tracking.UNPAIRED_TAG] == "not judged pairwise: its pairwise baseline threshold-2-seed0 " \
                                                      "selected no record"
