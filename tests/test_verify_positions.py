"""`cherrybench verify` on a subset whose records carry no `id`: the manifest keeps the
pool's position ids ("5", "6", "9") while reloading the subset numbers its records 0..n-1,
so records are matched by content and position. An edited record reads as one changed
record named by its pool id, a removed one as a removal, a new one as an addition named
by its place in the file; exit status 1 for each, 0 while intact. No model is loaded."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from cherrybench.cli import main
from cherrybench.manifest import manifest_path

ROWS = [{"instruction": f"Describe item {i}.", "output": "word " * (i + 1)} for i in range(10)]


def run_cli(monkeypatch, argv: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/cherrybench", *argv])
    return main(argv)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return json.loads(path.read_text())


def write_rows(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows, indent=2) + "\n")


def pool_id(row: dict) -> str:
    """The pool position of a record of this pool, read from its text (item i sits at position i)."""
    return re.search(r"item (\d+)", row["instruction"]).group(1)


@pytest.fixture(params=["jsonl", "json"])
def subset(request, tmp_path, monkeypatch):
    data = tmp_path / "pool.jsonl"
    write_rows(data, ROWS)
    out = tmp_path / f"sub.{request.param}"
    assert run_cli(monkeypatch, ["select", "--data", str(data), "--selector", "random", "--budget", "4",
                                 "--out", str(out), "--no-progress", "--device", "cpu", "--seed", "1"]) == 0
    rows = read_rows(out)
    assert all("id" not in r for r in rows) and len(rows) == 4
    ids = json.loads(manifest_path(out).read_text())["subset"]["ids"]
    assert ids == [pool_id(r) for r in rows]  # the manifest names records by pool position
    assert ids != ["0", "1", "2", "3"]  # (else the bug could not show)
    return out, rows


def verify_line(monkeypatch, capsys, out: Path) -> tuple[int, str]:
    code = run_cli(monkeypatch, ["verify", str(manifest_path(out))])
    lines = [l for l in capsys.readouterr().out.splitlines() if "subset:" in l]
    assert len(lines) == 1
    return code, lines[0]


def test_an_intact_subset_without_ids_passes(subset, monkeypatch, capsys):
    out, _ = subset
    code, line = verify_line(monkeypatch, capsys, out)
    assert code == 0 and line.startswith("ok ")


def test_an_edited_record_is_one_changed_record_named_by_its_pool_id(subset, monkeypatch, capsys):
    out, rows = subset
    rows[1]["output"] = "tampered"
    write_rows(out, rows)
    code, line = verify_line(monkeypatch, capsys, out)
    assert code == 1
    assert "4 records now, 4 then" in line
    assert f"records whose content changed: 1 ('{pool_id(rows[1])}')" in line
    assert "removed" not in line and "added" not in line


def test_a_removed_record_is_a_removal(subset, monkeypatch, capsys):
    out, rows = subset
    gone = rows.pop(2)
    write_rows(out, rows)
    code, line = verify_line(monkeypatch, capsys, out)
    assert code == 1
    assert "3 records now, 4 then" in line and f"records removed: 1 ('{pool_id(gone)}')" in line
    assert "added" not in line and "content changed" not in line


def test_an_added_record_is_named_by_its_place_and_an_edit_beside_it_still_reads_as_an_edit(subset, monkeypatch,
                                                                                           capsys):
    out, rows = subset
    rows.insert(1, {"instruction": "planted", "output": "x"})  # the file's record 2
    rows[3]["output"] = "tampered"  # the third of the original records
    write_rows(out, rows)
    code, line = verify_line(monkeypatch, capsys, out)
    assert code == 1
    assert "5 records now, 4 then" in line
    assert "records added: 1 (#2 of the file)" in line
    assert f"records whose content changed: 1 ('{pool_id(rows[3])}')" in line
    assert "removed" not in line


def test_reordering_or_reformatting_is_told_apart_from_changed_records(subset, monkeypatch, capsys):
    out, rows = subset
    write_rows(out, rows[::-1])
    code, line = verify_line(monkeypatch, capsys, out)
    assert code == 1 and "the same records with the same content, in another order" in line

    write_rows(out, rows)  # the same rows in the same order, other bytes
    out.write_bytes(out.read_bytes().replace(b'": "', b'":"'))
    code, line = verify_line(monkeypatch, capsys, out)
    assert code == 1 and "the same records with the same content (the file's bytes differ" in line


def test_a_moved_record_is_neither_removed_nor_added(subset, monkeypatch, capsys):
    out, rows = subset
    rows = [rows[1], rows[0], rows[2], rows[3]]
    rows[3]["output"] = "tampered"
    write_rows(out, rows)
    code, line = verify_line(monkeypatch, capsys, out)
    assert code == 1
    assert f"records whose content changed: 1 ('{pool_id(rows[3])}')" in line
    assert "removed" not in line and "added" not in line
