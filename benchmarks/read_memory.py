"""Memory of reading a large JSONL file: the reader before streaming (the whole
file read, decoded and split before any line is parsed) against the current one
(one line at a time), on the same generated file, each in a fresh process.

    python benchmarks/read_memory.py                    # 1M records, in /tmp/cherrybench-read-memory
    python benchmarks/read_memory.py --records 100000   # quicker
    python benchmarks/read_memory.py --gzip             # also the current reader on the file gzipped

For each reader: peak RSS and RSS after loading (both above the process's RSS
once imports are done), and wall time. "Records" is the deep size of what
`load_dataset` returns (every Record, Turn, raw dict, string and list, each
object counted once, by sys.getsizeof): the memory the records need in any case.
The old reader is `cherrybench/records.py` as of `--old-ref` (git), loaded
beside the current package. The data file is never written inside the repository.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import importlib.util
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_REF = "2b43a43"  # the last commit whose reader read the whole file first
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no what up out who them some could "
         "model data train answer question explain list write describe compare summarize").split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def generate(path: Path, n: int, seed: int = 0) -> None:
    """Alpaca records of Alpaca-like lengths: ~12-word instruction, an input on a third of
    them, a 20-120-word answer (about 420 bytes a line)."""
    rng = random.Random(seed)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as handle:
        for i in range(n):
            row = {"instruction": sentence(rng, rng.randint(6, 18)),
                   "input": sentence(rng, rng.randint(5, 25)) if rng.random() < 0.33 else "",
                   "output": " ".join(sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 6)))}
            handle.write(json.dumps(row) + "\n")
    tmp.replace(path)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def deep_size(records) -> int:
    """Every object reachable from the records, counted once (strings shared by `raw` and
    the turns count once, as they are one object)."""
    seen, total, stack = set(), 0, [records]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.append(obj.__dict__)
    return total


def load_old_reader(ref: str):
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:cherrybench/records.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "records_before_streaming.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("records_before_streaming", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(reader: str, path: Path, old_ref: str, with_size: bool) -> dict:
    """In this (fresh) process: load `path` with one reader and report its memory and time."""
    if reader == "old":
        module = load_old_reader(old_ref)
    else:
        from cherrybench import records as module
    gc.collect()
    base = rss_kib()
    start = time.perf_counter()
    dataset = module.load_dataset(path)
    seconds = time.perf_counter() - start
    gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {"reader": reader, "file": path.name, "records": len(dataset.records), "seconds": round(seconds, 1),
           "peak_mib": round((peak - base) / 1024), "after_mib": round((rss_kib() - base) / 1024)}
    if with_size:
        out["records_mib"] = round(deep_size(dataset.records) / 2 ** 20)
    return out


def run_child(reader: str, path: Path, old_ref: str, with_size: bool) -> dict:
    command = [sys.executable, __file__, "--child", reader, "--file", str(path), "--old-ref", old_ref]
    if with_size:
        command.append("--size")
    done = subprocess.run(command, check=True, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/tmp/cherrybench-read-memory", help="where the data file is generated")
    parser.add_argument("--old-ref", default=OLD_REF, help="git revision of the reader to compare with")
    parser.add_argument("--gzip", action="store_true", help="also read the file gzipped (current reader)")
    parser.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--size", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, Path(args.file), args.old_ref, args.size)))
        return

    folder = Path(args.dir)
    if REPO in folder.resolve().parents or folder.resolve() == REPO:
        raise SystemExit(f"--dir {folder}: inside the repository; generate the data elsewhere")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pool-{args.records}.jsonl"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.records)
        print(f"generated {path} ({path.stat().st_size / 2 ** 20:.0f} MiB) in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    size_mib = path.stat().st_size / 2 ** 20
    rows = [run_child("new", path, args.old_ref, with_size=True), run_child("old", path, args.old_ref, False)]
    if args.gzip:
        packed = path.with_name(path.name + ".gz")
        if not packed.exists():
            with open(path, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        rows.append(run_child("new", packed, args.old_ref, False))
    records_mib = rows[0]["records_mib"]
    print(f"{args.records:,} records, file {size_mib:.0f} MiB, records {records_mib} MiB (deep size)")
    print("| reader | file | seconds | peak RSS MiB | peak / records | RSS after MiB |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['reader']} | {row['file']} | {row['seconds']} | {row['peak_mib']} | "
              f"{row['peak_mib'] / records_mib:.2f} | {row['after_mib']} |")


if __name__ == "__main__":
    main()
