"""Per-record reference-based answer metrics, fed to cherrybench.stats as
means (numerator = value, denominator = 1).

ROUGE-L is the `rouge-score` package (Google's reimplementation of
ROUGE-1.5.5), `RougeScorer(["rougeL"], use_stemmer=True)`: F-measure of the
longest common subsequence over the whole answer (no sentence splitting, unlike
rougeLsum), Porter stemming as ROUGE-1.5.5's -m flag so "answers"/"answer"
match. Its tokenizer lowercases and keeps only [a-z0-9] runs, so text in a
non-Latin script has no tokens at all.

A record that cannot be scored is NaN, never 0 (a 0 would count as a wrong
answer), with a parallel reason: "empty_reference", "reference_without_tokens"
(ROUGE-L: nothing left after tokenizing), "zero_vector" or "non_finite_vector"
(cosine). None means scored. Whether a record can be scored depends on its
reference alone, so every model is scored on the same records. An empty answer,
or one with text but no ROUGE tokens ("..."), is an answer that shares nothing
with the reference: 0 for both metrics (ours; `rouge-score` gives 0 too), so a
model that stays silent on the prompts it finds hard is not averaged over its
easy ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_scorer = None


def _rouge():
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _scorer


def _tokens(text: str) -> list[str]:
    from rouge_score import tokenize

    return tokenize.tokenize(text, None)


def _blank(text: str | None) -> bool:
    return text is None or not str(text).strip()


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
    """Per-record ROUGE-L F-measure and the reason for each NaN (None where scored)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = _rouge()
    values = np.full(len(predictions), np.nan)
    reasons: list[str | None] = []
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        if _blank(ref):
            reasons.append("empty_reference")
        elif not _tokens(ref):  # the scorer's tokenization, stemming aside
            reasons.append("reference_without_tokens")
        elif _blank(pred):
            values[i] = 0.0  # said nothing: shares nothing with the reference
            reasons.append(None)
        else:
            values[i] = scorer.score(ref, pred)["rougeL"].fmeasure  # score(target, prediction)
            reasons.append(None)
    return values, reasons


def embedding_similarity(pred_vectors, ref_vectors, predictions: Sequence[str] | None = None,
                         references: Sequence[str] | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Cosine similarity of each prediction's embedding with its reference's,
    and the reason for each NaN (None where scored). Give the texts too, so a
    blank reference is NaN and a blank prediction 0, rather than the cosine of
    an embedded empty string."""
    p = np.asarray(pred_vectors, dtype=float)
    r = np.asarray(ref_vectors, dtype=float)
    if p.ndim != 2 or p.shape != r.shape:
        raise ValueError(f"expected two [n, dim] arrays of one shape, got {p.shape} and {r.shape}")
    for name, texts in (("predictions", predictions), ("references", references)):
        if texts is not None and len(texts) != len(p):
            raise ValueError(f"{len(texts)} {name} for {len(p)} vectors")
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(r, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.einsum("ij,ij->i", p, r) / norms
    reasons: list[str | None] = []
    for i in range(len(p)):
        if references is not None and _blank(references[i]):
            reasons.append("empty_reference")
        elif predictions is not None and _blank(predictions[i]):
            values[i] = 0.0  # said nothing: unrelated to the reference
            reasons.append(None)
            continue
        elif not np.isfinite(norms[i]):
            reasons.append("non_finite_vector")
        elif norms[i] == 0:
            reasons.append("zero_vector")
        else:
            reasons.append(None)
            continue
        values[i] = np.nan
    return np.clip(values, -1.0, 1.0), reasons
