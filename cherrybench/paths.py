"""Where cherrybench keeps converted models, cached scores and embeddings."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of every on-disk cache; override with CHERRYBENCH_CACHE."""
    root = os.environ.get("CHERRYBENCH_CACHE") or Path.home() / ".cache" / "cherrybench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
