"""Greedy generation throughput of the engine (what evaluation and MoDS spend their time on)
at several generation batch widths, same model, same prompts, same run: seconds, answers/s,
new tokens/s, and how many answers differ from the first width's (greedy decoding; a
difference can only come from padding numerics).

    OMP_NUM_THREADS=1 python benchmarks/generate_throughput.py [--n 24] [--widths 512,4096]

The width is the engine's `generate_tokens`: the prompt and new tokens of one left-padded
batch. A decoding step reads every weight once however many rows it carries, so on a CPU a
wider batch pays until the rows' own work dominates.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cherrybench.context import Context
from cherrybench.evaluate import generate_answers
from cherrybench.records import load_dataset

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/alpaca/alpaca_random_9k.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="records to answer (their first question)")
    parser.add_argument("--n", type=int, default=24, help="how many records, from the file's start")
    parser.add_argument("--widths", default="512,4096", help="generate_tokens settings to compare, comma-separated")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-length", type=int, default=256, help="a longer prompt keeps its last tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="a model directory (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)

    records = load_dataset(args.data).records[: args.n]
    ctx = Context(model=args.model, device=args.device, progress=False)
    lm = ctx.lm()
    widths = [int(w) for w in args.widths.split(",")]
    print(f"{len(records)} prompts, {args.max_new_tokens} new tokens at most, device {args.device}, "
          f"model {ctx.model_ref().directory.name}")
    first = None
    for width in widths:
        lm.generate_tokens = width
        calls = lm.forward_calls
        started = time.perf_counter()
        answers = generate_answers(None, records, max_new_tokens=args.max_new_tokens, ctx=ctx, max_length=args.max_length)
        seconds = time.perf_counter() - started
        new_tokens = sum(len(lm.encode(a)) for a in answers)
        first = first if first is not None else answers
        differ = sum(a != b for a, b in zip(answers, first))
        print(f"generate_tokens {width:>6}: {seconds:7.1f} s, {len(records) / seconds:6.2f} answers/s, "
              f"~{new_tokens / seconds:6.1f} new tokens/s, {lm.forward_calls - calls} batches, "
              f"{differ} of {len(records)} answers differ from generate_tokens {widths[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
