"""Reading inputs and writing outputs safely: an output never replaces an input
or a non-regular file, writers follow the suffix, score tables are tied to the
data they were computed for, bad bytes and keys name the file and record, and a
failed write leaves nothing behind. No model is loaded (mtld, random, topk)."""

from __future__ import annotations

import csv
import datetime
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cherrybench.cli import main
from cherrybench.metrics.mtld import mtld, words
from cherrybench.outputs import atomic_write, read_scores, write_subset
from cherrybench.records import DataError, load_dataset

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
# eight records whose answers differ in lexical diversity, so mtld ranks them without ties
ROWS = [{"instruction": f"Question {i}: describe item {i}.", "input": "",
         "output": " ".join(WORDS[: 3 + 2 * i] * (1 + i % 3))} for i in range(8)]
QUIET = ["--no-progress", "--device", "cpu"]


def expected_mtld(rows) -> list[float]:
    return [mtld(words(r["output"])) for r in rows]


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows, indent=1))
    return path


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>") for p in directory.iterdir()}


def select_args(data, out, *extra, budget="2"):
    return ["select", "--data", str(data), "--selector", "random", "--budget", budget, "--out", str(out), *QUIET, *extra]


def score_args(data, out):
    return ["score", "--data", str(data), "--metrics", "mtld", "--out", str(out), *QUIET]


@pytest.fixture
def no_scoring(monkeypatch):
    """Scoring fails the test: the output checks must come first."""
    def boom(*args, **kwargs):
        raise AssertionError("scored before checking --out")

    importlib.import_module("cherrybench.runners.select")  # imported first, it binds the real score (restored after)

    monkeypatch.setattr("cherrybench.scoring.score", boom)
    monkeypatch.setattr("cherrybench.runners.select.score", boom)


# ---- 1. an output never replaces an input or a non-regular file ----------------------------------

@pytest.mark.parametrize("command", ["score", "select"])
@pytest.mark.parametrize("spelling", ["same", "dot-slash", "via-parent", "symlink-out", "symlink-data", "hardlink"])
def test_out_that_is_the_input_is_refused(tmp_path, monkeypatch, capsys, no_scoring, command, spelling):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "a.json", ROWS)
    data, out = "a.json", "a.json"
    if spelling == "dot-slash":
        out = "./a.json"
    elif spelling == "via-parent":
        (tmp_path / "sub").mkdir()
        out = "sub/../a.json"
    elif spelling == "symlink-out":
        (tmp_path / "out.json").symlink_to("a.json")
        out = "out.json"
    elif spelling == "symlink-data":
        (tmp_path / "link.json").symlink_to("a.json")
        data = "link.json"
    elif spelling == "hardlink":
        os.link(tmp_path / "a.json", tmp_path / "hard.json")
        out = "hard.json"
    before = listing(tmp_path)
    argv = score_args(data, out) if command == "score" else select_args(data, out)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cherrybench: error: --out ") and "is the input file" in err and "Traceback" not in err
    assert listing(tmp_path) == before  # the input unchanged, nothing added


def test_report_or_scores_path_that_is_an_input_is_refused(tmp_path, capsys, no_scoring):
    data = write_json(tmp_path / "sub.report.json", ROWS)  # the report of --out sub.json would replace it
    before = listing(tmp_path)
    assert main(select_args(data, tmp_path / "sub.json")) == 2
    err = capsys.readouterr().err
    assert "report path" in err and "sub.report.json is the input file" in err
    assert listing(tmp_path) == before

    scores = tmp_path / "s.parquet"
    scores.write_bytes(b"not looked at")
    assert main(select_args(data, scores, "--scores", str(scores))) == 2
    assert "s.parquet is the input file" in capsys.readouterr().err
    assert scores.read_bytes() == b"not looked at"


@pytest.mark.parametrize("command", ["score", "select"])
@pytest.mark.parametrize("case,message", [
    ("directory", "is a directory"),
    ("device-symlink", "is a character device (out.json resolves to /dev/null)"),
    ("parent-is-file", "is not a directory"),
])
def test_out_that_is_not_a_regular_file_is_refused(tmp_path, monkeypatch, capsys, no_scoring, command, case, message):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "a.json", ROWS)
    if case == "directory":
        (tmp_path / "out.json").mkdir()
        out = "out.json"
    elif case == "device-symlink":
        (tmp_path / "out.json").symlink_to("/dev/null")
        out = "out.json"
    else:
        (tmp_path / "plain.txt").write_text("a file")
        out = "plain.txt/out.json"
    before = listing(tmp_path)
    assert main(score_args("a.json", out) if command == "score" else select_args("a.json", out)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert listing(tmp_path) == before  # no temp file, no staging directory
    assert (tmp_path / "out.json").is_symlink() == (case == "device-symlink")


# ---- 4. the writer follows the suffix ------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl", ".json"])
def test_score_table_is_written_in_the_format_its_suffix_names(tmp_path, capsys, suffix):
    data = write_json(tmp_path / "a.json", ROWS)
    dataset = load_dataset(data)
    out = tmp_path / f"scores{suffix}"
    assert main(score_args(data, out)) == 0
    if suffix == ".parquet":
        arrow = pq.read_table(out)
        assert arrow.schema.metadata[b"cherrybench.data_fingerprint"].decode() == dataset.fingerprint
        rows = arrow.to_pylist()
    elif suffix == ".csv":
        with open(out, newline="") as handle:
            rows = [dict(r, mtld=float(r["mtld"])) for r in csv.DictReader(handle)]
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == [str(i) for i in range(8)]
    assert [r["_record_hash"] for r in rows] == [r.content_hash for r in dataset.records]
    if suffix != ".parquet":
        assert {r["_data_fingerprint"] for r in rows} == {dataset.fingerprint}
    assert [r["mtld"] for r in rows] == pytest.approx(expected_mtld(ROWS), rel=1e-12)
    back = read_scores(out)  # and read back exactly, whatever the format
    assert list(back["mtld"]) == [r["mtld"] for r in rows]
    assert set(listing(tmp_path)) == {"a.json", out.name}


def test_unsupported_suffixes_are_refused_with_the_supported_list(tmp_path, capsys, no_scoring):
    data = write_json(tmp_path / "a.json", ROWS)
    assert main(score_args(data, tmp_path / "s.txt")) == 2
    assert "suffix '.txt'; supported: .parquet, .csv, .jsonl, .json" in capsys.readouterr().err
    assert main(select_args(data, tmp_path / "sub.csv")) == 2
    assert "suffix '.csv'; supported: .json, .jsonl, .parquet" in capsys.readouterr().err
    assert set(listing(tmp_path)) == {"a.json"}


def test_subset_container_follows_the_suffix_records_unchanged_in_input_order(tmp_path, capsys):
    rows = [dict(r, id=f"r{i}") for i, r in enumerate(ROWS)]
    rows[5]["extra"] = {"kept": [1, 2]}  # a field only some rows have
    data = write_json(tmp_path / "a.json", rows)
    assert main(select_args(data, tmp_path / "sub.jsonl", budget="8")) == 0
    assert [json.loads(x) for x in (tmp_path / "sub.jsonl").read_text().splitlines()] == rows
    dataset = load_dataset(data)
    write_subset(dataset, ["r5", "r1"], tmp_path / "sub.parquet")
    back = pq.read_table(tmp_path / "sub.parquet").to_pylist()
    assert back == [dict(rows[1], extra=None), rows[5]]  # not dropped because row 1 lacks it


# ---- 2. a score table must belong to the data ------------------------------------------------------

def test_matching_scores_are_used_and_ids_survive_every_format(tmp_path, capsys):
    rows = [dict(r, id=rid) for r, rid in zip(ROWS, ["NA", "007", "null", "3", "x", "1e3", "", "True"])]
    data = write_json(tmp_path / "a.json", rows)
    values = dict(zip([r["id"] for r in rows], expected_mtld(rows)))
    top2 = sorted(values, key=lambda i: -values[i])[:2]
    for suffix in (".csv", ".jsonl", ".json", ".parquet"):
        scores = tmp_path / f"s{suffix}"
        assert main(score_args(data, scores)) == 0
        out = tmp_path / f"sub{suffix}.json"
        assert main(["select", "--data", str(data), "--selector", "topk", "--param", "column=mtld", "--budget", "2",
                     "--scores", str(scores), "--out", str(out), *QUIET]) == 0, capsys.readouterr().err
        assert json.loads(out.read_text()) == [r for r in rows if r["id"] in top2]


def _score(tmp_path, rows, name="s.parquet") -> Path:
    data = write_json(tmp_path / "scored.json", rows)
    assert main(score_args(data, tmp_path / name)) == 0
    return tmp_path / name


@pytest.mark.parametrize("case", ["other-data", "same-data-reordered", "one-record-edited"])
def test_scores_for_other_data_are_refused_naming_the_record(tmp_path, capsys, case):
    scores = _score(tmp_path, ROWS)
    if case == "other-data":
        rows = [dict(r, output=r["output"] + " changed") for r in ROWS]
        first = "0"
    elif case == "same-data-reordered":
        rows = ROWS[::-1]  # positional ids: id '0' is now another record
        first = "0"
    else:
        rows = [dict(r) for r in ROWS]
        rows[5]["output"] = "edited"
        first = "5"
    data = write_json(tmp_path / "b.json", rows)
    capsys.readouterr()
    assert main(select_args(data, tmp_path / "sub.json", "--scores", str(scores))) == 2
    err = capsys.readouterr().err
    assert f"--scores {scores} does not match {data}: the scores for id {first!r}" in err
    assert "cherrybench score --data" in err
    assert not (tmp_path / "sub.json").exists()


def test_scores_in_another_order_or_with_other_ids_are_refused(tmp_path, capsys):
    rows = [dict(r, id=f"r{i}") for i, r in enumerate(ROWS)]
    scores = _score(tmp_path, rows)
    data = write_json(tmp_path / "b.json", rows[::-1])
    capsys.readouterr()
    assert main(select_args(data, tmp_path / "sub.json", "--scores", str(scores))) == 2
    assert "same records but in another order" in capsys.readouterr().err
    data = write_json(tmp_path / "c.json", rows[:7])
    assert main(select_args(data, tmp_path / "sub.json", "--scores", str(scores))) == 2
    assert "id 'r7' is not in the data" in capsys.readouterr().err


def test_scores_without_hashes_are_refused_with_how_to_regenerate(tmp_path, capsys):
    data = write_json(tmp_path / "a.json", ROWS)
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"id": [str(i) for i in range(8)], "mtld": expected_mtld(ROWS)}).to_parquet(foreign)
    assert main(select_args(data, tmp_path / "sub.json", "--scores", str(foreign))) == 2
    err = capsys.readouterr().err
    assert f"--scores {foreign}: no _record_hash column" in err
    assert f"rescore with `cherrybench score --data {data}" in err


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("command", ["select", "agreement"])
def test_a_score_column_holding_text_is_refused_naming_file_column_and_record(tmp_path, capsys, suffix, command):
    """Text where a metric's numbers belong is named, never cast ("12.5") or turned into NaN ("high")."""
    data = write_json(tmp_path / "a.json", ROWS)
    good = tmp_path / f"good{suffix}"
    assert main(score_args(data, good)) == 0
    bad = tmp_path / f"bad{suffix}"
    if suffix == ".parquet":  # the whole column written as text: the first row is named
        table = pq.read_table(good)
        text = [repr(v) for v in table.column("mtld").to_pylist()]
        pq.write_table(table.set_column(table.column_names.index("mtld"), "mtld", pa.array(text)), bad)
        rid, shown = "0", repr(text[0])
    else:  # one row's score is a word
        rows = [json.loads(line) for line in good.read_text().splitlines()]
        rows[3]["mtld"] = "high"
        bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
        rid, shown = "3", "'high'"
    out = tmp_path / "out"
    argv = (["select", "--data", str(data), "--selector", "topk", "--param", "column=mtld", "--budget", "2",
             "--scores", str(bad), "--out", str(tmp_path / "out.json"), *QUIET] if command == "select" else
            ["agreement", "--data", str(data), "--scores", str(bad), "--scores-b", str(good), "--out", str(out), *QUIET])
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"cherrybench: error: --scores {bad}: column 'mtld' must hold numbers; the row for id {rid!r} " \
                  f"has {shown} (str)\n"
    assert not (tmp_path / "out.json").exists() and not out.exists()


def test_a_count_budget_above_the_pool_is_refused(tmp_path, capsys, no_scoring):
    data = write_json(tmp_path / "a.json", ROWS)
    assert main(select_args(data, tmp_path / "sub.json", budget="9")) == 2
    err = capsys.readouterr().err
    assert err == f"cherrybench: error: --budget 9: {data} has only 8 records; give a count up to 8 or a fraction " \
                  "in (0, 1)\n"
    assert not (tmp_path / "sub.json").exists()
    assert main(select_args(data, tmp_path / "sub.json", budget="8")) == 0  # the whole pool is a count it holds
    assert json.loads((tmp_path / "sub.json").read_text()) == ROWS


# ---- 5, 6. bad input names the file, the line or record, and the key or field -----------------------

@pytest.mark.parametrize("name,text,pattern", [
    ("d.json", '[{"instruction": "a", "output": "b"},\n {"instruction": "a", "output": "first", "output": "second"}]',
     r"d\.json: record 1 \(id '1'\): duplicate key 'output'"),
    ("d.jsonl", '{"instruction": "a", "output": "b"}\n\n{"id": "q", "instruction": "a", "instruction": "b", "output": "c"}\n',
     r"d\.jsonl:3 \(id 'q'\): duplicate key 'instruction'"),
    ("d.jsonl", '{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b", "value": "c"}]}\n',
     r"d\.jsonl:1 \(id '0'\): conversations\[1\]: duplicate key 'value'"),
    ("s.jsonl", '{"instruction": "a", "output": "b"}\n{"id": "q7", "instruction": "a", "output": "bad \\ud800 here"}\n',
     r"s\.jsonl:2 \(id 'q7'\): field 'output' contains a lone surrogate \\ud800"),
    ("s.json", '[{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "\\udc00"}]}]',
     r"s\.json: record 0 \(id '0'\): conversations\[1\]: field 'value' contains a lone surrogate \\udc00"),
])
def test_duplicate_keys_and_lone_surrogates_are_errors_at_load(tmp_path, name, text, pattern):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=pattern):
        load_dataset(path)


def test_invalid_utf8_names_file_line_and_byte_offset(tmp_path):
    data = b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n'
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(DataError, match=rf"latin1\.jsonl:2: not valid UTF-8 \(byte 0xe9 at byte offset {offset}\)"):
        load_dataset(path)


def test_bom_surrogate_pairs_and_line_separators_are_valid(tmp_path):
    rows = [{"instruction": "smile \U0001F600", "output": "para\u2028graph\u0085end"}, {"instruction": "b", "output": "c"}]
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())  # escapes: \ud83d\ude00
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                                 for r in rows).encode())
    for name in ("a.json", "a.jsonl"):
        assert [r.raw for r in load_dataset(tmp_path / name).records] == rows


def test_directory_as_data_is_named(tmp_path, capsys):
    assert main(select_args(tmp_path, tmp_path / "sub.json")) == 2
    assert f"cherrybench: error: {tmp_path}: is a directory; expected a JSON, JSONL or Parquet file" in \
        capsys.readouterr().err


# ---- 7, 8. values a container cannot hold, and failed writes ---------------------------------------

def test_parquet_timestamp_to_json_is_refused_without_traceback_or_debris(tmp_path):
    rows = [dict(r, id=f"r{i}") for i, r in enumerate(ROWS)]
    stamps = [datetime.datetime(2024, 1, 1 + i, 12, 0) for i in range(8)]
    table = pa.Table.from_pylist(rows).append_column("created", pa.array(stamps, type=pa.timestamp("us")))
    pq.write_table(table, tmp_path / "t.parquet")
    before = listing(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run([sys.executable, "-m", "cherrybench", *select_args("t.parquet", "out/sub.json", budget="8")],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "t.parquet: record 0 (id 'r0'): field 'created' holds a datetime value" in done.stderr
    assert "write the subset as .parquet" in done.stderr
    assert listing(tmp_path) == before  # no out/, no temp file, no report

    write_subset(load_dataset(tmp_path / "t.parquet"), ["r3", "r1"], tmp_path / "sub.parquet")
    back = pq.read_table(tmp_path / "sub.parquet")
    assert back.schema == table.schema and back.to_pylist() == [table.to_pylist()[i] for i in (1, 3)]


def test_integer_beyond_int64_to_parquet_is_refused_naming_record_and_field(tmp_path, capsys):
    rows = [dict(r) for r in ROWS]
    rows[3]["meta"] = {"count": 2 ** 70}
    data = write_json(tmp_path / "a.json", rows)
    before = listing(tmp_path)
    assert main(select_args(data, tmp_path / "sub.parquet", budget="8")) == 2
    err = capsys.readouterr().err
    assert f"{data}: record 3 (id '3'): field 'meta.count' holds the integer {2 ** 70}, which does not fit" in err
    assert listing(tmp_path) == before
    assert main(select_args(data, tmp_path / "sub.json", budget="8")) == 0  # JSON holds it unchanged
    assert json.loads((tmp_path / "sub.json").read_text()) == rows


def test_atomic_write_fsyncs_before_replace_and_cleans_up_on_failure(tmp_path, monkeypatch):
    events, names = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    target = tmp_path / "x.json"
    target.write_text("old")

    def failing(handle):
        names.append(handle.name)
        handle.write(b"half written")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "new" / "deeper" / "y.json", failing)
    assert listing(tmp_path) == {"x.json": b"old"} and events == []
    assert Path(names[0]).parent == tmp_path and f".x.json.{os.getpid()}." in Path(names[0]).name

    atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_text() == "new" and events[:2] == ["fsync", "replace"]  # the file's fsync, then the rename
    assert listing(tmp_path) == {"x.json": b"new"}
