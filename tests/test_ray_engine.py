"""Scoring on Ray (`--engine ray`) against the local engine, on one local Ray
(2 CPUs, no dashboard) shared by the module: the same scores and NaN reasons
with the real SmolLM2 (IFD and the AlpaGasus judge), a worker actor killed
mid-run, and the driver killed with SIGKILL mid-run and rerun (it scores only
what the cache lacks). Chunks of 2 records make a handful of records several
Ray blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from local_ray import local_ray

from alpaca30 import ROWS
from cherrybench.cache import HASH_COLUMN
from cherrybench.context import Context
from cherrybench.metrics import build_metrics
from cherrybench.ray_engine import RayEngine
from cherrybench.records import load_dataset
from cherrybench.scoring import score, size_sorted_chunks

CHUNK = 2  # records per chunk (one Ray block each)
MAX_LENGTH = 64
IFD_COLUMNS = ["id", "cas", "das", "ifd", "ifd_ppl", "ppl", "ifd_reason"]


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module, shut down at the end."""
    with local_ray() as address:
        yield address


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory) -> Path:
    """Eleven Alpaca records, then one with a blank answer (NaN empty_answer, set by the
    scoring core) and one whose prompt fills MAX_LENGTH (NaN prompt_too_long, set by IFD)."""
    rows = [{"id": f"r{i}", "instruction": q, "input": x, "output": a} for i, (q, x, a) in enumerate(ROWS[:11])]
    rows.append({"id": "blank", "instruction": "Name a colour.", "input": "", "output": "  "})
    rows.append({"id": "long", "instruction": "Repeat this. " * 60, "input": "", "output": "Repeat this."})
    path = tmp_path_factory.mktemp("pool") / "pool.json"
    path.write_text(json.dumps(rows))
    return path


def test_the_ray_engine_takes_the_per_record_metrics_that_load_a_model():
    metrics = build_metrics(["ifd", "alpagasus", "reward", "length", "mtld", "knn"])
    assert [RayEngine().takes(m) for m in metrics] == [True, True, True, False, False, False]


def test_ray_flags_without_engine_ray_are_an_error(pool_file, tmp_path, capsys):
    from cherrybench.cli import main

    for flag, value in (("--workers", "2"), ("--ray-address", "127.0.0.1:6379"), ("--gpus-per-worker", "1")):
        code = main(["score", "--data", str(pool_file), "--metrics", "length", flag, value,
                     "--out", str(tmp_path / "s.parquet")])
        assert code == 2
        assert capsys.readouterr().err.strip() == f"cherrybench: error: {flag} needs --engine ray"
    assert not (tmp_path / "s.parquet").exists()


def ifd():
    metric = build_metrics(["ifd"], {"max_length": MAX_LENGTH})[0]
    metric.chunk_size = CHUNK  # the same chunks for both engines: each is one Ray block
    return metric


@pytest.fixture(scope="module")
def reference(pool_file, ctx):
    """The local engine's scores (no cache), on the CPU in fp32 like the Ray workers."""
    metrics = [ifd(), *build_metrics(["alpagasus"])]
    return score(load_dataset(pool_file), metrics, ctx, use_cache=False)


def ray_context(**engine) -> Context:
    ctx = Context(device="cpu", progress=False)
    ctx.engine = RayEngine(**engine)
    return ctx


def cached_rows(cache: Path) -> pd.DataFrame:
    """Every row of every shard of the IFD score cache, with the shard it is in."""
    parts = sorted((cache / "scores" / "ifd").glob("*/part-*.parquet"))
    frames = [pd.read_parquet(p).assign(shard=p.name) for p in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[HASH_COLUMN, "shard"])


def n_shards(cache: Path) -> int:
    return len(list((cache / "scores" / "ifd").glob("*/part-*.parquet")))


def assert_same_scores(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Numbers within 1e-5, reasons equal; a missing reason read back from the cache may be NaN, not None."""
    def missing_as_none(frame):
        reasons = [c for c in frame.columns if c.endswith("_reason")]
        return frame.astype({c: object for c in reasons}).apply(
            lambda col: col.where(col.notna(), None) if col.name in reasons else col)

    pd.testing.assert_frame_equal(missing_as_none(got), missing_as_none(expected), check_exact=False, rtol=0,
                                  atol=1e-5)


@pytest.mark.slow  # starts Ray and loads SmolLM2 in its workers
def test_scores_on_ray_equal_the_local_engine(ray_address, pool_file, reference, fresh_cache):
    dataset = load_dataset(pool_file)
    ctx = ray_context(workers=2)
    got = score(dataset, [ifd(), *build_metrics(["alpagasus"])], ctx)
    assert_same_scores(got, reference)
    reasons = got.set_index("id")
    assert reasons.loc["blank", "ifd_reason"] == "empty_answer" and pd.isna(reasons.loc["blank", "ifd"])
    assert reasons.loc["long", "ifd_reason"] == "prompt_too_long" and pd.isna(reasons.loc["long", "ifd"])
    assert reasons.loc["blank", "alpagasus_reason"] == "empty_answer"
    assert reasons["ifd"].isna().equals(reasons["ifd_reason"].notna()) and reasons["ifd"].notna().sum() >= 8
    assert not ctx._resources  # the driver loaded no model: every score came from a Ray worker
    # one cache shard per chunk, each record once, the same numbers
    rows = cached_rows(fresh_cache)
    assert n_shards(fresh_cache) == len(size_sorted_chunks(dataset.records, CHUNK))
    assert sorted(rows[HASH_COLUMN]) == sorted(r.content_hash for r in dataset.records)
    # a second run reads the cache: identical, nothing new written
    again = score(dataset, [ifd()], ray_context(workers=2))
    assert_same_scores(again, reference[IFD_COLUMNS])
    assert len(cached_rows(fresh_cache)) == len(rows)


def scoring_actors() -> list[psutil.Process]:
    """The Ray Data actors of this test's own Ray (processes under this one), by their title."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ChunkScorer" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow  # starts Ray and loads SmolLM2 in its workers
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(ray_address, pool_file, reference, fresh_cache):
    dataset = load_dataset(pool_file)
    n_chunks = len(size_sorted_chunks(dataset.records, CHUNK))
    killed = []

    def kill_one_actor_after_the_first_chunk():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            actors = scoring_actors()
            if actors and n_shards(fresh_cache):
                done = n_shards(fresh_cache)
                actors[0].send_signal(signal.SIGKILL)
                killed.append((actors[0].pid, done))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_after_the_first_chunk)
    killer.start()
    got = score(dataset, [ifd()], ray_context(workers=2))
    killer.join()
    assert killed, "no scoring actor was seen to kill"
    assert killed[0][1] < n_chunks  # killed mid-run
    assert not psutil.pid_exists(killed[0][0]) or psutil.Process(killed[0][0]).status() == psutil.STATUS_ZOMBIE
    assert_same_scores(got, reference[IFD_COLUMNS])
    rows = cached_rows(fresh_cache)
    assert rows[HASH_COLUMN].is_unique  # nothing scored twice into the cache
    assert set(rows[HASH_COLUMN]) == {r.content_hash for r in dataset.records}  # nothing lost
    assert n_shards(fresh_cache) == n_chunks


DRIVER = """
import sys
from cherrybench.context import Context
from cherrybench.metrics import build_metrics
from cherrybench.ray_engine import RayEngine
from cherrybench.records import load_dataset
from cherrybench.scoring import score

metric = build_metrics(["ifd"], {"max_length": %d})[0]
metric.chunk_size = %d
ctx = Context(device="cpu", progress=False)
ctx.engine = RayEngine(address=sys.argv[2], workers=1)
score(load_dataset(sys.argv[1]), [metric], ctx)
print("finished")
""" % (MAX_LENGTH, CHUNK)


@pytest.mark.slow  # starts Ray and loads SmolLM2 in its workers
def test_a_driver_killed_mid_run_resumes_with_only_the_missing_chunks(ray_address, pool_file, reference, fresh_cache,
                                                                     tmp_path):
    dataset = load_dataset(pool_file)
    n_chunks = len(size_sorted_chunks(dataset.records, CHUNK))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, CHERRYBENCH_CACHE=str(fresh_cache), OMP_NUM_THREADS="1")
    driver = subprocess.Popen([sys.executable, str(script), str(pool_file), ray_address], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not n_shards(fresh_cache) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        out, _ = driver.communicate()
    assert b"finished" not in out and driver.returncode == -signal.SIGKILL
    first = cached_rows(fresh_cache)
    assert 0 < first["shard"].nunique() < n_chunks  # killed mid-run, some chunks kept

    got = score(dataset, [ifd()], ray_context(workers=1))
    assert_same_scores(got, reference[IFD_COLUMNS])
    rows = cached_rows(fresh_cache)
    new = rows[~rows["shard"].isin(set(first["shard"]))]
    assert set(new[HASH_COLUMN]).isdisjoint(first[HASH_COLUMN])  # only what was missing was scored
    assert rows[HASH_COLUMN].is_unique
    assert set(rows[HASH_COLUMN]) == {r.content_hash for r in dataset.records}
    assert n_shards(fresh_cache) == n_chunks
