"""Weak vs strong scorer: IFD from the two embedded models (SmolLM2-135M-Instruct
and Gemma 3 270M) on the same seeded sample of records, through the real
scoring path (alpaca prompt, max length 512, score cache): Spearman and
Kendall between the two IFD rankings, the top-10% overlap and enrichment
(`cherrybench.agreement.weak_vs_strong`), and each model's scoring records/s.

    OMP_NUM_THREADS=1 python benchmarks/scorer_agreement.py [--data ../shared/data/alpaca/alpaca_random_9k.json] [--n 2000]

Scores are cached (CHERRYBENCH_CACHE), so an interrupted run resumes; records/s
is only meaningful from an empty score cache (give the run its own
CHERRYBENCH_CACHE). `ppl` has no better direction: its top set is the lowest.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cherrybench.agreement import weak_vs_strong
from cherrybench.context import Context
from cherrybench.metrics.ifd import IFD
from cherrybench.records import Dataset, load_dataset
from cherrybench.scoring import score_metric

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/alpaca/alpaca_random_9k.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=2000, help="records sampled (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=float, default=0.1, help="share of the records in each top set")
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m", help="weak,strong")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args()

    full = load_dataset(args.data)
    keep = sorted(np.random.default_rng(args.seed).permutation(len(full))[: args.n].tolist())
    dataset = Dataset([full.records[i] for i in keep], None, full.format, full.container)
    ctx = Context(device=args.device, progress=True)
    results: dict = {"data": Path(args.data).name, "n": len(dataset), "seed": args.seed, "models": {}}
    tables = {}
    for model in args.models.split(","):
        started = time.perf_counter()
        ctx.lm(model)  # load outside the timing
        loaded = time.perf_counter()
        table = score_metric(dataset, IFD(model=model), ctx)
        seconds = time.perf_counter() - loaded
        ctx.unload_lm(model)
        tables[model] = table
        valid = int(np.isfinite(table["ifd"].to_numpy(float)).sum())
        results["models"][model] = {"load_s": round(loaded - started, 1), "score_s": round(seconds, 1),
                                    "records_per_s": round(len(dataset) / seconds, 2), "ifd_finite": valid,
                                    "ifd_median": float(np.nanmedian(table["ifd"].to_numpy(float))),
                                    "share_ifd_ge_1": float(np.nanmean(table["ifd"].to_numpy(float) >= 1))}
        print(model, results["models"][model], flush=True)
    weak, strong = args.models.split(",")
    ids = [r.id for r in dataset.records]
    for column in ("ifd", "ifd_ppl", "ppl"):
        row = weak_vs_strong(ids, tables[weak][column], tables[strong][column], args.top, higher=column != "ppl")
        results[column] = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in row.items()}
        print(column, results[column], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
