"""Evaluation sets: the five test sets the papers judge on (each in its own
format) and any file in the supported record formats. Prompts without a
reference answer get an empty output: they serve generation, not eval loss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cherrybench.records import (COMPRESSIONS, DataError, Record, SourceFile, Turn, check_unique_ids, data_suffix,
                                 iter_rows, load_dataset, record_id)


@dataclass
class EvalSet:
    name: str
    records: list[Record]
    source: str = ""  # the file it was read from ("" for the held-out split), for messages

    @property
    def has_references(self) -> bool:
        return any(t.output for r in self.records for t in r.turns)


# the five paper test sets, recognised by their fields: name -> (the field that holds the id, the test)
PAPER_FORMATS = {
    "vicuna": ("question_id", lambda row: "question_id" in row and "text" in row),
    "koala": ("id", lambda row: "prompt" in row and "id" in row),
    "wizardlm": ("idx", lambda row: "Instruction" in row and "idx" in row),
    "self-instruct": ("id", lambda row: "instances" in row and "instruction" in row),
    "lima": ("id", lambda row: (isinstance(row.get("conversations"), str) and row["conversations"].strip() != "")
             or (isinstance(row.get("conversations"), list) and bool(row["conversations"])
                 and all(isinstance(c, str) for c in row["conversations"]))),
}


def paper_format(row) -> str | None:
    """Which of the paper test sets' formats a row is in, or None."""
    if not isinstance(row, dict):
        return None
    return next((name for name, (_, test) in PAPER_FORMATS.items() if test(row)), None)


def _paper_record(row: dict, fmt: str, where: str, index: int) -> Record:
    """A paper test set's row as a record; its id is validated as `--data` ids are (a string or
    an integer; missing or null: its 0-based position)."""
    rid = record_id(row, where, str(index), PAPER_FORMATS[fmt][0])
    if fmt == "vicuna":
        turn = Turn(_str(row, "text", where), "")
    elif fmt == "koala":
        turn = Turn(_str(row, "prompt", where), "")
    elif fmt == "wizardlm":
        turn = Turn(_str(row, "Instruction", where), "")
    elif fmt == "self-instruct":
        instances = row["instances"]
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise DataError(f"{where}: field 'instances' must be a non-empty list of objects")
        first, spot = instances[0], f"{where}: instances[0]"
        turn = Turn(_str(row, "instruction", where), _str(first, "output", spot, required=False),
                    _str(first, "input", spot, required=False))
    else:  # LIMA: one string as released, or a list of plain strings (the first is the prompt)
        conversations = row["conversations"]
        turn = Turn(conversations if isinstance(conversations, str) else conversations[0], "")
    return Record(rid, [turn], raw=row, where=where)


def _str(row: dict, key: str, where: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def load_eval_set(spec: str) -> EvalSet:
    """`path` or `name:path`; the name defaults to the file's stem. A JSONL file whose first
    record is in a paper test set's format is read in that format (every record in it);
    anything else as `--data` is. Both read the file through cherrybench.records, equally
    strictly (a BOM is fine; a duplicated key, bad UTF-8 or a lone surrogate is an error
    naming the line)."""
    name, _, path_text = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else ("", "", spec)
    path = Path(path_text)
    stored = path.with_suffix("") if path.suffix.lower() in COMPRESSIONS else path
    name = name or stored.stem.replace("_test_set", "")
    if not path.is_file():
        raise DataError(f"{path}: no such eval file")
    if data_suffix(path) == ".jsonl":  # `.jsonl` for `vicuna_test_set.jsonl.gz` too
        rows = iter_rows(path, "jsonl", SourceFile(path))  # a full read: a truncated compressed file fails
        try:
            first = next(rows, None)
            fmt = paper_format(first[0]) if first is not None else None
            if fmt is not None:
                records = [_paper_record(first[0], fmt, first[1], 0)]
                for row, where in rows:
                    if paper_format(row) != fmt:
                        found = f"fields {sorted(row)}" if isinstance(row, dict) else f"a JSON {type(row).__name__}"
                        raise DataError(f"{where}: {found}: not in the first line's format ({fmt})")
                    records.append(_paper_record(row, fmt, where, len(records)))
                check_unique_ids(records, PAPER_FORMATS[fmt][0])
                return EvalSet(name, records, str(path))
        finally:
            rows.close()
    return EvalSet(name, load_dataset(path).records, str(path))
