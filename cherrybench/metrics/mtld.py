"""MTLD lexical diversity of the response (McCarthy & Jarvis 2010), an
InstructMining indicator.

Walk the words; whenever the running type-token ratio of the current segment
falls to the threshold (0.72) a factor is complete and the segment restarts.
The leftover segment adds a partial factor (1 - TTR) / (1 - threshold).
MTLD = words / factors, computed forward and backward and averaged.

Not lexicalrichness: it is pre-alpha, pulls in textblob and nltk, deletes
digits and hyphens before counting, and divides by zero on an empty text.
"""

from __future__ import annotations

import re

from cherrybench.metrics import register_metric
from cherrybench.metrics.base import Metric

WORD = re.compile(r"\w+(?:'\w+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation is not a word (ours)."""
    return WORD.findall(text.lower())


def factor_count(tokens: list[str], threshold: float = 0.72) -> float:
    """Full factors plus the partial factor of the leftover segment, one direction."""
    factors = 0.0
    types: set[str] = set()
    count = 0
    ttr = 1.0
    for token in tokens:
        count += 1
        types.add(token)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1
            types, count, ttr = set(), 0, 1.0
    if count:
        factors += (1 - ttr) / (1 - threshold)
    return factors


def mtld_one_way(tokens: list[str], threshold: float = 0.72) -> float:
    """Words per factor. A text whose TTR never drops (no factor at all) counts
    as one factor, so its MTLD is its length (ours, as lexicalrichness does)."""
    factors = factor_count(tokens, threshold)
    return len(tokens) / factors if factors > 0 else float(len(tokens))


def mtld(tokens: list[str], threshold: float = 0.72) -> float:
    """Bidirectional MTLD: mean of the forward and backward passes."""
    return (mtld_one_way(tokens, threshold) + mtld_one_way(tokens[::-1], threshold)) / 2


@register_metric()
class MTLD(Metric):
    """Lexical diversity of the response (MTLD, forward and backward mean); turns' answers joined."""

    name = "mtld"
    columns = {"mtld": "higher"}
    chunk_size = 4096

    def __init__(self, threshold: float = 0.72):
        self.threshold = threshold

    def check_params(self) -> None:
        self.check_number("threshold", 0, 1, low_open=True, high_open=True)

    def compute(self, records, ctx):
        self.check_params()  # also run by from_options, before any scoring
        rows = []
        for record in records:
            tokens = words("\n".join(t.output for t in record.turns))
            if not tokens:
                rows.append(self.nan_row("empty_response"))
            else:
                rows.append({"mtld": mtld(tokens, self.threshold), self.reason_column: None})
        return self.frame(rows)
