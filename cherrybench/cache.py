"""On-disk score cache: one directory per (metric, version, params, model
fingerprints[, pool fingerprint]), holding Parquet shards keyed by each
record's content hash. Shards are written atomically, so a run killed at any
moment loses at most the chunk in flight and never leaves a torn file."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pandas as pd

from cherrybench.paths import cache_dir

HASH_COLUMN = "_record_hash"


class ShardStore:
    def __init__(self, kind: str, name: str, key: str, meta: dict):
        self.directory = cache_dir() / kind / name / key[:24]
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_file = self.directory / "meta.json"
        if not meta_file.exists():
            _atomic_write_bytes(meta_file, json.dumps(meta, indent=2, sort_keys=True, default=str).encode())

    def parts(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.parquet"))

    def load(self) -> pd.DataFrame | None:
        """All cached rows, one per record hash (first written wins)."""
        parts = self.parts()
        if not parts:
            return None
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        return frame.drop_duplicates(HASH_COLUMN, keep="first").set_index(HASH_COLUMN)

    def append(self, frame: pd.DataFrame) -> Path:
        if HASH_COLUMN not in frame.columns:
            raise ValueError(f"a cache shard needs a {HASH_COLUMN} column")
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
