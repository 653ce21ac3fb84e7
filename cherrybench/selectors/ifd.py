"""Cherry LLM and Superfiltering selection: drop NaN and IFD >= 1, keep the top k."""

from __future__ import annotations

from cherrybench.metrics.ifd import IFD
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector


class _IFDRule(RankingSelector):
    column = "ifd"

    def __init__(self, model: str | None = None, prompt: str = "alpaca", max_length: int = 512,
                 of_valid: bool = False):
        self.model = model
        self.prompt = prompt
        self.max_length = max_length
        self.of_valid = of_valid

    def requires(self):
        return [IFD(model=self.model, prompt=self.prompt, max_length=self.max_length)]

    def filters(self, scores):
        return [(f"{self.column}>=1", scores[self.column].astype(float) >= 1.0)]

    def budget_base(self, scores, usable) -> int:
        # the Cherry code takes its percentage of the valid records, not of all
        return int(usable.sum()) if self.of_valid else len(scores)

    def report_extra(self) -> dict:
        return {"budget_of": "valid" if self.of_valid else "all"}


@register_selector()
class IFDSelector(_IFDRule):
    """Cherry LLM: top IFD = cas / das with the scoring model and alpaca prompt."""

    name = "ifd"


@register_selector()
class Superfiltering(_IFDRule):
    """Superfiltering: IFD-PPL from a small scoring model with the plain prompt."""

    name = "superfiltering"
    column = "ifd_ppl"

    def __init__(self, model: str | None = None, prompt: str = "plain", max_length: int = 512,
                 of_valid: bool = False):
        super().__init__(model=model, prompt=prompt, max_length=max_length, of_valid=of_valid)
