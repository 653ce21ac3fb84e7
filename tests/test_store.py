"""The content-keyed artifact store and the atomic writes every cache goes
through: fine-tuned models keyed by record content (never positional ids),
racing builders, failed builds that leave nothing behind, corrupt cache files
set aside and recomputed, plugin source in the score key, and answers cached
per record. None of these load a model."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from cherrybench.finetune import DONE_MARKER, TrainConfig, finetune_key
from cherrybench.paths import cache_dir
from cherrybench.records import Dataset, Record, Turn, load_dataset
from cherrybench.store import MARKER, ArtifactStore, atomic_file, atomic_write_bytes, build_directory


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp")]


# atomic files


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "value.json"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            assert tmp.name.startswith(".value.json.") and f".{os.getpid()}." in tmp.name
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"second"  # the old content, whole
    assert not temp_leftovers(tmp_path)


def test_json_artifacts_round_trip_and_a_corrupt_one_is_set_aside(caplog):
    store = ArtifactStore("things")
    payload = {"what": "result", "records": ["h1", "h2"]}
    assert store.get_json(payload) is None
    store.put_json(payload, {"loss": 1.5})
    assert store.get_json(payload) == {"loss": 1.5}
    assert store.get_json({"what": "result", "records": ["h2", "h1"]}) is None  # order is content
    path = store.path_for(payload, ".json")
    path.write_text('{"key": "trunc')
    with caplog.at_level(logging.WARNING):
        assert store.get_json(payload) is None
    assert path.name in caplog.text and not path.exists()
    assert len(list(store.root.glob(f"{path.name}.corrupt-*"))) == 1


# directories


def test_directory_is_built_once_then_reused():
    store = ArtifactStore("dirs")
    calls = []

    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "weights.bin").write_bytes(b"w")

    first = store.directory({"k": 1}, build)
    again = store.directory({"k": 1}, build)
    assert first == again and len(calls) == 1
    assert (first / "weights.bin").read_bytes() == b"w"
    assert json.loads((first / MARKER).read_text())["payload"] == {"k": 1}
    assert calls[0].name.startswith(f".{first.name}.{os.getpid()}.") and calls[0].name.endswith(".tmp")
    store.directory({"k": 2}, build)
    assert len(calls) == 2 and len(list(store.root.iterdir())) == 2
    store.remove({"k": 1})
    assert store.find({"k": 1}) is None and store.find({"k": 2}) is not None
    assert not temp_leftovers(store.root)


def test_discard_deletes_only_an_artifact_of_its_own_store(tmp_path):
    store = ArtifactStore("dirs")
    built = store.directory({"k": 1}, lambda staging: (staging / "weights.bin").write_bytes(b"w"))
    elsewhere = tmp_path / "model"
    elsewhere.mkdir()
    for outside in (elsewhere, ArtifactStore("other").root / built.name, store.root, built / "weights.bin"):
        with pytest.raises(ValueError, match="is not an artifact of"):
            store.discard(outside)
    assert elsewhere.is_dir() and (built / "weights.bin").is_file()
    store.discard(built)
    store.discard(built)  # gone already: nothing to do
    assert store.find({"k": 1}) is None and not list(store.root.iterdir())


def test_failure_mid_build_leaves_no_staging_and_no_artifact():
    store = ArtifactStore("dirs")

    def broken(staging: Path) -> None:
        (staging / "part.bin").write_bytes(b"half a model")
        raise MemoryError("out of memory mid-build")

    with pytest.raises(MemoryError):
        store.directory({"k": "x"}, broken)
    assert list(store.root.iterdir()) == []  # no staging dir, no half artifact
    built = store.directory({"k": "x"}, lambda staging: (staging / "ok").write_text("1"))
    assert (built / "ok").is_file()


def test_an_unfinished_older_directory_is_replaced(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "junk").write_text("from a crashed older version")
    done = lambda p: (p / DONE_MARKER).is_file()  # noqa: E731
    build_directory(target, lambda s: (s / DONE_MARKER).write_text("{}"), is_complete=done)
    assert sorted(p.name for p in target.iterdir()) == [DONE_MARKER]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from cherrybench.store import ArtifactStore
    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    def build(staging):
        (staging / "who").write_text(str(os.getpid()))
        (ready / str(os.getpid())).touch()
        while not go.exists():  # both processes are mid-build before either finishes
            time.sleep(0.01)
    print(ArtifactStore("race").directory({"same": "key"}, build), flush=True)
""")


def test_racing_builders_both_succeed_with_one_result(tmp_path):
    ready, go = tmp_path / "ready", tmp_path / "go"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(ready), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.time() + 60
    while len(list(ready.iterdir())) < 2:
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1  # both got the same artifact
    root = cache_dir() / "race"
    assert [p.name for p in root.iterdir()] == [Path(paths.pop()).name]  # one result, no staging left
    assert (root / next(root.iterdir()).name / "who").read_text() in {str(p.pid) for p in procs}
    assert not temp_leftovers(root)


# fine-tuned models are keyed by content


def write_alpaca(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in pairs]))
    return path


def test_finetune_keys_follow_record_content_not_positional_ids(tmp_path):
    a = load_dataset(write_alpaca(tmp_path / "a.json", [("Q1", "A1"), ("Q2", "A2"), ("Q3", "A3")]))
    b = load_dataset(write_alpaca(tmp_path / "b.json", [("Other 1", "B1"), ("Other 2", "B2"), ("Other 3", "B3")]))
    assert [r.id for r in a.records] == [r.id for r in b.records] == ["0", "1", "2"]  # the ids collide
    config = TrainConfig(max_length=64)
    key = lambda records: ArtifactStore.key(finetune_key(records, config, base_fingerprint="base"))  # noqa: E731
    assert key(a.records) != key(b.records)  # same size, same ids, different data: no reuse
    again = load_dataset(write_alpaca(tmp_path / "a_copy.json", [("Q1", "A1"), ("Q2", "A2"), ("Q3", "A3")]))
    assert key(again.records) == key(a.records)  # the same records: the same model
    renamed = [Record(f"x{r.id}", r.turns) for r in a.records]
    assert key(renamed) == key(a.records)
    assert key(a.records[::-1]) != key(a.records)  # training order matters
    assert key(a.records[:2]) != key(a.records)
    other = finetune_key(a.records, TrainConfig(max_length=128), base_fingerprint="base")
    assert ArtifactStore.key(other) != key(a.records)
    assert ArtifactStore.key(finetune_key(a.records, config, base_fingerprint="other base")) != key(a.records)


def test_finetuned_model_trains_only_when_missing(monkeypatch):
    import cherrybench.finetune as finetune

    trained = []

    def fake_train(records, config, staging, progress):
        trained.append([r.turns[0].output for r in records])
        (staging / DONE_MARKER).write_text(json.dumps({"n_records": len(records)}))

    monkeypatch.setattr(finetune, "_train", fake_train)
    a = [Record(str(i), [Turn(f"Q{i}", f"A{i}")]) for i in range(3)]
    b = [Record(str(i), [Turn(f"Q{i}", f"B{i}")]) for i in range(3)]
    config = TrainConfig(max_length=64)
    first = finetune.finetuned_model(a, config, progress=False, base_fingerprint="base")
    assert finetune.finetuned_model(list(a), config, progress=False, base_fingerprint="base") == first
    second = finetune.finetuned_model(b, config, progress=False, base_fingerprint="base")
    assert second != first and trained == [["A0", "A1", "A2"], ["B0", "B1", "B2"]]
    assert sorted(p.name for p in (cache_dir() / "finetuned").iterdir()) == sorted([first.name, second.name])
    finetune.remove_finetuned_model(a, config, base_fingerprint="base")
    assert not first.exists() and second.exists()


# the score cache


def mtld_dataset(n: int) -> Dataset:
    words = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "chair", "ocean", "violin", "maple", "comet"]
    return Dataset([Record(str(i), [Turn(f"About a {w}.", f"The {w} is " + "quite remarkable and " * (1 + i % 4)
                                         + f"worth a look, said the {words[(i + 3) % 12]}.")])
                    for i, w in enumerate(words[:n])], None, "alpaca", "json")


def test_corrupt_score_shards_are_set_aside_and_recomputed(caplog):
    from cherrybench.cache import ShardStore
    from cherrybench.context import Context
    from cherrybench.metrics.mtld import MTLD
    from cherrybench.scoring import score

    ctx = Context(progress=False)
    metric = MTLD()
    full = mtld_dataset(12)
    for n in (4, 8, 12):  # three runs, three shards of four records each
        first = score(mtld_dataset(n), [metric], ctx)
    store = ShardStore("scores", metric.name, metric.cache_key(ctx, full.fingerprint), meta={})
    parts = store.parts()
    assert len(parts) == 3
    truncated, garbage = parts[0], parts[1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage.write_bytes(b"this is not parquet at all" * 10)
    with caplog.at_level(logging.WARNING):
        again = score(full, [metric], ctx)
    assert truncated.name in caplog.text and garbage.name in caplog.text
    pd.testing.assert_frame_equal(again, first)
    pd.testing.assert_frame_equal(again, score(full, [metric], ctx, use_cache=False))
    assert not truncated.exists() and not garbage.exists()
    for bad in (truncated, garbage):
        assert len(list(store.directory.glob(f"{bad.name}.corrupt-*"))) == 1
    assert len(store.parts()) == 2 and len(store.load()) == 12  # the lost eight recomputed in one chunk, cached
    assert not temp_leftovers(store.directory)


# models


def test_broken_config_json_is_a_clear_error(tmp_path):
    from cherrybench.models import ModelConfigError, resolve_model

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ValueError, match=r"model .*model: config.json is not valid JSON \(") as info:
        resolve_model(str(model))
    assert isinstance(info.value, ModelConfigError)


# plugin source in the score key

PLUGIN = textwrap.dedent("""
    from cherrybench.metrics import Metric, register_metric


    @register_metric()
    class Constant(Metric):
        name = "store_test_constant"
        columns = {"store_test_constant": "higher"}

        def compute(self, records, ctx):
            return self.frame([{"store_test_constant": VALUE, self.reason_column: None} for r in records])
""")


def test_an_edited_plugin_gets_a_new_cache_key(tmp_path):
    from cherrybench.context import Context
    from cherrybench.metrics import METRICS
    from cherrybench.registry import load_plugin_file
    from cherrybench.scoring import score

    ctx = Context(progress=False)
    data = mtld_dataset(3)
    plugin = tmp_path / "constant_plugin.py"
    plugin.write_text(PLUGIN.replace("VALUE", "1.0"))
    load_plugin_file(plugin)
    old = METRICS.get("store_test_constant")()
    assert score(data, [old], ctx)["store_test_constant"].tolist() == [1.0] * 3
    plugin.write_text(PLUGIN.replace("VALUE", "2.0"))  # compute changed, same name, same version
    load_plugin_file(plugin)
    new = METRICS.get("store_test_constant")()
    assert type(new) is not type(old) and type(new).version == type(old).version
    assert new.cache_key(ctx, data.fingerprint) != old.cache_key(ctx, data.fingerprint)
    assert score(data, [new], ctx)["store_test_constant"].tolist() == [2.0] * 3
    load_plugin_file(plugin)  # unchanged: not imported again
    assert METRICS.get("store_test_constant") is type(new)


def test_builtin_metric_keys_do_not_hash_sources():
    from cherrybench.context import Context
    from cherrybench.metrics.base import plugin_sources
    from cherrybench.metrics.mtld import MTLD

    assert plugin_sources(MTLD) == []
    MTLD().cache_key(Context(progress=False))


# generated answers


def test_answers_are_cached_per_record_content(monkeypatch):
    import cherrybench.evaluate as evaluate

    asked = []

    def fake_generate(model, records, max_new_tokens=128, prompt="alpaca", ctx=None, max_length=None, bar=None):
        asked.append([r.instruction for r in records])
        return [f"{r.instruction} -> {max_new_tokens}" for r in records]

    monkeypatch.setattr(evaluate, "generate_answers", fake_generate)
    a, b, c = (Record(str(i), [Turn(q, "ref")]) for i, q in enumerate(["qa", "qb", "qc"]))
    run = lambda records, n=4: evaluate.cached_answers("m", records, max_new_tokens=n, model_fingerprint="fp")  # noqa: E731
    assert run([a, b]) == ["qa -> 4", "qb -> 4"]
    assert run([Record("other id", b.turns), c, c]) == ["qb -> 4", "qc -> 4", "qc -> 4"]  # overlap reused
    assert asked == [["qa", "qb"], ["qc"]]
    assert run([a, b, c]) == ["qa -> 4", "qb -> 4", "qc -> 4"] and len(asked) == 2
    assert run([a], n=8) == ["qa -> 8"] and len(asked) == 3  # other settings, other answers


def test_interrupted_generation_keeps_the_chunks_it_finished(monkeypatch):
    """Answers are stored chunk by chunk: a generation killed in its third chunk
    keeps the first two, and the rerun generates only the rest, once each."""
    import cherrybench.evaluate as evaluate

    asked = []

    def fake_generate(model, records, max_new_tokens=128, prompt="alpaca", ctx=None, max_length=None, bar=None):
        if len(asked) == 2 and not resumed:
            raise KeyboardInterrupt
        asked.append([r.instruction for r in records])
        return [r.instruction.upper() for r in records]

    monkeypatch.setattr(evaluate, "generate_answers", fake_generate)
    monkeypatch.setattr(evaluate, "ANSWER_CHUNK", 2)
    records = [Record(str(i), [Turn(f"q{i}", "ref")]) for i in range(7)]
    run = lambda: evaluate.cached_answers("m", records, model_fingerprint="fp")  # noqa: E731
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        run()
    assert asked == [["q0", "q1"], ["q2", "q3"]]
    resumed = True
    assert run() == [f"Q{i}" for i in range(7)]
    assert asked[2:] == [["q4", "q5"], ["q6"]]  # only what the first run did not store
    assert run() == [f"Q{i}" for i in range(7)] and len(asked) == 4


def test_brief_experience_pick_and_model_are_stored_by_content(monkeypatch, ctx):
    import cherrybench.finetune as finetune
    import cherrybench.runners.brief_experience as brief

    picks, trained = [], []
    monkeypatch.setattr(brief, "_pick", lambda pool, train, ctx, clusters, per_cluster: picks.append(1) or [0, 2])
    monkeypatch.setattr(finetune, "_train", lambda records, config, staging, progress: trained.append(
        [r.content_hash for r in records]) or (staging / DONE_MARKER).write_text("{}"))
    pool = mtld_dataset(4)
    config = TrainConfig(max_length=64, epochs=3.0)
    model = brief.brief_experience_model(pool, config, ctx, clusters=2, per_cluster=1)
    assert brief.brief_experience_model(pool, config, ctx, clusters=2, per_cluster=1) == model
    assert len(picks) == 1 and trained == [[pool.records[0].content_hash, pool.records[2].content_hash]]
    assert model.parent == cache_dir() / "finetuned"  # the common store, trained with epochs=1
    assert model.name == finetune.FINETUNED.path_for(
        finetune.finetune_key([pool.records[0], pool.records[2]], TrainConfig(max_length=64, epochs=1.0), ctx=ctx)).name
