"""The one fine-tune path every subset goes through: a causal LM from a path,
full fine-tuning or LoRA, loss on answer tokens only, the same prompt format
and tokenization as scoring, identical settings and seed for every selector.
Hugging Face Trainer does the loop (and multi-GPU through accelerate/torchrun)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cherrybench.fingerprint import hash_json
from cherrybench.models import FINETUNE_DONE_MARKER
from cherrybench.prompts import context_pieces
from cherrybench.records import Record
from cherrybench.store import ArtifactStore, build_directory

log = logging.getLogger(__name__)
IGNORE = -100
DONE_MARKER = FINETUNE_DONE_MARKER  # named in models: the model's fingerprint leaves it out
FINETUNE_KEY_VERSION = 1
FINETUNED = ArtifactStore("finetuned")  # every fine-tuned model, named by finetune_key()


@dataclass
class TrainConfig:
    """Training settings shared by every selector's run (each is a CLI flag)."""

    model: str | None = None
    prompt: str = "alpaca"
    max_length: int = 512
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 4
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    seed: int = 0
    device: str | None = None
    neftune_alpha: float | None = None  # NEFTune: uniform noise on the input embeddings (Trainer's neftune_noise_alpha)
    lora_targets: str | None = None  # comma-separated module names LoRA adapts (LESS: q_proj,...); None: all linear

    def params(self) -> dict:
        return {f"train.{k}": v for k, v in asdict(self).items()}

    def fingerprint(self, model_fingerprint: str, precision: str | None = None) -> str:
        """What determines the trained weights: the settings, the base model, and the precision
        it trains in (`precision`, else that of `device` here; bf16 training on CUDA gives other
        weights than fp32 on a CPU), entered only off fp32, the reference, so fp32 keys stay. A
        setting added later enters only when set, so models trained before it keep their keys."""
        from cherrybench.models import pick_device, precision_entry, precision_name

        settings = {k: v for k, v in asdict(self).items() if k not in ("model", "device")}
        if settings["neftune_alpha"] is None:
            del settings["neftune_alpha"]
        else:
            settings["neftune_alpha"] = float(settings["neftune_alpha"])  # 5 and 5.0 train the same model
        if settings["lora_targets"] is None:
            del settings["lora_targets"]
        precision = precision or precision_name(pick_device(self.device))
        return hash_json({"model": model_fingerprint, "settings": settings, **precision_entry(precision)})


def build_example(record: Record, tokenizer, prompt: str, max_length: int) -> dict:
    """input_ids and labels: context tokens masked with -100, every answer token
    (and the end-of-sequence token after it) learned; cut at max_length."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    labels: list[int] = []
    for piece, turn in zip(context_pieces(record, prompt, tokenizer), record.turns):
        context = tokenizer(piece, add_special_tokens=False)["input_ids"]
        answer = tokenizer(turn.output, add_special_tokens=False)["input_ids"] if turn.output else []
        if eos is not None:
            answer = answer + [eos]
        ids += context + answer
        labels += [IGNORE] * len(context) + answer
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


class AnswerCollator:
    """Right-pads a batch: pad id for inputs, -100 for labels, a 0/1 attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def is_finished(out_dir: Path) -> bool:
    return (Path(out_dir) / DONE_MARKER).is_file()


def finetune_key(records: list[Record], config: TrainConfig, base_fingerprint: str | None = None, ctx=None) -> dict:
    """What determines a fine-tuned model, as a store key payload: the training
    settings, the base model's fingerprint and the training records' content
    hashes in training order (never their ids: positional ids of two different
    files are the same strings)."""
    if base_fingerprint is None:
        from cherrybench.models import DEFAULT_MODEL, resolve_model

        # the model _train starts from: config.model, else the default (not ctx.model)
        spec = config.model or DEFAULT_MODEL
        base_fingerprint = (ctx.model_ref(spec) if ctx is not None else resolve_model(spec)).fingerprint
    return {"artifact": "finetuned_model", "version": FINETUNE_KEY_VERSION,
            "train": config.fingerprint(base_fingerprint), "records": [r.content_hash for r in records]}


def finetuned_model(records: list[Record], config: TrainConfig, progress: bool = True, ctx=None,
                    base_fingerprint: str | None = None, reselect=None, watcher=None) -> Path:
    """The model fine-tuned on `records` with `config`, from the content-keyed store
    (`cache_dir()/finetuned/`): trained only if no identical training finished before,
    here or in a concurrent process. With `reselect` (see `Reselect`), `records` are the
    first epoch's and each later epoch trains on what `reselect` picks with the weights
    of that moment; what decides its picks (`reselect.key`) is part of the key. A
    `watcher` (see `Watcher`) adds its files to the directory and its key to the key."""
    payload = finetune_key(records, config, base_fingerprint, ctx)
    if reselect is None and watcher is None:
        return FINETUNED.directory(payload, lambda staging: _train(records, config, staging, progress))
    if reselect is not None:
        payload["reselect"] = reselect.key
    if watcher is not None:
        payload["watcher"] = watcher.key
    return FINETUNED.directory(payload, lambda staging: _train(records, config, staging, progress, reselect, watcher))


def remove_finetuned_model(records: list[Record], config: TrainConfig, ctx=None,
                           base_fingerprint: str | None = None) -> None:
    """Delete a stored fine-tuned model (e.g. once evaluated, when it is not to be kept)."""
    FINETUNED.remove(finetune_key(records, config, base_fingerprint, ctx))


def discard_finetuned_model(model_dir: Path) -> None:
    """Delete a stored fine-tuned model by the directory `finetuned_model` returned (compare
    --no-keep-models, once its trial is evaluated and logged)."""
    FINETUNED.discard(model_dir)


def finetune(records: list[Record], config: TrainConfig, out_dir: Path, progress: bool = True) -> Path:
    """Train on `records` and save a full HF model directory at `out_dir`
    (LoRA merged). A directory that already holds a finished model is returned as is.
    Prefer `finetuned_model`, which names the directory by content."""
    return build_directory(Path(out_dir), lambda staging: _train(records, config, staging, progress),
                           is_complete=is_finished)


def device_settings(device: str) -> dict:
    """TrainingArguments for the chosen device. The Trainer itself only knows "cuda"
    (the current CUDA device), so `cuda:N` is made current first; bf16 only where the
    GPU supports it, else fp32."""
    import torch

    if not device.startswith("cuda"):
        return {"use_cpu": True, "bf16": False}
    if ":" in device:
        torch.cuda.set_device(torch.device(device))
    return {"use_cpu": False, "bf16": bool(torch.cuda.is_bf16_supported())}


class Reselect:
    """A training set that moves with the weights (IterIT): before each epoch after the
    first, `choose(epoch, model, tokenizer)` returns (records, info) from the model being
    trained; that epoch trains on those records, shuffled, and `info` (JSON) is kept in the
    model's summary (`epochs`). `key` (JSON) is everything that decides the choices."""

    key: dict = {}

    def choose(self, epoch: int, model, tokenizer) -> tuple[list[Record], dict]:
        raise NotImplementedError


class Watcher:
    """An opt-in observer of a training run that leaves the training alone: `callback(staging,
    config)` returns a Trainer callback, which may write into the model directory `staging`
    (LESS keeps each epoch's LoRA weights and Adam moments: `gradients.EpochStates`). `key`
    (JSON) enters the model's store key, so a model trained without it is not taken for one
    trained with it."""

    key: dict = {}

    def callback(self, staging: Path, config: TrainConfig):
        raise NotImplementedError


def _epoch_callback(reselect: Reselect, examples: list, make_example, tokenizer, log_epochs: list):
    """A Trainer callback that swaps the training examples in place before each epoch
    after the first (the data loader reads the list anew every epoch)."""
    from transformers import TrainerCallback

    class EpochReselect(TrainerCallback):
        def __init__(self):
            self.epoch = 0

        def on_epoch_begin(self, args, state, control, model=None, **kwargs):
            self.epoch += 1
            if self.epoch == 1:
                return
            started = time.perf_counter()
            records, info = reselect.choose(self.epoch, model, tokenizer)
            fresh = [e for e in map(make_example, records) if any(l != IGNORE for l in e["labels"])]
            if fresh:  # none at all (nothing eligible any more): the previous epoch's records again
                examples[:] = fresh
            log_epochs.append({"epoch": self.epoch, "n_records": len(records), "n_examples": len(examples),
                               "kept_previous": not fresh, "seconds": time.perf_counter() - started, **info})

    return EpochReselect()


def lora_model(model, config: TrainConfig):
    """`model` with the LoRA adapters `config` sets (peft): one definition for training and
    for rebuilding a saved epoch state (LESS's gradients)."""
    from peft import LoraConfig, get_peft_model

    targets = config.lora_targets
    modules = [t.strip() for t in targets.split(",")] if targets and targets != "all-linear" else "all-linear"
    return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                            lora_dropout=config.lora_dropout, task_type="CAUSAL_LM",
                                            target_modules=modules))


def _train(records: list[Record], config: TrainConfig, staging: Path, progress: bool,
           reselect: Reselect | None = None, watcher: Watcher | None = None) -> None:
    """Train and save into `staging` (an empty directory the caller moves into place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

    from cherrybench.models import pick_device, resolve_model

    ref = resolve_model(config.model)
    device = pick_device(config.device)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(ref.directory)
    model = AutoModelForCausalLM.from_pretrained(ref.directory, dtype=torch.float32)
    if config.lora:
        model = lora_model(model, config)
    def make_example(record: Record) -> dict:
        return build_example(record, tokenizer, config.prompt, config.max_length)

    examples = [e for e in map(make_example, records) if any(l != IGNORE for l in e["labels"])]
    if not examples:
        raise ValueError("no training record has an answer token within --max-length")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    args = TrainingArguments(
        output_dir=str(staging / "trainer"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        lr_scheduler_type="linear", seed=config.seed, data_seed=config.seed, save_strategy="no",
        logging_steps=1, report_to=[], disable_tqdm=not progress, remove_unused_columns=False,
        dataloader_num_workers=0, neftune_noise_alpha=config.neftune_alpha, **device_settings(device),
    )
    epochs: list[dict] = []
    callbacks = [] if reselect is None else [_epoch_callback(reselect, examples, make_example, tokenizer, epochs)]
    if watcher is not None:
        callbacks.append(watcher.callback(staging, config))
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=AnswerCollator(pad),
                      callbacks=callbacks)
    # one bar, no per-step log dicts on the console (unless transformers' verbosity allows them: -v);
    # logging_steps=1 still fills state.log_history, the loss history kept below
    from cherrybench.quiet import quiet_trainer

    quiet_trainer(trainer, progress, f"fine-tune {len(records)} records, seed {config.seed}")
    result = trainer.train()
    model = trainer.model
    if config.lora:
        model = model.merge_and_unload()
    model = model.to(torch.float32)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    (staging / DONE_MARKER).write_text(json.dumps({
        "config": asdict(config), "n_records": len(records), "n_examples": len(examples),
        "train_loss": result.training_loss, "loss_history": losses, "base_model": str(ref.directory),
        "train_seconds": result.metrics.get("train_runtime"),
        **({"epochs": epochs} if reselect is not None else {}),
    }, indent=2))


def training_summary(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / DONE_MARKER).read_text())
