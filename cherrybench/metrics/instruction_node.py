"""Instruction Node (Tree-Instruct, Zhao et al. 2023; a Deita baseline): an LM
rewrites each question as a semantic tree and reports its node count (SPEC:
Instruction Node). Offline it is a judge-model metric: the count is parsed from
the judge's generated answer (`--judge`, default the scoring model), NaN with
`unparsable_node_count` when none parses, and every score is labelled with the
judge model that wrote it (`instruction_node_judge`). The paper used ChatGPT, so
these counts are not comparable with published numbers; the embedded 135M
model rarely counts anything real. Multi-turn records: mean over turns (ours).

The judge is asked for the count first (`Nodes: N`, the answer started for it)
and the tree after it (ours: a count at the end of a long tree is cut off by
`max_new_tokens`, and small models never reach it).
"""

from __future__ import annotations

import re

import numpy as np

from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics import register_metric
from cherrybench.metrics.generated import GeneratedAnswerMetric

TEMPLATE = ("Please rewrite the following user query as a semantic tree, with one node for each action, object, "
            "constraint or condition that the query asks for. Answer with the number of nodes on the first line, "
            'as "Nodes: N", then the tree, one node per line.\nQuery: {query}')
PREFILL = "Nodes: "  # with its space: a small model then writes a digit, not the placeholder N
COUNT = re.compile(r"^\s*nodes\s*:\s*(\d+)\b", re.IGNORECASE)


def parse_node_count(text: str) -> int | None:
    """The count of an answer that starts `Nodes: N` (N >= 1); None otherwise."""
    match = COUNT.match(text)
    if not match:
        return None
    count = int(match.group(1))
    return count if count >= 1 else None


@register_metric()
class InstructionNode(GeneratedAnswerMetric):
    """Instruction Node: node count of the question's semantic tree, as a judge LM writes it (labelled with the judge)."""

    name = "instruction_node"
    columns = {"instruction_node": "higher"}
    template = TEMPLATE
    prefill = PREFILL

    def __init__(self, judge: str | None = None, chat: bool = True, judge_max_length: int = JUDGE_MAX_LENGTH,
                 max_new_tokens: int = 64):
        self.judge = judge
        self.chat = chat
        self.judge_max_length = judge_max_length
        self.max_new_tokens = max_new_tokens  # the count comes first; the rest is the tree, kept for reading

    def model_spec(self):
        return self.judge

    @property
    def judge_column(self) -> str:
        return "instruction_node_judge"

    @property
    def output_columns(self) -> list[str]:
        return ["instruction_node", self.judge_column, self.text_column, self.reason_column]

    def combine(self, answers: list[str]) -> dict:
        counts = [parse_node_count(a) for a in answers]
        if any(c is None for c in counts):
            return self.nan_row("unparsable_node_count")
        return {"instruction_node": float(np.mean(counts)), self.reason_column: None}

    def compute(self, records, ctx):
        frame = super().compute(records, ctx)
        frame[self.judge_column] = judge_label(ctx, self.judge)
        return frame


def judge_label(ctx, judge: str | None) -> str:
    """The judge model as the results name it: its directory's name and the start of its
    content fingerprint (two models in directories of the same name stay apart)."""
    ref = ctx.model_ref(judge)
    return f"{ref.directory.name} ({ref.fingerprint[:12]})"
