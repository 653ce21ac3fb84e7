"""Every file cherrybench writes (score tables, subsets, selection reports)
goes through this module, so that no run can destroy what it reads or leave
debris behind:

- `check_output` refuses an output path that is (or resolves to, through a
  symlink, `./`, `..` or a hard link) one of the run's inputs, that is not a
  regular file (a directory, a device such as /dev/null, a FIFO), whose parent
  is a file, or whose suffix names no supported writer. The CLI calls it
  before any scoring, so a bad `--out` fails in a second, not after hours.
- `atomic_write` writes to a temp file in the target's directory, named
  uniquely per process (pid + uuid), flushes and fsyncs it, then `os.replace`s
  the target; on any exception the temp file, and any directory it created,
  is removed and the target is untouched.
- Score tables carry each record's content hash (`_record_hash`) and the data
  set's fingerprint (Parquet schema metadata; a `_data_fingerprint` column in
  CSV, JSONL and JSON), so `select --scores` can refuse a table computed for
  other data instead of matching ids by position; and each metric's score-cache
  key (`_score_keys`, stored the same way), so it can refuse scores computed with
  other parameters or models.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from cherrybench.fingerprint import RECORD_HASH_COLUMN
from cherrybench.records import DataError, Dataset, Record, read_json_rows, read_parquet_table
from cherrybench.store import atomic_file

HASH_COLUMN = RECORD_HASH_COLUMN
SCORE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
SUBSET_SUFFIXES = (".json", ".jsonl", ".parquet")
FINGERPRINT_COLUMN = "_data_fingerprint"
FINGERPRINT_KEY = b"cherrybench.data_fingerprint"
SCORE_KEYS_COLUMN = "_score_keys"  # JSON {metric: score-cache key}: the settings and models behind its columns
SCORE_KEYS_KEY = b"cherrybench.score_keys"
BOOKKEEPING_COLUMNS = (HASH_COLUMN, FINGERPRINT_COLUMN, SCORE_KEYS_COLUMN)
_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")]


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_output(out, inputs: Iterable = (), suffixes: tuple[str, ...] | None = None, what: str = "--out") -> Path:
    """The path to write `out` to (symlinks resolved), or a DataError saying why not."""
    given = Path(out)
    if suffixes is not None and given.suffix.lower() not in suffixes:
        shown = f"suffix {given.suffix!r}" if given.suffix else "no suffix"
        raise DataError(f"{what} {given}: {shown}; supported: {', '.join(suffixes)}")
    target = given.resolve()
    if target.exists():
        mode = os.stat(target).st_mode
        if not stat.S_ISREG(mode):
            via = f" ({given} resolves to {target})" if target != given.absolute() else ""
            raise DataError(f"{what} {given}: is {_kind(mode)}{via}; give a path to a regular file")
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        same = target == source.resolve()
        if not same and target.exists() and source.exists():
            same = os.path.samefile(target, source)
        if same:
            raise DataError(f"{what} {given} is the input file {source}: refusing to overwrite it; "
                            "write the output to another path")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{what} {given}: {parent} is not a directory")
    return target


def atomic_write(path, write: Callable) -> Path:
    """Call `write(handle)` with a binary file open on a temp file beside `path`;
    `store.atomic_file` fsyncs it and moves it over `path`. On failure nothing is
    left behind, not even the directories this call created."""
    path = Path(path)
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        with atomic_file(path) as tmp:
            with open(tmp, "xb") as handle:
                write(handle)
    except BaseException as exc:
        for directory in created:
            try:
                directory.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise DataError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise
    return path


# ---- subsets ----------------------------------------------------------------------------------

INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _json_problem(value, field: str) -> str | None:
    """Why JSON cannot hold `value` unchanged (a Parquet timestamp, date, bytes, decimal, map ...), or None."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _json_problem(v, f"{field}[{i}]"))), None)
    if isinstance(value, dict):
        return next((p for k, v in value.items()
                     if (p := (None if isinstance(k, str) else f"{field}: key {k!r} is not a string")
                         or _json_problem(v, f"{field}.{k}"))), None)
    return (f"field {field!r} holds a {type(value).__name__} value ({str(value)[:60]}), which JSON cannot hold "
            "unchanged; write the subset as .parquet to keep it, or convert that column to strings first")


def _int64_problem(value, field: str) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64[0] <= value <= INT64[1]:
            return (f"field {field!r} holds the integer {value}, which does not fit Parquet's int64; "
                    "write the subset as .json or .jsonl to keep it")
    elif isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _int64_problem(v, f"{field}[{i}]"))), None)
    elif isinstance(value, dict):
        return next((p for k, v in value.items() if (p := _int64_problem(v, f"{field}.{k}"))), None)
    return None


def _first_problem(records: list[Record], check) -> None:
    for record in records:
        for key, value in record.raw.items():
            problem = check(value, key)
            if problem:
                raise DataError(f"{record.where} (id {record.id!r}): {problem}")


def write_subset(dataset: Dataset, ids, out: str | Path, inputs=()) -> Path:
    """Write the records with these ids, unchanged and in input order, keeping the
    input's record format (alpaca, sharegpt, messages). `out`'s suffix picks the
    container: .json (array), .jsonl or .parquet; any other suffix, an `out` that is
    an input (the data file or one of `inputs`) or not a regular file is refused
    (see cherrybench.outputs).

    Conversions between containers never change a value silently:
    - Parquet to JSON/JSONL refuses values JSON cannot hold (timestamps, dates,
      bytes, decimals, maps ...), naming the record and the column: write .parquet.
    - JSON to Parquet refuses integers outside int64, naming the record and the
      field; a field present in only some rows is null in the others (Parquet is
      columnar), never dropped. A Parquet input written as Parquet keeps its schema."""
    target = check_output(out, [dataset.path, *inputs], SUBSET_SUFFIXES)
    container = Path(out).suffix.lower()[1:]
    wanted = set(ids)
    unknown = wanted - {r.id for r in dataset.records}
    if unknown:
        raise DataError(f"ids not in the data set: {sorted(unknown)[:5]}")
    chosen = [r for r in dataset.records if r.id in wanted]
    rows = [r.raw for r in chosen]
    if container == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if dataset.container == "parquet" and dataset.path is not None:
            table = read_parquet_table(dataset.path)  # compressed or not
            keep = [i for i, r in enumerate(dataset.records) if r.id in wanted]
            table = table.take(pa.array(keep, type=pa.int64()))
        else:
            _first_problem(chosen, _int64_problem)
            columns: dict = {}
            for row in rows:
                for key in row:
                    columns.setdefault(key, None)
            try:
                table = pa.Table.from_pydict({k: [row.get(k) for row in rows] for k in columns})
            except (pa.ArrowException, OverflowError) as exc:
                raise DataError(f"{out}: these records cannot be written as Parquet ({exc}); "
                                "write the subset as .json or .jsonl") from None

        def write(handle):
            pq.write_table(table, handle)
    else:
        _first_problem(chosen, _json_problem)

        def write(handle):
            if container == "jsonl":
                for row in rows:
                    handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            else:
                handle.write((json.dumps(rows, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))

    atomic_write(target, write)
    return Path(out)


# ---- score tables -------------------------------------------------------------------------------

def _json_scalar(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _json_scalar(value.item())
    return value


def write_scores(table: pd.DataFrame, out, dataset: Dataset | None = None, inputs=(),
                 score_keys: dict[str, str] | None = None) -> Path:
    """Write a score table; the writer follows the suffix (.parquet, .csv, .jsonl, or
    .json for an array of row objects). With `dataset` (whose rows the table holds,
    in order) each row gets its record's `_record_hash` and the file the data
    fingerprint, which `check_scores_match` verifies. `score_keys` (metric name ->
    score-cache key) says which settings and models made each metric's columns, for
    `select --scores` to check. `out` may not be the data file or one of `inputs`.
    NaN is written as JSON null."""
    inputs = [*([dataset.path] if dataset is not None else []), *inputs]
    target = check_output(out, inputs, SCORE_SUFFIXES)
    suffix = Path(out).suffix.lower()
    table = table.reset_index(drop=True)
    fingerprint = None
    if dataset is not None:
        ids = [r.id for r in dataset.records]
        if list(table["id"].astype(str)) != ids:
            raise ValueError("write_scores: the table's ids are not the data set's ids in input order")
        table = table.drop(columns=[c for c in BOOKKEEPING_COLUMNS if c in table.columns])
        table[HASH_COLUMN] = [r.content_hash for r in dataset.records]  # bookkeeping last: scores first
        fingerprint = dataset.fingerprint
        if suffix != ".parquet":
            table[FINGERPRINT_COLUMN] = fingerprint
    keys = json.dumps(dict(sorted(score_keys.items())), separators=(",", ":")) if score_keys else None
    if keys is not None and suffix != ".parquet":
        table = table.drop(columns=[SCORE_KEYS_COLUMN], errors="ignore")
        table[SCORE_KEYS_COLUMN] = keys

    def write(handle):
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrow = pa.Table.from_pandas(table, preserve_index=False)
            meta = {}
            if fingerprint is not None:
                meta[FINGERPRINT_KEY] = fingerprint.encode()
            if keys is not None:
                meta[SCORE_KEYS_KEY] = keys.encode()
            if meta:
                arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta})
            pq.write_table(arrow, handle)
        elif suffix == ".csv":
            handle.write(table.to_csv(index=False).encode("utf-8"))
        else:
            rows = [{k: _json_scalar(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
            if suffix == ".jsonl":
                for row in rows:
                    handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            else:
                handle.write((json.dumps(rows, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))

    return atomic_write(target, write)


def read_scores(path) -> pd.DataFrame:
    """A score table written by `write_scores` (or another tool: then it has no
    hashes, and `check_scores_match` refuses it). `attrs` holds the path, the
    data fingerprint and the metrics' score-cache keys (`score_keys`, None for a
    table that stores none) when the file has them."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise DataError(f"--scores {path}: suffix {path.suffix!r}; supported: {', '.join(SCORE_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"--scores {path}: " + ("is a directory" if path.is_dir() else "no such file"))
    fingerprint = keys = None
    text_columns = {"id": str, HASH_COLUMN: str, FINGERPRINT_COLUMN: str, SCORE_KEYS_COLUMN: str}
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            arrow = pq.read_table(path)
            meta = arrow.schema.metadata or {}
            if FINGERPRINT_KEY in meta:
                fingerprint = meta[FINGERPRINT_KEY].decode()
            if SCORE_KEYS_KEY in meta:
                keys = meta[SCORE_KEYS_KEY].decode()
            table = arrow.to_pandas()
        elif suffix == ".csv":
            table = pd.read_csv(path)
            present = [c for c in text_columns if c in table.columns]
            if present:  # ids such as "NA" or "007" stay as written
                text = pd.read_csv(path, usecols=present, dtype=str, keep_default_na=False)
                for column in present:
                    table[column] = text[column]
        else:
            rows, _ = read_json_rows(path, lines=suffix == ".jsonl")
            for row, where in rows:
                if not isinstance(row, dict):
                    raise DataError(f"{where}: a score row must be a JSON object, got {type(row).__name__}")
            table = pd.DataFrame.from_records([row for row, _ in rows])
    except DataError:
        raise
    except Exception as exc:  # a corrupt or foreign file: say which
        raise DataError(f"--scores {path}: cannot read it as a {suffix[1:]} score table: {exc}") from None
    if "id" not in table.columns:
        raise DataError(f"--scores {path}: a score table needs an 'id' column")
    table["id"] = table["id"].astype(str)
    if FINGERPRINT_COLUMN in table.columns:
        values = set(table[FINGERPRINT_COLUMN].dropna())
        if len(values) > 1:
            raise DataError(f"--scores {path}: rows from {len(values)} different data sets ({FINGERPRINT_COLUMN})")
        fingerprint = next(iter(values), fingerprint)
    if SCORE_KEYS_COLUMN in table.columns:
        values = {v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
                  for v in table[SCORE_KEYS_COLUMN] if v is not None and not (isinstance(v, float) and math.isnan(v))
                  and v != ""}
        if len(values) > 1:
            raise DataError(f"--scores {path}: rows scored with {len(values)} different settings ({SCORE_KEYS_COLUMN})")
        keys = next(iter(values), keys)
    table.attrs = {"path": str(path), "data_fingerprint": fingerprint, "score_keys": _score_keys(keys, path)}
    return table


def _score_keys(text: str | None, path) -> dict[str, str] | None:
    """The metric -> score-cache key map a score table stores, or None when it stores none."""
    if text is None:
        return None
    try:
        keys = json.loads(text)
    except json.JSONDecodeError:
        keys = None
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise DataError(f"--scores {path}: its {SCORE_KEYS_COLUMN} ({text[:60]!r}) is not a JSON object of "
                        "metric names and score-cache keys")
    return keys


def check_scores_match(table: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Refuse a score table computed for other data: every record's id and content
    hash must match, and the records must be in the same order. Returns the table
    without its bookkeeping columns."""
    source = table.attrs.get("path") or "the score table"
    data = dataset.path or "the data"
    rescore = f"rescore with `cherrybench score --data {data} --metrics ... --out FILE`"
    if HASH_COLUMN not in table.columns:
        raise DataError(f"--scores {source}: no {HASH_COLUMN} column, so it cannot be checked against {data} "
                        f"(written by another tool or an older cherrybench); {rescore}")
    dup = table["id"][table["id"].duplicated()]
    if len(dup):
        raise DataError(f"--scores {source}: id {dup.iloc[0]!r} appears more than once")
    by_id = dict(zip(table["id"], table[HASH_COLUMN]))
    ids = {r.id for r in dataset.records}
    unknown = [i for i in table["id"] if i not in ids]
    for record in dataset.records:
        if record.id not in by_id:
            raise DataError(f"--scores {source} does not match {data}: no row for record id {record.id!r} "
                            f"({record.where}); {len(unknown)} ids in the table are not in the data; {rescore}")
        if by_id[record.id] != record.content_hash:
            raise DataError(f"--scores {source} does not match {data}: the scores for id {record.id!r} were computed "
                            f"for other content than {record.where} (record hash differs); {rescore}")
    if unknown:
        raise DataError(f"--scores {source} does not match {data}: id {unknown[0]!r} is not in the data "
                        f"({len(unknown)} such ids); {rescore}")
    stored = table.attrs.get("data_fingerprint")
    if stored is not None and stored != dataset.fingerprint:
        raise DataError(f"--scores {source} does not match {data}: same records but in another order "
                        f"(data fingerprint differs); {rescore}")
    return table.drop(columns=[c for c in BOOKKEEPING_COLUMNS if c in table.columns])


def check_numeric_columns(table: pd.DataFrame, columns: Iterable[str]) -> None:
    """Score columns read from a file must hold numbers or nulls: text, a list or a boolean is
    refused, naming the file, the column and the first such record, rather than cast or turned
    into NaN (the table's `attrs["path"]`, from `read_scores`, names the file)."""
    source = table.attrs.get("path") or "the score table"
    for column in columns:
        if column not in table.columns:
            continue
        values = table[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue
        bad = [(rid, value) for rid, value in zip(table["id"], values) if not _is_number(value)]
        if not bad:
            continue
        # the first value that is no number at all ('abc' in a CSV column, whose other cells are then read as
        # text too); failing that, the first number written as text (a JSON "12.5"), which is not cast either
        rid, value = next(((rid, v) for rid, v in bad if not _parses_as_number(v)), bad[0])
        raise DataError(f"--scores {source}: column {column!r} must hold numbers; the row for id {rid!r} "
                        f"has {value!r} ({type(value).__name__})")


def _is_number(value) -> bool:
    """A number or a null, as a score column may hold; not text, a list or a boolean."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    return hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and value.dtype.kind in "iuf"  # numpy scalar


def _parses_as_number(value) -> bool:
    return isinstance(value, str) and not pd.isna(pd.to_numeric(value, errors="coerce"))
