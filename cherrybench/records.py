"""Instruction records: reading Alpaca, ShareGPT and OpenAI-messages files
(JSON array, JSONL, Parquet), validating them, and writing subsets back
unchanged in the input's own format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cherrybench.fingerprint import hash_json

FORMATS = ("alpaca", "sharegpt", "messages")
HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}
SYSTEM_ROLES = {"system"}


class DataError(ValueError):
    """Bad input: the message names the file, the line or record, and the field."""


@dataclass(frozen=True)
class Turn:
    instruction: str
    output: str
    input: str = ""

    @property
    def query(self) -> str:
        """The question as one text: instruction, then input when there is one."""
        return f"{self.instruction}\n{self.input}" if self.input else self.instruction


@dataclass
class Record:
    id: str
    turns: list[Turn]
    system: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    where: str = ""  # "file:line" or "file:record N", for error messages

    @property
    def content_hash(self) -> str:
        """Hash of what metrics read (not the id), so equal content shares cached scores."""
        return hash_json({"system": self.system, "turns": [[t.instruction, t.input, t.output] for t in self.turns]})

    @property
    def instruction(self) -> str:
        return self.turns[0].instruction

    @property
    def input(self) -> str:
        return self.turns[0].input

    @property
    def output(self) -> str:
        return self.turns[0].output


@dataclass
class Dataset:
    records: list[Record]
    path: Path | None
    format: str
    container: str  # "json", "jsonl" or "parquet"

    @property
    def fingerprint(self) -> str:
        return hash_json([[r.id, r.content_hash] for r in self.records])

    def __len__(self) -> int:
        return len(self.records)


def _read_rows(path: Path) -> tuple[list[tuple[dict, str]], str]:
    """Rows with their location strings, and the container kind."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [(row, f"{path}: record {i}") for i, row in enumerate(rows)], "parquet"
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if suffix == ".jsonl" or (suffix != ".json" and not stripped.startswith("[")):
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
            rows.append((row, f"{path}:{lineno}"))
        return rows, "jsonl"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return [(row, f"{path}: record {i}") for i, row in enumerate(data)], "json"


def detect_format(row: dict, where: str) -> str:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a record must be a JSON object, got {type(row).__name__}")
    if "conversations" in row:
        return "sharegpt"
    if "messages" in row:
        return "messages"
    if "instruction" in row:
        return "alpaca"
    raise DataError(
        f"{where}: cannot detect the format from fields {sorted(row)}; expected 'instruction' (alpaca), "
        "'conversations' (sharegpt) or 'messages' (openai); use --format to force one"
    )


def _text(row: dict, key: str, where: str, required: bool = True) -> str:
    if key not in row or row[key] is None:
        if required:
            raise DataError(f"{where}: missing field {key!r}")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _turns_from_messages(items, where: str, field_name: str, role_key: str, text_key: str) -> tuple[list[Turn], str]:
    if not isinstance(items, list):
        raise DataError(f"{where}: field {field_name!r} must be a list, got {type(items).__name__}")
    system = ""
    turns: list[Turn] = []
    pending_question: str | None = None
    for i, message in enumerate(items):
        spot = f"{where}: {field_name}[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{spot}: must be an object, got {type(message).__name__}")
        role = _text(message, role_key, spot)
        text = _text(message, text_key, spot)
        if role in SYSTEM_ROLES:
            if turns or pending_question is not None:
                raise DataError(f"{spot}.{role_key}: a system message is only allowed first")
            system = text
        elif role in HUMAN_ROLES:
            if pending_question is not None:
                raise DataError(f"{spot}.{role_key}: non-alternating turns: two {role!r} messages in a row")
            pending_question = text
        elif role in ASSISTANT_ROLES:
            if pending_question is None:
                raise DataError(f"{spot}.{role_key}: non-alternating turns: {role!r} message without a question before it")
            turns.append(Turn(instruction=pending_question, output=text))
            pending_question = None
        else:
            raise DataError(f"{spot}.{role_key}: unknown role {role!r}")
    if pending_question is not None:
        raise DataError(f"{where}: {field_name}: the last question has no answer")
    if not turns:
        raise DataError(f"{where}: {field_name}: no (question, answer) turn")
    return turns, system


def parse_record(row: dict, fmt: str, default_id: str, where: str) -> Record:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a record must be a JSON object, got {type(row).__name__}")
    if fmt == "alpaca":
        turns = [Turn(instruction=_text(row, "instruction", where), input=_text(row, "input", where, required=False),
                      output=_text(row, "output", where))]
        system = ""
    elif fmt == "sharegpt":
        if "conversations" not in row:
            raise DataError(f"{where}: missing field 'conversations'")
        turns, system = _turns_from_messages(row["conversations"], where, "conversations", "from", "value")
        if "system" in row and row["system"]:
            system = _text(row, "system", where)
    elif fmt == "messages":
        if "messages" not in row:
            raise DataError(f"{where}: missing field 'messages'")
        turns, system = _turns_from_messages(row["messages"], where, "messages", "role", "content")
    else:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rid = row.get("id")
    if rid is None:
        rid = default_id
    elif not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise DataError(f"{where}: field 'id' must be a string or an integer, got {type(rid).__name__}")
    return Record(id=str(rid), turns=turns, system=system, raw=row, where=where)


def check_unique_ids(records: list[Record]) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.id in seen:
            raise DataError(f"{record.where}: duplicate id {record.id!r} (first at {seen[record.id]})")
        seen[record.id] = record.where


def load_dataset(path: str | Path, fmt: str | None = None) -> Dataset:
    """Read and validate a data file; `fmt` forces a format instead of detecting it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows, container = _read_rows(path)
    if not rows:
        raise DataError(f"{path}: no records")
    if fmt is None:
        fmt = detect_format(rows[0][0], rows[0][1])
    elif fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records = [parse_record(row, fmt, str(i), where) for i, (row, where) in enumerate(rows)]
    check_unique_ids(records)
    return Dataset(records=records, path=path, format=fmt, container=container)


def write_subset(dataset: Dataset, ids, out: str | Path) -> Path:
    """Write the records with these ids, unchanged and in input order, in the
    input's container (JSON array, JSONL or Parquet) unless `out`'s suffix says otherwise."""
    out = Path(out)
    wanted = set(ids)
    unknown = wanted - {r.id for r in dataset.records}
    if unknown:
        raise DataError(f"ids not in the data set: {sorted(unknown)[:5]}")
    rows = [r.raw for r in dataset.records if r.id in wanted]
    suffix = out.suffix.lower()
    container = {".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}.get(suffix, dataset.container)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if container == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if dataset.container == "parquet" and dataset.path is not None:
            table = pq.read_table(dataset.path)
            keep = [i for i, r in enumerate(dataset.records) if r.id in wanted]
            table = table.take(pa.array(keep, type=pa.int64()))
        else:
            table = pa.Table.from_pylist(rows)
        pq.write_table(table, tmp)
    elif container == "jsonl":
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
    tmp.replace(out)
    return out
