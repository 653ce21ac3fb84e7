"""Reward-model score of each (Q, A), as MoDS uses it: a local sequence
classifier reads the pair and its `logits[0]` is the score (OpenAssistant
DeBERTa reward models). Multi-turn records: mean over turns (ours).

Without a reward model the judge's Deita quality score stands in: it is then
this metric's declared input (scored and cached by the scoring core first),
said once per scoring in the log; `reward_source` records which one produced
each score.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cherrybench.metrics import register_metric
from cherrybench.metrics.base import Metric
from cherrybench.metrics.deita import JudgeQuality

log = logging.getLogger(__name__)


class RewardModel:
    """A loaded sequence-classification model; `pairs_scored` counts model inputs (tests use it).
    How pairs are cut and batched is each call's (metrics sharing the model may set them apart)."""

    def __init__(self, path: Path, device: str | None = None, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from cherrybench.models import pick_device

        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust_remote_code).to(self.device).eval()
        self.pairs_scored = 0
        self._torch = torch

    def score(self, questions: list[str], answers: list[str], max_length: int = 512,
              batch_size: int = 16) -> np.ndarray:
        out = np.zeros(len(questions), dtype=np.float64)
        order = sorted(range(len(questions)), key=lambda i: len(questions[i]) + len(answers[i]))
        with self._torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start: start + batch_size]
                inputs = self.tokenizer([questions[i] for i in batch], [answers[i] for i in batch],
                                        padding=True, truncation=True, max_length=max_length,
                                        return_tensors="pt").to(self.device)
                logits = self.model(**inputs).logits.float()
                out[batch] = logits[:, 0].double().cpu().numpy()
                self.pairs_scored += len(batch)
        return out


@register_metric()
class Reward(Metric):
    """Reward-model score of (Q, A) (logits[0]); the judge's quality score when no reward model is set."""

    name = "reward"
    columns = {"reward": "higher"}
    needs = ("reward",)
    volatile = ("batch_size",)

    def __init__(self, reward_model: str | None = None, judge: str | None = None, reward_max_length: int = 512,
                 batch_size: int = 16):
        self.reward_model = reward_model
        self.judge = judge
        self.reward_max_length = reward_max_length
        self.batch_size = batch_size

    @property
    def output_columns(self) -> list[str]:
        return ["reward", "reward_source", self.reason_column]

    @property
    def source(self) -> str:
        return "reward_model" if self.reward_model else "judge_quality"

    def _path(self) -> Path:
        path = Path(self.reward_model).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"reward model {self.reward_model!r}: no config.json in that directory "
                                    "(a local sequence-classification model; nothing is downloaded)")
        return path

    def inputs(self) -> list:
        """The judge's quality score, only when no reward model is set (the fallback)."""
        if self.reward_model:
            return []
        return [JudgeQuality(judge=self.judge)]

    def fingerprints(self, ctx) -> dict:
        if self.reward_model:
            from cherrybench.models import directory_fingerprint

            return {"reward": directory_fingerprint(self._path())}
        return {}  # the fallback judge's key enters through `inputs`

    def model(self, ctx) -> RewardModel:
        """The loaded model, shared by every Reward of this context that names the directory (the
        context's device and remote-code setting are the rest of what loading reads)."""
        path = self._path()
        return ctx.get("reward", str(path), lambda: RewardModel(
            path, device=ctx.device, trust_remote_code=ctx.trust_remote_code))

    def compute(self, records, ctx, inputs=None):
        if not self.reward_model:
            values = inputs["judge_quality"].to_numpy()
            reasons = [r if isinstance(r, str) else None for r in inputs["judge_quality_reason"]]
        else:
            model = self.model(ctx)
            questions, answers, owners = [], [], []
            for r, record in enumerate(records):
                for turn in record.turns:
                    questions.append(turn.query)
                    answers.append(turn.output)
                    owners.append(r)
            flat = model.score(questions, answers, max_length=self.reward_max_length, batch_size=self.batch_size)
            sums, counts = np.zeros(len(records)), np.zeros(len(records))
            np.add.at(sums, owners, flat)
            np.add.at(counts, owners, 1)
            values = sums / np.maximum(counts, 1)
            reasons = [None] * len(records)
        rows = [{"reward": float(v) if reason is None else np.nan, self.reason_column: reason}
                for v, reason in zip(values, reasons)]
        frame = self.frame(rows)
        frame["reward_source"] = self.source
        return frame

    def warnings(self, table) -> list[str]:
        if self.reward_model:
            return []
        return ["no --reward-model set; the judge's Deita quality score (1..6) stands in "
                "(column reward_source = judge_quality)"]
