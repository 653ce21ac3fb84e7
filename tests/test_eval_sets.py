"""Loaders for the five paper test sets (each in its own format) and plain files."""

from __future__ import annotations

import json

import pytest

from cherrybench.records import DataError
from cherrybench.eval_sets import load_eval_set

FIXTURES = {
    "vicuna_test_set.jsonl": [{"question_id": 1, "text": "How can I sleep better?", "category": "generic"}],
    "koala_test_set.jsonl": [{"id": "koala_0", "prompt": "List three films."}],
    "wizardlm_test_set.jsonl": [{"idx": 1, "Skill": "Math", "Difficulty": 1, "Instruction": "What is 2+2?"}],
    "sinstruct_test_set.jsonl": [{"id": "u0", "motivation_app": "x", "instruction": "Fix the grammar.",
                                  "instances": [{"input": "he go home", "output": "He goes home."}]}],
    "lima_test_set.jsonl": [{"conversations": "Tell me a joke.", "source": "x"}],  # as released: one string
    "limalist_test_set.jsonl": [{"conversations": ["Tell me a joke."], "source": "x"}],  # a list of strings
}
EXPECTED = {
    "vicuna": ("1", "How can I sleep better?", "", ""),
    "koala": ("koala_0", "List three films.", "", ""),
    "wizardlm": ("1", "What is 2+2?", "", ""),
    "sinstruct": ("u0", "Fix the grammar.", "he go home", "He goes home."),
    "lima": ("0", "Tell me a joke.", "", ""),
    "limalist": ("0", "Tell me a joke.", "", ""),
}


@pytest.mark.parametrize("filename", sorted(FIXTURES))
def test_paper_test_sets(tmp_path, filename):
    path = tmp_path / filename
    path.write_text("".join(json.dumps(r) + "\n" for r in FIXTURES[filename]))
    eval_set = load_eval_set(str(path))
    name = filename.replace("_test_set.jsonl", "")
    assert eval_set.name == name
    record = eval_set.records[0]
    assert (record.id, record.instruction, record.input, record.output) == EXPECTED[name]
    assert eval_set.has_references == (name == "sinstruct")


def test_named_spec_and_plain_format(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    eval_set = load_eval_set(f"custom:{path}")
    assert eval_set.name == "custom" and eval_set.has_references


def test_mixed_lines_are_an_error(tmp_path):
    path = tmp_path / "vicuna_test_set.jsonl"
    path.write_text(json.dumps({"question_id": 1, "text": "a"}) + "\n" + json.dumps({"foo": 1}) + "\n")
    with pytest.raises(DataError, match=r"vicuna_test_set\.jsonl:2: fields \['foo'\]"):
        load_eval_set(str(path))


@pytest.mark.parametrize("compress", ["gz", "xz", "bz2", "zst"])
def test_compressed_paper_test_sets_read_like_plain_ones(tmp_path, compress):
    import bz2
    import gzip
    import lzma

    import zstandard

    text = "".join(json.dumps(r) + "\n" for r in FIXTURES["sinstruct_test_set.jsonl"]).encode()
    packed = {"gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress,
              "zst": zstandard.ZstdCompressor().compress}[compress](text)
    path = tmp_path / f"sinstruct_test_set.jsonl.{compress}"
    path.write_bytes(packed)
    eval_set = load_eval_set(str(path))
    assert eval_set.name == "sinstruct"
    record = eval_set.records[0]
    assert (record.id, record.instruction, record.input, record.output) == EXPECTED["sinstruct"]


def test_a_damaged_compressed_test_set_is_an_error_naming_it(tmp_path):
    import gzip

    path = tmp_path / "vicuna_test_set.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps({"question_id": 1, "text": "a"}).encode())[:-12])
    with pytest.raises(DataError, match=r"vicuna_test_set\.jsonl\.gz"):
        load_eval_set(str(path))
