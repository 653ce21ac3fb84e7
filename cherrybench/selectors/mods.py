"""MoDS (Du et al. 2023): quality, coverage, necessity (SPEC).

1. keep records whose reward is above `quality_threshold` (default 0.0 with a
   reward model; the pool's median with the judge fallback, ours);
2. a k-center seed set over their instruction embeddings (seeded first center);
3. fine-tune the base model on the seed set with the run's own training settings
   (the common fine-tune, `ctx.train`), answer every
   other high-quality instruction with it, score those answers with the same
   reward, and add the instructions answered below `necessity_threshold`;
4. final = seed U necessity without duplicates (necessity ranked worst answer
   first when it overflows the budget; ours).

The fine-tuned model and its answers are cached, so a rerun repeats no work.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from cherrybench.diversity import kcenter_greedy
from cherrybench.embedders import embed
from cherrybench.metrics.reward import Reward
from cherrybench.records import Dataset, Record, Turn
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, nan_exclusions, records_for, report, require_columns



@register_selector()
class MoDS(Selector):
    """MoDS: reward threshold, k-center seed set, then what the seed-trained model answers badly."""

    name = "mods"

    def __init__(self, reward_model: str | None = None, judge: str | None = None, embedder: str | None = None,
                 text: str = "instruction", quality_threshold: float | None = None,
                 necessity_threshold: float | None = None, seed_fraction: float = 0.5, seed: int = 0,
                 max_new_tokens: int = 128):
        self.reward_model = reward_model
        self.judge = judge
        self.embedder = embedder
        self.text = text
        self.quality_threshold = quality_threshold
        self.necessity_threshold = necessity_threshold
        self.seed_fraction = seed_fraction
        self.seed = seed
        self.max_new_tokens = max_new_tokens

    def check_params(self) -> None:
        from cherrybench.embedders import TEXTS

        self.check_number("seed_fraction", 0, 1, low_open=True)
        self.check_number("quality_threshold", optional=True)
        self.check_number("necessity_threshold", optional=True)
        self.check_number("max_new_tokens", 1, integer=True)
        self.check_number("seed", 0, integer=True)
        self.check_choice("text", TEXTS)

    def reward(self) -> Reward:
        return Reward(reward_model=self.reward_model, judge=self.judge)

    def requires(self):
        return [self.reward()]

    def thresholds(self, rewards) -> tuple[float, float]:
        """0.0 for a reward model (the MoDS reference on the DeBERTa model); ours: the pool's
        median for a zero-shot judge, whose 1..6 scores are not calibrated to any fixed cut."""
        valid = rewards[np.isfinite(rewards)]
        default = 0.0 if self.reward_model else (float(np.median(valid)) if len(valid) else 0.0)
        quality = default if self.quality_threshold is None else self.quality_threshold
        return quality, quality if self.necessity_threshold is None else self.necessity_threshold

    def train_config(self, ctx):
        """The run's own training settings (`ctx.train`: compare's and select's training
        flags), with this selector's seed: MoDS's seed model trains exactly like every subset."""
        from dataclasses import replace

        from cherrybench.finetune import TrainConfig

        base = getattr(ctx, "train", None) or TrainConfig(model=ctx.model, device=ctx.device)
        return replace(base, seed=self.seed)

    def answers(self, seed_records: list[Record], todo: list[Record], ctx) -> list[str]:
        """Greedy answers of the seed-trained model; the model and each answer are
        cached by content in the artifact store (finetuned_model, cached_answers)."""
        from cherrybench.evaluate import cached_answers
        from cherrybench.finetune import finetuned_model

        config = self.train_config(ctx)
        model_dir = finetuned_model(seed_records, config, progress=ctx.progress, ctx=ctx)
        answers = cached_answers(model_dir, todo, max_new_tokens=self.max_new_tokens, prompt=config.prompt,
                                 max_length=config.max_length, ctx=ctx)
        if hasattr(ctx, "unload_lm"):
            ctx.unload_lm(str(model_dir))
        return answers

    def select(self, scores, budget: Budget, ctx) -> Selection:
        from cherrybench.scoring import score_metric

        require_columns(scores, ["reward"], self.name)
        self.check_params()  # also run by from_options, before any scoring
        quality_min, necessity_max = self.thresholds(scores["reward"].to_numpy(dtype=float))
        ok, excluded = nan_exclusions(scores, "reward")
        low = ok & ~(scores["reward"].astype(float) > quality_min)
        excluded[f"reward<={quality_min:g}"] += int(low.sum())
        high = scores[ok & ~low]
        k = budget.resolve(len(scores))
        records = records_for(high, ctx, self.name)
        n_seed = min(math.ceil(self.seed_fraction * k), len(high))
        picked = kcenter_greedy(embed(records, self.embedder, self.text, ctx), n_seed, seed=self.seed)
        seed_ids = [records[i].id for i in picked]
        in_seed = set(picked)
        rest = [r for i, r in enumerate(records) if i not in in_seed]
        needed: list[tuple[float, str]] = []
        if rest and len(seed_ids) < k:
            answers = self.answers([records[i] for i in picked], rest, ctx)
            generated = Dataset([Record(r.id, [Turn(r.turns[0].instruction, a, r.turns[0].input)], system=r.system)
                                 for r, a in zip(rest, answers)], path=None, format="alpaca", container="json")
            marks = score_metric(generated, self.reward(), ctx)["reward"].to_numpy(dtype=float)
            # ours: an answer that cannot be scored counts as badly answered
            needed = sorted((-np.inf if np.isnan(m) else m, r.id) for r, m in zip(rest, marks)
                            if np.isnan(m) or m < necessity_max)
            excluded[f"answered_well(>={necessity_max:g})"] += len(rest) - len(needed)
        elif rest:
            excluded["over_budget"] += len(rest)
        room = k - len(seed_ids)
        necessity = [rid for _, rid in needed[:room]]
        excluded["over_budget"] += len(needed) - len(necessity)
        ids = list(dict.fromkeys(seed_ids + necessity))
        return Selection(ids, report(self, scores, ids, Counter(excluded), budget, "reward", extra={
            "n_high_quality": len(high), "n_seed": len(seed_ids), "n_necessity": len(necessity),
            "reward_source": self.reward().source, "thresholds": {"quality": quality_min, "necessity": necessity_max}}))
