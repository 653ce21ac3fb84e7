"""Scoring throughput: the batched engine vs a naive one-record-at-a-time
implementation, same model, same records, same run; achieved GFLOP/s against
a GEMM peak measured in this run (fp32 on CPU, bf16 on CUDA).

    python benchmarks/score_throughput.py [--data ../shared/data/alpaca/alpaca_random_9k.json] [--n 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cherrybench.context import Context
from cherrybench.metrics.ifd import IFD
from cherrybench.prompts import tokenize_record
from cherrybench.records import load_dataset

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/alpaca/alpaca_random_9k.json"


def gemm_peak(device: str, dtype, size: int = 2048, reps: int = 10) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * size**3 / best / 1e9


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flops(model, lengths: list[int], head_rows: int) -> float:
    """Matmul FLOPs the scoring really needs: body over every real token,
    attention scores and values, and the LM head on the scored rows only."""
    cfg = model.config
    body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    layers, width = cfg.num_hidden_layers, cfg.hidden_size
    total = 0.0
    for length in lengths:
        total += 2 * body * length + 2 * layers * length * length * width  # causal half of QK^T and AV
    return total + 2 * width * cfg.vocab_size * head_rows


def naive_scores(lm, tokenized) -> list[float]:
    """Two forward passes per record, batch size 1, the full LM head on every position."""
    out = []
    with torch.inference_mode():
        for tok in tokenized:
            if tok.reason:
                out.append(float("nan"))
                continue
            turn = tok.turns[0]
            cond = torch.tensor([tok.sequence], device=lm.device)
            logp = torch.log_softmax(lm.model(cond).logits[0].float(), -1)
            cas = -torch.stack([logp[p - 1, tok.sequence[p]] for p in range(turn.start + 1, turn.start + len(turn.answer))]).mean()
            direct = torch.tensor([turn.answer], device=lm.device)
            logp = torch.log_softmax(lm.model(direct).logits[0].float(), -1)
            das = -torch.stack([logp[p - 1, turn.answer[p]] for p in range(1, len(turn.answer))]).mean()
            out.append(float(cas / das))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model")
    parser.add_argument("--device")
    parser.add_argument("--batch-tokens", type=int)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()

    records = load_dataset(args.data).records[: args.n]
    ctx = Context(model=args.model, device=args.device, batch_tokens=args.batch_tokens, progress=False)
    lm = ctx.lm()
    metric = IFD(model=args.model, max_length=args.max_length)
    tokenized = [tokenize_record(r, lm, "alpaca", args.max_length) for r in records]
    scored = [p for p in tokenized if not p.reason]
    cond_lengths = [len(p.sequence) for p in scored]
    direct_lengths = [len(t.answer) for p in scored for t in p.turns]
    head_rows = 2 * sum(len(t.answer) - 1 for p in scored for t in p.turns)
    work = flops(lm.model, cond_lengths + direct_lengths, head_rows)
    tokens = sum(cond_lengths) + sum(direct_lengths)

    metric.compute(records[:8], ctx)  # warm-up
    sync(lm.device)
    start = time.perf_counter()
    table = metric.compute(records, ctx)
    sync(lm.device)
    engine_s = time.perf_counter() - start

    naive_scores(lm, tokenized[:4])  # warm-up
    sync(lm.device)
    start = time.perf_counter()
    naive = naive_scores(lm, tokenized)
    sync(lm.device)
    naive_s = time.perf_counter() - start

    diff = max(abs(a - b) for a, b in zip(table["ifd"], naive) if a == a)
    peak = gemm_peak(lm.device, lm.dtype, size=8192 if lm.device.startswith("cuda") else 2048)
    result = {
        "device": torch.cuda.get_device_name() if lm.device.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads",
        "dtype": str(lm.dtype).replace("torch.", ""),
        "records": len(records), "scored": len(scored), "tokens": tokens, "batch_tokens": lm.batch_tokens,
        "engine_records_per_s": round(len(records) / engine_s, 2),
        "naive_records_per_s": round(len(records) / naive_s, 2),
        "ratio": round(naive_s / engine_s, 2),
        "engine_tokens_per_s": round(tokens / engine_s, 1),
        "engine_gflops": round(work / engine_s / 1e9, 1),
        "gemm_peak_gflops": round(peak, 1),
        "fraction_of_peak": round(work / engine_s / 1e9 / peak, 3),
        "max_abs_ifd_diff_vs_naive": float(f"{diff:.2e}"),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
