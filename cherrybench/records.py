"""Instruction records: reading Alpaca, ShareGPT and OpenAI-messages files
(JSON array, JSONL, Parquet; each may be gzip, xz, bzip2 or zstd compressed)
and validating them. Writing subsets back lives in cherrybench.outputs
(write_subset).

JSONL is streamed: one line is decoded and parsed at a time, so reading holds
the records and one line, never the file's text. While a file is read its
bytes (as stored, compressed or not) are hashed, so every record knows the
sha256 of exactly what it was parsed from (`Record.source`, for provenance
manifests) without a second read."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import re
import sys
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

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
    source: "SourceFile | None" = field(default=None, repr=False, compare=False)  # the file it was read from

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

    @property
    def sources(self) -> list["SourceFile"]:
        """The files these records were read from, in order of first use (a sampled pool keeps them)."""
        return list({id(r.source): r.source for r in self.records if r.source is not None}.values())

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
    keeping the last value or failing later, mid-scoring or mid-write. Keys are
    interned: each JSONL line is parsed on its own, and a million records would
    otherwise hold a million copies of "instruction"."""

    def __init__(self):
        self.flagged = 0

    def __call__(self, pairs):
        obj = {sys.intern(key): value for key, value in pairs}
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


# ---- opening files: compression, hashing, streaming ------------------------------------------------

COMPRESSIONS = {".gz": "gzip", ".xz": "xz", ".bz2": "bzip2", ".zst": "zstd"}
_MAGIC = {"gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh", "zstd": b"\x28\xb5\x2f\xfd"}
_CHUNK = 1 << 20


@dataclass(eq=False)
class SourceFile:
    """A data file as read: its sha256 and size (of the bytes as stored, compressed or
    not) are filled in once it has been read to the end."""

    path: Path
    sha256: str = ""
    size: int = 0
    compression: str | None = None


def data_suffix(path: Path) -> str:
    """The suffix that names the container, under any compression suffix: `.jsonl` for `a.jsonl.gz`."""
    path = Path(path)
    if path.suffix.lower() in COMPRESSIONS:
        path = path.with_suffix("")
    return path.suffix.lower()


def _compression(path: Path) -> str | None:
    """The compression of a file, from its first bytes; a compression suffix must agree with them."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    found = next((kind for kind, magic in _MAGIC.items() if head.startswith(magic)), None)
    named = COMPRESSIONS.get(path.suffix.lower())
    if named is not None and found != named:
        what = "is empty" if not head else f"starts with bytes {head.hex(' ')}"
        raise DataError(f"{path}: named {path.suffix} but is not {named} data (it {what})")
    return found


class _Hashing(io.RawIOBase):
    """Passes a file's bytes through, hashing them on the way."""

    def __init__(self, raw: BinaryIO, source: SourceFile):
        self.raw, self.source, self.digest = raw, source, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
            self.source.size += n
        return n

    def finish(self) -> None:
        """Hash what the decompressor left unread (trailing bytes), then record the digest."""
        while self.read(_CHUNK):
            pass
        self.source.sha256 = self.digest.hexdigest()


class _Zstd(io.RawIOBase):
    """zstd frames one after another. zstandard's own stream reader ends quietly at a
    truncated frame; this one raises EOFError, as gzip, xz and bz2 do."""

    def __init__(self, raw: BinaryIO):
        import zstandard

        self.raw, self.new = raw, zstandard.ZstdDecompressor().decompressobj
        self.obj, self.in_frame, self.out, self.at = self.new(), False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.at >= len(self.out):
            data = b""
            if self.obj.eof:
                data, self.obj = self.obj.unused_data, self.new()
            data = data or self.raw.read(1 << 16)
            if not data:
                if self.in_frame:
                    raise EOFError("compressed file ended before the end of its last zstd frame")
                return 0
            self.out, self.at = self.obj.decompress(data), 0
            self.in_frame = not self.obj.eof
        n = min(len(buffer), len(self.out) - self.at)
        buffer[:n] = self.out[self.at: self.at + n]
        self.at += n
        return n


def _stream_errors() -> tuple:
    """What a decompressor raises on a corrupt or truncated file."""
    errors = [EOFError, zlib.error, lzma.LZMAError, OSError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


@contextmanager
def open_data(path: Path, source: SourceFile | None = None) -> Iterator[BinaryIO]:
    """The file's (decompressed) bytes as a buffered binary stream. With `source`, the
    stored bytes are hashed as they are read and, when the block ends normally, the
    stream is read to its end (a truncated one is an error even after the last line)
    and the digest set. A file that cannot be read or decompressed is a DataError naming it."""
    path = Path(path)
    complete = source is not None  # a full read: to the end, then the digest
    source = source or SourceFile(path)
    source.compression = kind = _compression(path)
    try:
        raw = open(path, "rb", buffering=0)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    hashing = _Hashing(raw, source)
    stored = io.BufferedReader(hashing, _CHUNK)
    with raw:
        if kind == "gzip":
            stream = gzip.GzipFile(fileobj=stored, mode="rb")
        elif kind == "xz":
            stream = lzma.LZMAFile(stored)
        elif kind == "bzip2":
            stream = bz2.BZ2File(stored)
        elif kind == "zstd":
            try:
                stream = io.BufferedReader(_Zstd(stored), _CHUNK)
            except ImportError:
                raise DataError(f"{path}: zstd-compressed; reading it needs the 'zstandard' package "
                                "(pip install zstandard)") from None
        else:
            stream = stored
        try:
            try:
                yield stream
            except DataError:
                if kind:  # bad text in a compressed file: damage that the stream's checksum reveals further on?
                    while stream.read(_CHUNK):
                        pass
                raise
            if complete:
                while stream.read(_CHUNK):
                    pass
        except _stream_errors() as exc:
            if not kind:
                raise DataError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
            raise DataError(f"{path}: cannot decompress it as {kind} ({exc}); the file is corrupt or truncated") \
                from None
        if complete:
            hashing.finish()


def _decode_text(data: bytes, path: Path, line_start: int = 0, lineno: int | None = None) -> str:
    """UTF-8 text; invalid bytes name the line and the byte offset (of the decompressed data)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = line_start + exc.start
        line = lineno if lineno is not None else data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {offset}); "
                        "convert the file to UTF-8") from None


def _is_array(path: Path) -> bool:
    """Whether the file's first non-blank character (after a BOM) opens a JSON array."""
    with open_data(path) as handle:
        while block := handle.read(1 << 16):
            text = block.removeprefix(_BOM).lstrip()
            if text:
                return text.startswith(b"[")
    return False


def _jsonl_rows(handle: BinaryIO, path: Path, checker: "_Checker", decoder) -> Iterator[tuple[object, str]]:
    """One JSON value per line, parsed as the line is read (lines split at b"\\n" only:
    U+2028 and friends may sit inside strings)."""
    offset, index = 0, 0
    for lineno, raw in enumerate(handle, start=1):
        skip = len(_BOM) if lineno == 1 and raw.startswith(_BOM) else 0
        line = _decode_text(raw[skip:], path, offset + skip, lineno)
        offset += len(raw)
        if not line.strip():
            continue
        try:
            row = decoder.decode(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
        where = f"{path}:{lineno}"
        _check_row(row, where, index, checker)
        index += 1
        yield row, where


def _array_rows(handle: BinaryIO, path: Path, checker: "_Checker", decoder) -> Iterator[tuple[object, str]]:
    """The records of a JSON array (parsed whole: the format has no record boundaries to stream at)."""
    data = handle.read()
    skip = len(_BOM) if data.startswith(_BOM) else 0
    text = _decode_text(data[skip:], path, skip)
    del data
    try:
        rows = decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    del text
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        where = f"{path}: record {i}"
        _check_row(row, where, i, checker)
        yield row, where


def read_parquet_table(path: Path, source: SourceFile | None = None):
    """A Parquet file (compressed or not) as an Arrow table; duplicate columns are an error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_data(path, source) as handle:
        data = handle.read()
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read it as Parquet: {exc}") from None
    names = table.column_names
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise DataError(f"{path}: duplicate column {dup!r}")
    return table


def container_of(path: Path, lines: bool | None = None) -> str:
    """"parquet", "jsonl" or "json": by the suffix under any compression suffix, else by the content."""
    suffix = data_suffix(path)
    if suffix == ".parquet":
        return "parquet"
    if lines is None:
        lines = suffix == ".jsonl" or (suffix != ".json" and not _is_array(path))
    return "jsonl" if lines else "json"


def iter_rows(path: Path, container: str, source: SourceFile | None = None) -> Iterator[tuple[object, str]]:
    """Rows of a data file with their location strings, one at a time; `source` gets the
    file's sha256 once the last row has been read."""
    path = Path(path)
    if container == "parquet":
        table = read_parquet_table(path, source)
        start = 0
        for batch in table.to_batches():
            for j, row in enumerate(batch.to_pylist()):
                yield row, f"{path}: record {start + j}"
            start += batch.num_rows
        return
    checker = _Checker()
    decoder = json.JSONDecoder(object_pairs_hook=checker)
    rows = _jsonl_rows if container == "jsonl" else _array_rows
    with open_data(path, source) as handle:
        yield from rows(handle, path, checker, decoder)


def read_json_rows(path: Path, lines: bool | None = None) -> tuple[list[tuple[object, str]], str]:
    """Rows of a JSON array (lines False) or JSONL file (lines True; None: decide
    from the suffix and content), with their location strings, and the container."""
    container = container_of(Path(path), lines)
    return list(iter_rows(Path(path), container)), container


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


def parse_record(row: dict, fmt: str, default_id: str, where: str, source: SourceFile | None = None) -> Record:
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
    return Record(id=record_id(row, where, default_id), turns=turns, system=system, raw=row, where=where,
                  source=source)


def record_id(row: dict, where: str, default_id: str, key: str = "id") -> str:
    """A record's id: its `key` field, a string or an integer (not a float or a bool, whose text
    would not be the id written); `default_id` (its 0-based position) when the field is missing
    or null (a Parquet row without a value in an id column is keyed like a JSON record without one)."""
    rid = row.get(key)
    if rid is None:
        return default_id
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise DataError(f"{where}: field {key!r} must be a string or an integer, got {type(rid).__name__}")
    return str(rid)


def check_unique_ids(records: list[Record], key: str = "id") -> None:
    """Each id once. A clash with a record keyed by its position (no `key` of its own) says so:
    the clashing id is then nowhere in the file."""
    seen: dict[str, Record] = {}
    for record in records:
        first = seen.get(record.id)
        if first is not None:
            missing = next((r.where for r in (first, record) if r.raw.get(key) is None), None)
            why = (f"; {missing} has no {key!r} (missing or null), so its id is the 0-based position: give every "
                   f"record its own {key!r}") if missing else ""
            raise DataError(f"{record.where}: duplicate id {record.id!r} (first at {first.where}){why}")
        seen[record.id] = record


def load_dataset(path: str | Path, fmt: str | None = None) -> Dataset:
    """Read and validate a data file; `fmt` forces a format instead of detecting it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a JSON, JSONL or Parquet file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected a JSON, JSONL or Parquet file")
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    container = container_of(path)
    source = SourceFile(path)
    records = []
    for row, where in iter_rows(path, container, source):  # one row at a time: no list of raw rows
        if fmt is None:
            fmt = detect_format(row, where)
        records.append(parse_record(row, fmt, str(len(records)), where, source))
    if not records:
        raise DataError(f"{path}: no records")
    check_unique_ids(records)
    return Dataset(records=records, path=path, format=fmt, container=container)
