"""LESS (Xia et al. 2024, "LESS: Selecting Influential Data for Targeted
Instruction Tuning"): keep the pool records whose gradient, as Adam would apply
it, points the way the target records' gradients do.

1. Warm-up: LoRA fine-tune the model on a seeded random `warmup_fraction` (5%)
   of the pool for `epochs` (4) epochs with the common fine-tune runner, keeping
   each epoch's end state: the LoRA weights, AdamW's moments and the learning
   rates (`gradients.EpochStates`; the model is cached by content like every
   fine-tuned model).
2. At each epoch state, every pool record's gradient of its answer loss (the
   loss the runner trains on) with respect to the LoRA weights, turned into
   Adam's update direction with that state's moments; every target record's
   plain gradient. Both are projected to `dim` dimensions by one seeded
   Rademacher matrix and cached by content (`gradients.gradient_features`).
3. A pool record's score for a target task: the mean over the task's target
   records of the sum over epoch states of lr_e x cosine(pool record, target
   record), lr_e the state's epoch mean learning rate, normalised to sum 1;
   its score is its maximum over tasks (LESS's matching: mean over a task's
   examples, max over (sub)tasks). The best `budget` scores are kept.

Paper settings kept: 5% warm-up for 4 epochs, LoRA on q_proj, k_proj, v_proj,
o_proj with dropout 0.1, learning rate 2e-5 with a linear schedule and 3% warm-up
steps, no weight decay, AdamW; gradients in eval mode (no dropout); Adam's
direction m'/sqrt(v' + eps) without bias correction; a Rademacher projection;
unit-normalised features (cosine similarity).

Choices that are ours:
- LoRA rank 8 and alpha 32 (the paper's 128 and 512 for 7B models; alpha/r = 4
  is kept): the gradient has 0.92M dimensions on SmolLM2-135M.
- `dim` defaults to 1024, not the paper's 8192: the projection's cost grows
  with `dim`, and on a 2-core CPU 1024 costs under a tenth of the gradients'
  time where 8192 costs about as much as the gradients of short records; the
  paper reports 8192 a little better than 1024, so give `--param dim=8192`
  where a GPU makes it cheap.
- One `seed` draws the warm-up sample, seeds its training and the projection.
  The warm-up sample is round(warmup_fraction x pool), at least 1, in input
  order; its records stay in the pool and can be selected, as in the paper.
- The batch size, gradient accumulation and device of the warm-up are the run's
  training settings (`ctx.train`, else the runner's defaults).
- `target` is a data file; tasks come from its `task_field` values as in `rds`
  (one task when no record has the field). Without a target, the single target
  is the pool's centroid: at each epoch state, the mean of the pool records'
  unit-normalised projected Adam directions (a "typicality" ranking).
- A pool record with no answer token within `max_length` gets no score and is
  excluded with that reason; such a target record is an error. Ties in score
  are broken by id.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, rank, records_for, report
from cherrybench.selectors.rds import RDS, unit

CENTROID = "pool_centroid"


def checkpoint_weights(mean_rates: list[float]) -> np.ndarray:
    """Each epoch state's mean learning rate over their sum (LESS renormalises its weights)."""
    rates = np.asarray(mean_rates, dtype=np.float64)
    if not rates.sum() > 0:
        raise ValueError("every warm-up step had learning rate 0, so no epoch state can weigh in: "
                         "give the warm-up more steps (a larger warmup_fraction or more epochs)")
    return rates / rates.sum()


def task_scores(pool: np.ndarray, targets: np.ndarray, weights: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
    """Per task, each pool record's mean over the task's targets of the weighted sum over
    epoch states of cosine similarities. pool [E, n, d], targets [E, m, d], weights [E]."""
    sims = sum(w * (unit(p) @ unit(t).T) for w, p, t in zip(weights, pool, targets))  # [n, m]
    labels = np.asarray(tasks, dtype=object)
    return {task: sims[:, labels == task].mean(axis=1) for task in sorted(set(tasks))}


@register_selector()
class LESS(Selector):
    """LESS: Adam-preconditioned LoRA gradients of a short warm-up, cosine to a target set's gradients."""

    name = "less"

    def __init__(self, target: str | None = None, task_field: str = "task", model: str | None = None,
                 prompt: str = "alpaca", max_length: int = 512, warmup_fraction: float = 0.05, epochs: int = 4,
                 learning_rate: float = 2e-5, lora_r: int = 8, lora_alpha: int = 32, lora_dropout: float = 0.1,
                 lora_targets: str = "q_proj,k_proj,v_proj,o_proj", dim: int = 1024, seed: int = 0):
        self.target = target
        self.task_field = task_field
        self.model = model
        self.prompt = prompt
        self.max_length = max_length
        self.warmup_fraction = warmup_fraction
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.dim = dim
        self.seed = seed

    load_targets = RDS.load_targets  # the target records and each one's task, read as rds reads them

    def check_params(self) -> None:
        self.check_number("max_length", 2, integer=True)
        self.check_number("warmup_fraction", 0, 1, low_open=True)
        self.check_number("epochs", 1, integer=True)
        self.check_number("learning_rate", 0, low_open=True)
        self.check_number("lora_r", 1, integer=True)
        self.check_number("lora_alpha", 0, low_open=True)
        self.check_number("lora_dropout", 0, 1, high_open=True)
        self.check_number("dim", 1, integer=True)
        self.check_number("seed", 0, integer=True)
        self.check_choice("prompt", ("alpaca", "plain", "chat"))
        if not isinstance(self.lora_targets, str) or not self.lora_targets.strip():
            raise ValueError(f"{self.who}: parameter lora_targets must name modules, e.g. 'q_proj,v_proj' "
                             f"or 'all-linear', got {self.lora_targets!r}")
        if self.target is not None and not Path(self.target).expanduser().is_file():
            raise ValueError(f"{self.who}: target {self.target!r} is not a file (give a data file of target "
                             "records, e.g. a few eval-set records, or no target for the pool centroid)")

    def warmup_config(self, ctx):
        """The run's training settings (batch size, device), with LESS's warm-up on top."""
        from cherrybench.finetune import TrainConfig

        base = getattr(ctx, "train", None) or TrainConfig(model=ctx.model, device=ctx.device)
        return replace(base, model=self.model or base.model or ctx.model, prompt=self.prompt,
                       max_length=self.max_length, epochs=float(self.epochs), learning_rate=self.learning_rate,
                       warmup_ratio=0.03, weight_decay=0.0, lora=True, lora_r=self.lora_r,
                       lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                       lora_targets=self.lora_targets, neftune_alpha=None, seed=self.seed)

    def warmup_records(self, records: list) -> list:
        """A seeded random `warmup_fraction` of the pool (at least one record), in input order."""
        n = max(1, int(round(self.warmup_fraction * len(records))))
        picked = np.random.default_rng(self.seed).choice(len(records), size=n, replace=False)
        return [records[i] for i in sorted(picked)]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        from cherrybench.finetune import finetuned_model
        from cherrybench.gradients import NO_ANSWER, EpochStates, epoch_states, gradient_features

        self.check_params()
        k = budget.resolve(len(scores))
        pool = records_for(scores, ctx, self.name)
        targets, tasks = self.load_targets() if self.target else ([], [CENTROID])
        config = self.warmup_config(ctx)
        warmup = self.warmup_records(pool)
        warmup_dir = finetuned_model(warmup, config, progress=ctx.progress, ctx=ctx, watcher=EpochStates())
        weights = checkpoint_weights([s["mean_learning_rate"] for s in epoch_states(warmup_dir)])
        pool_features, reasons, pool_computed = gradient_features(pool, warmup_dir, "adam", self.dim, self.seed, ctx,
                                                                  label="pool")
        target_computed = 0
        if self.target:
            target_features, target_reasons, target_computed = gradient_features(
                targets, warmup_dir, "sgd", self.dim, self.seed, ctx, label="target")
            for record, why in zip(targets, target_reasons):
                if why:
                    raise ValueError(f"{record.where or self.target}: target record {record.id!r} has no answer token "
                                     f"within max_length {self.max_length} ({self.who}: raise --max-length or "
                                     "shorten its question)")
        else:  # the centroid of the records that have features (zeros, so no similarity, when none has)
            usable = ~np.isnan(pool_features[0]).any(axis=1)
            target_features = np.stack([unit(f[usable]).sum(axis=0, keepdims=True) / max(1, usable.sum())
                                        for f in pool_features])
        per_task = task_scores(pool_features, target_features, weights, tasks)
        best = np.max(np.stack(list(per_task.values())), axis=0)
        table = scores[["id"]].assign(less=best)
        excluded = Counter({f"no_less:{NO_ANSWER}": sum(1 for why in reasons if why)})
        ranked = rank(table[~np.isnan(best)], "less", descending=True)
        kept = ranked["id"].head(k).tolist()
        excluded["over_budget"] += len(ranked) - len(kept)
        kept_scores = ranked["less"].head(k)
        return Selection(kept, report(self, scores, kept, excluded, budget, extra={
            "target": self.target or CENTROID, "n_targets": len(targets) if self.target else 1,
            "tasks": dict(sorted(Counter(tasks).items())),
            "warmup_records": len(warmup), "warmup_ids": [r.id for r in warmup],
            "checkpoint_weights": [float(w) for w in weights],
            "gradients_computed": {"pool": pool_computed, "target": target_computed},
            "kept_score_range": [float(kept_scores.min()), float(kept_scores.max())] if kept else None,
        }))


__all__ = ["LESS", "checkpoint_weights", "task_scores"]
