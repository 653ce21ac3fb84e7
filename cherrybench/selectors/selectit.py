"""SelectIT selection (Liu et al. 2024): the top of the pool by the SelectIT
score (the paper keeps 20%; here the budget decides), ties by id. The score and
every choice of ours are described in `metrics/selectit.py`."""

from __future__ import annotations

from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics.selectit import SelectIT
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector


@register_selector()
class SelectITSelector(RankingSelector):
    """SelectIT: self-ratings under five prompts, penalised by their spread (and summed over judges), best first."""

    name = "selectit"
    column = "selectit"

    def __init__(self, judge: str | None = None, judges: list | None = None, judge_sizes: list | None = None,
                 scale: int = 5, alpha: float = 0.2, readout: str = "paper", chat: bool = False,
                 judge_max_length: int = JUDGE_MAX_LENGTH):
        self.judge = judge
        self.judges = judges
        self.judge_sizes = judge_sizes
        self.scale = scale
        self.alpha = alpha
        self.readout = readout
        self.chat = chat
        self.judge_max_length = judge_max_length

    def check_params(self) -> None:
        self.requires()[0].check_params()

    def requires(self):
        return [SelectIT(judge=self.judge, judges=self.judges, judge_sizes=self.judge_sizes, scale=self.scale,
                         alpha=self.alpha, readout=self.readout, chat=self.chat, judge_max_length=self.judge_max_length)]
