"""Scoring on Ray against the local engine: records/s for the same records and
metric (IFD), the local engine first, then Ray Data with each worker count, and
the largest difference between their scores. The score cache is off, so every
run computes every record; each run's time includes loading the model (in the
process, or in each Ray actor); starting Ray is timed apart.

    OMP_NUM_THREADS=1 python benchmarks/ray_scoring.py --n 400 --runs local,ray:1,ray:2
    python benchmarks/ray_scoring.py --ray-address HOST:6379 --device cuda --runs ray:8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from cherrybench.context import Context
from cherrybench.metrics.ifd import IFD
from cherrybench.ray_engine import RayEngine
from cherrybench.records import Dataset, load_dataset
from cherrybench.scoring import score

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/alpaca/alpaca_random_9k.json"
NUMBERS = ["cas", "das", "ifd", "ifd_ppl", "ppl"]


def timed(dataset: Dataset, metric, ctx) -> tuple[float, object]:
    start = time.perf_counter()
    table = score(dataset, [metric], ctx, use_cache=False)
    return time.perf_counter() - start, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=400, help="the first N records")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", default="local,ray:1,ray:2",
                        help="runs in order: local, or ray:N for N Ray workers (repeat one to see the noise)")
    parser.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray of --num-cpus CPUs)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    args = parser.parse_args()

    import ray

    full = load_dataset(args.data)
    dataset = Dataset(full.records[: args.n], None, full.format, full.container)
    metric = IFD(max_length=args.max_length)
    load = os.getloadavg()
    rows, local, temp, ray_start = [], None, None, None
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if any(r.startswith("ray") for r in runs):
        start = time.perf_counter()
        if args.ray_address:
            ray.init(address=args.ray_address, logging_level="ERROR", log_to_driver=False)
        else:
            temp = tempfile.mkdtemp(prefix="cb-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, _temp_dir=temp, logging_level="ERROR",
                     log_to_driver=False)
        ray_start = time.perf_counter() - start
    try:
        for run in runs:
            ctx = Context(device=args.device, progress=False)
            workers = 1
            if run != "local":
                workers = int(run.split(":")[1])
                ctx.engine = RayEngine(workers=workers)
            seconds, table = timed(dataset, metric, ctx)
            del ctx  # frees the local run's model
            row = {"engine": run.split(":")[0], "workers": workers, "seconds": seconds}
            if local is None and run == "local":
                local = table
            elif local is not None:
                row["max_abs_diff"] = float(np.nanmax(np.abs(table[NUMBERS].to_numpy() - local[NUMBERS].to_numpy())))
                row["same_nan"] = bool((table[NUMBERS].isna() == local[NUMBERS].isna()).all().all())
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    for row in rows:
        row["records_per_s"] = round(len(dataset) / row["seconds"], 3)
        row["seconds"] = round(row["seconds"], 1)
    print(json.dumps({"records": len(dataset), "max_length": args.max_length, "device": args.device,
                      "omp_threads": os.environ.get("OMP_NUM_THREADS"), "load_before": [round(x, 2) for x in load],
                      "load_after": [round(x, 2) for x in os.getloadavg()],
                      "ray_start_s": None if ray_start is None else round(ray_start, 1),
                      "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
