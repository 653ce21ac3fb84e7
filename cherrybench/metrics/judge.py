"""LM-as-judge scores: render a prompt template per turn, read the logits of the
score-digit tokens at the first generated position (one forward pass, no
sampling) and take the expected value `sum_i i * softmax(logit_i)` (SPEC, Deita).

`PromptJudge` is the reusable base: a subclass (or the generic `judge` metric)
names a template with `{instruction}`, `{input}`, `{query}`, `{output}` and
`{system}` fields and a digit range. A digit that has no token of its own in the
judge's tokenizer is an error at start-up, never a silent constant.
"""

from __future__ import annotations

import logging
import string
from typing import ClassVar

import numpy as np

from cherrybench.lm import JUDGE_MAX_LENGTH, digit_token_ids
from cherrybench.metrics import register_metric
from cherrybench.metrics.base import Metric
from cherrybench.records import Record, Turn

log = logging.getLogger(__name__)
FIELDS = ("instruction", "input", "query", "output", "system")


def expected_scores(logits: np.ndarray, low: int) -> np.ndarray:
    """Expected digit value under the softmax over the digit logits, row by row."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs @ np.arange(low, low + logits.shape[1], dtype=np.float64)


def template_fields(template: str) -> set[str]:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = names - set(FIELDS)
    if unknown:
        raise ValueError(f"judge template uses unknown fields {sorted(unknown)}; available: {FIELDS}")
    return names


def turn_fields(record: Record, turn: Turn) -> dict[str, str]:
    return {"instruction": turn.instruction, "input": turn.input, "query": turn.query,
            "output": turn.output, "system": record.system}


class PromptJudge(Metric):
    """Base for judge metrics. Subclasses set `template`, `low`, `high` and
    `columns`, and turn the per-turn scores into columns in `combine`."""

    template: ClassVar[str]
    low: ClassVar[int] = 1
    high: ClassVar[int] = 6
    needs = ("judge",)
    volatile = ()

    def __init__(self, judge: str | None = None, chat: bool = False, judge_max_length: int = JUDGE_MAX_LENGTH):
        self.judge = judge
        self.chat = chat
        self.judge_max_length = judge_max_length

    # -- what a subclass may override -----------------------------------
    def templates(self) -> dict[str, tuple[str, int, int]]:
        """Named (template, low, high) prompts scored for every turn."""
        return {"score": (self.template, self.low, self.high)}

    def combine(self, per_turn: dict[str, np.ndarray]) -> dict:
        """Columns of one record from its per-turn scores (default: mean over turns)."""
        (values,) = per_turn.values()
        return {next(iter(self.columns)): float(np.mean(values))}

    # -- machinery -------------------------------------------------------
    def fields(self, record: Record, turn: Turn) -> dict[str, str]:
        """The values a template's fields take for one turn."""
        return turn_fields(record, turn)

    def fingerprints(self, ctx) -> dict:
        return {"judge": ctx.model_ref(self.judge).fingerprint}

    def render(self, template: str, record: Record, turn: Turn) -> str:
        return template.format(**self.fields(record, turn))

    def _as_chat(self, lm, text: str) -> str:
        if not getattr(lm.tokenizer, "chat_template", None):
            raise ValueError(f"metric {self.name!r}: chat=True needs a judge tokenizer with a chat template")
        return lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                add_generation_prompt=True)

    def encode_prompt(self, lm, template: str, record: Record, turn: Turn) -> tuple[list[int], bool]:
        """Token ids of the rendered prompt, and whether a field had to be cut to fit
        `judge_max_length` (the longest field loses its tail; the template's end stays)."""
        original = self.fields(record, turn)
        fields = dict(original)
        used = template_fields(template)
        for _ in range(8):
            text = template.format(**fields)
            if self.chat:
                text = self._as_chat(lm, text)
            ids = lm.encode(text)
            if len(ids) <= self.judge_max_length:
                return ids, fields != original
            longest = max(sorted(used), key=lambda f: len(fields[f]))
            field_ids = lm.encode(fields[longest])
            if not field_ids:
                break
            keep = max(0, len(field_ids) - (len(ids) - self.judge_max_length) - 8)
            fields[longest] = lm.tokenizer.decode(field_ids[:keep])
        return [], True

    def digit_logits(self, lm, records) -> tuple[dict[str, np.ndarray], dict[str, list], set[int]]:
        """Per template: the logits of its score digits at the first generated position of
        each turn's prompt, and the (record, turn) of each row; and the records whose prompt
        cannot fit judge_max_length. One batched pass per template."""
        prompts = self.templates()
        digit_ids = {key: digit_token_ids(lm, low, high) for key, (_, low, high) in prompts.items()}
        sequences, owners, too_long = {k: [] for k in prompts}, {k: [] for k in prompts}, set()
        cut = 0
        for r, record in enumerate(records):
            for t, turn in enumerate(record.turns):
                for key, (template, _, _) in prompts.items():
                    ids, was_cut = self.encode_prompt(lm, template, record, turn)
                    if not ids:
                        too_long.add(r)
                        continue
                    cut += was_cut
                    sequences[key].append(ids)
                    owners[key].append((r, t))
        if cut:
            log.info("%s: %d prompts had a field cut to fit judge_max_length=%d", self.name, cut, self.judge_max_length)
        logits = {key: lm.last_token_logits(sequences[key], digit_ids[key]) for key in prompts if sequences[key]}
        return logits, owners, too_long

    def compute(self, records, ctx):
        logits, owners, too_long = self.digit_logits(ctx.lm(self.judge), records)
        prompts = self.templates()
        per_record = [{k: np.full(len(rec.turns), np.nan) for k in prompts} for rec in records]
        for key, rows in logits.items():
            for (r, t), value in zip(owners[key], expected_scores(rows, prompts[key][1])):
                per_record[r][key][t] = value
        rows = []
        for r in range(len(records)):
            if r in too_long:
                rows.append(self.nan_row("prompt_too_long"))
            else:
                rows.append(dict(self.combine(per_record[r]), **{self.reason_column: None}))
        return self.frame(rows)


@register_metric()
class Judge(PromptJudge):
    """A zero-shot LM judge with your own prompt template and digit range (mean over turns)."""

    name = "judge"
    columns = {"judge_score": "higher"}

    def __init__(self, template: str = "{query}\n{output}\nScore (1-6): ", low: int = 1, high: int = 6,
                 judge: str | None = None, chat: bool = False, judge_max_length: int = JUDGE_MAX_LENGTH):
        super().__init__(judge=judge, chat=chat, judge_max_length=judge_max_length)
        self.template = template
        self.low = low
        self.high = high

    def check_params(self) -> None:
        self.check_number("low", 0, 9, integer=True)
        self.check_number("high", 0, 9, integer=True)
        if self.low >= self.high:
            raise ValueError(f"metric 'judge': digits must satisfy 0 <= low < high <= 9, got {self.low}..{self.high}")
        if not isinstance(self.template, str):
            raise ValueError(f"metric 'judge': parameter template must be a string, got {self.template!r}")
        template_fields(self.template)
