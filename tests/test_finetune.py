"""The common fine-tune path: answer-only labels, real training that lowers
the loss on its data, LoRA merged, and a finished model reused."""

from __future__ import annotations

import json

import pytest

from cherrybench.prompts import ALPACA_NO_INPUT
from cherrybench.records import Record, Turn
from cherrybench.evaluate import eval_loss
from cherrybench.finetune import IGNORE, DONE_MARKER, TrainConfig, build_example, finetune

RECORDS = [Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate([
    ("What colour is the sky?", "The sky is blue on a clear day."),
    ("What do bees make?", "Bees make honey from nectar."),
    ("Where do penguins live?", "Most penguins live in the Southern Hemisphere."),
    ("What is ice?", "Ice is frozen water."),
])]


@pytest.mark.slow
def test_labels_mask_everything_but_answers(lm):
    tok = lm.tokenizer
    record = Record("m", [Turn("Q1?", "A one."), Turn("Q2?", "A two.")])
    example = build_example(record, tok, "alpaca", 512)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    p1 = enc(ALPACA_NO_INPUT.format(instruction="Q1?"))
    p2 = enc("\n\n" + ALPACA_NO_INPUT.format(instruction="Q2?"))
    a1, a2 = enc("A one.") + [tok.eos_token_id], enc("A two.") + [tok.eos_token_id]
    assert example["input_ids"] == p1 + a1 + p2 + a2
    assert example["labels"] == [IGNORE] * len(p1) + a1 + [IGNORE] * len(p2) + a2
    cut = build_example(record, tok, "alpaca", len(p1) + 2)
    assert cut["input_ids"] == (p1 + a1)[: len(p1) + 2] and cut["labels"][-2:] == a1[:2]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_training_lowers_loss_on_its_data(tmp_path, ctx, lora):
    config = TrainConfig(max_length=64, epochs=3, batch_size=4, learning_rate=1e-3 if lora else 1e-4,
                         lora=lora, device="cpu")
    before = eval_loss(None, RECORDS, max_length=64, ctx=ctx)
    out = finetune(RECORDS, config, tmp_path / "model", progress=False)
    after = eval_loss(out, RECORDS, max_length=64, ctx=ctx)
    assert after < before - 0.2, (before, after)
    summary = json.loads((out / DONE_MARKER).read_text())
    assert summary["n_examples"] == 4 and len(summary["loss_history"]) == 3
    assert not any(p.name.startswith("adapter") for p in out.iterdir())  # LoRA merged into full weights
    stamp = (out / DONE_MARKER).stat().st_mtime_ns
    assert finetune(RECORDS, config, tmp_path / "model", progress=False) == out  # reused, not retrained
    assert (out / DONE_MARKER).stat().st_mtime_ns == stamp


def test_brief_experience_picks_mid_perplexity_evenly():
    import numpy as np

    from cherrybench.runners.brief_experience import pick_per_cluster

    labels = np.array([0] * 9 + [1] * 3)
    ppl = np.array([9, 1, 8, 2, 7, 3, 6, 4, 5, 30, 10, 20], dtype=float)
    # cluster 0: percentiles 25..75 of 1..9 are 3..7 -> records with ppl 3,4,5,6,7; 3 evenly spaced: 3, 5, 7
    # cluster 1: 10..30 -> 15..25 keeps only ppl 20
    picked = pick_per_cluster(labels, ppl, 3)
    assert sorted(ppl[picked].tolist()) == [3, 5, 7, 20]


@pytest.mark.slow
def test_brief_experience_trains_a_model_that_scores(tmp_path, ctx):
    from cherrybench.records import Dataset
    from cherrybench.runners.brief_experience import brief_experience_model
    from cherrybench.scoring import score
    from cherrybench.metrics.ifd import IFD

    pool = Dataset(RECORDS * 1, None, "alpaca", "json")
    model = brief_experience_model(pool, TrainConfig(max_length=64, batch_size=4, device="cpu"), ctx,
                                   clusters=2, per_cluster=1)
    assert (model / DONE_MARKER).exists()
    assert json.loads((model / DONE_MARKER).read_text())["n_records"] == 2
    base = score(pool, [IFD(max_length=64)], ctx)["ifd"]
    tuned = score(pool, [IFD(model=str(model), max_length=64)], ctx)["ifd"]
    assert (base != tuned).all()  # scored by the briefly trained model, cached separately


@pytest.mark.slow
def test_generation_prompt_keeps_its_last_max_length_tokens(ctx, lm):
    from cherrybench.evaluate import generate_answers

    record = Record("long", [Turn("Count slowly: " + " ".join(str(i) for i in range(60)), "")])
    full = lm.encode(ALPACA_NO_INPUT.format(instruction=record.instruction))
    assert len(full) > 40
    expected = lm.tokenizer.decode(lm.generate([full[-40:]], max_new_tokens=3)[0], skip_special_tokens=True).strip()
    assert generate_answers(None, [record], max_new_tokens=3, ctx=ctx, max_length=40) == [expected]


@pytest.mark.slow
def test_wide_generation_batches_answer_as_one_prompt_at_a_time(ctx, lm):
    """Greedy generation in left-padded batches (the engine's wide `generate_tokens`)
    gives each prompt the tokens it gets alone: padding and its mask change nothing."""
    questions = ["Name a colour.", "Give three tips for staying healthy while working long hours at a desk.",
                 "What is 2 + 2?", "Translate 'good morning' into French, then explain when it is used."]
    prompts = [lm.encode(ALPACA_NO_INPUT.format(instruction=q)) for q in questions]
    assert len({len(p) for p in prompts}) == len(prompts)  # unequal lengths: the batch really pads
    before, old = lm.forward_calls, lm.generate_tokens
    try:
        together = lm.generate(prompts, max_new_tokens=10)
        assert lm.forward_calls - before == 1  # one batch
        lm.generate_tokens = 1  # one prompt a batch
        alone = lm.generate(prompts, max_new_tokens=10)
    finally:
        lm.generate_tokens = old
    assert lm.forward_calls - before == 1 + len(prompts)
    assert together == alone and all(together)


def test_device_settings_pin_the_gpu_and_check_bf16(monkeypatch):
    """`--device cuda:1` must reach the Trainer (it only knows the current CUDA device), and bf16
    is used only where the GPU supports it. No GPU here: torch.cuda's answers are stood in for."""
    import torch

    from cherrybench.finetune import device_settings

    assert device_settings("cpu") == {"use_cpu": True, "bf16": False}
    made_current = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: made_current.append(torch.device(d)))
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert device_settings("cuda:1") == {"use_cpu": False, "bf16": supported}
    assert made_current == [torch.device("cuda:1")] * 2
    assert device_settings("cuda")["use_cpu"] is False and len(made_current) == 2  # plain "cuda": left as it is
