"""An end-to-end comparison on a tiny real sample with the real model, logged
to a real `mlflow server` on 127.0.0.1, read back through MLflow's client; an
interrupted comparison, rerun, skips the child runs that completed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cherrybench.paths import cache_dir
from cherrybench.registry import load_plugin_file
from cherrybench.cli import main as cli_main


def compare_main(argv):
    return cli_main(["compare", *argv])

FLAKY = '''
import os
from cherrybench.selectors import register_selector
from cherrybench.selectors.random_sample import RandomSample

@register_selector()
class Flaky(RandomSample):
    """Random, but fails while the marker file exists (an interruption mid-comparison)."""
    name = "flaky"
    def select(self, scores, budget, ctx):
        if os.path.exists(os.environ["FLAKY_MARKER"]):
            raise KeyboardInterrupt("interrupted")
        return super().select(scores, budget, ctx)
'''


LONG_QUESTION = ("You are planning a week of meals for a family of four with one vegetarian, one child who will not "
                 "eat anything green, and a budget of sixty dollars: list the seven dinners, what to buy for them, "
                 "and how to cook two of them ahead on Sunday so that the weekdays take under twenty minutes.")
ARGS = ["--pool-size", "12", "--eval-size", "4", "--budget", "4", "--max-length", "64", "--gen-size", "2",
        "--max-new-tokens", "8", "--train-batch-size", "4", "--no-progress", "--device", "cpu"]


def runs_of(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


@pytest.mark.slow
def test_compare_logs_everything_to_a_real_server(mlflow_server, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    vicuna = tmp_path / "vicuna_test_set.jsonl"  # a prompt-only test set: no eval loss, a stated reason
    vicuna.write_text("".join(json.dumps({"question_id": i, "text": q}) + "\n" for i, q in
                              enumerate(["Name a fruit.", LONG_QUESTION, "Say hello.", "Name a colour."])))
    assert compare_main(["--selectors", "ifd,longest", "--experiment", "e2e", "--tracking-uri", mlflow_server,
                         "--eval", f"vic:{vicuna}", "--eval-limit", "2", "--no-keep-models", *ARGS]) == 0
    ties = [r.getMessage().split(":")[0] for r in caplog.records if "the judge called" in r.getMessage()]
    assert len(ties) == len(set(ties)) <= 2  # said once per eval set, not once per trial
    client = MlflowClient(mlflow_server)
    runs = runs_of(client, "e2e")
    parents = [r for r in runs if r.data.tags.get("cherrybench.role") == "parent"]
    children = {r.data.tags["cherrybench.selector"]: r for r in runs if r.data.tags.get("cherrybench.role") == "child"}
    assert len(parents) == 1 and set(children) == {"ifd", "longest", "random", "full"}
    for name, run in children.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params["selector"] == name and run.data.params["budget"] == ("full" if name == "full" else "4")
        assert run.info.run_name == ("full-seed0" if name == "full" else f"{name}-4-seed0")
        assert run.data.tags["cherrybench.budget"] == run.data.params["budget"]
        assert run.data.params["train.max_length"] == "64" and run.data.params["train.seed"] == "0"
        metrics = run.data.metrics
        assert metrics["n_selected"] == (12 if name == "full" else 4)
        assert 0 < metrics["heldout.eval_loss"] < 20
        assert "vic.eval_loss" not in metrics and run.data.tags["cherrybench.nan.vic.eval_loss"] == "no_reference_answers"
        assert metrics["training_seconds"] > 0
        if name != "full":
            wins, ties, losses = (metrics[f"heldout.vs_full.{k}"] for k in ("wins", "ties", "losses"))
            assert wins + ties + losses == 2 and metrics["vic.vs_full.wins"] + metrics["vic.vs_full.ties"] \
                + metrics["vic.vs_full.losses"] == 2  # --eval-limit 2 of the 4 prompts
            assert metrics["heldout.vs_full.winning_score"] == pytest.approx((wins - losses) / 2 + 1)
            # the pair prompt has the judges' budget (2048), not --max-length 64: the long question stays whole
            assert metrics["vic.vs_full.clipped"] == 0 and metrics["heldout.vs_full.clipped"] == 0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"selected_ids.json", "selection_report.json", "subset.json", "answers.json", "eval"} <= artifacts
        assert {a.path for a in client.list_artifacts(run.info.run_id, "eval")} == {
            "eval/heldout.per_record.parquet", "eval/heldout.answers.parquet", "eval/vic.answers.parquet"}
        per_record = pd.read_parquet(client.download_artifacts(run.info.run_id, "eval/heldout.per_record.parquet",
                                                               str(tmp_path)))
        assert list(per_record.columns)[:5] == ["id", "n_tokens", "loss_sum", "loss_mean", "reason"]
        assert len(per_record) == 4  # every held-out record, scorable or not
        assert metrics["heldout.eval_loss"] == pytest.approx(per_record["loss_sum"].sum() / per_record["n_tokens"].sum())
        answers = pd.read_parquet(client.download_artifacts(run.info.run_id, "eval/heldout.answers.parquet",
                                                            str(tmp_path)))
        assert list(answers["id"]) == [r for r in per_record["id"][:2]]  # --gen-size 2, in eval order
        # the generated answers' scores sit beside their records' losses; records not answered get NaN
        for column in ("judge_quality", "rouge_l", "embedding_similarity"):
            assert per_record[column][:2].tolist() == pytest.approx(answers[column].tolist(), nan_ok=True)
            assert per_record[column][2:].isna().all()
        assert {"prompt", "reference", "answer", "rouge_l", "embedding_similarity"} <= set(answers.columns)
        assert metrics["heldout.rouge_l"] == pytest.approx(answers["rouge_l"].mean())
        vic = pd.read_parquet(client.download_artifacts(run.info.run_id, "eval/vic.answers.parquet", str(tmp_path)))
        assert "rouge_l" not in vic.columns and "vic.rouge_l" not in metrics  # no references: nothing to compare
        ids = json.loads(Path(client.download_artifacts(run.info.run_id, "selected_ids.json", str(tmp_path))).read_text())
        assert len(ids) == metrics["n_selected"]
    assert "hist_ifd.png" in {a.path for a in client.list_artifacts(children["ifd"].info.run_id)}
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"selection_overlap.png", "e2e.md", "e2e.csv", "e2e.budget.png"} <= parent_artifacts
    board = (tmp_path / "leaderboards" / "e2e.md").read_text()
    assert "\n| ifd |" in board and "vic.eval_loss: NaN (no_reference_answers)" in board
    assert "Verdict: at " in board and "One seed per selector" in board  # one seed: record-level intervals, said
    assert (tmp_path / "leaderboards" / "e2e.budget.png").stat().st_size > 10_000
    assert "cherrybench compare --selectors ifd,longest --experiment e2e" in board
    assert parents[0].data.params["evals"] == "heldout:4,vic:2"


@pytest.mark.slow
def test_rerun_after_interruption_skips_completed_children(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugin = tmp_path / "flaky_plugin.py"
    plugin.write_text(FLAKY)
    load_plugin_file(plugin)
    marker = tmp_path / "interrupt"
    marker.write_text("")
    monkeypatch.setenv("FLAKY_MARKER", str(marker))
    args = ["--selectors", "longest,flaky", "--experiment", "resume", "--tracking-uri", mlflow_server,
            "--no-baselines", "--pairwise-baseline", "longest", *ARGS, "--gen-size", "0"]
    assert compare_main(args) == 130  # interrupted: the CLI says how to resume instead of a traceback
    client = MlflowClient(mlflow_server)
    first = runs_of(client, "resume")
    done = [r for r in first if r.data.tags.get("cherrybench.role") == "child" and r.info.status == "FINISHED"]
    assert [r.data.tags["cherrybench.selector"] for r in done] == ["longest"]
    cut = [r for r in first if r.info.status == "KILLED"]  # the interrupted child and its parent, never RUNNING
    assert sorted(r.data.tags.get("cherrybench.role") for r in cut) == ["child", "parent"]
    assert not [r for r in first if r.info.status == "RUNNING"]

    marker.unlink()
    assert compare_main(args) == 0
    second = runs_of(client, "resume")
    children = [r for r in second if r.data.tags.get("cherrybench.role") == "child" and r.info.status == "FINISHED"]
    names = sorted(r.data.tags["cherrybench.selector"] for r in children)
    assert names == ["flaky", "longest"]  # longest was not run again
    board = (tmp_path / "leaderboards" / "resume.md").read_text()
    rows = [line.split(" | ")[0] for line in board.splitlines() if line.startswith("| ")]
    assert rows.count("| flaky") == 1 and rows.count("| longest") == 1  # each trial counted once


def test_unreachable_server_fails_before_any_work(tmp_path, monkeypatch, capsys, unused_port):
    monkeypatch.chdir(tmp_path)
    started = time.time()
    assert compare_main(["--selectors", "ifd", "--tracking-uri", f"http://127.0.0.1:{unused_port}", *ARGS]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert time.time() - started < 30
    assert not (tmp_path / "leaderboards").exists()


def test_unknown_selector_lists_registered(capsys):
    assert compare_main(["--selectors", "ifd,nosuch", "--tracking-uri", "sqlite:///unused.db"]) == 2
    err = capsys.readouterr().err
    assert "unknown selector 'nosuch'" in err and "longest" in err


@pytest.mark.slow
def test_a_selection_that_keeps_nothing_is_a_row_not_a_crash(tmp_path, monkeypatch, capsys):
    """AlpaGasus's 4.5 bar under a weak judge can keep no record: that trial trains nothing,
    ends FINISHED with n_selected 0 and the reason, the others finish, the leaderboard shows
    its row with the note, and a rerun skips it like any finished trial."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["--selectors", "longest,threshold", "--param", "column=response_length", "--param", "minimum=1000000",
            "--experiment", "empty", "--tracking-uri", uri, "--no-baselines", "--pairwise-baseline", "longest",
            *ARGS, "--gen-size", "0"]
    assert compare_main(args) == 0
    client = MlflowClient(uri)
    children = {r.data.tags["cherrybench.selector"]: r for r in runs_of(client, "empty")
                if r.data.tags.get("cherrybench.role") == "child"}
    empty = children["threshold"]
    assert empty.info.status == "FINISHED" and empty.data.metrics["n_selected"] == 0
    assert "heldout.eval_loss" not in empty.data.metrics  # nothing trained, nothing evaluated
    note = empty.data.tags["cherrybench.note"]  # why, from the selection's exclusion counts: all 12 of the pool
    assert note.startswith("selected no record (") and note.endswith(": 12): nothing trained or evaluated")
    assert children["longest"].data.metrics["n_selected"] == 4
    board = (tmp_path / "leaderboards" / "empty.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| threshold |"))
    assert "selected no record" in row
    err = capsys.readouterr().err  # one line per trial: how many of the comparison's are done
    assert "[longest-4-seed0] finished: 1 of 2 trials, " in err and "about " in err
    assert "[threshold-4-seed0] selected no record: 2 of 2 trials, " in err
    assert compare_main(args) == 0  # the rerun skips both
    err = capsys.readouterr().err
    assert "[threshold-4-seed0] finished earlier" in err and " of 2 trials" not in err


@pytest.mark.slow
def test_a_skipped_pairwise_baseline_lends_its_logged_answers(tmp_path, monkeypatch):
    """Resumed where the baseline finished but its model is gone from the cache (another
    CHERRYBENCH_CACHE, a cleaned cache, a Ray worker's disk): the trials judged against it
    still get their winning scores, from the baseline's answers.json in the tracking store."""
    import shutil

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    common = ["--no-baselines", "--pairwise-baseline", "random", "--experiment", "pw", "--tracking-uri", uri, *ARGS]
    assert compare_main(["--selectors", "random", *common]) == 0
    client = MlflowClient(uri)
    (baseline,) = [r for r in runs_of(client, "pw") if r.data.tags.get("cherrybench.role") == "child"]
    shutil.rmtree(baseline.data.tags["cherrybench.model_dir"])
    assert compare_main(["--selectors", "random,longest", *common]) == 0
    children = {r.data.tags["cherrybench.selector"]: r for r in runs_of(client, "pw")
                if r.data.tags.get("cherrybench.role") == "child"}
    assert children["random"].info.run_id == baseline.info.run_id  # skipped, not trained again
    judged = children["longest"].data.metrics
    assert judged["heldout.vs_random.wins"] + judged["heldout.vs_random.ties"] + judged["heldout.vs_random.losses"] == 2


@pytest.mark.slow
def test_two_seeds_and_two_budgets_give_a_leaderboard_that_decides(tmp_path, monkeypatch):
    """The issue's `compare --selectors longest --seeds 2 --budget A,B` on a small pool: a section per
    budget with the CI and verdict columns over both seeds, the budget curve, every child's
    per-record losses, and the leaderboard as parent-run metrics and table."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["--selectors", "longest", "--seeds", "2", "--budget", "3,5", "--full-seeds", "1", "--experiment", "sweep",
            "--tracking-uri", uri, "--leaderboard-dir", "boards", "--pool-size", "12", "--eval-size", "4",
            "--max-length", "64", "--gen-size", "0", "--train-batch-size", "4", "--no-progress", "--device", "cpu",
            "--no-keep-models"]
    assert compare_main(args) == 0
    assert not list((cache_dir() / "finetuned").iterdir())  # nine trials, no model left behind
    client = MlflowClient(uri)
    runs = runs_of(client, "sweep")
    children = {r.info.run_name: r for r in runs if r.data.tags.get("cherrybench.role") == "child"}
    assert set(children) == {f"{s}-{b}-seed{k}" for s in ("longest", "random") for b in (3, 5) for k in (0, 1)} | {
        "full-seed0"}
    for run in children.values():
        assert {a.path for a in client.list_artifacts(run.info.run_id, "eval")} == {"eval/heldout.per_record.parquet"}
    board = (tmp_path / "boards" / "sweep.md").read_text()
    assert "## Budget: 3 records (25%) (`--budget 3`)" in board and "## Budget: 5 records (41.7%) (`--budget 5`)" in board
    header = next(line for line in board.splitlines() if line.startswith("| selector |"))
    for column in ("heldout.eval_loss [95% CI]", "vs_random_ci", "verdict_vs_random", "vs_full_ci", "verdict_vs_full"):
        assert f"| {column} |" in header
    table = pd.read_csv(tmp_path / "boards" / "sweep.csv")
    rows = table.set_index(["budget", "selector"])
    assert rows.loc[(3, "longest"), "seeds"] == rows.loc[(5, "random"), "seeds"] == 2
    assert rows.loc[(3, "full"), "seeds"] == 1  # --full-seeds 1, said in the table
    assert rows.loc[(5, "longest"), "verdict_vs_random"] in ("better", "no difference", "worse")
    assert "One seed per selector" not in board and board.count("Verdict: at ") == 2
    assert (tmp_path / "boards" / "sweep.budget.png").stat().st_size > 10_000
    (parent,) = [r for r in runs if r.data.tags.get("cherrybench.role") == "parent"]
    metrics = parent.data.metrics
    for budget in (3, 5):
        low, delta, high = (metrics[f"b{budget}.longest.vs_random.{k}"] for k in ("ci_low", "delta", "ci_high"))
        assert low <= delta <= high and metrics[f"b{budget}.longest.vs_random.verdict"] in (-1, 0, 1)
    assert {"leaderboard.json", "sweep.budget.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert not any("cherrybench.model_dir" in r.data.tags for r in children.values())  # no path to a deleted model

    assert compare_main(args) == 0  # the rerun needs none of the deleted models: every trial is skipped
    assert {r.info.run_id for r in runs_of(client, "sweep") if r.data.tags.get("cherrybench.role") == "child"} == {
        r.info.run_id for r in children.values()}
    assert not list((cache_dir() / "finetuned").iterdir())


PLUGIN = '''
from cherrybench.metrics import Metric, register_metric


@register_metric()
class AnswerChars(Metric):
    name = "answer_chars"
    columns = {"answer_chars": "higher"}

    def compute(self, records, ctx):
        return self.frame([{"answer_chars": SIGN * len(r.turns[0].output), self.reason_column: None}
                           for r in records])
'''


@pytest.mark.slow
def test_a_trial_chosen_from_changed_scores_is_run_again_not_skipped(tmp_path):
    """A plugin metric fixed between two runs (same command, same key): its scores are recomputed,
    so the trial that selected from the old ones runs again and the leaderboard counts the new run."""
    import subprocess
    import sys

    plugin = tmp_path / "answer_chars.py"
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    command = [sys.executable, "-m", "cherrybench.runners.compare", "--plugin", str(plugin), "--selectors", "topk",
               "--param", "column=answer_chars", "--no-baselines", "--experiment", "fixed", "--tracking-uri", uri,
               *ARGS, "--gen-size", "0"]

    def run(sign: int) -> str:
        plugin.write_text(f"SIGN = {sign}\n" + PLUGIN)
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    run(1)
    again = run(1)
    assert "[topk-4-seed0] finished earlier" in again and "but with other scores" not in again  # unchanged: skipped
    assert "but with other scores or selector code" in run(-1)  # the metric's code changed: chosen again
    client = MlflowClient(uri)
    children = sorted((r for r in runs_of(client, "fixed") if r.data.tags.get("cherrybench.role") == "child"),
                      key=lambda r: r.info.start_time)
    assert len(children) == 2 and len({r.data.tags["cherrybench.key"] for r in children}) == 1
    chosen = [set(client_ids(client, r)) for r in children]
    assert chosen[0] != chosen[1]  # the longest answers, then the shortest
    board = (tmp_path / "leaderboards" / "fixed.md").read_text()
    assert "replaced by a later run of the same selector, budget and seed" in board


def client_ids(client, run) -> list[str]:
    path = client.download_artifacts(run.info.run_id, "selected_ids.json")
    return json.loads(Path(path).read_text())
