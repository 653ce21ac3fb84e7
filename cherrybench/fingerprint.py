"""Stable content hashes for cache keys (canonical JSON, never a random fallback)."""

import hashlib
import json
import math
from pathlib import Path


def _canonical(value, where: str):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in sorted(value.items())}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"cannot fingerprint {where} of type {type(value).__name__}: "
        "use plain JSON values (str, int, float, bool, None, list, dict) for parameters"
    )


RECORD_HASH_COLUMN = "_record_hash"  # a record's content hash in score tables and cache shards


def hash_json(value, where: str = "value") -> str:
    """sha256 of the canonical JSON of `value`; unhashable values raise TypeError."""
    text = json.dumps(_canonical(value, where), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
