"""Per-record LoRA gradient features (LESS, Xia et al. 2024): the engine under
`selectors/less.py`.

- `EpochStates`, a fine-tune `Watcher`: at every epoch end of a LoRA fine-tune
  it keeps the LoRA weights, AdamW's moments (`exp_avg`, `exp_avg_sq`) and the
  learning rate of each optimizer step (`epoch_states()` reads them back).
- `per_record_gradients`: the gradient of each record's own answer loss (the
  runner's: mean cross-entropy over its answer tokens) with respect to the LoRA
  weights, for a padded batch at once (`torch.func`: `vmap` of `grad` of a
  `functional_call`; right padding without an attention mask, so causal
  attention keeps every record's real tokens from seeing the padding).
- `adam_direction`: the update Adam would take from that single gradient given
  a checkpoint's moments, as LESS computes it: m' / sqrt(v' + eps) with
  m' = b1 m + (1 - b1) g and v' = b2 v + (1 - b2) g^2, no bias correction.
- `Projector`: a seeded Rademacher (+-1) random projection to `dim`
  dimensions, scaled by 1/sqrt(dim), as LESS uses TRAK's. The matrix is made
  of blocks of `BLOCK_ROWS` rows, each drawn from its own seeded CPU generator
  (so it is the same matrix on every device and for every batching), and is
  never held whole: each block is drawn, applied and dropped.
- `gradient_features`: the projected features of records at every saved epoch,
  cached like scores (Parquet shards keyed by each record's content hash, under
  a key of the base model, the epoch state's files, the kind, the prompt and
  length settings and the projection), so a rerun computes nothing.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cherrybench.cache import HASH_COLUMN, ShardStore
from cherrybench.fingerprint import hash_file, hash_json
from cherrybench.finetune import IGNORE, TrainConfig, Watcher, build_example, lora_model, training_summary
from cherrybench.records import Record

GRADIENT_VERSION = 1
KINDS = ("adam", "sgd")  # Adam-preconditioned (LESS's pool records) or plain gradients (its target records)
BLOCK_ROWS = 4096  # rows of the projection matrix per seeded block: part of the matrix's definition
PASS_BYTES = 1 << 30  # full gradients held at once, projected together (one draw of the matrix per pass)
STATES = "epoch_states"  # in a model directory: epoch-1, epoch-2, ...
NO_ANSWER = "no_answer_token_within_max_length"  # the reason a record has no gradient


# -- epoch states -------------------------------------------------------------------

class EpochStates(Watcher):
    """Keep each epoch's end state of a LoRA fine-tune (see `save_epoch_state`)."""

    key = {"epoch_states": 1}

    def callback(self, staging: Path, config: TrainConfig):
        from transformers import TrainerCallback

        if not config.lora:
            raise ValueError("epoch states (LoRA weights and Adam moments at each epoch end) need a LoRA fine-tune")

        class SaveEpochStates(TrainerCallback):
            def __init__(self):
                self.rates: list[float] = []
                self.epoch = 0

            def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
                self.rates.append(float(optimizer.param_groups[0]["lr"]))  # the rate this step used

            def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
                self.epoch += 1
                if state.is_world_process_zero:  # one writer under torchrun / accelerate
                    save_epoch_state(staging / STATES / f"epoch-{self.epoch}", model, optimizer, self.rates,
                                     self.epoch)
                self.rates = []

        return SaveEpochStates()


def save_epoch_state(folder: Path, model, optimizer, learning_rates: list[float], epoch: int) -> None:
    """`weights.safetensors` (the trainable weights by parameter name), `adam.safetensors`
    (`exp_avg/<name>`, `exp_avg_sq/<name>`) and `state.json` (the epoch, the learning rate of
    each of its optimizer steps and their mean, Adam's step count, betas and eps)."""
    from safetensors.torch import save_file

    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    weights, moments, steps = {}, {}, set()
    for name, param in trainable(model).items():
        state = optimizer.state.get(param) or {}
        if "exp_avg_sq" not in state:
            raise RuntimeError(f"epoch {epoch}: the optimizer keeps no Adam moments for {name}")
        weights[name] = param.detach().float().cpu().contiguous()
        for moment in ("exp_avg", "exp_avg_sq"):
            moments[f"{moment}/{name}"] = state[moment].detach().float().cpu().contiguous()
        steps.add(int(state["step"]))
    group = optimizer.param_groups[0]
    folder.mkdir(parents=True)
    save_file(weights, folder / "weights.safetensors")
    save_file(moments, folder / "adam.safetensors")
    (folder / "state.json").write_text(json.dumps({
        "epoch": epoch, "adam_step": max(steps), "learning_rates": learning_rates,
        "mean_learning_rate": float(np.mean(learning_rates)) if learning_rates else 0.0,
        "betas": [float(b) for b in group["betas"]], "eps": float(group["eps"])}, indent=1))


def epoch_states(model_dir: Path) -> list[dict]:
    """Each saved epoch's `state.json`, with its `folder`, in epoch order."""
    folders = sorted(Path(model_dir, STATES).glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
    if not folders:
        raise ValueError(f"{model_dir} keeps no epoch states (train it with watcher=EpochStates())")
    return [{**json.loads((f / "state.json").read_text()), "folder": f} for f in folders]


def state_fingerprint(state: dict) -> str:
    """The content of one epoch state: its weights, moments and learning rates."""
    folder = Path(state["folder"])
    return hash_json({"weights": hash_file(folder / "weights.safetensors"),
                      "adam": hash_file(folder / "adam.safetensors"),
                      "state": json.loads((folder / "state.json").read_text())})


# -- gradients ---------------------------------------------------------------------------

def trainable(model) -> dict:
    """The parameters that train (LoRA's), by name, in the model's order: the layout of every flat gradient."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def per_record_gradients(model, examples: list[dict], pad_id: int, batch_tokens: int = 512):
    """[n, D] float32: row i is the gradient of example i's answer loss (mean cross-entropy
    over its tokens labelled other than -100) with respect to the trainable parameters,
    flattened in `trainable` order. Examples are batched (at most `batch_tokens` padded
    tokens a batch) and differentiated per example with torch.func; the model should be in
    eval mode (no dropout), as LESS computes them."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    from cherrybench.lm import pack_batches

    params = {name: p.detach() for name, p in trainable(model).items()}
    device = next(iter(params.values())).device

    def loss(weights, ids, labels):
        logits = functional_call(model, weights, (), {"input_ids": ids[None], "use_cache": False}).logits[0, :-1]
        return F.cross_entropy(logits.float(), labels[1:], ignore_index=IGNORE)

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    out = torch.empty(len(examples), sum(p.numel() for p in params.values()), dtype=torch.float32)
    for batch in pack_batches([len(e["input_ids"]) for e in examples], batch_tokens):
        width = max(len(examples[i]["input_ids"]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(examples[i]["input_ids"])
            ids[row, :n] = torch.tensor(examples[i]["input_ids"])
            labels[row, :n] = torch.tensor(examples[i]["labels"])
        with warnings.catch_warnings():  # torch's note that CPU attention has no vmap rule (it loops): not the user's concern
            warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
            grads = per_example(params, ids.to(device), labels.to(device))
        out[batch] = torch.cat([grads[name].reshape(len(batch), -1) for name in params], dim=1).float().cpu()
    return out


def adam_direction(grads, exp_avg, exp_avg_sq, beta1: float, beta2: float, eps: float):
    """LESS's Adam update direction from single-record gradients `grads` [n, D] and a
    checkpoint's moments [D]: m' / sqrt(v' + eps) (eps inside the root, no bias correction)."""
    import torch

    m = beta1 * exp_avg + (1 - beta1) * grads
    v = beta2 * exp_avg_sq + (1 - beta2) * grads ** 2
    return m / torch.sqrt(v + eps)


# -- projection --------------------------------------------------------------------------

def projection_key(dim: int, seed: int) -> dict:
    """What decides the projection matrix (with the gradient's length)."""
    return {"type": "rademacher", "dim": dim, "seed": seed, "block_rows": BLOCK_ROWS}


def block_seed(seed: int, index: int) -> int:
    """The generator seed of block `index` of the matrix of seed `seed` (63 bits of a hash)."""
    return int(hash_json({"projection_seed": seed, "block": index})[:15], 16)


def projection_block(seed: int, index: int, rows: int, dim: int):
    """Rows [index * BLOCK_ROWS, + rows) of the +-1 matrix of seed `seed`, float32, on the CPU."""
    import torch

    generator = torch.Generator().manual_seed(block_seed(seed, index))
    signs = torch.randint(0, 2, (rows, dim), generator=generator, dtype=torch.int8)
    return signs.to(torch.float32).mul_(2).sub_(1)


class Projector:
    """x -> x P / sqrt(dim) for the [dim_in, dim] Rademacher matrix P of `seed`, drawn block
    by block (`projection_block`), so memory holds one block of BLOCK_ROWS x dim at a time."""

    def __init__(self, dim_in: int, dim: int, seed: int = 0):
        self.dim_in, self.dim, self.seed = dim_in, dim, seed

    def project(self, grads):
        """[n, dim_in] -> [n, dim], on the device of `grads`."""
        import torch

        if grads.shape[1] != self.dim_in:
            raise ValueError(f"projector for {self.dim_in} dimensions got vectors of {grads.shape[1]}")
        out = torch.zeros(grads.shape[0], self.dim, dtype=torch.float32, device=grads.device)
        for index, start in enumerate(range(0, self.dim_in, BLOCK_ROWS)):
            rows = min(BLOCK_ROWS, self.dim_in - start)
            block = projection_block(self.seed, index, rows, self.dim).to(grads.device)
            out += grads[:, start: start + rows].float() @ block
        return out / math.sqrt(self.dim)


# -- cached features ----------------------------------------------------------------------

def _load_vectors(store: ShardStore) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for _, frame in store.read_parts():
        for h, vector in zip(frame[HASH_COLUMN], frame["vector"]):
            found.setdefault(h, np.asarray(vector, dtype=np.float32))
    return found


def _append_vectors(store: ShardStore, hashes: list[str], vectors: np.ndarray) -> None:
    import pandas as pd

    store.append(pd.DataFrame({HASH_COLUMN: hashes, "vector": list(np.asarray(vectors, dtype=np.float32))}))


class CheckpointModel:
    """The base model with the warm-up's LoRA adapters, in eval mode on `device`, set to
    one saved epoch at a time (`load`)."""

    def __init__(self, base_dir: Path, train: TrainConfig, device: str):
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        self.model = lora_model(model, train).to(device).eval()
        self.names = list(trainable(self.model))
        self.device = device

    def load(self, state: dict) -> tuple:
        """Set the LoRA weights of `state`; returns its flat (exp_avg, exp_avg_sq) in `trainable` order."""
        import torch
        from safetensors.torch import load_file

        folder = Path(state["folder"])
        weights = load_file(folder / "weights.safetensors")
        if sorted(weights) != sorted(self.names):
            raise ValueError(f"{folder}: its weights are not this model's LoRA parameters")
        self.model.load_state_dict(weights, strict=False)
        moments = load_file(folder / "adam.safetensors")
        return tuple(torch.cat([moments[f"{m}/{n}"].reshape(-1) for n in self.names]).to(self.device)
                     for m in ("exp_avg", "exp_avg_sq"))

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in trainable(self.model).values())


def gradient_features(records: list[Record], warmup_dir: Path, kind: str, dim: int, seed: int, ctx,
                      batch_tokens: int | None = None, label: str = "records") -> tuple[np.ndarray, list, int]:
    """([epochs, n, dim] float32, reasons, computed): each record's projected gradient (`kind`
    "adam" or "sgd") at every epoch state of `warmup_dir`, with the warm-up's prompt format
    and length. A record with no answer token within the length gets NaN and a reason (else
    None). Only what the cache lacks is computed; `computed` counts those records."""
    from cherrybench.models import DEFAULT_MODEL, pick_device

    if kind not in KINDS:
        raise ValueError(f"gradient kind must be one of {KINDS}, got {kind!r}")
    summary = training_summary(warmup_dir)
    train = TrainConfig(**summary["config"])
    states = epoch_states(warmup_dir)
    spec = train.model or DEFAULT_MODEL  # the model the warm-up started from (finetune_key's rule)
    ref = ctx.model_ref(spec)
    tokenizer = ctx.tokenizer(spec)
    examples = [build_example(r, tokenizer, train.prompt, train.max_length) for r in records]
    usable = [any(label != IGNORE for label in e["labels"]) for e in examples]
    reasons = [None if ok else NO_ANSWER for ok in usable]
    hashes = [r.content_hash for r in records]
    projection = projection_key(dim, seed)
    stores, found = [], []
    for state in states:
        key = hash_json({"version": GRADIENT_VERSION, "kind": kind, "base": ref.fingerprint,
                         "lora": [train.lora_r, train.lora_alpha, train.lora_targets],
                         "state": state_fingerprint(state), "prompt": train.prompt, "max_length": train.max_length,
                         "projection": projection})
        store = ShardStore("gradients", f"less-{kind}", key, meta={
            "kind": kind, "epoch": state["epoch"], "base_model": ref.fingerprint, "projection": projection,
            "prompt": train.prompt, "max_length": train.max_length})
        stores.append(store)
        found.append(_load_vectors(store))
    todo = list(dict.fromkeys(h for h, ok in zip(hashes, usable) if ok and any(h not in f for f in found)))
    if todo:
        device = pick_device(getattr(ctx, "device", None) or train.device)
        _compute(todo, {h: e for h, e in zip(hashes, examples)}, states, stores, found, kind, dim, seed,
                 CheckpointModel(ref.directory, train, device), tokenizer,
                 batch_tokens or getattr(ctx, "batch_tokens", None) or (8192 if device.startswith("cuda") else 512),
                 ctx, label)
    out = np.full((len(states), len(records), dim), np.nan, dtype=np.float32)
    for e, vectors in enumerate(found):
        for i, (h, ok) in enumerate(zip(hashes, usable)):
            if ok:
                out[e, i] = vectors[h]
    return out, reasons, len(todo)


def _compute(todo: list[str], examples: dict, states: list[dict], stores: list, found: list, kind: str,
             dim: int, seed: int, checkpoint: CheckpointModel, tokenizer, batch_tokens: int, ctx, label: str) -> None:
    """Gradients of the `todo` records at every state, projected a pass at a time (as many
    records as PASS_BYTES of full gradients hold: the matrix is drawn once per pass) and
    appended to each state's store as each pass ends."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    projector = Projector(checkpoint.dim, dim, seed)
    per_pass = max(1, PASS_BYTES // (4 * checkpoint.dim * len(states)))
    bar = tqdm(total=len(todo), desc=f"LESS gradients ({kind}, {label})", unit="rec", file=sys.stderr,
               disable=not getattr(ctx, "progress", False), dynamic_ncols=True)
    for start in range(0, len(todo), per_pass):
        chunk = todo[start: start + per_pass]
        rows, owners = [], []  # full gradients, and (state, hashes) of each part
        for e, state in enumerate(states):
            missing = [h for h in chunk if h not in found[e]]
            if not missing:
                continue
            exp_avg, exp_avg_sq = checkpoint.load(state)
            grads = per_record_gradients(checkpoint.model, [examples[h] for h in missing], pad, batch_tokens)
            grads = grads.to(checkpoint.device)
            if kind == "adam":
                beta1, beta2 = state["betas"]
                grads = adam_direction(grads, exp_avg, exp_avg_sq, beta1, beta2, state["eps"])
            rows.append(grads)
            owners.append((e, missing))
        projected = projector.project(torch.cat(rows)).cpu().numpy()
        offset = 0
        for e, hashes in owners:
            part = projected[offset: offset + len(hashes)]
            offset += len(hashes)
            _append_vectors(stores[e], hashes, part)
            found[e].update(zip(hashes, part))
        bar.update(len(chunk))
    bar.close()
