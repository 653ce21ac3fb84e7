"""Provenance manifests: `NAME.manifest.json` beside every subset that `select`
or a `compare` trial writes, so that a subset can be traced to exactly what made
it and checked later (`cherrybench verify`, which calls `check_manifest`).

A manifest holds the sha256 and size of each input file (hashed while it was
read: see `records.SourceFile`) and of the written subset and report, the pool's
size and fingerprint, the selector with its parameters, budget and seed, the
fingerprints of the models and embedders and the score-cache keys of the metrics
the selection read, the audit summary (when one ran), the cherrybench version
and the command line without this machine's absolute paths (`sanitize_command`).
The subset's ids and a short content hash per record let `verify` name the
records that changed, not only the file.

Paths: the subset and report sit beside the manifest (file names). Input paths
are relative to the manifest's folder, or, for a manifest written to a
temporary folder and logged to MLflow (compare), to the run's working directory;
`inputs_relative_to` says which."""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cherrybench import __version__
from cherrybench.fingerprint import hash_file
from cherrybench.outputs import SUBSET_SUFFIXES, atomic_write
from cherrybench.records import DataError, Dataset, Record, SourceFile, load_dataset, records_fingerprint

FORMAT = "cherrybench.manifest/1"
SUFFIX = ".manifest.json"
BESIDE_MANIFEST = "manifest"
WORKING_DIRECTORY = "working directory"
SHORT_HASH = 16  # hex digits of each record's content hash kept in the manifest


# -- the command line as recorded with results -----------------------------------
# an absolute path: after the start, a space, `=`, `:`, `,`, a quote or `(`, or right after a URI's `://` or `:///`;
# not `sqlite:///x.db`, whose third slash starts a relative path (`sqlite:////abs/x.db` is the absolute one)
_ABS_PATH = re.compile(r"(?<!sqlite://)(?:^|(?<=[\s=:,'\"(])|(?<=://)|(?<=:///))(/[^\s/'\",;:=()]+(?:/[^\s/'\",;:=()]+)*/?)")


def _repo_root(cwd: Path) -> Path | None:
    for folder in (cwd, *cwd.parents):
        if (folder / ".git").exists():
            return folder
    return None


def sanitize_command(command: str, cwd: str | Path | None = None) -> str:
    """The command without a machine's absolute paths: a path under the working
    directory or its repository becomes relative to the working directory
    (`data/pool.json`, `../evals/vic.json`); any other keeps its last two
    components after `<abs>/` (`/home/me/evals/vic.json` -> `<abs>/evals/vic.json`),
    enough to recognise the file without telling where a machine keeps it.
    Relative paths and URLs with a host (`http://host:5000/x`) stay as typed."""
    cwd = Path(os.path.abspath(cwd or os.getcwd()))
    roots = [r for r in (cwd, _repo_root(cwd)) if r is not None]

    def replace(match: re.Match) -> str:
        path = Path(os.path.normpath(match.group(1)))
        if any(path == r or r in path.parents for r in roots):
            return os.path.relpath(path, cwd)
        return "<abs>/" + "/".join(path.parts[-2:] if len(path.parts) > 2 else path.parts[1:])

    return _ABS_PATH.sub(replace, command)


def current_command() -> str | None:
    """This process's command line when it is the `cherrybench` command (the console
    script or `python -m cherrybench`); None when it is not (a test, a library call),
    so that no other program's arguments are recorded as the command."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if program is None or not (program.name == "cherrybench" or program.parts[-2:] == ("cherrybench", "__main__.py")):
        return None
    return "cherrybench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# -- building -----------------------------------------------------------------------
def manifest_path(subset: str | Path) -> Path:
    """`NAME.manifest.json` beside `NAME.json`, `NAME.jsonl` or `NAME.parquet`."""
    subset = Path(subset)
    name = subset.name
    for suffix in SUBSET_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return subset.with_name(name + SUFFIX)


def _relative(path: Path, base: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(base))


def file_entry(path: Path, base: Path, role: str | None = None, source: SourceFile | None = None) -> dict:
    """A file's path relative to `base`, its sha256 and size; from `source` when it was hashed
    as it was read (exactly the bytes parsed), else hashed now."""
    if source is not None and source.sha256:
        digest, size = source.sha256, source.size
    else:
        digest, size = hash_file(path), os.path.getsize(path)
    entry = {"role": role} if role else {}
    entry.update(path=_relative(path, base), sha256=digest, bytes=size)
    if source is not None and source.compression:
        entry["compression"] = source.compression
    return entry


def short_hash(record: Record) -> str:
    return record.content_hash[:SHORT_HASH]


def score_cache_entries(metrics, ctx, pool_fingerprint: str) -> list[dict]:
    """Each scored metric, and every metric it is derived from, with its score-cache key and the
    fingerprints of the models it read; once each, in scoring order."""
    out, seen = [], set()

    def visit(metric) -> None:
        for source in metric.inputs():
            visit(source)
        key = metric.cache_key(ctx, pool_fingerprint)
        if key not in seen:
            seen.add(key)
            out.append({"metric": metric.name, "version": metric.version, "params": metric.get_params(),
                        "key": key, "fingerprints": metric.fingerprints(ctx)})

    for metric in metrics:
        visit(metric)
    return out


def selection_provenance(selector: str, params: dict, budget, seed: int | None, cache: list[dict] = (),
                         embedders: dict | None = None) -> dict:
    """What a selection read, gathered where it ran (`runners.select.run_selection`): the
    selector and its parameters, the budget and seed, the score-cache entries, and the
    fingerprints of the models (from the metrics) and embedders (from the metrics and
    the selector's own `embedder`)."""
    models: dict[str, list[str]] = {}
    found_embedders = dict(embedders or {})
    for entry in cache:
        for kind, fingerprint in entry["fingerprints"].items():
            if kind == "embedder":
                found_embedders.setdefault(f"{entry['metric']}.embedder", fingerprint)
            elif fingerprint not in models.setdefault(kind, []):
                models[kind].append(fingerprint)
    return {"selector": selector, "params": dict(params), "budget": None if budget is None else str(budget),
            "seed": seed, "models": models, "embedders": found_embedders, "score_cache": list(cache)}


@dataclass
class Written:
    """A subset as written: the file, the records in it (file order) and the report beside it."""

    path: Path
    records: list[Record]
    container: str
    report: Path | None = None


def build_manifest(written: Written, pool: Dataset, provenance: dict, command: str | None,
                   audit: dict | None = None, inputs: list[tuple[str, Path]] = (),
                   inputs_relative_to: str = BESIDE_MANIFEST, manifest: Path | None = None) -> dict:
    """The manifest of a written subset. `pool` is what the selector chose from (its records
    know the files they were read from); `inputs` are other files the selection read, as
    (role, path) pairs (e.g. ("scores", table)). Input paths are relative to the manifest's
    folder, or to the working directory (`inputs_relative_to=WORKING_DIRECTORY`)."""
    folder = Path(manifest or manifest_path(written.path)).parent
    base = folder if inputs_relative_to == BESIDE_MANIFEST else Path.cwd()
    files = [file_entry(source.path, base, "data", source) for source in pool.sources]
    files += [file_entry(Path(path), base, role) for role, path in inputs if path is not None]
    return {
        "format": FORMAT,
        "cherrybench_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": sanitize_command(command) if command else None,
        "inputs": files,
        "inputs_relative_to": inputs_relative_to,
        "pool": {"records": len(pool), "fingerprint": pool.fingerprint, "format": pool.format,
                 **({} if pool.sources else {"note": "records not read from a data file (the embedded default "
                                                     "data): no input file to hash; the fingerprint identifies them"})},
        "selection": {k: provenance.get(k) for k in ("selector", "params", "budget", "seed")},
        "models": provenance.get("models", {}),
        "embedders": provenance.get("embedders", {}),
        "score_cache": provenance.get("score_cache", []),
        "audit": audit,
        "subset": {**file_entry(written.path, folder), "records": len(written.records),
                   "container": written.container, "fingerprint": records_fingerprint(written.records),
                   "ids": [r.id for r in written.records], "record_hashes": [short_hash(r) for r in written.records]},
        "report": file_entry(written.report, folder) if written.report is not None else None,
    }


def write_manifest(path: Path, manifest: dict) -> Path:
    text = json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n"
    return atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


# -- checking -------------------------------------------------------------------------
def read_manifest(path: str | Path) -> dict:
    """A manifest file, or a DataError naming what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: " + ("is a directory" if path.is_dir() else "no such file"))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8; not a cherrybench manifest") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path}: not a cherrybench manifest (field 'format' is {found!r}, expected {FORMAT!r})")
    for key in ("inputs", "subset"):
        if key not in manifest:
            raise DataError(f"{path}: missing field {key!r}")
    if not isinstance(manifest["inputs"], list):
        raise DataError(f"{path}: field 'inputs' must be a list, got {type(manifest['inputs']).__name__}")
    relative = manifest.get("inputs_relative_to", BESIDE_MANIFEST)
    if relative not in (BESIDE_MANIFEST, WORKING_DIRECTORY):
        raise DataError(f"{path}: field 'inputs_relative_to' is {relative!r}, expected {BESIDE_MANIFEST!r} "
                        f"or {WORKING_DIRECTORY!r}")
    for where, entry in [*((f"inputs[{i}]", e) for i, e in enumerate(manifest["inputs"])),
                         ("subset", manifest["subset"]), ("report", manifest.get("report"))]:
        if entry is None and where == "report":
            continue
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("path", "sha256")):
            raise DataError(f"{path}: field {where!r} needs string fields 'path' and 'sha256'")
        size = entry.get("bytes", 0)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise DataError(f"{path}: field '{where}.bytes' must be a whole number of bytes, got {size!r}")
    pool = manifest.get("pool", {})
    if not isinstance(pool, dict) or not isinstance(pool.get("format"), (str, type(None))):
        raise DataError(f"{path}: field 'pool' must be an object whose 'format' is a string")
    lists = {key: manifest["subset"].get(key, []) for key in ("ids", "record_hashes")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{path}: field 'subset.{key}' must be a list of strings")
    if len(lists["ids"]) != len(lists["record_hashes"]):
        raise DataError(f"{path}: fields 'subset.ids' ({len(lists['ids'])}) and 'subset.record_hashes' "
                        f"({len(lists['record_hashes'])}) differ in length")
    return manifest


@dataclass
class Check:
    """One file of a manifest, rechecked: `status` is ok, changed or missing."""

    what: str
    path: Path
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:<8} {self.what}: {self.path}" + (f": {self.detail}" if self.detail else "")


def _size_text(n: int) -> str:
    return f"{n:,} bytes"


def _recheck(entry: dict, what: str, base: Path) -> Check:
    path = Path(os.path.normpath(base / entry["path"]))
    if not path.is_file():
        return Check(what, path, "missing", "is a directory" if path.is_dir() else "no such file")
    digest, size = hash_file(path), path.stat().st_size
    if digest == entry["sha256"]:
        return Check(what, path, "ok")
    detail = f"sha256 was {entry['sha256'][:12]}..., now {digest[:12]}..."
    if "bytes" in entry:
        detail += f"; size was {_size_text(entry['bytes'])}, now {_size_text(size)}"
    return Check(what, path, "changed", detail)


def _listed(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return f"{len(ids)} ({shown}{', ...' if len(ids) > limit else ''})"


def _own_id(record: Record) -> bool:
    """Whether the record carries an `id` of its own (else load_dataset numbered it by position)."""
    return isinstance(record.raw, dict) and record.raw.get("id") is not None


def _diff_by_id(old: dict, records: list[Record]) -> tuple[list, list, list]:
    new = {r.id: short_hash(r) for r in records}
    return ([i for i in old if i not in new], [repr(i) for i in new if i not in old],
            [i for i in new if i in old and old[i] != new[i]])


def _diff_by_position(ids: list[str], hashes: list[str], records: list[Record]) -> tuple[list, list, list]:
    """Records without ids of their own, matched to the manifest's entries by content and position
    (a subset is written in input order): an edited record is one changed record (named by the
    manifest's id, the pool's position id), not one removal plus one addition. Added records are
    named by their place in the file, or by their own id."""
    new = [short_hash(r) for r in records]
    removed, added, changed = [], [], []  # positions in the manifest, in the file, in the manifest
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, hashes, new, autojunk=False).get_opcodes():
        if tag != "equal":
            paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
            changed += range(i1, i1 + paired)
            removed += range(i1 + paired, i2)
            added += range(j1 + paired, j2)
    for i in list(removed):  # a record that moved (the same content elsewhere) is neither removed nor added
        j = next((j for j in added if new[j] == hashes[i]), None)
        if j is not None:
            removed.remove(i)
            added.remove(j)
    labels = [repr(records[j].id) if _own_id(records[j]) else f"#{j + 1} of the file" for j in added]
    return [ids[i] for i in removed], labels, [ids[i] for i in changed]


def _listed_labels(labels: list[str], limit: int = 5) -> str:
    return f"{len(labels)} ({', '.join(labels[:limit])}{', ...' if len(labels) > limit else ''})"


def subset_changes(entry: dict, path: Path, fmt: str | None) -> str:
    """Which records of a changed subset differ from the manifest's: removed, added, or changed
    in content; or why the file cannot be read as a subset any more. Records with ids of their
    own are matched by id; when some carry none (load_dataset numbers those by position, while
    the manifest keeps the pool's position ids), by content and position."""
    try:
        records = load_dataset(path, fmt).records
    except DataError as exc:
        return f"it no longer reads as a subset ({exc})"
    ids, hashes = list(entry.get("ids", [])), list(entry.get("record_hashes", []))
    by_id = all(_own_id(r) for r in records)
    if by_id:
        removed, added, changed = _diff_by_id(dict(zip(ids, hashes)), records)
    else:
        removed, added, changed = _diff_by_position(ids, hashes, records)
    parts = []
    if removed:
        parts.append(f"records removed: {_listed(removed)}")
    if added:
        parts.append(f"records added: {_listed_labels(added)}")
    if changed:
        parts.append(f"records whose content changed: {_listed(changed)}")
    if not parts:
        now = [r.id for r in records] if by_id else [short_hash(r) for r in records]
        same_order = now == (ids if by_id else hashes)
        parts.append("the same records with the same content" + ("" if same_order else ", in another order")
                     + " (the file's bytes differ: formatting, key order or other fields)")
    elif not by_id:
        parts.append("the subset's records carry no id: matched by content and position, named by the "
                     "pool's position ids")
    return f"{len(records)} records now, {len(ids)} then; " + "; ".join(parts)


def check_manifest(path: str | Path, base: str | Path | None = None) -> list[Check]:
    """Recheck every file a manifest names: the inputs (relative to the manifest's folder or
    the working directory, as it says; `base` overrides), the subset and the report."""
    path = Path(path)
    manifest = read_manifest(path)
    folder = path.parent
    if base is None:
        base = folder if manifest.get("inputs_relative_to", BESIDE_MANIFEST) == BESIDE_MANIFEST else Path.cwd()
    checks = [_recheck(entry, f"input ({entry.get('role', 'data')})", Path(base)) for entry in manifest["inputs"]]
    subset = _recheck(manifest["subset"], "subset", folder)
    if subset.status == "changed":
        subset.detail += "; " + subset_changes(manifest["subset"], subset.path, manifest.get("pool", {}).get("format"))
    checks.append(subset)
    if manifest.get("report") is not None:
        checks.append(_recheck(manifest["report"], "report", folder))
    return checks
