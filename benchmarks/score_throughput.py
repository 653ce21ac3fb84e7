"""Scoring throughput: the batched engine vs a naive one-record-at-a-time
implementation, same model, same records, same run; tokens/s and model FLOP
utilisation (MFU) against a GEMM measured in this run (fp32 on CPU, bf16 on CUDA).

    python benchmarks/score_throughput.py [--data ../shared/data/alpaca/alpaca_random_9k.json] [--n 200]
    python benchmarks/score_throughput.py --arch llama-7b --device cuda --n 2000 --replicate 52002

--arch builds a randomly initialised Llama of that architecture (make_random_model.py:
real shapes and FLOPs, meaningless scores) with the embedded SmolLM2's tokenizer.

FLOPs (forward only, matmuls; 6N per token is training's forward + backward):
a sequence of L tokens costs 2 N L for the body (N: the weights of the decoder
layers' matrices, no embedding, no head) plus 2 layers d_attn (L(L+1) - S(S+1))
for causal attention over queries S..L-1 (QK^T and AV, each query attending to
itself and every position before it; d_attn = heads x head_dim), and the LM head
costs 2 d V per logit row it computes. The engine computes the head only on the
scored answer positions and a shared template prefix once per group (S = the
prefix for the group's members); `mfu` counts what it really runs, `effective_mfu`
every record's sequences as if run whole. The naive loop runs every sequence whole
with the head on every position, and its `mfu` counts that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from cherrybench.context import Context
from cherrybench.lm import prefix_groups
from cherrybench.metrics.ifd import IFD
from cherrybench.paths import cache_dir
from cherrybench.prompts import tokenize_record
from cherrybench.records import load_dataset
from cherrybench.store import build_directory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_random_model import ARCHS, arch_config, default_tokenizer_dir, write_random_model  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/alpaca/alpaca_random_9k.json"


def gemm_peak(device: str, dtype, size: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a square matrix product, the best of three timed runs."""
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


class FlopModel:
    """Forward FLOPs of one model's shapes (see the module docstring)."""

    def __init__(self, model):
        cfg = model.config
        layers = getattr(model, model.base_model_prefix).layers
        self.body = sum(p.numel() for p in layers.parameters() if p.dim() == 2)  # matrices: q k v o, gate up down
        self.layers = cfg.num_hidden_layers
        self.attn_width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
        self.head_row = 2 * cfg.hidden_size * cfg.vocab_size

    def run(self, start: int, end: int) -> float:
        """Queries at positions start..end-1 through the body and causal attention (no head)."""
        attention = 2 * self.layers * self.attn_width * (end * (end + 1) - start * (start + 1))
        return 2 * self.body * (end - start) + attention


def ifd_work(tokenized) -> tuple[list[list[int]], list[list[int]]]:
    """(sequences, positions whose logits are kept) that IFD hands `token_losses`, as `IFD.compute`
    builds them: one conditioned sequence a record, one answer a scored turn; those with none kept dropped."""
    sequences, keep = [], []
    for tok in tokenized:
        sequences.append(tok.sequence)
        keep.append([p - 1 for t in tok.turns for p in range(t.start + 1, t.start + len(t.answer))])
    for tok in tokenized:
        for turn in tok.turns:
            sequences.append(turn.answer)
            keep.append(list(range(len(turn.answer) - 1)))
    work = [i for i, k in enumerate(keep) if k]
    return [sequences[i] for i in work], [keep[i] for i in work]


def engine_flops(flop: FlopModel, sequences, keep) -> tuple[float, float]:
    """(executed, effective) FLOPs of the engine's scoring: a shared prefix once per group
    (`lm.prefix_groups`, as the engine groups them), and as if every sequence ran whole."""
    head = flop.head_row * sum(len(set(k)) for k in keep)
    effective = head + sum(flop.run(0, len(s)) for s in sequences)
    groups, rest = prefix_groups(sequences, [min(k) for k in keep])
    executed = head + sum(flop.run(0, len(sequences[i])) for i in rest)
    for length, members in groups:
        executed += flop.run(0, length) + sum(flop.run(length, len(sequences[i])) for i in members)
    return executed, effective


def naive_flops(flop: FlopModel, tokenized) -> float:
    """Both passes of every scored record run whole, the head on every position."""
    lengths = [len(t.sequence) for t in tokenized if not t.reason]
    lengths += [len(turn.answer) for t in tokenized if not t.reason for turn in t.turns[:1]]
    return sum(flop.run(0, n) + flop.head_row * n for n in lengths)


def naive_scores(lm, tokenized) -> list[float]:
    """Two forward passes per record, batch size 1, the full LM head on every position (first turn)."""
    out = []
    with torch.inference_mode():
        for tok in tokenized:
            if tok.reason:
                out.append(float("nan"))
                continue
            turn = tok.turns[0]
            cond = torch.tensor([tok.sequence], device=lm.device)
            logp = torch.log_softmax(lm.model(cond).logits[0].float(), -1)
            answer = range(turn.start + 1, turn.start + len(turn.answer))
            cas = -torch.stack([logp[p - 1, tok.sequence[p]] for p in answer]).mean()
            direct = torch.tensor([turn.answer], device=lm.device)
            logp = torch.log_softmax(lm.model(direct).logits[0].float(), -1)
            das = -torch.stack([logp[p - 1, turn.answer[p]] for p in range(1, len(turn.answer))]).mean()
            out.append(float(cas / das))
    return out


def random_model(arch: str, tokenizer: str | None, device: str) -> Path:
    """A randomly initialised model of `arch`, built once under the cache (bf16 on CUDA, fp32 on CPU)."""
    from cherrybench.models import pick_device, pick_dtype

    device = pick_device(device)
    dtype = pick_dtype(device)
    tokenizer_dir = Path(tokenizer) if tokenizer else default_tokenizer_dir()
    config = arch_config(arch, tokenizer_dir)
    digest = hashlib.sha256(f"{config.to_json_string(use_diff=False)}|{dtype}".encode()).hexdigest()[:12]
    target = cache_dir() / "random_models" / f"{arch}-{str(dtype).replace('torch.', '')}-{digest}"
    start = time.perf_counter()
    build_directory(target, lambda staging: write_random_model(config, tokenizer_dir, staging, device, dtype),
                    is_complete=lambda p: (p / "config.json").is_file())
    print(f"random {arch} model at {target} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return target


def timed(fn, device: str) -> tuple[object, float]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=200, help="records the engine scores (the file cycled if fewer)")
    parser.add_argument("--naive-n", type=int, help="records the naive loop scores (default: min(n, 200))")
    parser.add_argument("--model", help="a model directory (default: the embedded SmolLM2)")
    parser.add_argument("--arch", choices=sorted(ARCHS), help="a randomly initialised Llama of this shape instead")
    parser.add_argument("--tokenizer", help="tokenizer directory for --arch (default: the embedded SmolLM2's)")
    parser.add_argument("--device")
    parser.add_argument("--batch-tokens", type=int)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--packing", choices=["on", "off"],
                        help="padding-free rows (default: the engine's choice, on with flash attention)")
    parser.add_argument("--replicate", type=int, metavar="N",
                        help="also project the time for N records like these (Alpaca: 52002) from the measured rates")
    args = parser.parse_args()
    if args.arch and args.model:
        parser.error("--arch and --model exclude each other")

    model = str(random_model(args.arch, args.tokenizer, args.device)) if args.arch else args.model
    pool = load_dataset(args.data).records
    records = [pool[i % len(pool)] for i in range(args.n)]  # the file replicated past its end
    naive_n = min(args.naive_n or 200, args.n)
    ctx = Context(model=model, device=args.device, batch_tokens=args.batch_tokens, progress=False)
    lm, load_s = timed(ctx.lm, args.device or "cpu")
    if args.packing:
        lm.packing = args.packing == "on"
    metric = IFD(model=model, max_length=args.max_length)
    tokenized = [tokenize_record(r, lm, "alpaca", args.max_length) for r in records]
    scored = [p for p in tokenized if not p.reason]
    cond_lengths = [len(p.sequence) for p in scored]
    direct_lengths = [len(t.answer) for p in scored for t in p.turns]
    tokens = sum(cond_lengths) + sum(direct_lengths)
    flop = FlopModel(lm.model)
    executed, effective = engine_flops(flop, *ifd_work(tokenized))
    if lm.packing:  # packed rows share no prefix cache: every sequence runs whole
        executed = effective
    naive_tokenized = tokenized[:naive_n]
    naive_tokens = sum(len(p.sequence) + len(p.turns[0].answer) for p in naive_tokenized if not p.reason)
    naive_work = naive_flops(flop, naive_tokenized)

    metric.compute(records[:8], ctx)  # warm-up
    table, engine_s = timed(lambda: metric.compute(records, ctx), lm.device)
    naive_scores(lm, tokenized[:4])  # warm-up
    naive, naive_s = timed(lambda: naive_scores(lm, naive_tokenized), lm.device)

    diff = max((abs(a - b) for a, b in zip(table["ifd"][:naive_n], naive) if a == a), default=float("nan"))
    cuda = lm.device.startswith("cuda")
    peak = gemm_peak(lm.device, lm.dtype, size=8192 if cuda else 2048)  # GFLOP/s
    engine_rate, naive_rate = len(records) / engine_s, naive_n / naive_s
    cfg = lm.model.config
    result = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "model": (f"random {args.arch} ({cfg.num_hidden_layers} layers, width {cfg.hidden_size}, "
                  f"vocab {cfg.vocab_size})" if args.arch else model or "smollm2"),
        "body_params": flop.body,
        "dtype": str(lm.dtype).replace("torch.", ""),
        "attn_implementation": lm.model.config._attn_implementation, "packing": lm.packing,
        "load_s": round(load_s, 1),
        "records": len(records), "scored": len(scored), "tokens": tokens, "batch_tokens": lm.batch_tokens,
        "gemm_peak_gflops": round(peak, 1),
        "engine": {"seconds": round(engine_s, 2), "records_per_s": round(engine_rate, 2),
                   "tokens_per_s": round(tokens / engine_s, 1),
                   "executed_gflops": round(executed / 1e9, 1), "gflops_per_s": round(executed / engine_s / 1e9, 1),
                   "mfu": round(executed / engine_s / 1e9 / peak, 4),
                   "effective_mfu": round(effective / engine_s / 1e9 / peak, 4)},
        "naive": {"records": naive_n, "seconds": round(naive_s, 2), "records_per_s": round(naive_rate, 2),
                  "tokens_per_s": round(naive_tokens / naive_s, 1), "executed_gflops": round(naive_work / 1e9, 1),
                  "mfu": round(naive_work / naive_s / 1e9 / peak, 4)},
        "ratio": round(engine_rate / naive_rate, 2),
        "max_abs_ifd_diff_vs_naive": float(f"{diff:.2e}"),
    }
    if args.replicate:
        result["projection"] = {
            "records": args.replicate, "note": "projected from the measured rates, not run",
            "engine_minutes": round(args.replicate / engine_rate / 60, 1),
            "naive_minutes": round(args.replicate / naive_rate / 60, 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
