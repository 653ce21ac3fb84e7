"""Shared fixtures: an isolated score cache per test session that still
reuses the converted default model, the real SmolLM2 model loaded once, and
small real records."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

_REAL_CACHE = Path(os.environ.get("CHERRYBENCH_CACHE") or Path.home() / ".cache" / "cherrybench")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Scores and embeddings go to a fresh directory; converted models are shared
    with the real cache so the GGUF conversion happens once per machine."""
    root = tmp_path_factory.mktemp("cherrybench-cache")
    (_REAL_CACHE / "models").mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(_REAL_CACHE / "models", target_is_directory=True)
    hashes = _REAL_CACHE / "file_hashes.json"
    if hashes.exists():
        shutil.copy(hashes, root / "file_hashes.json")
    old = os.environ.get("CHERRYBENCH_CACHE")
    os.environ["CHERRYBENCH_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("CHERRYBENCH_CACHE", None)
    else:
        os.environ["CHERRYBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def ctx(isolated_cache):
    """A context on the real embedded SmolLM2-135M-Instruct, CPU fp32, no progress bars."""
    from cherrybench.context import Context

    return Context(model=None, device="cpu", progress=False)


@pytest.fixture(scope="session")
def lm(ctx):
    return ctx.lm()


@pytest.fixture(scope="session")
def make_reward_model():
    """Build a tiny, randomly initialised BERT sequence classifier offline (MiniLM's
    tokenizer): a real reward-model code path with no weights to download."""

    def build(path: Path, seed: int, layers: int) -> Path:
        import torch
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from cherrybench.embedders import minilm_dir

        tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=64, num_labels=1)
        BertForSequenceClassification(config).eval().save_pretrained(path)
        tokenizer.save_pretrained(path)
        return path

    return build


def pytest_configure(config):
    import torch

    torch.manual_seed(0)
