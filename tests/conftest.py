"""Shared fixtures and test-session plumbing.

Caches. Tests never read or write the user's cache (`~/.cache/cherrybench` or
`$CHERRYBENCH_CACHE`). From `pytest_configure` on (before any test module is
imported) `CHERRYBENCH_CACHE` points at a fresh session directory, and every
test gets its own empty cache under it, so no test sees scores, embeddings or
trained models another test left behind (tests do not depend on their order);
it is emptied when the test ends, so the suite's disk use stays that of a few
tests. A passing test's `tmp_path` is emptied too, but the folder stays: removed,
pytest would give its name to the next test of the same 30-character prefix, and
MLflow's cached connection to the old `sqlite:///.../mlflow.db` would find a deleted file.
Converted models are the one thing kept between sessions, for speed: each
cache's `models` is a link to `$CHERRYBENCH_TEST_CACHE/models` (default
`<repo>/.test-cache/models`), so the GGUF conversion happens once per checkout.

Workers. `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`;
`PYTEST_WORKERS` sets how many); each worker is its own session with its own caches,
and the tests that start Ray (or convert Gemma) run in one worker, one after another.

Order. `CHERRYBENCH_TEST_ORDER=reverse` or `shuffle:<seed>` runs the collected
tests in reverse or in a seeded random order, to check order independence.

Also here: the real SmolLM2 model loaded once (`ctx`, `lm`), and a builder for
a tiny offline reward model. Tests that load a real model, fine-tune or start
a server are marked `slow`; `pytest -m "not slow"` is the quick loop.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MEMO = "file_hashes.json"  # cherrybench.models' memo of file hashes (keyed by path, size and mtime)

_session: dict = {}


def _test_cache() -> Path:
    """Where converted models persist between test sessions; never the user's cache."""
    path = Path(os.environ.get("CHERRYBENCH_TEST_CACHE") or REPO / ".test-cache").expanduser().resolve()
    user = {Path.home() / ".cache" / "cherrybench"}
    if os.environ.get("CHERRYBENCH_CACHE"):
        user.add(Path(os.environ["CHERRYBENCH_CACHE"]).expanduser())
    for root in user:
        root = root.resolve()
        if path == root or root in path.parents or path in root.parents:
            raise pytest.UsageError(f"CHERRYBENCH_TEST_CACHE={path} overlaps the user's cache {root}; "
                                    "tests keep their converted models apart from it")
    return path


def _read_memo(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=0))
    tmp.replace(path)


def _new_cache(root: Path, memo: dict) -> Path:
    """An empty cache directory whose converted models are the test cache's."""
    root.mkdir(parents=True)
    (root / "models").symlink_to(_session["persistent"] / "models", target_is_directory=True)
    _write_json(root / MEMO, memo)
    return root


def pytest_configure(config):
    persistent = _test_cache()
    (persistent / "models").mkdir(parents=True, exist_ok=True)
    session = Path(tempfile.mkdtemp(prefix="cherrybench-test-cache-"))
    _session.update(persistent=persistent, root=session, old=os.environ.get("CHERRYBENCH_CACHE"), n=0,
                    memo={k: v for k, v in _read_memo(persistent / MEMO).items() if _still_there(k)})
    _new_cache(session / "session", _session["memo"])
    os.environ["CHERRYBENCH_CACHE"] = str(session / "session")


def _still_there(key: str) -> bool:
    """A memo entry ("path|size|mtime_ns") of a file that is still there, unchanged."""
    try:
        path, size, mtime = key.rsplit("|", 2)
        stat = os.stat(path)
    except (ValueError, OSError):
        return False
    return f"{stat.st_size}|{stat.st_mtime_ns}" == f"{size}|{mtime}"


def pytest_unconfigure(config):
    if "root" not in _session:
        return
    if _session["old"] is None:
        os.environ.pop("CHERRYBENCH_CACHE", None)
    else:
        os.environ["CHERRYBENCH_CACHE"] = _session["old"]
    # keep the hashes of files that outlive the session (the embedded GGUF, MiniLM), not of temporary models
    memo = {**_read_memo(_session["persistent"] / MEMO), **_read_memo(_session["root"] / "session" / MEMO),
            **_session["memo"]}
    _write_json(_session["persistent"] / MEMO, {k: v for k, v in memo.items() if _still_there(k)})
    shutil.rmtree(_session["root"], ignore_errors=True)


# with pytest-xdist (`make test` runs two workers), modules whose tests run in one worker, one
# after another: those that start a local Ray and find (or kill) its worker processes by name,
# one Ray at a time; and Gemma's, whose first test converts the model (2 min on a fresh clone)
# while a test on the other worker would only wait for it
ONE_AT_A_TIME = {"test_ray_engine": "ray", "test_compare_ray": "ray", "test_ray_embeddings": "ray",
                 "test_gemma": "gemma"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = ONE_AT_A_TIME.get(item.module.__name__.rpartition(".")[2]) if item.module is not None else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    order = os.environ.get("CHERRYBENCH_TEST_ORDER", "").strip()
    if not order:
        return
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle:"):
        random.Random(order.split(":", 1)[1]).shuffle(items)
    else:
        raise pytest.UsageError(f"CHERRYBENCH_TEST_ORDER must be 'reverse' or 'shuffle:<seed>', got {order!r}")


def pytest_report_header(config):
    order = os.environ.get("CHERRYBENCH_TEST_ORDER")
    return [f"cherrybench: models from {_session.get('persistent')}"
            + (f", test order {order}" if order else "")]


@pytest.fixture(scope="session")
def test_model_cache() -> Path:
    """`$CHERRYBENCH_TEST_CACHE`: where converted models persist between test sessions."""
    return _session["persistent"]


@pytest.fixture(scope="session")
def isolated_cache() -> Path:
    """The session's cache root (its `models` is the persistent test cache's)."""
    return _session["root"] / "session"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the item, so `fresh_cache` knows whether its test passed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict]()


def _empty(folder: Path, keep: str = "") -> None:
    """Remove what `folder` holds but `keep`, not the folder itself (a link is removed, not followed)."""
    for child in folder.iterdir():
        if child.name == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def fresh_cache(isolated_cache, request):
    """Every test starts from an empty score/embedding cache and the same RNG state."""
    import numpy as np
    import torch

    _session["n"] += 1
    root = _new_cache(_session["root"] / f"test-{_session['n']}", _session["memo"])
    os.environ["CHERRYBENCH_CACHE"] = str(root)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield root
    _session["memo"].update(_read_memo(root / MEMO))
    os.environ["CHERRYBENCH_CACHE"] = str(isolated_cache)
    # a test's fine-tuned models and gradients can take gigabytes: gone with the test, not at
    # the session's end. The `models` link stays: a memo (the session's `ctx`) may hold a path through it
    _empty(root, keep="models")
    # a passing test's tmp_path (models, MLflow stores) is emptied too; the folder stays, so pytest
    # never gives its name to another test (whose MLflow would find a cached connection to a deleted db)
    reports = request.node.stash.get(_REPORTS, {})
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is not None and reports.get("call") is not None and reports["call"].passed and tmp.is_dir():
        _empty(tmp)


@pytest.fixture(scope="session")
def ctx(isolated_cache):
    """A context on the real embedded SmolLM2-135M-Instruct, CPU fp32, no progress bars."""
    from cherrybench.context import Context

    return Context(model=None, device="cpu", progress=False)


@pytest.fixture(scope="session")
def lm(ctx):
    return ctx.lm()


@pytest.fixture(scope="session")
def make_reward_model():
    """Build a tiny, randomly initialised BERT sequence classifier offline (MiniLM's
    tokenizer): a real reward-model code path with no weights to download."""

    def build(path: Path, seed: int, layers: int) -> Path:
        import torch
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from cherrybench.embedders import minilm_dir

        tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=64, num_labels=1)
        BertForSequenceClassification(config).eval().save_pretrained(path)
        tokenizer.save_pretrained(path)
        return path

    return build


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (an unreachable tracking server)."""
    return free_port()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path):
    """A real `mlflow server` on 127.0.0.1 (SQLite store under `root`), started and answering:
    (process, url). It runs in its own process group under a shell that stops the group when
    this test process is gone, so a killed pytest leaves no server behind."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    watch = ('"$0" "$@" & server=$!; while kill -0 {ppid} 2>/dev/null && kill -0 $server 2>/dev/null; '
             'do sleep 1; done; kill -TERM 0').format(ppid=os.getpid())
    proc = subprocess.Popen(["sh", "-c", watch, str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            stop_mlflow_server(proc)
            raise RuntimeError("mlflow server did not start")
        time.sleep(0.5)


def stop_mlflow_server(proc) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:  # a loaded machine: stopping is not what the tests check
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (SQLite store, local artifacts), one per test module."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield url
    stop_mlflow_server(proc)
