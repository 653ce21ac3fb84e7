"""The score cache: a second run does no forward pass, and a run killed with
SIGKILL resumes to exactly the scores of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cherrybench.cache import ShardStore
from cherrybench.context import Context
from cherrybench.metrics.ifd import IFD
from cherrybench.records import Dataset, Record, Turn
from cherrybench.scoring import score

pytestmark = pytest.mark.slow  # every test here loads a real model

CHUNK = 3


def make_dataset(n: int = 12) -> Dataset:
    words = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "chair", "ocean", "violin", "maple", "comet"]
    records = [Record(str(i), [Turn(f"Write one sentence about a {w}.",
                                    f"The {w} is " + "quite remarkable and " * (1 + i % 4) + "worth a look.")])
               for i, w in enumerate(words[:n])]
    return Dataset(records=records, path=None, format="alpaca", container="json")


class SmallChunks(IFD):
    chunk_size = CHUNK


def test_second_run_does_no_forward_pass(ctx, lm):
    dataset = make_dataset()
    metric = SmallChunks(max_length=96)
    before = lm.forward_calls
    first = score(dataset, [metric], ctx)
    assert lm.forward_calls > before
    middle = lm.forward_calls
    second = score(dataset, [metric], ctx)
    assert lm.forward_calls == middle  # all from the cache
    pd.testing.assert_frame_equal(first, second)
    # a subset of the same records is served from the cache too
    subset = Dataset(records=dataset.records[:5], path=None, format="alpaca", container="json")
    part = score(subset, [metric], ctx)
    assert lm.forward_calls == middle
    pd.testing.assert_frame_equal(part, first.iloc[:5].reset_index(drop=True))
    # a different parameter is a different cache entry
    score(dataset, [SmallChunks(max_length=64)], ctx)
    assert lm.forward_calls > middle


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_score_cache import make_dataset, SmallChunks
    from cherrybench.cache import ShardStore
    from cherrybench.context import Context
    from cherrybench.scoring import score
    original = ShardStore.append
    def slow_append(self, frame):
        path = original(self, frame)
        print("SHARD", flush=True)
        time.sleep(30)  # the parent kills us here, after the first shard is on disk
        return path
    ShardStore.append = slow_append
    score(make_dataset(), [SmallChunks(max_length=96)], Context(device="cpu", progress=False))
""")


def test_kill_and_resume_gives_identical_scores(tmp_path, isolated_cache):
    env = dict(os.environ, CHERRYBENCH_CACHE=str(tmp_path / "killed"))
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "models").symlink_to(isolated_cache / "models")
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent))],
                             env=env, stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.strip() == "SHARD"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    dataset = make_dataset()
    metric = SmallChunks(max_length=96)
    os.environ["CHERRYBENCH_CACHE"] = str(tmp_path / "killed")
    try:
        ctx = Context(device="cpu", progress=False)
        key = metric.cache_key(ctx, dataset.fingerprint)
        store = ShardStore("scores", metric.name, key, meta={})
        assert len(store.parts()) == 1 and len(store.load()) == CHUNK  # exactly one chunk survived
        resumed = score(dataset, [metric], ctx)
        calls = ctx.lm().forward_calls
        assert len(store.parts()) == len(dataset.records) // CHUNK  # nothing duplicated
        assert not list(store.directory.glob(".*tmp"))
    finally:
        os.environ["CHERRYBENCH_CACHE"] = str(isolated_cache)

    fresh_ctx = Context(device="cpu", progress=False)
    uninterrupted = score(dataset, [metric], fresh_ctx, use_cache=False)
    assert calls < fresh_ctx.lm().forward_calls  # the resumed run skipped the finished chunk
    pd.testing.assert_frame_equal(resumed, uninterrupted)  # identical, not merely close
    assert np.isfinite(resumed["ifd"]).all()
