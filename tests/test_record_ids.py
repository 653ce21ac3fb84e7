"""A record without an id of its own (no `id` key in JSON, a null `id`, or a null in a Parquet
id column) is keyed by its 0-based position, the same in every container; when that
position clashes with another record's id, the error says the id was missing."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cherrybench.records import DataError, load_dataset

ROWS = [{"id": "a", "instruction": "Q0", "output": "A0"},
        {"id": None, "instruction": "Q1", "output": "A1"},
        {"id": "7", "instruction": "Q2", "output": "A2"}]


def write(tmp_path, rows, container: str):
    path = tmp_path / f"data.{container}"
    if container == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif container == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("container", ["json", "jsonl", "parquet"])
def test_a_null_id_is_the_position_in_every_container(tmp_path, container):
    records = load_dataset(write(tmp_path, ROWS, container)).records
    assert [r.id for r in records] == ["a", "1", "7"]
    # as a JSON record without the key at all
    missing = [ROWS[0], {k: v for k, v in ROWS[1].items() if k != "id"}, ROWS[2]]
    assert [r.id for r in load_dataset(write(tmp_path, missing, "json")).records] == ["a", "1", "7"]


@pytest.mark.parametrize("container", ["json", "jsonl", "parquet"])
def test_a_clash_with_a_positional_id_says_the_id_was_missing(tmp_path, container):
    rows = [dict(ROWS[0]), dict(ROWS[1]), dict(ROWS[2], id="1")]  # row 1 has no id: its position, 1, clashes
    path = write(tmp_path, rows, container)
    def where(index: int) -> str:  # a JSONL record by its line (1-based), the others by their index
        return f"{path}:{index + 1}" if container == "jsonl" else f"{path}: record {index}"

    first, second = where(1), where(2)
    with pytest.raises(DataError) as found:
        load_dataset(path)
    assert str(found.value) == (f"{second}: duplicate id '1' (first at {first}); {first} has no 'id' (missing or "
                                "null), so its id is the 0-based position: give every record its own 'id'")


def test_a_clash_of_two_own_ids_is_as_before(tmp_path):
    path = write(tmp_path, [dict(ROWS[0]), dict(ROWS[2], id="a")], "parquet")
    with pytest.raises(DataError) as found:
        load_dataset(path)
    assert str(found.value) == f"{path}: record 1: duplicate id 'a' (first at {path}: record 0)"
