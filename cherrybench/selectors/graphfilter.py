"""GraphFilter (Wu et al., ICML 2025, "The Best of Both Worlds: Bridging Quality
and Diversity in Data Selection with Bipartite Graph"), SPEC: GraphFilter.

A bipartite graph links each record (its instruction: every turn's question,
instruction plus input) to the word 1-, 2- and 3-grams it contains (lower-cased
word tokens, the same as IterIT's TF-IDF: ours, the paper does not say). A
record's diversity is D(u) = sum over its n-grams still in the graph of
count(v in u) x log(N / df(v)), N and df over the whole pool (records
without a usable quality included: they count, they cannot be picked); its priority is quality x D. Greedily take the
highest priority and remove every edge of each n-gram it covers, so those
n-grams count for nobody any more (a max-heap with lazy updates). Quality is any
score column (default `ifd_ppl`, Superfiltering's IFD with the plain prompt, as
the paper); `column=null` sets quality to 1, which is greedy set cover.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cherrybench.metrics.ifd import IFD
from cherrybench.selectors import register_selector
from cherrybench.selectors.base import (Budget, Selection, Selector, nan_exclusions, records_for, report,
                                        require_columns)
from cherrybench.selectors.greedy_coverage import greedy_decayed_coverage, tie_ranks
from cherrybench.selectors.topk import metric_for_column


def instruction_text(record) -> str:
    """The record's side of the graph: every turn's question (instruction, then input)."""
    return "\n".join(turn.query for turn in record.turns)


def ngram_graph(texts: list[str]):
    """The record x n-gram edges weighted count(v in u) x log(N / df(v)), and the n-grams."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    try:
        vectorizer = CountVectorizer(ngram_range=(1, 3), dtype=np.float64)
        graph = vectorizer.fit_transform(texts).tocsr()
    except ValueError:  # "empty vocabulary": no instruction has a word token
        return sparse.csr_matrix((len(texts), 0)), np.array([], dtype=object)
    df = np.bincount(graph.indices, minlength=graph.shape[1])  # records per n-gram
    graph.data *= np.log(len(texts) / df)[graph.indices]
    return graph, vectorizer.get_feature_names_out()


def graphfilter_greedy(texts: list[str], quality, k: int, ids, candidates=None) -> tuple[list[int], list[float], int]:
    """Indices (into `candidates`, default every text) in pick order, each pick's priority when
    taken, and the number of n-grams. N and df(v) count the whole pool, `texts`, as SPEC defines
    them; only the candidates (the records with a usable quality) can be picked."""
    graph, ngrams = ngram_graph(texts)
    if candidates is not None:
        graph = graph[np.asarray(candidates, dtype=int)]
    picks, values = greedy_decayed_coverage(graph, quality, k, 0.0, tie_ranks(ids))
    return picks, values, len(ngrams)


@register_selector()
class GraphFilter(Selector):
    """GraphFilter: greedy quality x n-gram diversity of instructions over a record / n-gram graph."""

    name = "graphfilter"

    def __init__(self, column: str | None = "ifd_ppl", model: str | None = None, prompt: str = "plain",
                 max_length: int = 512):
        self.column = column  # the quality score (higher is better); None: quality 1 (greedy set cover)
        self.model = model
        self.prompt = prompt  # for the IFD columns: Superfiltering's plain prompt, as the paper
        self.max_length = max_length

    def check_params(self) -> None:
        if self.column is not None and (not isinstance(self.column, str) or not self.column):
            raise ValueError(f"selector 'graphfilter': parameter column must be a score column or null, "
                             f"got {self.column!r}")

    def requires(self):
        if self.column is None:
            return []
        if self.column in IFD.columns:
            return [IFD(model=self.model, prompt=self.prompt, max_length=self.max_length)]
        return metric_for_column(self.column, {"model": self.model, "prompt": self.prompt,
                                               "max_length": self.max_length})

    def _check_direction(self) -> None:
        for metric in self.requires():
            if type(metric).columns.get(self.column) == "lower":
                raise ValueError(f"selector 'graphfilter': column {self.column!r} is better when lower; "
                                 "quality must be a score where higher is better")

    def select(self, scores, budget: Budget, ctx) -> Selection:
        self.check_params()  # also run by from_options, before any scoring
        if self.column is None:
            usable, excluded = np.ones(len(scores), dtype=bool), Counter()
            quality = np.ones(len(scores))
        else:
            self._check_direction()
            require_columns(scores, [self.column], self.name)
            usable, excluded = nan_exclusions(scores, self.column)
            negative = usable & (scores[self.column].astype(float) < 0)
            excluded[f"{self.column}<0"] += int(negative.sum())  # quality x diversity needs quality >= 0
            usable = (usable & ~negative).to_numpy()
            quality = scores[self.column].astype(float).to_numpy()[usable]
        pool = records_for(scores, ctx, self.name)
        candidates = np.flatnonzero(usable)
        records = [pool[i] for i in candidates]
        picks, values, n_ngrams = graphfilter_greedy([instruction_text(r) for r in pool], quality,
                                                     budget.resolve(len(scores)), [r.id for r in records], candidates)
        ids = [records[i].id for i in picks]
        excluded["over_budget"] += len(records) - len(ids)
        extra = {"n_ngrams": n_ngrams, "quality": self.column or "1 (greedy set cover)",
                 "picked_at_zero_priority": sum(1 for v in values if v == 0.0)}
        return Selection(ids, report(self, scores, ids, excluded, budget, self.column, extra=extra))
