"""InsTag's two selections (Lu et al. 2023; SPEC: InsTag): the complexity
baseline keeps the records with the most distinct tags; complexity-first diverse
sampling scans records by tag count (most first, ties by id), takes a record
when it adds a tag not yet covered, resets the covered set when a pass ends
short of the budget, and fills by tag count when a pass adds nothing."""

from __future__ import annotations

from collections import Counter

from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics.instag import InsTag, split_tags
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import RankingSelector, require_columns


class _InsTagRule(RankingSelector):
    column = "instag_complexity"

    def __init__(self, tagger: str | None = None, chat: bool = True, judge_max_length: int = JUDGE_MAX_LENGTH,
                 max_new_tokens: int = 256):
        self.tagger = tagger
        self.chat = chat
        self.judge_max_length = judge_max_length
        self.max_new_tokens = max_new_tokens

    def requires(self):
        return [InsTag(tagger=self.tagger, chat=self.chat, judge_max_length=self.judge_max_length,
                       max_new_tokens=self.max_new_tokens)]


@register_selector()
class InsTagComplexity(_InsTagRule):
    """InsTag complexity: keep the records whose queries carry the most distinct intention tags."""

    name = "instag_complexity"


def complexity_first_diverse(ids: list[str], tags: list[list[str]], k: int) -> tuple[list[int], dict]:
    """Positions picked, in order, from records already sorted by tag count (most first,
    ties by id), and how the passes went: passes run, records taken by the fill."""
    picked: list[int] = []
    left = list(range(len(ids)))
    passes = 0
    while len(picked) < k and left:
        passes += 1
        covered: set[str] = set()
        taken = []
        for i in left:
            if len(picked) + len(taken) == k:
                break
            new = set(tags[i]) - covered
            if new:
                taken.append(i)
                covered |= new
        if not taken:  # nothing left adds a tag: fill in tag-count order
            fill = left[: k - len(picked)]
            picked += fill
            return picked, {"passes": passes, "filled_by_count": len(fill)}
        picked += taken
        chosen = set(taken)
        left = [i for i in left if i not in chosen]
    return picked, {"passes": passes, "filled_by_count": 0}


@register_selector()
class InsTagDiverse(_InsTagRule):
    """InsTag complexity-first diverse sampling: most tags first, each record adding an uncovered tag."""

    name = "instag_diverse"

    def pick(self, ranked, k, ctx, excluded: Counter) -> list[str]:
        require_columns(ranked, ["instag_tags"], self.name)
        ids = ranked["id"].tolist()
        picked, self.passes_ = complexity_first_diverse(ids, [split_tags(c) for c in ranked["instag_tags"]], k)
        excluded["over_budget"] += len(ids) - len(picked)
        return [ids[i] for i in picked]

    def report_extra(self) -> dict:
        return dict(getattr(self, "passes_", {}))  # set by the last pick
