"""On-disk score cache: one directory per (metric, version, params, model
fingerprints[, pool fingerprint]), holding Parquet shards keyed by each
record's content hash. Shards are written atomically (unique temp file,
fsync, rename: `store.atomic_file`), so a run killed at any moment loses at
most the chunk in flight and never leaves a torn file; a shard that cannot be
read anyway (a damaged disk, a copied half file) is set aside as
`*.corrupt-<timestamp>` with a warning, and its rows are recomputed."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from cherrybench.fingerprint import RECORD_HASH_COLUMN
from cherrybench.paths import cache_dir
from cherrybench.store import atomic_file, atomic_write_bytes, set_aside

HASH_COLUMN = RECORD_HASH_COLUMN


def _read_frame(path: Path) -> pd.DataFrame:
    """A shard as the metric computed it: text columns (reasons, generated text) come back
    as Python objects with None for "no value", not pandas 3's `str` dtype with NaN, so
    a cached score table equals a freshly computed one."""
    frame = pd.read_parquet(path)
    for column in frame.columns:
        if pd.api.types.is_string_dtype(frame[column].dtype) and frame[column].dtype != object:
            values = frame[column].astype(object)
            frame[column] = values.where(frame[column].notna(), None)
    return frame


class ShardStore:
    def __init__(self, kind: str, name: str, key: str, meta: dict):
        self.directory = cache_dir() / kind / name / key[:24]
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_file = self.directory / "meta.json"
        if not meta_file.exists():
            atomic_write_bytes(meta_file, json.dumps(meta, indent=2, sort_keys=True, default=str).encode())

    def parts(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.parquet"))

    def read_parts(self, reader: Callable[[Path], object] = _read_frame) -> Iterator[tuple[Path, object]]:
        """(path, reader(path)) for every readable shard; an unreadable one, or one
        without the hash column, is set aside (renamed, with a warning) and skipped."""
        import pyarrow as pa

        for part in self.parts():
            try:
                table = reader(part)
            except FileNotFoundError:  # set aside by another process meanwhile
                continue
            except (OSError, ValueError, pa.ArrowException) as exc:
                set_aside(part, f"{type(exc).__name__}: {exc}")
                continue
            names = table.column_names if isinstance(table, pa.Table) else list(table.columns)
            if HASH_COLUMN not in names:
                set_aside(part, f"no {HASH_COLUMN} column")
                continue
            yield part, table

    def load(self) -> pd.DataFrame | None:
        """All cached rows, one per record hash (first written wins)."""
        frames = [frame for _, frame in self.read_parts()]
        if not frames:
            return None
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop_duplicates(HASH_COLUMN, keep="first").set_index(HASH_COLUMN)

    def append(self, frame: pd.DataFrame) -> Path:
        if HASH_COLUMN not in frame.columns:
            raise ValueError(f"a cache shard needs a {HASH_COLUMN} column")
        path = self.directory / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_file(path) as tmp:
            frame.to_parquet(tmp, index=False)
        return path
