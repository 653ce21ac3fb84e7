"""Instruction Node (Tree-Instruct, Zhao et al. 2023), the Deita baseline: keep
the records whose questions a judge LM rewrites into the largest semantic trees
(SPEC: Instruction Node). The report names the judge that counted."""

from __future__ import annotations

from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics.instruction_node import InstructionNode
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector


@register_selector()
class InstructionNodeSelector(RankingSelector):
    """Instruction Node: keep the records with the most semantic-tree nodes, as counted by the judge LM."""

    name = "instruction_node"
    column = "instruction_node"

    def __init__(self, judge: str | None = None, chat: bool = True, judge_max_length: int = JUDGE_MAX_LENGTH, max_new_tokens: int = 64):
        self.judge = judge
        self.chat = chat
        self.judge_max_length = judge_max_length
        self.max_new_tokens = max_new_tokens

    def requires(self):
        return [InstructionNode(judge=self.judge, chat=self.chat, judge_max_length=self.judge_max_length,
                                max_new_tokens=self.max_new_tokens)]

    def select(self, scores, budget, ctx):
        selection = super().select(scores, budget, ctx)
        column = "instruction_node_judge"
        if column in scores.columns:
            selection.report["judge"] = sorted({j for j in scores[column] if isinstance(j, str)})
        return selection
