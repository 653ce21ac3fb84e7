"""Reading, validating and writing records: every bad input names file, line or record and field."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cherrybench.outputs import write_subset
from cherrybench.records import DataError, load_dataset

ALPACA = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Translate.", "input": "Hallo", "output": "Hello", "extra": {"kept": [1, 2]}},
    {"instruction": "Say hi.", "output": "Hi!"},
]
SHAREGPT = [{"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                          {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Goodbye"}]}]
MESSAGES = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"},
                          {"role": "assistant", "content": "A"}]}]


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_formats_detected_and_parsed(tmp_path):
    alpaca = load_dataset(write_json(tmp_path / "a.json", ALPACA))
    assert alpaca.format == "alpaca" and [r.id for r in alpaca.records] == ["0", "1", "2"]
    assert alpaca.records[1].turns[0].input == "Hallo" and alpaca.records[2].turns[0].input == ""
    share = load_dataset(write_jsonl(tmp_path / "s.jsonl", SHAREGPT))
    assert share.format == "sharegpt" and share.records[0].id == "a"
    assert [(t.instruction, t.output) for t in share.records[0].turns] == [("Hi", "Hello"), ("Bye", "Goodbye")]
    msgs = load_dataset(write_jsonl(tmp_path / "m.jsonl", MESSAGES))
    assert msgs.format == "messages" and msgs.records[0].system == "Be brief."


def test_forced_format_names_missing_field(tmp_path):
    path = write_json(tmp_path / "a.json", ALPACA)
    with pytest.raises(DataError, match=r"a\.json: record 0: missing field 'conversations'"):
        load_dataset(path, fmt="sharegpt")


@pytest.mark.parametrize("rows_text,pattern", [
    ('{"instruction": "x", "output": "y"}\n{"instruction": "x", "output": \n', r"bad\.jsonl:2: malformed JSON line"),
    ('{"instruction": "x", "output": "y"}\n{"instruction": "x"}\n', r"bad\.jsonl:2: missing field 'output'"),
    ('{"instruction": "x", "output": 3}\n', r"bad\.jsonl:1: field 'output' must be a string, got int"),
    ('{"instruction": "x", "output": "y", "id": 1}\n{"instruction": "z", "output": "w", "id": 1}\n',
     r"bad\.jsonl:2: duplicate id '1' \(first at .*bad\.jsonl:1\)"),
    ('{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}\n',
     r"bad\.jsonl:1: conversations\[1\]\.from: non-alternating turns"),
    ('{"conversations": [{"from": "gpt", "value": "a"}]}\n',
     r"bad\.jsonl:1: conversations\[0\]\.from: non-alternating turns"),
    ('{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}]}\n',
     r"bad\.jsonl:1: conversations: the last question has no answer"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}\n',
     r"bad\.jsonl:1: messages\[1\]\.role: unknown role 'robot'"),
    ('{"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]}\n',
     r"bad\.jsonl:1: messages\[0\]: field 'content' must be a string, got list"),
    ('{"question": "x"}\n', r"bad\.jsonl:1: cannot detect the format from fields \['question'\]"),
    ('[1, 2]\n', r"bad\.jsonl:1: a record must be a JSON object"),
])
def test_bad_input_errors(tmp_path, rows_text, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text(rows_text)
    with pytest.raises(DataError, match=pattern):
        load_dataset(path)


def test_malformed_json_array_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}\n]')
    with pytest.raises(DataError, match=r"bad\.json:3: malformed JSON"):
        load_dataset(path)


def test_empty_answer_is_not_an_error(tmp_path):
    dataset = load_dataset(write_json(tmp_path / "a.json", [{"instruction": "x", "output": ""}]))
    assert dataset.records[0].output == ""


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_subset_round_trip_unchanged_in_input_order(tmp_path, suffix):
    rows = [dict(r, id=f"r{i}") for i, r in enumerate(ALPACA)]
    rows[0]["input"] = "extra field order kept"
    src = tmp_path / f"in{suffix}"
    if suffix == ".json":
        write_json(src, rows)
    elif suffix == ".jsonl":
        write_jsonl(src, rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), src)
    dataset = load_dataset(src)
    out = write_subset(dataset, ["r2", "r0"], tmp_path / f"out{suffix}")  # rank order differs from input order
    back = load_dataset(out)
    assert [r.id for r in back.records] == ["r0", "r2"]
    if suffix == ".parquet":
        assert pq.read_table(out).schema == pq.read_table(src).schema
        assert pq.read_table(out).to_pylist() == [pq.read_table(src).to_pylist()[i] for i in (0, 2)]
    else:
        assert [r.raw for r in back.records] == [rows[0], rows[2]]


def test_subset_with_unknown_id_is_an_error(tmp_path):
    dataset = load_dataset(write_json(tmp_path / "a.json", ALPACA))
    with pytest.raises(DataError, match="ids not in the data set"):
        write_subset(dataset, ["nope"], tmp_path / "o.json")
