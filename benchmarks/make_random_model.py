"""Randomly initialised models for throughput runs on machines the weights
cannot reach: same shapes, same FLOPs; the scores are meaningless.

Either a copy of a model directory's architecture (its config and tokenizer
travel), or a named Llama architecture built from a transformers LlamaConfig
with a tokenizer directory's tokenizer (default: the embedded SmolLM2's):

    python benchmarks/make_random_model.py SRC_DIR OUT_DIR
    python benchmarks/make_random_model.py --arch llama-7b OUT_DIR [--tokenizer DIR] [--device cuda]

The named architectures' bodies (layers, widths, heads) are those of the
models named in ARCHS; the vocabulary is the tokenizer's (SmolLM2's 49,152,
not Llama's 32,000, so the token embedding and LM head are 1.5x Llama's).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")

# LlamaConfig fields of each architecture (vocab and special tokens come from the tokenizer)
ARCHS = {
    # 4 layers of width 256: runs on a 2-core CPU in about a minute (a check of the script, not a figure)
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0),
    # TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json): GQA, 4 KV heads
    "llama-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0),
    # Llama-2-7B (meta-llama/Llama-2-7b-hf config.json): 32 layers of width 4096, full multi-head attention
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0),
}


def default_tokenizer_dir() -> Path:
    """The embedded SmolLM2's converted directory (converted from its GGUF once, if needed)."""
    from cherrybench.models import resolve_model

    return resolve_model(None).directory


def arch_config(arch: str, tokenizer_dir: Path) -> LlamaConfig:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return LlamaConfig(**ARCHS[arch], vocab_size=len(tokenizer), tie_word_embeddings=False,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)


def write_random_model(config, tokenizer_dir: Path, out: Path, device: str = "cpu",
                       dtype: torch.dtype = torch.float32) -> Path:
    """Initialise `config` on `device` (seed 0; a 7B model initialises in seconds on a GPU, minutes
    on a CPU) and save it in `dtype` to `out`, with the tokenizer's files beside it."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).exists():
            shutil.copy(Path(tokenizer_dir) / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="[SRC_DIR] OUT_DIR")
    parser.add_argument("--arch", choices=sorted(ARCHS), help="a named Llama architecture instead of SRC_DIR's")
    parser.add_argument("--tokenizer", help="tokenizer directory for --arch (default: the embedded SmolLM2's)")
    parser.add_argument("--device", default="cpu", help="where to initialise (cuda: fast for 7B)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="saved dtype (default: bf16 on CUDA)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    if args.arch:
        if len(args.paths) != 1:
            parser.error("--arch takes OUT_DIR only")
        tokenizer_dir = Path(args.tokenizer) if args.tokenizer else default_tokenizer_dir()
        config, out = arch_config(args.arch, tokenizer_dir), Path(args.paths[0])
    else:
        if len(args.paths) != 2:
            parser.error("give SRC_DIR OUT_DIR, or --arch NAME OUT_DIR")
        tokenizer_dir, out = Path(args.paths[0]), Path(args.paths[1])
        config = AutoConfig.from_pretrained(tokenizer_dir)
    write_random_model(config, tokenizer_dir, out, args.device, dtype)
    print(out)


if __name__ == "__main__":
    main()
