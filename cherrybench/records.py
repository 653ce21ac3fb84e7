"""Instruction records: reading Alpaca, ShareGPT and OpenAI-messages files
(JSON array, JSONL, Parquet) and validating them. Writing subsets back lives
in cherrybench.outputs (write_subset)."""

from __future__ import annotations

import json
import re
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


def records_fingerprint(records: list[Record]) -> str:
    """Content fingerprint of records in order: their ids and what metrics read."""
    return hash_json([[r.id, r.content_hash] for r in records])


@dataclass
class Dataset:
    records: list[Record]
    path: Path | None
    format: str
    container: str  # "json", "jsonl" or "parquet"

    @property
    def fingerprint(self) -> str:
        return records_fingerprint(self.records)

    def __len__(self) -> int:
        return len(self.records)


_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Flagged(dict):
    """A parsed JSON object with a problem (duplicate key, lone surrogate) to report
    once the record it sits in, and so its location, is known."""

    problem = ""


def _surrogate_problem(value, field: str) -> str | None:
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found:
            return (f"field {field!r} contains a lone surrogate \\u{ord(found.group()):04x} "
                    "(half of a UTF-16 pair, not valid Unicode text)")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problem = _surrogate_problem(item, f"{field}[{i}]")
            if problem:
                return problem
    return None


class _Checker:
    """`object_pairs_hook` that flags duplicate keys and lone surrogates instead of
    keeping the last value or failing later, mid-scoring or mid-write."""

    def __init__(self):
        self.flagged = 0

    def __call__(self, pairs):
        obj = dict(pairs)
        problem = None
        if len(obj) != len(pairs):
            seen = set()
            for key, _ in pairs:
                if key in seen:
                    problem = f"duplicate key {key!r} (JSON would keep only its last value)"
                    break
                seen.add(key)
        else:
            for key, value in pairs:
                problem = _surrogate_problem(key, "key " + repr(key)) or _surrogate_problem(value, key)
                if problem:
                    break
        if problem is None:
            return obj
        self.flagged += 1
        flagged = _Flagged(obj)
        flagged.problem = problem
        return flagged


def _find_problem(value, path: str = "") -> str | None:
    if isinstance(value, _Flagged):
        return f"{path}: {value.problem}" if path else value.problem
    if isinstance(value, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, item in items:
        found = _find_problem(item, sub)
        if found:
            return found
    return None


def _check_row(row, where: str, index: int, checker: _Checker) -> None:
    if not checker.flagged:
        return
    problem = _find_problem(row)
    if problem:
        rid = row.get("id", index) if isinstance(row, dict) else index
        raise DataError(f"{where} (id {str(rid)!r}): {problem}")


def _decode(path: Path) -> str:
    """The file's text; a leading UTF-8 BOM is dropped, invalid UTF-8 names line and byte offset."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[offset]:02x} at byte offset {offset}); "
                        "convert the file to UTF-8") from None


def read_json_rows(path: Path, lines: bool | None = None) -> tuple[list[tuple[object, str]], str]:
    """Rows of a JSON array (lines False) or JSONL file (lines True; None: decide
    from the suffix and content), with their location strings, and the container."""
    path = Path(path)
    text = _decode(path)
    if lines is None:
        suffix = path.suffix.lower()
        lines = suffix == ".jsonl" or (suffix != ".json" and not text.lstrip().startswith("["))
    checker = _Checker()
    decoder = json.JSONDecoder(object_pairs_hook=checker)
    if lines:
        rows = []
        # split on "\n" only: str.splitlines would also split inside strings at U+2028, U+0085 ...
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = decoder.decode(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
            where = f"{path}:{lineno}"
            _check_row(row, where, len(rows), checker)
            rows.append((row, where))
        return rows, "jsonl"
    try:
        data = decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    rows = []
    for i, row in enumerate(data):
        where = f"{path}: record {i}"
        _check_row(row, where, i, checker)
        rows.append((row, where))
    return rows, "json"


def _read_rows(path: Path) -> tuple[list[tuple[dict, str]], str]:
    """Rows with their location strings, and the container kind."""
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            names = table.column_names
            dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
            if dup is not None:
                raise DataError(f"{path}: duplicate column {dup!r}")
            rows = table.to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: cannot read it as Parquet: {exc}") from None
        return [(row, f"{path}: record {i}") for i, row in enumerate(rows)], "parquet"
    return read_json_rows(path)


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
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a JSON, JSONL or Parquet file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected a JSON, JSONL or Parquet file")
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
