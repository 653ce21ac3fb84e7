"""RDS+ (Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning"):
embed every record as the position-weighted mean of the scoring LM's last hidden
states over its tokens (`lm:weighted`, one forward pass per record, cached like
other embeddings), embed the target records the same way, and keep the pool
records most similar (cosine) to the target set.

A pool record's score for a task is its maximum cosine similarity over that
task's target records; with several tasks, selection is round-robin over the
tasks (each in turn takes its best record not yet taken), as the paper does.

Choices that are ours:
- The embedded text is the whole record (each question then its answer, turns
  joined by a blank line; `text=conversation`), with no chat template; tokens
  past `max_length` are cut.
- `target` is a data file in any supported format. A target record's task is
  its raw `task_field` value (default "task"); if no target record has that
  field they form one task, and a file where only some have it is an error.
- Without a target the single target is the pool's centroid (the mean of the
  unit-normalised pool vectors), as issue 14 asks: a "typicality" ranking.
- Round-robin visits tasks in sorted name order; within a task, ties in
  similarity are broken by id. Selected ids are reported in pick order.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from cherrybench.embedders import LMPoolingEmbedder, embed
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, records_for, report

CENTROID = "pool_centroid"


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def task_scores(pool: np.ndarray, targets: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
    """Per task: each pool record's maximum cosine similarity over that task's targets."""
    sims = unit(pool) @ unit(targets).T  # [n_pool, n_targets]
    labels = np.asarray(tasks, dtype=object)
    return {task: sims[:, labels == task].max(axis=1) for task in sorted(set(tasks))}


def round_robin(scores: dict[str, np.ndarray], ids: list[str], k: int) -> list[int]:
    """Row indices of k records: tasks take turns (sorted by name), each taking its
    highest-scoring record not yet taken (ties by id)."""
    order = {task: sorted(range(len(ids)), key=lambda i: (-s[i], ids[i])) for task, s in scores.items()}
    cursor = dict.fromkeys(order, 0)
    taken: set[int] = set()
    picked: list[int] = []
    limit = min(k, len(ids))
    while len(picked) < limit:
        for task, ranked in order.items():
            if len(picked) >= limit:
                break
            while ranked[cursor[task]] in taken:
                cursor[task] += 1
            taken.add(ranked[cursor[task]])
            picked.append(ranked[cursor[task]])
    return picked


@register_selector()
class RDS(Selector):
    """RDS+: cosine similarity of position-weighted LM embeddings to a target set, round-robin over tasks."""

    name = "rds"

    def __init__(self, target: str | None = None, model: str | None = None, max_length: int = 512,
                 text: str = "conversation", task_field: str = "task"):
        self.target = target
        self.model = model
        self.max_length = max_length
        self.text = text
        self.task_field = task_field

    def check_params(self) -> None:
        from cherrybench.embedders import TEXTS

        self.check_number("max_length", 2, integer=True)
        self.check_choice("text", TEXTS)
        if self.target is not None and not Path(self.target).expanduser().is_file():
            raise ValueError(f"{self.who}: target {self.target!r} is not a file (give a data file of target "
                             "records, e.g. a few eval-set records, or no target for the pool centroid)")

    def embedder(self) -> LMPoolingEmbedder:
        return LMPoolingEmbedder(model=self.model, pooling="weighted", max_length=self.max_length)

    def load_targets(self) -> tuple[list, list[str]]:
        """The target records and each one's task (see the module docstring)."""
        from cherrybench.records import load_dataset

        records = load_dataset(Path(self.target).expanduser()).records
        has = [self.task_field in r.raw for r in records]
        if not any(has):
            return records, ["target"] * len(records)
        if not all(has):
            missing = next(r for r, h in zip(records, has) if not h)
            raise ValueError(f"{missing.where or self.target}: target record {missing.id!r} has no "
                             f"{self.task_field!r} field, which other target records have "
                             f"({self.who}: give every target record a task, or none)")
        return records, [str(r.raw[self.task_field]) for r in records]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        self.check_params()
        k = budget.resolve(len(scores))
        targets, tasks = self.load_targets() if self.target else ([], [CENTROID])
        embedder = self.embedder()
        pool = embed(records_for(scores, ctx, self.name), embedder, self.text, ctx)
        if self.target:
            target_vectors = embed(targets, embedder, self.text, ctx)
        else:
            target_vectors = unit(pool).mean(axis=0, keepdims=True)
        ids = scores["id"].astype(str).tolist()
        per_task = task_scores(pool, target_vectors, tasks)
        picked = round_robin(per_task, ids, k)
        kept = [scores["id"].iloc[i] for i in picked]
        excluded = Counter({"over_budget": len(scores) - len(kept)})
        best = np.max(np.stack(list(per_task.values())), axis=0)
        return Selection(kept, report(self, scores, kept, excluded, budget, extra={
            "embedder": "lm:weighted", "target": self.target or CENTROID,
            "n_targets": len(targets) if self.target else 1,
            "tasks": dict(sorted(Counter(tasks).items())),
            "kept_similarity_range": [float(best[picked].min()), float(best[picked].max())] if picked else None,
        }))


__all__ = ["RDS", "round_robin", "task_scores", "unit"]
