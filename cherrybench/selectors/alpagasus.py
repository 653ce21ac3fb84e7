"""AlpaGasus selection (Chen et al. 2023): keep judge scores >= threshold
(4.5 in the paper), then the top k by score."""

from __future__ import annotations

from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics.alpagasus import AlpaGasus
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector


@register_selector()
class AlpaGasusSelector(RankingSelector):
    """AlpaGasus: judge accuracy rating >= threshold, best first, up to the budget."""

    name = "alpagasus"
    column = "alpagasus"

    def __init__(self, judge: str | None = None, threshold: float = 4.5, chat: bool = False,
                 judge_max_length: int = JUDGE_MAX_LENGTH):
        self.judge = judge
        self.threshold = threshold
        self.chat = chat
        self.judge_max_length = judge_max_length

    def requires(self):
        return [AlpaGasus(judge=self.judge, chat=self.chat, judge_max_length=self.judge_max_length)]

    def filters(self, scores):
        return [(f"alpagasus<{self.threshold:g}", scores["alpagasus"].astype(float) < self.threshold)]
