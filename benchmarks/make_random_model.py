"""Write a randomly initialised copy of a model directory's architecture
(config and tokenizer only travel), for throughput runs on machines the
weights cannot reach. Same shapes, same FLOPs; scores are meaningless.

    python benchmarks/make_random_model.py SRC_DIR OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main(src: str, out: str) -> None:
    src_path, out_path = Path(src), Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src_path))
    model.save_pretrained(out_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (src_path / name).exists():
            shutil.copy(src_path / name, out_path / name)


if __name__ == "__main__":
    main(*sys.argv[1:3])
