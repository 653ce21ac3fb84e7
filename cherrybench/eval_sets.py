"""Evaluation sets: the five test sets the papers judge on (each in its own
format) and any file in the supported record formats. Prompts without a
reference answer get an empty output: they serve generation, not eval loss."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cherrybench.records import (COMPRESSIONS, DataError, Record, Turn, check_unique_ids, data_suffix, load_dataset,
                                 open_data)


@dataclass
class EvalSet:
    name: str
    records: list[Record]

    @property
    def has_references(self) -> bool:
        return any(t.output for r in self.records for t in r.turns)


def _standard(row: dict, where: str, index: int) -> Record | None:
    """The five paper test sets, recognised by their fields."""
    if "question_id" in row and "text" in row:  # Vicuna
        return Record(str(row["question_id"]), [Turn(_str(row, "text", where), "")], where=where)
    if "prompt" in row and "id" in row:  # Koala
        return Record(str(row["id"]), [Turn(_str(row, "prompt", where), "")], where=where)
    if "Instruction" in row and "idx" in row:  # WizardLM
        return Record(str(row["idx"]), [Turn(_str(row, "Instruction", where), "")], where=where)
    if "instances" in row and "instruction" in row:  # Self-Instruct user-oriented
        instances = row["instances"]
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise DataError(f"{where}: field 'instances' must be a non-empty list of objects")
        first = instances[0]
        return Record(str(row.get("id", index)), [Turn(_str(row, "instruction", where), first.get("output") or "",
                                                       first.get("input") or "")], where=where)
    if isinstance(row.get("conversations"), str) and row["conversations"].strip():  # LIMA test as released
        return Record(str(row.get("id", index)), [Turn(row["conversations"], "")], where=where)
    if isinstance(row.get("conversations"), list) and row["conversations"] and all(
            isinstance(c, str) for c in row["conversations"]):  # LIMA test: a list of plain strings
        return Record(str(row.get("id", index)), [Turn(row["conversations"][0], "")], where=where)
    return None


def _str(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def load_eval_set(spec: str) -> EvalSet:
    """`path` or `name:path`; the name defaults to the file's stem."""
    name, _, path_text = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else ("", "", spec)
    path = Path(path_text)
    suffix = data_suffix(path)  # `.jsonl` for `vicuna_test_set.jsonl.gz` too
    stored = path.with_suffix("") if path.suffix.lower() in COMPRESSIONS else path
    name = name or stored.stem.replace("_test_set", "")
    if not path.is_file():
        raise DataError(f"{path}: no such eval file")
    if suffix != ".jsonl":
        return EvalSet(name, load_dataset(path).records)
    with open_data(path) as stream:
        try:
            lines = stream.read().decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    first = next((l for l in lines if l.strip()), "")
    if first:
        try:
            probe = _standard(json.loads(first), f"{path}:1", 0)
        except json.JSONDecodeError:
            probe = None
        if probe is not None:
            records = []
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: malformed JSON line ({exc.msg})") from None
                record = _standard(row, where, len(records))
                if record is None:
                    raise DataError(f"{where}: fields {sorted(row)} do not match the first line's format")
                records.append(record)
            check_unique_ids(records)
            return EvalSet(name, records)
    return EvalSet(name, load_dataset(path).records)
