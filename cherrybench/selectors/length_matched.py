"""Length-matched random baseline: a seeded random subset with the same
response-length distribution as another selector's subset (`reference`, at the
same budget), so that a gain from a selector that favours long answers (IFD,
Deita, ...) can be told apart from a gain from length alone.

Matching (ours): the pool's response lengths (tokens of the scoring tokenizer)
are cut into `bins` quantile bins (edges at the pool's quantiles, repeated
edges merged); the reference subset's count in each bin is drawn at random
from all the pool's records in that bin (the reference's own picks included:
conditioned on length, they are as likely as any). Records without a length
form a bin of their own. The subset has the reference's size, ids in input
order; the report gives both subsets' counts per bin and the two-sample
Kolmogorov-Smirnov statistic of their lengths (scipy). Bins finer than the
reference's spread cannot differ from it: matching `longest` returns the
longest records.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cherrybench.metrics.length import Length
from cherrybench.selectors import SELECTORS, register_selector
from cherrybench.selectors.base import Budget, Selection, Selector, report

COLUMN = "response_length"


def length_bins(lengths: np.ndarray, bins: int) -> np.ndarray:
    """Each record's bin: quantile bins of the finite lengths (ties never split), -1 for NaN."""
    finite = np.isfinite(lengths)
    out = np.full(len(lengths), -1, dtype=int)
    if finite.any():
        edges = np.unique(np.quantile(lengths[finite], np.linspace(0, 1, bins + 1)[1:-1]))
        out[finite] = np.searchsorted(edges, lengths[finite], side="right")
    return out


@register_selector()
class LengthMatched(Selector):
    """Random, with the response-length distribution of another selector's subset at the same budget."""

    name = "length_matched"

    def __init__(self, reference: str = "ifd", bins: int = 10, model: str | None = None, seed: int = 0):
        self.reference = reference
        self.bins = bins
        self.model = model
        self.seed = seed

    def check_params(self) -> None:
        self.check_number("bins", 1, integer=True)
        self.check_number("seed", 0, integer=True)
        if SELECTORS.resolve(self.reference) == self.name:
            raise ValueError(f"{self.who}: the reference cannot be {self.name} itself")

    def reference_selector(self) -> Selector:
        return SELECTORS.get(self.reference).from_options({"model": self.model, "seed": self.seed})

    def requires(self):
        return [Length(model=self.model), *self.reference_selector().requires()]

    def select(self, scores, budget: Budget, ctx) -> Selection:
        from scipy.stats import ks_2samp

        reference = self.reference_selector().select(scores, budget, ctx)
        lengths = scores[COLUMN].astype(float).to_numpy()
        binned = length_bins(lengths, self.bins)
        positions = {i: p for p, i in enumerate(scores["id"])}
        wanted = Counter(int(binned[positions[i]]) for i in reference.ids)
        rng = np.random.default_rng(self.seed)
        picked = []
        for b in sorted(wanted):
            members = np.flatnonzero(binned == b)
            picked += rng.choice(members, size=wanted[b], replace=False).tolist()
        picked.sort()
        ids = scores["id"].iloc[picked].tolist()
        ref_lengths = lengths[[positions[i] for i in reference.ids]]
        ours = lengths[picked]
        both = [x[np.isfinite(x)] for x in (ref_lengths, ours)]
        ks = float(ks_2samp(*both).statistic) if all(len(x) for x in both) else float("nan")
        got = Counter(int(b) for b in binned[picked])
        per_bin = {("no_length" if b < 0 else f"bin{b}"): {"reference": wanted[b], "kept": got[b],
                                                          "pool": int((binned == b).sum())} for b in sorted(wanted)}
        excluded = Counter({"not_sampled": len(scores) - len(ids)})
        return Selection(ids, report(self, scores, ids, excluded, budget, COLUMN, extra={
            "reference": {"selector": self.reference, "n_kept": len(reference.ids),
                          "excluded": reference.report.get("excluded", {})},
            "bins": per_bin, "ks_statistic": ks,
            "overlap_with_reference": len(set(ids) & set(reference.ids))}))
