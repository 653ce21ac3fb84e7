"""The extra cost of iterative IterIT per epoch against plain training.

The same k static IterIT picks are fine-tuned for E epochs twice from the same
model and seed: plainly, and with the window of u x k records rescored (IFD with
the weights of that moment, through the batched engine) and re-picked before
each epoch after the first. Prints training seconds per epoch for each and the
rescoring seconds per epoch. A temporary cache is used (converted models are
linked from the usual cache), so nothing is reused from an earlier run.

    OMP_NUM_THREADS=1 python benchmarks/iterit_epoch_cost.py --data ../shared/data/alpaca/alpaca_random_9k.json \\
        --pool 60 --k 6 --epochs 3 --max-length 128
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--pool", type=int, default=60, help="records sampled (seed 0) from --data")
    parser.add_argument("--k", type=int, default=6, help="records trained on per epoch")
    parser.add_argument("--u", type=int, default=3, help="window: u x k records rescored per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    user_models = Path(os.environ.get("CHERRYBENCH_CACHE") or Path.home() / ".cache" / "cherrybench") / "models"
    cache = Path(tempfile.mkdtemp(prefix="iterit-bench-"))
    if user_models.is_dir():
        (cache / "models").symlink_to(user_models, target_is_directory=True)
    os.environ["CHERRYBENCH_CACHE"] = str(cache)

    import numpy as np

    from cherrybench.context import Context
    from cherrybench.finetune import TrainConfig, finetuned_model, training_summary
    from cherrybench.records import Dataset, load_dataset
    from cherrybench.runners.select import run_selection
    from cherrybench.selectors.base import Budget
    from cherrybench.selectors.iterit import IterIT
    from cherrybench.selectors.iterit_iterative import iterit_reselect

    source = load_dataset(args.data)
    keep = sorted(np.random.default_rng(0).permutation(len(source))[: args.pool].tolist())
    pool = Dataset([source.records[i] for i in keep], None, source.format, source.container)
    ctx = Context(device=args.device, progress=False)
    selector = IterIT(max_length=args.max_length, iterative=True, u=args.u)
    started = time.perf_counter()
    selection, table = run_selection(pool, selector, Budget(args.k), ctx)
    scoring = time.perf_counter() - started
    reselect = iterit_reselect(selector, selection, table, Budget(args.k), pool.records, ctx)
    chosen = set(selection.ids)
    records = [r for r in pool.records if r.id in chosen]
    config = TrainConfig(max_length=args.max_length, epochs=float(args.epochs), batch_size=args.batch_size,
                         device=args.device)

    plain = training_summary(finetuned_model(records, config, progress=False))
    moving = training_summary(finetuned_model(records, config, progress=False, reselect=reselect))
    rescore = [e["seconds"] for e in moving["epochs"]]
    plain_epoch = plain["train_seconds"] / args.epochs
    moving_train_epoch = (moving["train_seconds"] - sum(rescore)) / args.epochs
    print(f"pool {len(pool)}, k {len(records)}, window {len(reselect.window)}, epochs {args.epochs}, "
          f"max_length {args.max_length}, batch {args.batch_size}, {args.device}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load {os.getloadavg()[0]:.1f}")
    print(f"IFD scoring of the pool with the base model: {scoring:.1f} s")
    print(f"plain training: {plain['train_seconds']:.1f} s, {plain_epoch:.2f} s per epoch")
    print(f"iterative: {moving['train_seconds']:.1f} s in all, training {moving_train_epoch:.2f} s per epoch, "
          f"rescoring {', '.join(f'{s:.2f}' for s in rescore)} s before epochs 2..{args.epochs}")
    mean = float(np.mean(rescore)) if rescore else 0.0
    print(f"extra per re-picked epoch: {mean:.2f} s = {mean / plain_epoch:.2f} x a plain epoch; "
          f"picks per epoch: {[len(e['picks']) for e in moving['epochs']]}, "
          f"changed vs epoch 1: {[len(set(e['picks']) - set(range(len(records)))) for e in moving['epochs']]}")


if __name__ == "__main__":
    main()
