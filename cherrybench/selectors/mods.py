"""MoDS (Du et al. 2023): quality, coverage, necessity (SPEC).

1. keep records whose reward is above `quality_threshold` (default 0.0 with a
   reward model; the pool's median with the judge fallback, ours);
2. a k-center seed set over their instruction embeddings (seeded first center);
3. fine-tune the base model on the seed set with the common runner, answer every
   other high-quality instruction with it, score those answers with the same
   reward, and add the instructions answered below `necessity_threshold`;
4. final = seed U necessity without duplicates (necessity ranked worst answer
   first when it overflows the budget; ours).

The fine-tuned model and its answers are cached, so a rerun repeats no work.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import numpy as np

from cherrybench.diversity import kcenter_greedy
from cherrybench.embedders import embed
from cherrybench.fingerprint import hash_json
from cherrybench.metrics.reward import Reward
from cherrybench.paths import cache_dir
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
                 model: str | None = None, prompt: str = "alpaca", max_length: int = 512, epochs: float = 1.0,
                 learning_rate: float = 5e-5, lora: bool = False, max_new_tokens: int = 128):
        self.reward_model = reward_model
        self.judge = judge
        self.embedder = embedder
        self.text = text
        self.quality_threshold = quality_threshold
        self.necessity_threshold = necessity_threshold
        self.seed_fraction = seed_fraction
        self.seed = seed
        self.model = model
        self.prompt = prompt
        self.max_length = max_length
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.lora = lora
        self.max_new_tokens = max_new_tokens

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
        from cherrybench.finetune import TrainConfig

        return TrainConfig(model=self.model or ctx.model, prompt=self.prompt, max_length=self.max_length,
                           epochs=self.epochs, learning_rate=self.learning_rate, lora=self.lora, seed=self.seed,
                           device=ctx.device)

    def answers(self, seed_records: list[Record], todo: list[Record], ctx) -> list[str]:
        """Greedy answers of the seed-trained model (both cached on disk)."""
        from cherrybench.evaluate import generate_answers
        from cherrybench.finetune import finetune

        config = self.train_config(ctx)
        key = hash_json({"seed": [r.content_hash for r in seed_records],
                         "train": config.fingerprint(ctx.model_ref(config.model).fingerprint)})
        model_dir = cache_dir() / "mods" / key[:24]
        finetune(seed_records, config, model_dir, progress=ctx.progress)
        store = model_dir / f"answers-{self.prompt}-{self.max_new_tokens}.json"
        known = json.loads(store.read_text()) if store.is_file() else {}
        missing = [r for r in todo if r.content_hash not in known]
        if missing:
            generated = generate_answers(str(model_dir), missing, max_new_tokens=self.max_new_tokens,
                                         prompt=self.prompt, ctx=ctx)
            known.update({r.content_hash: a for r, a in zip(missing, generated)})
            tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, ensure_ascii=False))
            tmp.replace(store)
        if hasattr(ctx, "unload_lm"):
            ctx.unload_lm(str(model_dir))
        return [known[r.content_hash] for r in todo]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        from cherrybench.scoring import score_metric

        require_columns(scores, ["reward"], self.name)
        if not 0 < self.seed_fraction <= 1:
            raise ValueError(f"mods: seed_fraction must be in (0, 1], got {self.seed_fraction}")
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
