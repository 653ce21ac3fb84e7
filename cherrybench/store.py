"""The one place cherrybench writes cache files: atomic writes, and a
content-keyed artifact store.

- `atomic_file(path)` / `atomic_write_bytes` / `atomic_write_json`: write a
  sibling temp file with a unique name (`.<name>.<pid>.<uuid>.tmp`), fsync it,
  rename it over `path`. A reader sees the old file or the new one, never a torn
  one; a failed write leaves nothing behind.
- `build_directory(target, build)`: `build(staging)` fills a unique staging
  directory, which is fsynced and renamed to `target`. If another process
  finished `target` first, ours is discarded; on an exception the staging
  directory is removed.
- `set_aside(path, why)`: an unreadable cache file is renamed to
  `<name>.corrupt-<timestamp>` (with a warning naming it) and recomputed.
- `ArtifactStore(kind)`: artifacts under `cache_dir()/kind/`, each named by
  the hash (`fingerprint.hash_json`) of a JSON payload describing its content,
  never positional ids: `get_json`/`put_json` for small results,
  `directory(payload, build)` for models.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from cherrybench.fingerprint import hash_json
from cherrybench.paths import cache_dir

log = logging.getLogger(__name__)

MARKER = "cherrybench_artifact.json"  # inside every directory artifact: its kind, key and payload


def staging_path(target: Path) -> Path:
    """A sibling name no other process or thread will pick: `.<name>.<pid>.<uuid>.tmp`."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(folder) / name)
        _fsync_dir(Path(folder))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path to write `path`'s content to (by any writer, e.g. pandas);
    on success it is fsynced and renamed over `path`, on an exception removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=indent, ensure_ascii=False, default=str))


def set_aside(path: Path, why: object = "unreadable") -> Path:
    """Rename a corrupt cache file out of the way (`<name>.corrupt-<timestamp>`) and say so."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process set it aside first
        return aside
    log.warning("corrupt cache file %s set aside as %s (%s); its content will be recomputed", path, aside.name, why)
    return aside


def build_directory(target: Path, build: Callable[[Path], None],
                    is_complete: Callable[[Path], bool] | None = None) -> Path:
    """`target`, built once: `build(staging)` fills a fresh unique staging directory,
    which is fsynced and renamed into place. An existing `target` is returned as is
    (unless `is_complete` says it is not: then it is replaced). If another process
    put a complete `target` in place while we built, ours is discarded. The staging
    directory never outlives the call."""
    target = Path(target)
    complete = is_complete or (lambda p: p.is_dir())
    if target.exists() and complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    staging.mkdir()
    try:
        build(staging)
        _fsync_tree(staging)
        for _ in range(3):
            try:
                os.replace(staging, target)  # a non-empty existing target makes this fail
                break
            except OSError:
                if not target.exists():
                    raise
                if complete(target):
                    log.info("%s was built by another process meanwhile; ours is discarded", target)
                    return target
                stale = staging_path(target)  # an unfinished older attempt: move it out, then retry
                try:
                    os.replace(target, stale)
                except FileNotFoundError:
                    pass
                _remove(stale)
        else:
            raise RuntimeError(f"could not move the built {target.name} into place in {target.parent}")
        _fsync_dir(target.parent)
        return target
    finally:
        if staging.exists():
            _remove(staging)


class ArtifactStore:
    """Content-keyed artifacts of one kind under `cache_dir()/kind/`.

    A key payload is plain JSON describing everything the artifact depends on
    (settings, model fingerprints, record content hashes); its `hash_json` names
    the artifact. The root is resolved on each call, so CHERRYBENCH_CACHE changes
    are honoured."""

    def __init__(self, kind: str):
        self.kind = kind

    @property
    def root(self) -> Path:
        return cache_dir() / self.kind

    @staticmethod
    def key(payload) -> str:
        return hash_json(payload, where="artifact key")

    def path_for(self, payload, suffix: str = "") -> Path:
        return self.root / f"{self.key(payload)[:32]}{suffix}"

    # small JSON results
    def get_json(self, payload):
        """The stored value, or None when absent (a corrupt file is set aside)."""
        path = self.path_for(payload, ".json")
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            set_aside(path, exc)
            return None
        if not isinstance(stored, dict) or stored.get("key") != self.key(payload) or "value" not in stored:
            set_aside(path, "not an artifact of this key")
            return None
        return stored["value"]

    def put_json(self, payload, value) -> Path:
        return atomic_write_json(self.path_for(payload, ".json"),
                                 {"kind": self.kind, "key": self.key(payload), "payload": payload, "value": value})

    # directories (models)
    def directory(self, payload, build: Callable[[Path], None]) -> Path:
        """The artifact directory for `payload`, calling `build(staging)` only if it is missing."""
        key = self.key(payload)

        def build_marked(staging: Path) -> None:
            build(staging)
            (staging / MARKER).write_text(json.dumps({"kind": self.kind, "key": key, "payload": payload}, indent=1))

        return build_directory(self.path_for(payload), build_marked, is_complete=lambda p: (p / MARKER).is_file())

    def find(self, payload) -> Path | None:
        """The finished artifact (directory or JSON file) for `payload`, if there is one."""
        path = self.path_for(payload)
        if (path / MARKER).is_file():
            return path
        path = self.path_for(payload, ".json")
        return path if path.is_file() else None

    def remove(self, payload) -> None:
        """Delete an artifact: first renamed out of sight (atomic), then deleted."""
        for path in (self.path_for(payload), self.path_for(payload, ".json")):
            self.discard(path)

    def discard(self, path: Path) -> None:
        """Delete the artifact at `path` (as `directory` returned it), renamed out of sight first;
        a path outside this store is refused, never deleted."""
        path = Path(path)
        if path.resolve().parent != self.root.resolve():
            raise ValueError(f"{path} is not an artifact of {self.root}")
        doomed = staging_path(path)
        try:
            os.replace(path, doomed)
        except FileNotFoundError:
            return
        _remove(doomed)
