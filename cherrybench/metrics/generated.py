"""Metrics read from an LM's generated answer (InsTag's tags, Instruction Node's
count): one prompt per turn (the turn's question in a template, in the model's
chat template unless `chat=false`, then the answer's first characters written
for the model: `prefill`, ours, so that even a small model answers in the
expected form), greedy answers through the shared batched backend
(`LanguageModel.generate`), and a parse of each answer.

The generated answers are a column of the metric (`<name>_text`, a JSON list
with one answer per turn), so they are kept in the score cache with the scores,
keyed by the model's fingerprint, the prompt (template and prefill), the
parameters and the record's content: a rerun generates nothing.
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar

import pandas as pd

from cherrybench.fingerprint import hash_json
from cherrybench.metrics.base import Metric
from cherrybench.records import Record

log = logging.getLogger(__name__)


class GeneratedAnswerMetric(Metric):
    """Subclass: set `template` (with a `{query}` field), `prefill`, `columns`, and
    implement `model_spec` (which model writes) and `combine` (columns from the turns' answers)."""

    template: ClassVar[str]
    plain_cue: ClassVar[str] = "\nAssistant: "  # ends the prompt when no chat template is used
    prefill: ClassVar[str] = ""
    needs = ("judge",)

    def model_spec(self) -> str | None:
        raise NotImplementedError

    def combine(self, answers: list[str]) -> dict:
        """This record's columns (and reason) from its turns' answers."""
        raise NotImplementedError

    @property
    def text_column(self) -> str:
        return f"{self.name}_text"

    @property
    def output_columns(self) -> list[str]:
        return list(self.columns) + [self.text_column, self.reason_column]

    def check_params(self) -> None:
        self.check_number("judge_max_length", 16, integer=True)
        self.check_number("max_new_tokens", 1, integer=True)
        if not isinstance(self.chat, bool):
            raise ValueError(f"{self.who}: parameter chat must be true or false, got {self.chat!r}")

    def fingerprints(self, ctx) -> dict:
        return {"generator": ctx.model_ref(self.model_spec()).fingerprint,
                "prompt": hash_json([self.template, self.plain_cue, self.prefill])}

    def render(self, lm, query: str) -> str:
        text = self.template.format(query=query)
        if not self.chat:
            return text + self.plain_cue + self.prefill
        if not getattr(lm.tokenizer, "chat_template", None):
            raise ValueError(f"metric {self.name!r}: model {lm.ref.spec if lm.ref else ''!r} has no chat template; "
                             "pass --param chat=false to prompt it as plain text")
        return lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                add_generation_prompt=True) + self.prefill

    def encode(self, lm, query: str) -> tuple[list[int], bool]:
        """The prompt's token ids, and whether the query lost its tail to fit `judge_max_length`
        (the template's end stays); no ids when even an empty query does not fit."""
        ids = lm.encode(self.render(lm, query))
        if len(ids) <= self.judge_max_length:
            return ids, False
        room = self.judge_max_length - len(lm.encode(self.render(lm, "")))
        query_ids = lm.encode(query)
        while room > 0:
            ids = lm.encode(self.render(lm, lm.tokenizer.decode(query_ids[:room])))
            if len(ids) <= self.judge_max_length:
                return ids, True
            room -= max(1, len(ids) - self.judge_max_length)
        return [], True

    def compute(self, records: list[Record], ctx):
        self.check_params()  # also run by from_options, before any scoring
        lm = ctx.lm(self.model_spec())
        prompts, owners, too_long, cut = [], [], set(), 0
        for r, record in enumerate(records):
            for turn in record.turns:
                ids, was_cut = self.encode(lm, turn.query)
                if not ids:
                    too_long.add(r)
                    continue
                cut += was_cut
                prompts.append(ids)
                owners.append(r)
        if cut:
            log.info("%s: %d questions lost their tail to fit judge_max_length=%d", self.name, cut, self.judge_max_length)
        generated = lm.generate(prompts, max_new_tokens=self.max_new_tokens) if prompts else []
        answers: list[list[str]] = [[] for _ in records]
        for r, ids in zip(owners, generated):
            answers[r].append(self.prefill + lm.tokenizer.decode(ids, skip_special_tokens=True))
        rows = []
        for r in range(len(records)):
            if r in too_long:
                row = self.nan_row("prompt_too_long")
            else:
                row = self.combine(answers[r])
            row[self.text_column] = json.dumps(answers[r], ensure_ascii=False) if r not in too_long else None
            rows.append(row)
        frame = self.frame(rows)
        for column in self.output_columns:
            if column not in self.columns:  # text columns: a string or None, never NaN
                frame[column] = pd.Series([v if isinstance(v, str) else None for v in frame[column]], dtype=object)
        return frame
