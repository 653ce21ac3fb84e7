"""The test session never reads or writes the user's cache: not
`~/.cache/cherrybench`, not `$CHERRYBENCH_CACHE`. Converted models live in the
test cache (`$CHERRYBENCH_TEST_CACHE`), scores in a fresh cache per test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cherrybench.paths import cache_dir

TESTS = Path(__file__).resolve().parent

INNER = textwrap.dedent("""
    from pathlib import Path

    from cherrybench.context import Context
    from cherrybench.metrics.length import Length
    from cherrybench.models import resolve_model
    from cherrybench.paths import cache_dir
    from cherrybench.records import Dataset, Record, Turn
    from cherrybench.scoring import score_metric


    def test_resolve_and_score(fresh_cache):
        ref = resolve_model(None)  # converts the embedded GGUF where the test cache lacks it
        dataset = Dataset([Record("a", [Turn("Say hello.", "Hello there!")])], None, "alpaca", "json")
        score_metric(dataset, Length(), Context(device="cpu", progress=False))  # writes a score shard
        assert cache_dir() == fresh_cache
        assert list((cache_dir() / "scores").rglob("part-*.parquet"))
        print("MODEL", ref.directory.resolve())
""")


def test_each_test_has_its_own_cache_apart_from_the_users(fresh_cache, isolated_cache, test_model_cache):
    user = Path.home() / ".cache" / "cherrybench"
    assert cache_dir() == fresh_cache != isolated_cache
    assert user.resolve() not in cache_dir().resolve().parents and cache_dir().resolve() != user.resolve()
    assert (cache_dir() / "models").resolve() == (test_model_cache / "models").resolve()
    assert not (cache_dir() / "scores").exists()  # nothing another test scored


@pytest.mark.slow  # a pytest session in a subprocess that loads the tokenizer
def test_a_test_session_leaves_home_and_the_users_cache_alone(tmp_path, test_model_cache):
    home, user_cache, work = tmp_path / "home", tmp_path / "user-cache", tmp_path / "work"
    for path in (home, user_cache, work):
        path.mkdir()
    (work / "test_inner.py").write_text(INNER)
    env = dict(os.environ, HOME=str(home), CHERRYBENCH_CACHE=str(user_cache),
               CHERRYBENCH_TEST_CACHE=str(test_model_cache), PYTHONPATH=str(TESTS))
    env.pop("CHERRYBENCH_TEST_ORDER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "conftest",
                           "test_inner.py"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = Path(next(line for line in proc.stdout.splitlines() if "MODEL " in line).split("MODEL ", 1)[1])
    assert test_model_cache.resolve() in model.parents  # converted into the test cache
    assert list(user_cache.iterdir()) == []  # the user's CHERRYBENCH_CACHE untouched
    assert not [p for p in home.rglob("*") if "cherrybench" in p.name]  # nothing under ~/.cache/cherrybench
    assert sorted(p.name for p in work.iterdir()) == ["test_inner.py"]
