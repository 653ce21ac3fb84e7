"""LESS: the random projection against a dense matrix built from its definition,
batched per-record LoRA gradients against one backward pass per record, Adam's
direction and the scoring against hand-worked numbers, the epoch states the
fine-tune keeps against AdamW's first step worked out independently, the whole
selector against a reference written out with loops on a tiny model (and its
gradient cache reused by a second run through the CLI), and the selector on 30
real Alpaca records with the embedded SmolLM2."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from cherrybench import gradients
from cherrybench.fingerprint import hash_json
from cherrybench.finetune import (FINETUNED, IGNORE, TrainConfig, build_example, finetune_key, finetuned_model,
                                  lora_model, training_summary)
from cherrybench.gradients import (EpochStates, Projector, adam_direction, epoch_states, per_record_gradients,
                                   trainable)
from cherrybench.selectors import SELECTORS, Budget
from cherrybench.selectors.less import checkpoint_weights, task_scores

LESS_LORA = "q_proj,k_proj,v_proj,o_proj"


# -- a tiny model -------------------------------------------------------------------------

def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, pad_token_id=0)
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A randomly initialised two-layer Llama with MiniLM's tokenizer, saved as a model directory."""
    from transformers import AutoTokenizer

    from cherrybench.embedders import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    path = tmp_path / "tiny-llama"
    tiny_llama(tokenizer.vocab_size).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def lora_with_random_b(seed: int = 1):
    """The tiny Llama with LESS's LoRA, lora_B drawn at random (at init it is 0, which would
    make every lora_A gradient 0 and the comparison half empty), in eval mode."""
    model = lora_model(tiny_llama(97), TrainConfig(lora=True, lora_r=4, lora_alpha=16, lora_targets=LESS_LORA))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def one_record_gradient(model, example: dict) -> torch.Tensor:
    """The reference: one unpadded record, the model's own loss (the runner's), loss.backward()."""
    model.zero_grad()
    out = model(input_ids=torch.tensor([example["input_ids"]]), labels=torch.tensor([example["labels"]]))
    out.loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in trainable(model).values()])


# -- the projection -------------------------------------------------------------------------

def dense_matrix(dim_in: int, dim: int, seed: int, block_rows: int) -> torch.Tensor:
    """The whole matrix, from its definition: block b holds rows [b * block_rows, ...), +-1
    entries drawn by torch.randint(0, 2) (int8) from a CPU generator seeded with 63 bits of
    hash_json({"projection_seed": seed, "block": b})."""
    blocks = []
    for b, start in enumerate(range(0, dim_in, block_rows)):
        seed_b = int(hash_json({"projection_seed": seed, "block": b})[:15], 16)
        generator = torch.Generator().manual_seed(seed_b)
        bits = torch.randint(0, 2, (min(block_rows, dim_in - start), dim), generator=generator, dtype=torch.int8)
        blocks.append(bits.double() * 2 - 1)
    return torch.cat(blocks)


def test_projection_of_tiny_model_gradients_matches_the_dense_matrix(monkeypatch):
    monkeypatch.setattr(gradients, "BLOCK_ROWS", 100)  # the tiny gradient spans several blocks and a partial one
    model = lora_with_random_b()
    rng = np.random.default_rng(0)
    examples = []
    for length in (9, 14, 6):
        ids = rng.integers(1, 97, size=length).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE] * 3 + ids[3:]})
    grads = per_record_gradients(model, examples, pad_id=0)
    dim_in = grads.shape[1]
    assert dim_in == 2 * 4 * (32 + 24 + 24 + 32) and dim_in % 100  # 2 layers, r=4, q/k/v/o in+out sizes
    dense = dense_matrix(dim_in, 24, seed=7, block_rows=100)
    assert set(dense.unique().tolist()) == {-1.0, 1.0}
    expected = grads.double() @ dense / math.sqrt(24)
    got = Projector(dim_in, 24, seed=7).project(grads)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


def test_projection_is_deterministic_in_its_seed_and_blind_to_batching():
    x = torch.randn(5, 2 * gradients.BLOCK_ROWS + 37, generator=torch.Generator().manual_seed(0))
    a = Projector(x.shape[1], 16, seed=3).project(x)
    assert torch.equal(a, Projector(x.shape[1], 16, seed=3).project(x))
    parts = [Projector(x.shape[1], 16, seed=3).project(part) for part in (x[:2], x[2:])]
    torch.testing.assert_close(torch.cat(parts), a, rtol=1e-4, atol=1e-4)  # the same matrix (BLAS rounds otherwise)
    assert not torch.allclose(a, Projector(x.shape[1], 16, seed=4).project(x))
    dense = dense_matrix(x.shape[1], 16, seed=3, block_rows=gradients.BLOCK_ROWS)
    torch.testing.assert_close(a.double(), x.double() @ dense / 4.0, rtol=1e-5, atol=1e-4)  # float32 sums of 8229


def test_projection_keeps_cosines_roughly():
    # Johnson-Lindenstrauss: at 2048 dimensions a cosine moves by about 1/sqrt(2048) = 0.02
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 6000, generator=g)
    x = torch.cat([base + s * torch.randn(1, 6000, generator=g) for s in (0.3, 1.0, 3.0)] + [base])
    y = Projector(6000, 2048, seed=0).project(x)

    def cosines(m):
        m = m / m.norm(dim=1, keepdim=True)
        return m @ m.T

    assert (cosines(x) - cosines(y)).abs().max() < 0.1
    assert cosines(x)[0, 3] > 0.9 and cosines(x)[2, 3] < 0.4  # the pairs compared are far apart


# -- gradients ---------------------------------------------------------------------------

def test_batched_gradients_equal_one_record_backward_passes():
    model = lora_with_random_b()
    rng = np.random.default_rng(1)
    examples = []
    for length, context in ((12, 4), (5, 1), (17, 9), (8, 2), (12, 11)):
        ids = rng.integers(1, 97, size=length).tolist()
        labels = [IGNORE] * context + ids[context:]
        if length == 17:
            labels[12:14] = [IGNORE, IGNORE]  # a second turn's question inside the record
        examples.append({"input_ids": ids, "labels": labels})
    expected = torch.stack([one_record_gradient(model, e) for e in examples])
    assert expected.abs().sum(dim=1).min() > 0
    names = list(trainable(model))
    sizes = [p.numel() for p in trainable(model).values()]
    a_part = torch.cat([torch.ones(n) * ("lora_A" in name) for name, n in zip(names, sizes)]).bool()
    assert expected[:, a_part].abs().sum() > 0 and expected[:, ~a_part].abs().sum() > 0
    for batch_tokens in (1, 40, 10_000):  # every record alone, a few together, all in one padded batch
        got = per_record_gradients(model, examples, pad_id=0, batch_tokens=batch_tokens)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_adam_direction_by_hand():
    g = torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64)
    m = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    v = torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)
    # m' = 0.9 m + 0.1 g = (1.1, -0.1, 0.45); v' = 0.999 v + 0.001 g^2 = (4.0, 1.0, 0.0)
    # direction m' / sqrt(v' + 1e-8): eps inside the root, no bias correction
    expected = [1.1 / math.sqrt(4.0 + 1e-8), -0.1 / math.sqrt(1.0 + 1e-8), 0.45 / 1e-4]
    got = adam_direction(g, m, v, 0.9, 0.999, 1e-8)
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-12)


# -- scoring ---------------------------------------------------------------------------------

def test_checkpoint_weights_are_the_normalised_mean_rates():
    np.testing.assert_allclose(checkpoint_weights([0.0, 1e-3, 3e-3]), [0.0, 0.25, 0.75])
    with pytest.raises(ValueError, match="every warm-up step had learning rate 0"):
        checkpoint_weights([0.0, 0.0])


def test_task_scores_by_hand():
    # two states, weights 0.25 and 0.75; pool record p0 along x, p1 along x+y (scaled: cosine ignores length)
    pool = np.array([[[1.0, 0.0], [2.0, 2.0]],
                     [[0.0, 3.0], [1.0, 0.0]]])
    # targets t0 (task a) along x, t1 (task a) along y, t2 (task b) along -x, in both states
    targets = np.array([[[1.0, 0.0], [0.0, 1.0], [-5.0, 0.0]]] * 2)
    got = task_scores(pool, targets, np.array([0.25, 0.75]), ["a", "a", "b"])
    r = 1 / math.sqrt(2)
    # p0: state 0 cosines (1, 0, -1), state 1 (0, 1, 0) -> weighted (0.25, 0.75, -0.25)
    # p1: state 0 (r, r, -r), state 1 (1, 0, -1) -> weighted (0.25 r + 0.75, 0.25 r, -0.25 r - 0.75)
    np.testing.assert_allclose(got["a"], [(0.25 + 0.75) / 2, (0.5 * r + 0.75) / 2])
    np.testing.assert_allclose(got["b"], [-0.25, -0.25 * r - 0.75])


def test_parameters_and_the_target_flag(tmp_path):
    from cherrybench.cli import build_parser
    from cherrybench.runners.options import plugin_options

    cls = SELECTORS.get("less")
    with pytest.raises(ValueError, match="selector 'less': target .*missing.json.* is not a file"):
        cls.from_options({"target": str(tmp_path / "missing.json")})
    for bad in ({"dim": 0}, {"warmup_fraction": 1.5}, {"epochs": 0}, {"lora_targets": ""}, {"prompt": "x"}):
        with pytest.raises(ValueError, match="selector 'less': parameter"):
            cls.from_options(bad)
    target = tmp_path / "evals.jsonl"
    target.write_text('{"instruction": "Name a colour.", "output": "Red."}\n')
    for command in (["select", "--data", "x.json", "--selector", "less", "--budget", "3", "--out", "s.json"],
                    ["compare", "--selectors", "less"]):
        args = build_parser().parse_args([*command, "--target", str(target), "--max-length", "64"])
        selector = cls.from_options(plugin_options(args))
        assert selector.target == str(target) and selector.max_length == 64
    # LoRA's targets enter the fine-tune key only when set (models trained before keep their keys)
    config = TrainConfig(max_length=64)
    assert replace(config, lora_targets=None).fingerprint("base") == config.fingerprint("base")
    assert replace(config, lora_targets=LESS_LORA).fingerprint("base") != config.fingerprint("base")
    warmup = cls(warmup_fraction=0.1, seed=3).warmup_records(list(range(50)))
    assert len(warmup) == 5 and warmup == sorted(warmup)
    assert warmup == cls(warmup_fraction=0.1, seed=3).warmup_records(list(range(50)))
    assert warmup != cls(warmup_fraction=0.1, seed=4).warmup_records(list(range(50)))
    assert len(cls(warmup_fraction=0.01).warmup_records(list(range(10)))) == 1  # never an empty warm-up


# -- the fine-tune's epoch states ----------------------------------------------------------

@pytest.mark.slow
def test_epoch_states_hold_adams_moments_and_the_learning_rates(tiny_model_dir, ctx):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cherrybench.records import Record, Turn

    records = [Record("0", [Turn("What colour is the sky?", "The sky is blue on a clear day.")]),
               Record("1", [Turn("What do bees make?", "Bees make honey from nectar.")])]
    config = TrainConfig(model=str(tiny_model_dir), max_length=64, epochs=2, learning_rate=1e-3, batch_size=2,
                         lora=True, lora_r=4, lora_alpha=16, lora_targets=LESS_LORA, device="cpu")
    model_dir = finetuned_model(records, config, progress=False, ctx=ctx, watcher=EpochStates())
    states = epoch_states(model_dir)
    # one optimizer step an epoch; linear decay over 2 steps, no warm-up: 1e-3, then 5e-4
    assert [s["learning_rates"] for s in states] == [pytest.approx([1e-3]), pytest.approx([5e-4])]
    assert [s["mean_learning_rate"] for s in states] == [pytest.approx(1e-3), pytest.approx(5e-4)]
    assert [s["adam_step"] for s in states] == [1, 2] and states[0]["betas"] == [0.9, 0.999]
    # a model trained without the watcher is another model, stored under the key it had before watchers existed
    plain = finetuned_model(records, config, progress=False, ctx=ctx)
    assert plain != model_dir and plain == FINETUNED.path_for(finetune_key(records, config, ctx=ctx))
    assert not (plain / "epoch_states").exists()

    from safetensors.torch import load_file

    weights = load_file(states[0]["folder"] / "weights.safetensors")
    moments = load_file(states[0]["folder"] / "adam.safetensors")
    # AdamW's first step, worked out: lora_B starts at 0, so lora_A's gradient is 0 and A is kept;
    # exp_avg = 0.1 g and exp_avg_sq = 0.001 g^2, g the gradient of the batch's mean answer loss at the start
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    q = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()["model.layers.0.self_attn.q_proj.weight"]
    model = lora_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), config)
    start = {n: (torch.zeros_like(p) if "lora_B" in n else weights[n]) for n, p in trainable(model).items()}
    model.load_state_dict(start, strict=False)
    examples = [build_example(r, tokenizer, "alpaca", 64) for r in records]
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in examples])
    labels = torch.tensor([e["labels"] + [IGNORE] * (width - len(e["labels"])) for e in examples])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples])
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    grads = {name: p.grad for name, p in trainable(model).items()}
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values()))
    clip = min(1.0, 1.0 / (float(norm) + 1e-6))  # the Trainer clips the gradient's norm to 1 first
    for name, g in grads.items():
        torch.testing.assert_close(moments[f"exp_avg/{name}"], 0.1 * clip * g, rtol=1e-4, atol=1e-10)
        torch.testing.assert_close(moments[f"exp_avg_sq/{name}"], 0.001 * (clip * g) ** 2, rtol=1e-3, atol=1e-14)
    assert any(moments[f"exp_avg/{n}"].abs().sum() > 0 for n in weights if "lora_B" in n)
    # the last epoch's LoRA weights are the ones merged into the saved model
    merged = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    last = load_file(states[1]["folder"] / "weights.safetensors")
    a = last["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    b = last["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    torch.testing.assert_close(merged["model.layers.0.self_attn.q_proj.weight"], q + (16 / 4) * b @ a)


# -- the selector on a tiny model, against a reference ----------------------------------------

def reference_less(pool, targets, tasks, model_dir, warmup_config, dim: int, seed: int) -> np.ndarray:
    """LESS written out: per epoch state, a fresh peft model with the state's weights, one
    backward pass per record, Adam's direction by its formula, the dense projection, cosines
    weighted by the states' mean learning rates, mean over a task's targets, max over tasks.
    Without targets, the one target is the mean of the pool's unit Adam directions."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(warmup_config.model)
    states = sorted((model_dir / "epoch_states").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    rates = [json.loads((s / "state.json").read_text())["mean_learning_rate"] for s in states]
    total = np.zeros((len(pool), len(targets) if targets else 1))
    matrix = None
    for folder, rate in zip(states, rates):
        base = AutoModelForCausalLM.from_pretrained(warmup_config.model, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=warmup_config.lora_r, lora_alpha=warmup_config.lora_alpha,
                                                target_modules=LESS_LORA.split(","), task_type="CAUSAL_LM"))
        weights = load_file(folder / "weights.safetensors")
        model.load_state_dict(weights, strict=False)
        model.eval()
        moments = load_file(folder / "adam.safetensors")
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        m = torch.cat([moments[f"exp_avg/{n}"].reshape(-1) for n in names]).double()
        v = torch.cat([moments[f"exp_avg_sq/{n}"].reshape(-1) for n in names]).double()

        def grad_of(record):  # None for a record with no answer token within max_length
            example = build_example(record, tokenizer, "alpaca", warmup_config.max_length)
            if all(label == IGNORE for label in example["labels"]):
                return None
            return one_record_gradient(model, example).double()

        if matrix is None:
            matrix = dense_matrix(len(m), dim, seed, gradients.BLOCK_ROWS)
        pool_rows = []
        for record in pool:
            g = grad_of(record)
            if g is None:
                pool_rows.append(torch.full((dim,), float("nan"), dtype=torch.float64))
            else:
                pool_rows.append(((0.9 * m + 0.1 * g) / torch.sqrt(0.999 * v + 0.001 * g ** 2 + 1e-8)) @ matrix)
        unit = lambda rows: torch.nn.functional.normalize(torch.stack(rows), dim=1).numpy()
        if targets:
            target_rows = [grad_of(record) @ matrix for record in targets]
        else:
            usable = [torch.from_numpy(u) for u in unit(pool_rows) if not np.isnan(u).any()]
            target_rows = [torch.stack(usable).mean(dim=0)]
        total += rate / sum(rates) * unit(pool_rows) @ unit(target_rows).T
    tasks = tasks or ["centroid"]
    labels = np.array(tasks)
    return np.max([total[:, labels == t].mean(axis=1) for t in sorted(set(tasks))], axis=0)


@pytest.mark.slow
def test_less_on_a_tiny_model_matches_the_reference_and_reuses_its_gradients(tiny_model_dir, tmp_path):
    from alpaca30 import alpaca30

    from cherrybench.cli import main
    from cherrybench.context import Context
    from cherrybench.records import Dataset
    from cherrybench.runners.select import run_selection

    data = alpaca30()
    dataset = Dataset(data.records[:10], None, data.format, data.container)
    rows = [{"instruction": "What is 12 plus 30?", "input": "", "output": "42", "task": "math"},
            {"instruction": "Add 7 and 5.", "input": "", "output": "12", "task": "math"},
            {"instruction": "Write a short poem about the sea.", "input": "", "output": "Waves fold into foam.",
             "task": "writing"}]
    target = tmp_path / "target.json"
    target.write_text(json.dumps(rows))
    params = {"target": str(target), "max_length": 64, "warmup_fraction": 0.5, "epochs": 3, "learning_rate": 1e-3,
              "dim": 32, "seed": 2}
    selector = SELECTORS.get("less").from_options(params)
    ctx = Context(model=str(tiny_model_dir), device="cpu", progress=False)
    selection, _ = run_selection(dataset, selector, Budget.parse("4"), ctx)
    report = selection.report
    # 5 warm-up records, batches of 4: 2 steps an epoch, 6 in all, the first a warm-up step at rate 0;
    # then linear decay (6 - s) / 5: epoch means 0.5, 0.7 and 0.3 (x 1e-3)
    assert report["warmup_records"] == 5 and len(set(report["warmup_ids"])) == 5
    np.testing.assert_allclose(report["checkpoint_weights"], [0.5 / 1.5, 0.7 / 1.5, 0.3 / 1.5])
    # record 8 (a long input) keeps no answer token within 64 of the tiny model's (MiniLM's) tokens
    assert report["gradients_computed"] == {"pool": 9, "target": 3}
    assert report["tasks"] == {"math": 2, "writing": 1}
    assert report["excluded"] == {"no_less:no_answer_token_within_max_length": 1, "over_budget": 5}

    config = selector.warmup_config(ctx)
    model_dir = finetuned_model(selector.warmup_records(dataset.records), config, progress=False, ctx=ctx,
                                watcher=EpochStates())  # the stored warm-up, not trained again
    assert training_summary(model_dir)["config"]["lora_targets"] == LESS_LORA
    from cherrybench.records import load_dataset

    targets = load_dataset(target).records
    expected = reference_less(dataset.records, targets, ["math", "math", "writing"], model_dir, config, 32, 2)
    ids = [r.id for r in dataset.records]
    assert np.isnan(expected[8]) and np.isfinite(np.delete(expected, 8)).all()
    order = sorted((i for i in range(len(ids)) if i != 8), key=lambda i: (-expected[i], ids[i]))
    assert selection.ids == [ids[i] for i in order[:4]]
    np.testing.assert_allclose(report["kept_score_range"], [expected[order[3]], expected[order[0]]], rtol=1e-4)

    # a rerun through the CLI (a new process's view: a new context) computes no gradient
    data_file = tmp_path / "pool.json"
    data_file.write_text(json.dumps([{"instruction": r.turns[0].instruction, "input": r.turns[0].input,
                                      "output": r.turns[0].output} for r in dataset.records]))
    out = tmp_path / "subset.json"
    argv = ["select", "--data", str(data_file), "--model", str(tiny_model_dir), "--device", "cpu", "--no-progress",
            "--selector", "less", "--budget", "4", "--target", str(target), "--max-length", "64",
            "--param", "warmup_fraction=0.5", "--param", "epochs=3", "--param", "learning_rate=0.001",
            "--param", "dim=32", "--param", "seed=2", "--out", str(out)]
    assert main(argv) == 0
    again = json.loads(out.with_name("subset.report.json").read_text())
    assert again["gradients_computed"] == {"pool": 0, "target": 0}
    chosen = {r["instruction"] for r in json.loads(out.read_text())}
    assert chosen == {dataset.records[i].turns[0].instruction for i in order[:4]}
    # another projection is another cache entry
    other, _ = run_selection(dataset, SELECTORS.get("less").from_options({**params, "dim": 16}), Budget.parse("4"),
                             Context(model=str(tiny_model_dir), device="cpu", progress=False))
    assert other.report["gradients_computed"] == {"pool": 9, "target": 3}

    # without a target: the pool's centroid, from the pool's gradients already cached
    centroid, _ = run_selection(dataset, SELECTORS.get("less").from_options(
        {k: v for k, v in params.items() if k != "target"}), Budget.parse("3"),
        Context(model=str(tiny_model_dir), device="cpu", progress=False))
    assert centroid.report["gradients_computed"] == {"pool": 0, "target": 0}
    assert centroid.report["target"] == "pool_centroid"
    typical = reference_less(dataset.records, None, None, model_dir, config, 32, 2)
    order = sorted((i for i in range(len(ids)) if i != 8), key=lambda i: (-typical[i], ids[i]))
    assert centroid.ids == [ids[i] for i in order[:3]]


# -- the real model ---------------------------------------------------------------------------

@pytest.mark.slow
def test_less_selects_from_real_alpaca_records(ctx, tmp_path):
    from alpaca30 import alpaca30

    from cherrybench.context import Context
    from cherrybench.runners.select import run_selection

    data = alpaca30()
    target = tmp_path / "target.json"
    target.write_text(json.dumps([
        {"instruction": "Translate the sentence into Spanish.", "input": "Good night.", "output": "Buenas noches.",
         "task": "translation"},
        {"instruction": "What is 9 times 7?", "input": "", "output": "9 times 7 is 63.", "task": "math"}]))
    params = {"target": str(target), "max_length": 64, "warmup_fraction": 0.2, "epochs": 1, "dim": 256}
    selection, _ = run_selection(data, SELECTORS.get("less").from_options(params), Budget.parse("5"), ctx)
    report = selection.report
    assert len(selection.ids) == 5 and len(set(selection.ids)) == 5
    assert set(selection.ids) <= {r.id for r in data.records}
    assert report["warmup_records"] == 6 and report["checkpoint_weights"] == [1.0]
    unscored = report["excluded"].get("no_less:no_answer_token_within_max_length", 0)
    assert report["gradients_computed"] == {"pool": 30 - unscored, "target": 2}
    assert report["n_kept"] + report["n_excluded"] == 30
    low, high = report["kept_score_range"]
    assert -1 <= low <= high <= 1
    again, _ = run_selection(data, SELECTORS.get("less").from_options(params), Budget.parse("5"),
                             Context(model=None, device="cpu", progress=False))
    assert again.ids == selection.ids and again.report["gradients_computed"] == {"pool": 0, "target": 0}
