"""IterIT (Jia et al. 2024, "Boosting LLM via Learning from Data Iteratively and
Selectively"), the static selection (SPEC: IterIT): records with IFD < 1 are
eligible; a TF-IDF matrix over their responses (word 1- to 3-grams, scikit-learn's
defaults) gives each record its diversity D = the sum of its row; greedily take
the highest IFD x D, then multiply every TF-IDF column the pick contains by
`delta` for all records, and repeat.

The static variant (the base model's IFD, then ordinary training) is the paper's
own ablation. The iterative variant (`iterative=true`, a window of `u` x k
records rescored each epoch with the weights being trained) runs inside the
fine-tune (`selectors/iterit_iterative.py`), and calls this selection on the
window each epoch; `iterit_pick` is the same selection as a plain function.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cherrybench.metrics.ifd import IFD
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import (Budget, Selection, Selector, nan_exclusions, records_for, report,
                                        require_columns)
from cherrybench.selectors.greedy_coverage import greedy_decayed_coverage, tie_ranks


def response_text(record) -> str:
    """What IterIT's TF-IDF reads: the record's responses (every turn's, ours for multi-turn)."""
    return "\n".join(turn.output for turn in record.turns)


def tfidf_rows(texts: list[str]):
    """TfidfVectorizer(ngram_range=(1, 3)) with scikit-learn's defaults (lower-cased word
    tokens, smoothed IDF, L2-normalised rows); all-zero rows when no text has a word."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        return TfidfVectorizer(ngram_range=(1, 3)).fit_transform(texts)
    except ValueError:  # "empty vocabulary": no response has a word token
        return sparse.csr_matrix((len(texts), 0))


def iterit_greedy(responses: list[str], ifd, k: int, delta: float, tie_rank) -> tuple[list[int], list[float]]:
    """IterIT's greedy over eligible candidates: indices in pick order and each pick's
    priority IFD x D when taken. The caller has kept only records with 0 < IFD < 1."""
    return greedy_decayed_coverage(tfidf_rows(responses), ifd, k, delta, tie_rank)


def iterit_pick(records, ifd, k: int, delta: float = 0.1) -> tuple[list[int], Counter]:
    """IterIT's selection on any set of records with their IFD scores (NaN where unscored):
    eligibility (IFD < 1), TF-IDF over the eligible responses, greedy with column decay.
    Returns positions into `records` in pick order (ties by record id) and the excluded
    counts by reason. The iterative variant calls this on each epoch's window with IFD
    recomputed from the current weights."""
    ifd = np.asarray(ifd, dtype=np.float64)
    if len(ifd) != len(records):
        raise ValueError(f"iterit: {len(ifd)} IFD scores for {len(records)} records")
    excluded: Counter = Counter()
    excluded["no_ifd"] = int((~np.isfinite(ifd)).sum())
    excluded["ifd>=1"] = int((np.isfinite(ifd) & (ifd >= 1.0)).sum())
    eligible = [i for i in range(len(records)) if np.isfinite(ifd[i]) and ifd[i] < 1.0]
    picked, _ = iterit_greedy([response_text(records[i]) for i in eligible], ifd[eligible], k, delta,
                              tie_ranks([records[i].id for i in eligible]))
    excluded["over_budget"] = len(eligible) - len(picked)
    return [eligible[p] for p in picked], excluded


@register_selector()
class IterIT(Selector):
    """IterIT (static): IFD < 1, then greedy IFD x TF-IDF diversity of the responses with column decay delta."""

    name = "iterit"

    def __init__(self, model: str | None = None, prompt: str = "alpaca", max_length: int = 512, delta: float = 0.1,
                 iterative: bool = False, u: int = 3):
        self.model = model
        self.prompt = prompt
        self.max_length = max_length
        self.delta = delta  # 0.1 for general data, 0.0 for a single-domain pool (the paper)
        self.iterative = iterative  # compare: rescore a window each epoch (selectors/iterit_iterative.py)
        self.u = u  # the iterative window: the u x k records the static greedy ranks first

    def check_params(self) -> None:
        self.check_number("delta", 0, 1)
        self.check_number("u", 1, integer=True)
        if not isinstance(self.iterative, bool):
            raise ValueError(f"selector 'iterit': parameter iterative must be true or false, got {self.iterative!r}")

    def requires(self):
        return [IFD(model=self.model, prompt=self.prompt, max_length=self.max_length)]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        self.check_params()  # also run by from_options, before any scoring
        require_columns(scores, ["ifd"], self.name)
        usable, excluded = nan_exclusions(scores, "ifd")  # unscored records, counted by their reason
        kept = scores[usable]
        records = records_for(kept, ctx, self.name)
        ifd = kept["ifd"].astype(float).to_numpy()
        picked, more = iterit_pick(records, ifd, budget.resolve(len(scores)), self.delta)
        excluded.update(more)
        ids = [records[i].id for i in picked]
        return Selection(ids, report(self, scores, ids, excluded, budget, "ifd",
                                     extra={"delta": self.delta, "n_candidates": int(np.sum(ifd < 1.0))}))
