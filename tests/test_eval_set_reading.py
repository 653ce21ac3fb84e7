"""The paper test sets (Vicuna, Koala, WizardLM, Self-Instruct, LIMA) are read as strictly as
`--data` files, by the same reader (cherrybench.records): a UTF-8 BOM is fine; a duplicated key,
a byte that is not UTF-8 or a lone surrogate is an error naming the line; ids are strings or
integers (missing or null: the 0-based position), never a float or a bool turned into text."""

from __future__ import annotations

import json

import pytest

from cherrybench.eval_sets import load_eval_set
from cherrybench.records import DataError

# one row of each paper format, the field that holds its id, and what it reads as: (id, question)
PAPER = {
    "vicuna": ({"question_id": 7, "text": "How can I sleep better?", "category": "generic"}, "question_id",
               ("7", "How can I sleep better?")),
    "koala": ({"id": "koala_3", "prompt": "List three films."}, "id", ("koala_3", "List three films.")),
    "wizardlm": ({"idx": 4, "Skill": "Math", "Instruction": "What is 2+2?"}, "idx", ("4", "What is 2+2?")),
    "sinstruct": ({"id": "u0", "instruction": "Fix the grammar.",
                   "instances": [{"input": "he go", "output": "He goes."}]}, "id", ("u0", "Fix the grammar.")),
    "lima": ({"id": 9, "conversations": "Tell me a joke.", "source": "x"}, "id", ("9", "Tell me a joke.")),
}


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / f"{name}_test_set.jsonl"
    path.write_bytes(data)
    return path


def line(row: dict) -> bytes:
    return (json.dumps(row) + "\n").encode()


@pytest.mark.parametrize("name", sorted(PAPER))
def test_a_bom_is_fine(tmp_path, name):
    row, _, expected = PAPER[name]
    eval_set = load_eval_set(str(write(tmp_path, name, b"\xef\xbb\xbf" + line(row))))
    assert eval_set.name == name and [(r.id, r.instruction) for r in eval_set.records] == [expected]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_a_duplicated_key_is_an_error_naming_the_line_and_key(tmp_path, name):
    row, _, _ = PAPER[name]
    text = json.dumps(row)
    key = next(iter(row))
    duplicated = text[:-1] + f", {json.dumps(key)}: {json.dumps(row[key])}}}"  # the first key again, at the end
    path = write(tmp_path, name, line(row) + duplicated.encode() + b"\n")
    with pytest.raises(DataError, match=rf"{path.name}:2 .*duplicate key {key!r}"):
        load_eval_set(str(path))


def test_the_issue_example_of_a_duplicated_key(tmp_path):
    path = write(tmp_path, "vicuna", b'{"question_id":1,"text":"a","text":"b"}\n')
    with pytest.raises(DataError, match=r"vicuna_test_set\.jsonl:1 .*duplicate key 'text'"):
        load_eval_set(str(path))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_bad_utf8_names_the_line(tmp_path, name):
    row, _, _ = PAPER[name]
    second = line(row).replace(b"}\n", b', "note": "caf\xe9"}\n')  # Latin-1, not UTF-8
    path = write(tmp_path, name, line(row) + b"\n" + second)
    with pytest.raises(DataError, match=rf"{path.name}:3: not valid UTF-8 \(byte 0xe9"):
        load_eval_set(str(path))


def test_a_lone_surrogate_is_an_error(tmp_path):
    path = write(tmp_path, "vicuna", b'{"question_id": 1, "text": "half \\ud800 a pair"}\n')
    with pytest.raises(DataError, match=r"vicuna_test_set\.jsonl:1 .*lone surrogate"):
        load_eval_set(str(path))


@pytest.mark.parametrize("name", sorted(PAPER))
@pytest.mark.parametrize("bad, kind", [(1.0, "float"), (True, "bool"), ([1], "list")])
def test_ids_are_strings_or_integers_as_for_data(tmp_path, name, bad, kind):
    row, field, _ = PAPER[name]
    path = write(tmp_path, name, line(row) + line(dict(row, **{field: bad})))
    with pytest.raises(DataError, match=rf"{path.name}:2: field {field!r} must be a string or an integer, got {kind}"):
        load_eval_set(str(path))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_a_null_id_is_the_position_as_in_data_and_a_clash_says_so(tmp_path, name):
    row, field, (_, question) = PAPER[name]
    path = write(tmp_path, name, line(dict(row, **{field: "a"})) + line(dict(row, **{field: None})))
    eval_set = load_eval_set(str(path))
    assert [(r.id, r.instruction) for r in eval_set.records] == [("a", question), ("1", question)]
    path = write(tmp_path, name, line(dict(row, **{field: None})) + line(dict(row, **{field: 0})))
    with pytest.raises(DataError, match=rf"{path.name}:2: duplicate id '0' \(first at .*{path.name}:1\); "
                                        rf".*{path.name}:1 has no {field!r} \(missing or null\)"):
        load_eval_set(str(path))


def test_every_line_must_be_in_the_first_lines_format(tmp_path):
    path = write(tmp_path, "vicuna", line(PAPER["vicuna"][0]) + line(PAPER["koala"][0]))
    with pytest.raises(DataError, match=r":2: fields \['id', 'prompt'\]: not in the first line's format \(vicuna\)"):
        load_eval_set(str(path))


def test_a_plain_jsonl_eval_file_with_a_bom_reads_as_data(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line({"instruction": "Q?", "output": "A."}))
    eval_set = load_eval_set(f"mine:{path}")
    assert [(r.id, r.instruction, r.output) for r in eval_set.records] == [("0", "Q?", "A.")]
