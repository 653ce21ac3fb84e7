"""Comparisons on Ray (`compare --engine ray`) on one local Ray (2 CPUs, no
dashboard) shared by the module, against the same comparison run in this
process: the same per-selector metrics, trial keys and selections, even with
a trial's worker killed mid-run (retried); a trial whose training really
fails is retried `--max-retries` times, logged as FAILED with its error while
the other finishes, and a rerun skips the finished one; the trials judged against a pairwise
baseline that failed (or kept no record) are marked, and a rerun resumes as the local engine
does (judging them again when the baseline runs again). The retry and
ordering rules of `run_jobs` are checked with tasks that leave a trace on
disk per attempt, and a model directory's trip back as a tar (--log-model).
Tiny: pool 8 (10), budget 2, --max-length 64, one step, one answer of 4 tokens."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from local_ray import local_ray
from mlflow.tracking import MlflowClient

from alpaca30 import ROWS
from cherrybench.cli import main as cli_main

TRIAL_PROCESS = "cherrybench-trial:"  # the title Ray gives a worker while it runs a trial task

LONGEST_PROMPT = '''
from cherrybench.selectors import register_selector
from cherrybench.selectors.longest import Longest

@register_selector()
class LongestPrompt(Longest):
    """The records with the longest instructions."""
    name = "longest_prompt"
    column = "instruction_length"
'''


@pytest.fixture(scope="module")
def ray_cluster(isolated_cache):
    """One local Ray for the module; its workers' cache is the session's, not a test's, so
    a model trained on Ray is never one this process trained (or the reverse)."""
    with local_ray({"CHERRYBENCH_CACHE": str(isolated_cache), "OMP_NUM_THREADS": "1"}):
        yield isolated_cache


def write_alpaca(path: Path, rows) -> Path:
    path.write_text(json.dumps([{"id": f"{path.stem}{i}", "instruction": q, "input": x, "output": a}
                                for i, (q, x, a) in enumerate(rows)]))
    return path


@pytest.fixture
def files(tmp_path) -> dict:
    long = [("Repeat after me: " + "the quick brown fox jumps over the lazy dog. " * 12, "", "The quick brown fox."),
            ("Summarise this: " + "rain fell on the hills and the rivers rose all week. " * 12, "", "It rained.")]
    return {"pool": write_alpaca(tmp_path / "pool.json", ROWS[:8]),
            "long_pool": write_alpaca(tmp_path / "long_pool.json", ROWS[:8] + long),  # prompts beyond --max-length
            "eval": write_alpaca(tmp_path / "held.json", ROWS[20:24])}


def compare(tmp_path, experiment: str, data: Path, eval_file: Path, *extra: str) -> int:
    return cli_main(["compare", "--data", str(data), "--eval", f"held:{eval_file}", "--eval-size", "0",
                     "--budget", "2", "--max-length", "64", "--train-batch-size", "2", "--max-new-tokens", "4",
                     "--dedup", "off", "--no-progress", "--device", "cpu", "--experiment", experiment,
                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "--leaderboard-dir", str(tmp_path / experiment), *extra])


def children(tmp_path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get("cherrybench.role") == "child"]


def artifact(tmp_path, run, name: str) -> str:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Path(client.download_artifacts(run.info.run_id, name, str(tmp_path / run.info.run_id))).read_text()


def kill_the_first_trial_process(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a trial task (its process title names it)."""
    while not stop.is_set() and not killed:
        for proc in psutil.Process().children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if TRIAL_PROCESS in title:
                proc.send_signal(signal.SIGKILL)
                killed.append(title)
                return
        time.sleep(0.02)


@pytest.mark.slow  # starts Ray, fine-tunes SmolLM2 here and on its workers
def test_compare_on_ray_gives_the_local_metrics_even_with_a_worker_killed(ray_cluster, tmp_path, files, capsys):
    args = ["--selectors", "longest,random", "--no-baselines", "--pairwise-baseline", "random", "--gen-size", "1"]
    assert compare(tmp_path, "local", files["pool"], files["eval"], *args) == 0
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=kill_the_first_trial_process, args=(killed, stop))
    killer.start()
    try:
        assert compare(tmp_path, "ray", files["pool"], files["eval"], *args, "--engine", "ray") == 0
    finally:
        stop.set()
        killer.join()
    err = capsys.readouterr().err
    assert len(killed) == 1 and "random-2-seed0" in killed[0]  # the baseline runs first: its worker was killed
    assert "[random-2-seed0] started on Ray (attempt 2)" in err

    local = {r.data.tags["cherrybench.selector"]: r for r in children(tmp_path, "local")}
    ray = {r.data.tags["cherrybench.selector"]: r for r in children(tmp_path, "ray")}
    assert sorted(local) == sorted(ray) == ["longest", "random"]
    for name in local:
        mine, theirs = local[name], ray[name]
        assert mine.info.status == theirs.info.status == "FINISHED"
        assert mine.data.tags["cherrybench.key"] == theirs.data.tags["cherrybench.key"]  # the engine is not in it
        assert json.loads(artifact(tmp_path, mine, "selected_ids.json")) == \
            json.loads(artifact(tmp_path, theirs, "selected_ids.json"))
        assert json.loads(artifact(tmp_path, mine, "answers.json")) == \
            json.loads(artifact(tmp_path, theirs, "answers.json"))
        expected = {k: v for k, v in mine.data.metrics.items() if not k.endswith("_seconds")}
        got = {k: v for k, v in theirs.data.metrics.items() if not k.endswith("_seconds")}
        assert sorted(got) == sorted(expected)
        assert got == pytest.approx(expected, rel=0, abs=1e-5)
        assert {"held.eval_loss", "held.rouge_l", "n_selected"} <= set(got)
        # trained on a Ray worker, in the workers' cache, not this process's
        assert Path(theirs.data.tags["cherrybench.model_dir"]).is_relative_to(ray_cluster)
        assert not Path(mine.data.tags["cherrybench.model_dir"]).is_relative_to(ray_cluster)
        assert "cherrybench.attempts" not in mine.data.tags
    assert "held.vs_random.wins" in ray["longest"].data.metrics  # judged against the baseline's answers
    assert ray["random"].data.tags["cherrybench.attempts"] == "2" and ray["longest"].data.tags[
        "cherrybench.attempts"] == "1"


@pytest.mark.slow  # starts Ray, fine-tunes SmolLM2 on its workers
def test_a_trial_that_keeps_failing_is_logged_as_failed_and_the_others_finish(ray_cluster, tmp_path, files,
                                                                              capsys):
    plugin = tmp_path / "longest_prompt.py"
    plugin.write_text(LONGEST_PROMPT)
    args = ["--plugin", str(plugin), "--selectors", "longest_prompt,longest", "--no-baselines", "--gen-size", "0",
            "--engine", "ray", "--max-retries", "1"]
    assert compare(tmp_path, "fails", files["long_pool"], files["eval"], *args) == 1
    err = capsys.readouterr().err
    assert "1 trial(s) failed on every attempt (--max-retries 1): longest_prompt-2-seed0" in err
    assert "[longest_prompt-2-seed0] started on Ray (attempt 2)" in err
    assert "started on Ray (attempt 3)" not in err
    runs = {r.data.tags["cherrybench.selector"]: r for r in children(tmp_path, "fails")}
    failed, finished = runs["longest_prompt"], runs["longest"]
    assert failed.info.status == "FAILED" and finished.info.status == "FINISHED"
    assert failed.data.tags["cherrybench.attempts"] == "2"
    # its two records' prompts fill --max-length 64: the worker's own error, whole in error.txt
    reason = "ValueError: no training record has an answer token within --max-length"
    assert failed.data.tags["cherrybench.error"] == reason
    assert reason in artifact(tmp_path, failed, "error.txt")
    assert sorted(json.loads(artifact(tmp_path, failed, "selected_ids.json"))) == ["long_pool8", "long_pool9"]
    assert finished.data.metrics["held.eval_loss"] > 0 and finished.data.metrics["n_selected"] == 2

    assert compare(tmp_path, "fails", files["long_pool"], files["eval"], *args) == 1  # the rerun retries only it
    err = capsys.readouterr().err
    assert "[longest-2-seed0] finished earlier" in err and "[longest-2-seed0] started on Ray" not in err
    assert "[longest_prompt-2-seed0] FAILED: 2 of 2 trials (1 finished earlier), " in err
    statuses = sorted((r.data.tags["cherrybench.selector"], r.info.status) for r in children(tmp_path, "fails"))
    assert statuses == [("longest", "FINISHED"), ("longest_prompt", "FAILED"), ("longest_prompt", "FAILED")]


@pytest.mark.slow  # starts Ray (the module's)
def test_a_selection_that_keeps_nothing_starts_no_task(ray_cluster, tmp_path, files, capsys):
    """An empty selection is logged by the driver as a finished trial of n_selected 0 with its
    reason; no Ray task trains on nothing (before, it failed every attempt)."""
    args = ["--selectors", "threshold", "--param", "column=response_length", "--param", "minimum=1000000",
            "--no-baselines", "--gen-size", "0", "--engine", "ray"]
    assert compare(tmp_path, "empty", files["pool"], files["eval"], *args) == 0
    err = capsys.readouterr().err
    assert "[threshold-2-seed0] selected no record (" in err and "started on Ray" not in err
    (run,) = children(tmp_path, "empty")
    assert run.info.status == "FINISHED" and run.data.metrics["n_selected"] == 0
    assert run.data.tags["cherrybench.note"].endswith(": 8): nothing trained or evaluated")


@pytest.mark.slow  # starts Ray, fine-tunes SmolLM2 on its workers
def test_trials_whose_pairwise_baseline_failed_are_marked_and_judged_again(ray_cluster, tmp_path, files, capsys):
    """The baseline fails every attempt: the trial judged against it still trains and is
    evaluated, but is marked as not judged pairwise (tag, leaderboard note) instead of a
    silent FINISHED run without winning scores; a rerun, which runs the baseline again,
    runs it again too, as the local engine would."""
    plugin = tmp_path / "longest_prompt.py"
    plugin.write_text(LONGEST_PROMPT)
    args = ["--plugin", str(plugin), "--selectors", "longest_prompt,longest", "--no-baselines", "--pairwise-baseline",
            "longest_prompt", "--gen-size", "1", "--engine", "ray", "--max-retries", "0", "--workers", "1"]
    assert compare(tmp_path, "nobase", files["long_pool"], files["eval"], *args) == 1
    err = capsys.readouterr().err
    assert "[longest-2-seed0] not judged pairwise: its pairwise baseline longest_prompt-2-seed0 failed" in err
    (first,) = [r for r in children(tmp_path, "nobase") if r.data.tags["cherrybench.selector"] == "longest"]
    assert first.info.status == "FINISHED" and first.data.metrics["held.eval_loss"] > 0
    assert first.data.tags["cherrybench.unpaired"] == \
        "not judged pairwise: its pairwise baseline longest_prompt-2-seed0 failed"
    assert not [m for m in first.data.metrics if ".vs_longest_prompt." in m]
    board = (tmp_path / "nobase" / "nobase.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| longest |"))
    assert "not judged pairwise: its pairwise baseline longest_prompt-2-seed0 failed" in row

    assert compare(tmp_path, "nobase", files["long_pool"], files["eval"], *args) == 1
    err = capsys.readouterr().err
    assert f"[longest-2-seed0] finished earlier in run {first.info.run_id}, but its pairwise baseline " \
           "longest_prompt-2-seed0 runs again" in err and "[longest-2-seed0] started on Ray" in err
    again = [r for r in children(tmp_path, "nobase") if r.data.tags["cherrybench.selector"] == "longest"]
    assert len(again) == 2 and all(r.data.tags["cherrybench.key"] == first.data.tags["cherrybench.key"] for r in again)


@pytest.mark.slow  # starts Ray, fine-tunes SmolLM2 on its workers
def test_a_pairwise_baseline_that_kept_no_record_resumes_on_ray(ray_cluster, tmp_path, files, capsys):
    """Also: --no-keep-models deletes the model in the worker's cache once the trial is evaluated."""
    args = ["--selectors", "threshold,longest", "--param", "column=response_length", "--param", "minimum=1000000",
            "--no-baselines", "--pairwise-baseline", "threshold", "--gen-size", "1", "--engine", "ray",
            "--workers", "1", "--no-keep-models"]
    kept = ray_cluster / "finetuned"
    before = set(kept.iterdir()) if kept.is_dir() else set()
    assert compare(tmp_path, "emptybase", files["pool"], files["eval"], *args) == 0
    assert not set(kept.iterdir()) - before  # trained on the worker (its cache is the session's), then deleted
    capsys.readouterr()
    assert compare(tmp_path, "emptybase", files["pool"], files["eval"], *args) == 0  # before: no answers.json, a crash
    err = capsys.readouterr().err
    assert "[threshold-2-seed0] finished earlier" in err and "[longest-2-seed0] finished earlier" in err
    (run,) = [r for r in children(tmp_path, "emptybase") if r.data.tags["cherrybench.selector"] == "longest"]
    assert run.data.tags["cherrybench.unpaired"] == \
        "not judged pairwise: its pairwise baseline threshold-2-seed0 selected no record"
    assert run.data.metrics["held.eval_loss"] > 0 and "cherrybench.model_dir" not in run.data.tags


def test_max_retries_needs_engine_ray(tmp_path, files, capsys):
    assert compare(tmp_path, "x", files["pool"], files["eval"], "--max-retries", "1") == 2
    assert capsys.readouterr().err.strip().endswith("--max-retries needs --engine ray")


# -- run_jobs with plain functions: retries counted on disk, the order of dependent jobs -----
def fail_until(ctx, counter: Path, succeed_at: int) -> int:
    """Count this attempt in `counter`; raise until attempt `succeed_at`."""
    attempt = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempt))
    if attempt < succeed_at:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


def stamp(ctx, seconds: float) -> tuple[float, float]:
    started = time.time()
    time.sleep(seconds)
    return started, time.time()


@pytest.fixture
def by_value():
    """This module's functions travel to the workers by value (the workers cannot import a test module)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow  # starts Ray
def test_run_jobs_retries_a_failing_job_up_to_max_retries(ray_cluster, tmp_path, by_value):
    from cherrybench.runners.ray_trials import Job, run_jobs

    jobs = [Job("twice", fail_until, lambda: (tmp_path / "a", 3)),  # succeeds at its third attempt
            Job("never", fail_until, lambda: (tmp_path / "b", 99))]
    done = {d.job.name: d for d in run_jobs(jobs, {"device": "cpu"}, {}, 0, max_retries=2)}
    assert done["twice"].result == 3 and done["twice"].failure is None and done["twice"].attempts == 3
    assert done["never"].result is None and done["never"].attempts == 3
    assert done["never"].failure.error == "RuntimeError: attempt 3 fails"
    assert "attempt 3 fails" in done["never"].failure.detail
    assert (tmp_path / "a").read_text() == "3" and (tmp_path / "b").read_text() == "3"  # ran 3 times, no more


@pytest.mark.slow  # starts Ray
def test_run_jobs_starts_a_job_after_the_one_it_waits_for(ray_cluster, by_value):
    from cherrybench.runners.ray_trials import Job, run_jobs

    handled, done = {}, {}  # the follower's arguments exist only once the leader's result was handled
    jobs = [Job("leader", stamp, lambda: (4.0,)), Job("free", stamp, lambda: (4.0,)),
            Job("follower", stamp, lambda: (handled["leader"],), after="leader")]
    for d in run_jobs(jobs, {"device": "cpu"}, {}, 0, max_retries=0):
        assert d.failure is None
        handled[d.job.name] = 0.0
        done[d.job.name] = d.result
    assert done["follower"][0] >= done["leader"][1]  # started after the leader ended
    assert done["free"][0] < done["leader"][1] and done["leader"][0] < done["free"][1]  # side by side (2 CPUs)


def test_a_model_directory_travels_as_a_tar_unchanged(tmp_path):
    from cherrybench.runners.ray_trials import pack_directory, unpacked

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    files = {"config.json": b'{"a": 1}', "model.safetensors": bytes(range(256)) * 40, "sub/tokenizer.json": b"{}"}
    for name, data in files.items():
        (model / name).write_bytes(data)
    with unpacked(pack_directory(model)) as back:
        assert {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*") if p.is_file()} == files
        kept = back
    assert not kept.exists()  # removed afterwards


@pytest.mark.slow  # starts Ray
def test_a_job_waits_until_the_one_before_it_was_handled_even_when_both_ended_together(ray_cluster, by_value):
    """Two jobs end before the driver looks; the one waited for comes back second. Its follower
    may start only once the caller has handled it (took the baseline's answers), not as soon as
    Ray reports it ended."""
    from cherrybench.runners.ray_trials import Job, run_jobs

    handled, done, pulled = {}, {}, {}

    def jobs():
        yield Job("free", stamp, lambda: (1.0,))
        yield Job("leader", stamp, lambda: (1.0,))
        time.sleep(8)  # both end meanwhile: one look at Ray finds them together
        pulled["follower"] = time.time()
        yield Job("follower", stamp, lambda: (handled["leader"],), after="leader")  # KeyError if started early

    order = []
    for d in run_jobs(jobs(), {"device": "cpu"}, {}, 0, max_retries=0):
        assert d.failure is None
        order.append(d.job.name)
        handled[d.job.name] = 0.0
        done[d.job.name] = d.result
    assert done["free"][1] < pulled["follower"] and done["leader"][1] < pulled["follower"]  # the case arose
    assert order == ["free", "leader", "follower"]
