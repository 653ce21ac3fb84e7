"""Provenance manifests and `cherrybench verify`: the manifest written beside a
subset records sha256 values that match the files (computed here with hashlib),
the selection's settings, the score-cache keys the run really used, and a command
line without this machine's paths; verify passes an intact manifest (exit 0),
names a changed input, a changed subset (down to its records) and a missing file
(exit 1), and refuses a file that is not a manifest (exit 2). No model is loaded
(random, topk over mtld)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

import cherrybench
from cherrybench.cli import main
from cherrybench.context import Context
from cherrybench.manifest import check_manifest, manifest_path, sanitize_command
from cherrybench.metrics import METRICS
from cherrybench.paths import cache_dir
from cherrybench.records import load_dataset
from cherrybench.runners import leaderboard

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
ROWS = [{"id": f"q{i}", "instruction": f"Describe item {i}.", "output": " ".join(WORDS[: 3 + i] * (1 + i % 2))}
        for i in range(10)]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_jsonl(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(monkeypatch, argv: list[str]) -> int:
    """Run the command as the `cherrybench` console script would (its argv is the process's)."""
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/cherrybench", *argv])
    return main(argv)


def select(monkeypatch, data: Path, out: Path, *extra, selector="random", budget="4") -> dict:
    argv = ["select", "--data", str(data), "--selector", selector, "--budget", budget, "--out", str(out),
            "--no-progress", "--device", "cpu", *extra]
    assert run_cli(monkeypatch, argv) == 0
    return json.loads(manifest_path(out).read_text())


def test_manifest_records_hashes_sizes_and_settings(tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "pool.jsonl")
    out = tmp_path / "out" / "sub.json"
    manifest = select(monkeypatch, data, out, "--seed", "3")
    assert manifest_path(out) == tmp_path / "out" / "sub.manifest.json"

    assert manifest["format"] == "cherrybench.manifest/1"
    assert manifest["cherrybench_version"] == cherrybench.__version__
    assert manifest["inputs"] == [{"role": "data", "path": "../pool.jsonl", "sha256": sha256(data),
                                   "bytes": data.stat().st_size}]
    written = json.loads(out.read_text())
    subset = manifest["subset"]
    assert (subset["path"], subset["sha256"], subset["bytes"]) == ("sub.json", sha256(out), out.stat().st_size)
    assert subset["records"] == len(written) == 4 and subset["ids"] == [r["id"] for r in written]
    by_id = {r.id: r for r in load_dataset(data).records}
    assert subset["record_hashes"] == [by_id[r["id"]].content_hash[:16] for r in written]
    report = out.with_name("sub.report.json")
    assert manifest["report"] == {"path": "sub.report.json", "sha256": sha256(report), "bytes": report.stat().st_size}
    assert manifest["selection"] == {"selector": "random", "params": {"seed": 3}, "budget": "4", "seed": 3}
    assert manifest["pool"] == {"records": 10, "fingerprint": load_dataset(data).fingerprint, "format": "alpaca"}
    assert manifest["audit"] is None and manifest["score_cache"] == [] and manifest["models"] == {}


def test_the_command_line_keeps_no_absolute_paths(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pool.jsonl")
    out = tmp_path / "sub.jsonl"
    manifest = select(monkeypatch, data, out)
    assert manifest["command"] == sanitize_command(
        f"cherrybench select --data {data} --selector random --budget 4 --out {out} --no-progress --device cpu")
    assert manifest["command"].startswith("cherrybench select --data ")
    assert str(tmp_path) not in manifest_path(out).read_text()  # neither in the command nor in any path

    monkeypatch.chdir(tmp_path)  # paths under the working directory stay readable, relative
    manifest = select(monkeypatch, Path("pool.jsonl"), Path("again.json"))
    assert manifest["command"] == ("cherrybench select --data pool.jsonl --selector random --budget 4 "
                                   "--out again.json --no-progress --device cpu")
    assert leaderboard.sanitize_command is sanitize_command  # one implementation, shared with the leaderboard


def test_main_records_the_arguments_it_was_given_never_the_callers_argv(tmp_path, monkeypatch):
    """Called from another program (here pytest), main(argv) records the cherrybench command those
    arguments make (as compare does), never the calling program's own sys.argv."""
    data = write_jsonl(tmp_path / "pool.jsonl")
    argv = ["select", "--data", str(data), "--selector", "random", "--budget", "2", "--out", str(tmp_path / "s.json"),
            "--no-progress"]
    assert main(argv) == 0
    command = json.loads((tmp_path / "s.manifest.json").read_text())["command"]
    assert command == sanitize_command("cherrybench " + " ".join(argv))
    assert command.startswith("cherrybench select --data ") and "pytest" not in command
    assert str(tmp_path) not in command


def test_score_cache_keys_are_the_ones_the_run_used(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pool.jsonl")
    manifest = select(monkeypatch, data, tmp_path / "top.json", "--param", "column=mtld", selector="topk")
    metric = METRICS.get("mtld")()
    key = metric.cache_key(Context(progress=False), load_dataset(data).fingerprint)
    assert [(e["metric"], e["version"], e["key"]) for e in manifest["score_cache"]] == [("mtld", metric.version, key)]
    assert (cache_dir() / "scores" / "mtld" / key[:24]).is_dir()  # the score cache's own directory for that key
    assert manifest["selection"]["params"]["column"] == "mtld"


def test_a_given_score_table_is_an_input_and_nothing_is_scored(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pool.jsonl")
    scores = tmp_path / "scores.parquet"
    assert run_cli(monkeypatch, ["score", "--data", str(data), "--metrics", "mtld", "--out", str(scores),
                                 "--no-progress"]) == 0
    manifest = select(monkeypatch, data, tmp_path / "top.json", "--scores", str(scores), "--param", "column=mtld",
                      selector="topk")
    assert [(e["role"], e["sha256"]) for e in manifest["inputs"]] == [("data", sha256(data)),
                                                                      ("scores", sha256(scores))]
    key = METRICS.get("mtld")().cache_key(Context(progress=False), load_dataset(data).fingerprint)
    # the table's key for mtld, checked equal to this run's: from the table, not scored
    assert [(e["metric"], e["key"], e["source"]) for e in manifest["score_cache"]] == [("mtld", key, "scores")]


def test_a_sampled_pool_and_a_compressed_input_keep_their_file(tmp_path, monkeypatch):
    import gzip

    data = tmp_path / "pool.jsonl.gz"
    data.write_bytes(gzip.compress(write_jsonl(tmp_path / "plain.jsonl").read_bytes()))
    manifest = select(monkeypatch, data, tmp_path / "s.parquet", "--pool-size", "6", budget="2")
    assert manifest["inputs"] == [{"role": "data", "path": "pool.jsonl.gz", "sha256": sha256(data),
                                   "bytes": data.stat().st_size, "compression": "gzip"}]
    assert manifest["pool"]["records"] == 6 and manifest["subset"]["container"] == "parquet"
    assert [c.status for c in check_manifest(tmp_path / "s.manifest.json")] == ["ok", "ok", "ok"]


# ---- verify ----------------------------------------------------------------------------------------

def verify(monkeypatch, manifest: Path, *extra) -> int:
    return run_cli(monkeypatch, ["verify", str(manifest), *extra])


@pytest.fixture
def selected(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    data = write_jsonl(tmp_path / "data" / "pool.jsonl")
    out = tmp_path / "out" / "sub.jsonl"
    select(monkeypatch, data, out)
    return data, out, manifest_path(out)


def test_verify_passes_an_intact_manifest(selected, monkeypatch, capsys):
    _, _, manifest = selected
    assert verify(monkeypatch, manifest) == 0
    out = capsys.readouterr().out
    assert out.count("\nok ") + out.startswith("ok ") == 3 and "intact (3 files match)" in out


def test_verify_names_a_changed_input(selected, monkeypatch, capsys):
    data, _, manifest = selected
    before, size = sha256(data), data.stat().st_size
    write_jsonl(data, ROWS + [{"id": "extra", "instruction": "x", "output": "y"}])
    assert verify(monkeypatch, manifest) == 1
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("changed"))
    assert "input (data)" in line and "pool.jsonl" in line
    assert f"sha256 was {before[:12]}..., now {sha256(data)[:12]}..." in line
    assert f"size was {size:,} bytes, now {data.stat().st_size:,} bytes" in line
    assert "1 of 3 files changed or missing" in out


def test_verify_names_the_records_of_a_changed_subset(selected, monkeypatch, capsys):
    _, out_file, manifest = selected
    rows = [json.loads(l) for l in out_file.read_text().splitlines()]
    rows[1]["output"] = "tampered"
    removed = rows.pop(2)["id"]
    rows.append({"id": "planted", "instruction": "x", "output": "y"})
    out_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert verify(monkeypatch, manifest) == 1
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("changed"))
    assert "subset:" in line and "4 records now, 4 then" in line
    assert f"records removed: 1 ('{removed}')" in line and "records added: 1 ('planted')" in line
    assert f"records whose content changed: 1 ('{rows[1]['id']}')" in line


def test_verify_tells_reformatting_from_changed_records(selected, monkeypatch, capsys):
    _, out_file, manifest = selected
    rows = [json.loads(l) for l in out_file.read_text().splitlines()]
    out_file.write_text("".join(json.dumps(r, indent=None, separators=(",", ":")) + "\n" for r in rows))
    assert verify(monkeypatch, manifest) == 1
    assert "the same records with the same content" in capsys.readouterr().out


def test_verify_names_a_missing_file(selected, monkeypatch, capsys):
    data, out_file, manifest = selected
    out_file.with_name("sub.report.json").unlink()
    data.unlink()
    assert verify(monkeypatch, manifest) == 1
    out = capsys.readouterr().out
    assert "missing  input (data)" in out and "missing  report" in out and "pool.jsonl: no such file" in out
    assert "2 of 3 files changed or missing" in out


def test_verify_follows_a_moved_tree_and_takes_a_base(selected, tmp_path, monkeypatch, capsys):
    """Input paths are relative to the manifest: the whole tree can move; --base points elsewhere."""
    data, _, manifest = selected
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "data").rename(moved / "data")
    (tmp_path / "out").rename(moved / "out")
    assert verify(monkeypatch, moved / "out" / "sub.manifest.json") == 0
    assert verify(monkeypatch, moved / "out" / "sub.manifest.json", "--base", str(tmp_path)) == 1
    assert "missing  input (data)" in capsys.readouterr().out


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("{not json", "malformed JSON"),
    ('{"format": "something/else"}', "not a cherrybench manifest (field 'format' is 'something/else'"),
    ('{"format": "cherrybench.manifest/1", "inputs": []}', "missing field 'subset'"),
    ('{"format": "cherrybench.manifest/1", "inputs": [{"path": 3}], "subset": {"path": "a", "sha256": "b"}}',
     "field 'inputs[0]' needs string fields 'path' and 'sha256'"),
])
def test_verify_refuses_what_is_not_a_manifest(tmp_path, monkeypatch, capsys, content, message):
    path = tmp_path / "x.manifest.json"
    if content is not None:
        path.write_text(content)
    assert verify(monkeypatch, path) == 2
    err = capsys.readouterr().err
    assert err.startswith("cherrybench: error: ") and message in err and err.count("\n") == 1


def test_compare_trial_manifest_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    """compare logs the manifest beside subset.json in its MLflow artifacts, whose final folder is
    unknown when it is written: inputs are relative to the run's working directory."""
    from cherrybench.finetune import TrainConfig
    from cherrybench.manifest import write_manifest
    from cherrybench.outputs import write_subset
    from cherrybench.records import Dataset
    from cherrybench.runners.compare import trial_manifest
    from cherrybench.runners.comparison import Comparison, Trial
    from cherrybench.runners.select import run_selection
    from cherrybench.selectors import SELECTORS, Budget

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "pool.jsonl")
    source = load_dataset("pool.jsonl")
    pool = Dataset(source.records[:8], None, source.format, source.container)
    comparison = Comparison(pool, [], TrainConfig(), ["3"])
    trial = Trial("random", "3", 5)
    selector = SELECTORS.get("random")(seed=5)
    selection, _ = run_selection(pool, selector, Budget.parse("3"), Context(progress=False, seed=0))
    artifacts = tmp_path / "artifacts"
    subset = write_subset(pool, selection.ids, artifacts / "subset.jsonl")
    (artifacts / "selection_report.json").write_text(json.dumps(selection.report))
    manifest = trial_manifest(trial, selection, selector.get_params(), comparison, subset,
                              artifacts / "selection_report.json", "cherrybench compare --data pool.jsonl")
    write_manifest(artifacts / "subset.manifest.json", manifest)
    assert manifest["inputs_relative_to"] == "working directory"
    assert manifest["inputs"][0] == {"role": "data", "path": "pool.jsonl", "sha256": sha256(tmp_path / "pool.jsonl"),
                                     "bytes": (tmp_path / "pool.jsonl").stat().st_size}
    assert manifest["selection"] == {"selector": "random", "params": {"seed": 5}, "budget": "3", "seed": 5}
    assert manifest["pool"]["records"] == 8 and manifest["subset"]["ids"] == selection.ids
    assert [c.status for c in check_manifest(artifacts / "subset.manifest.json")] == ["ok", "ok", "ok"]
    os.chdir(artifacts)  # elsewhere, the input is not found unless --base says where the run ran
    assert [c.status for c in check_manifest("subset.manifest.json")][0] == "missing"
    assert [c.status for c in check_manifest("subset.manifest.json", base=tmp_path)][0] == "ok"


@pytest.mark.parametrize("field,value,message", [
    ("subset.ids", None, "field 'subset.ids' must be a list of strings"),
    ("subset.ids", 5, "field 'subset.ids' must be a list of strings"),
    ("subset.record_hashes", ["a"], "fields 'subset.ids' (4) and 'subset.record_hashes' (1) differ in length"),
    ("pool", None, "field 'pool' must be an object whose 'format' is a string"),
    ("inputs", "pool.jsonl", "field 'inputs' must be a list, got str"),
    ("inputs_relative_to", "elsewhere", "field 'inputs_relative_to' is 'elsewhere'"),
    ("subset.bytes", "many", "field 'subset.bytes' must be a whole number of bytes, got 'many'"),
])
def test_verify_refuses_a_corrupt_field_of_a_manifest(selected, monkeypatch, capsys, field, value, message):
    """A manifest damaged in a field verify reads is exit 2 naming the field, even when the subset
    changed too (the record comparison reads ids and hashes), never a traceback or a silent pass."""
    _, out_file, manifest = selected
    out_file.write_text(out_file.read_text().replace("Describe", "Rewrite", 1))  # the subset changed
    content = json.loads(manifest.read_text())
    *parents, key = field.split(".")
    entry = content
    for name in parents:
        entry = entry[name]
    entry[key] = value
    manifest.write_text(json.dumps(content))
    assert verify(monkeypatch, manifest) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cherrybench: error: {manifest}: {message}") and err.count("\n") == 1
