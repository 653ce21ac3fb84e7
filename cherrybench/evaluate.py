"""Evaluating a fine-tuned model the same way for every selector: answer-token
cross-entropy on a held-out set, per record and pooled, and greedy answers
for judges and reference metrics to score."""

from __future__ import annotations

import numpy as np

from cherrybench.models import precision_entry
from cherrybench.prompts import context_pieces, tokenize_record
from cherrybench.records import Record, Turn


def _bar(ctx, total: int, desc: str):
    """One bar for an evaluation stage (none without ctx.progress or work)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rec", disable=not getattr(ctx, "progress", False) or not total,
                file=sys.stderr, dynamic_ncols=True)


def _lm(model, ctx):
    from cherrybench.context import Context

    ctx = ctx or Context(progress=False)
    return ctx.lm(str(model) if model is not None else None)


def eval_losses(model, records: list[Record], prompt: str = "alpaca", max_length: int = 512, ctx=None):
    """Per record: `id`, `n_tokens` (answer tokens scored: every answer token after
    the first, the tokens IFD's CAS averages over), `loss_sum`, `loss_mean`, and
    `reason` where nothing could be scored (then n_tokens is 0 and the losses NaN).
    Paired statistics resample these rows; the pooled mean is `eval_loss`."""
    import pandas as pd

    lm = _lm(model, ctx)
    tokenized = [tokenize_record(r, lm, prompt, max_length) for r in records]
    scored = [i for i, t in enumerate(tokenized) if not t.reason]
    sequences = [tokenized[i].sequence for i in scored]
    targets = [[q for t in tokenized[i].turns for q in range(t.start + 1, t.start + len(t.answer))] for i in scored]
    with _bar(ctx, sum(1 for t in targets if t), "evaluate loss") as bar:
        losses = dict(zip(scored, lm.token_losses(sequences, targets, on_progress=bar.update)))
    rows = []
    for i, record in enumerate(records):
        values = losses.get(i)
        if values is None or not len(values):
            rows.append({"id": record.id, "n_tokens": 0, "loss_sum": np.nan, "loss_mean": np.nan,
                         "reason": tokenized[i].reason or "no_answer_tokens"})
        else:
            rows.append({"id": record.id, "n_tokens": len(values), "loss_sum": float(values.sum()),
                         "loss_mean": float(values.mean()), "reason": None})
    return pd.DataFrame(rows, columns=["id", "n_tokens", "loss_sum", "loss_mean", "reason"])


def pooled_loss(per_record) -> float:
    """The answer-token mean over all records (each token counts once); NaN if none, and NaN
    when a record with answer tokens has no finite loss (see `pooled_loss_problem`)."""
    return float("nan") if pooled_loss_problem(per_record) else float(
        per_record.loc[per_record["n_tokens"] > 0, "loss_sum"].sum() / per_record["n_tokens"].sum())


def pooled_loss_problem(per_record) -> str | None:
    """Why the pooled loss is NaN: no record has an answer token, or some that have one got a
    non-finite loss (a diverged fine-tune), which must not count as a loss of 0."""
    scored = per_record["n_tokens"] > 0
    if not scored.any():
        return "no_answer_tokens"
    bad = int((~np.isfinite(per_record.loc[scored, "loss_sum"].to_numpy(float))).sum())
    return f"non_finite_loss on {bad} of {int(scored.sum())} records" if bad else None


EVAL_LOSSES_VERSION = 1


def cached_eval_losses(model, records: list[Record], prompt: str = "alpaca", max_length: int = 512, ctx=None):
    """`eval_losses`, kept in the artifact store beside the fine-tuned model: keyed by the
    model's fingerprint (its weights), the settings and the eval records' content."""
    import pandas as pd

    from cherrybench.context import Context
    from cherrybench.store import ArtifactStore

    ctx = ctx or Context(progress=False)
    store = ArtifactStore("eval_losses")
    payload = {"artifact": "eval_losses", "version": EVAL_LOSSES_VERSION,
               "model": ctx.model_ref(str(model) if model is not None else None).fingerprint,
               "prompt": prompt, "max_length": max_length, "records": [[r.id, r.content_hash] for r in records],
               **precision_entry(_precision(ctx))}
    stored = store.get_json(payload)
    if stored is not None:
        return pd.DataFrame(stored, columns=["id", "n_tokens", "loss_sum", "loss_mean", "reason"])
    table = eval_losses(model, records, prompt, max_length, ctx)
    store.put_json(payload, [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                             for row in table.to_dict(orient="records")])
    return table


def eval_loss(model, records: list[Record], prompt: str = "alpaca", max_length: int = 512, ctx=None) -> float:
    """Mean cross-entropy over every answer token after the first, pooled over all
    records; NaN if none has one."""
    return pooled_loss(eval_losses(model, records, prompt, max_length, ctx))


def generate_answers(model, records: list[Record], max_new_tokens: int = 128, prompt: str = "alpaca",
                     ctx=None, max_length: int | None = None, bar=None) -> list[str]:
    """Greedy answers to each record's first question, in the training prompt format;
    with `max_length`, a longer prompt keeps its last max_length tokens (the question's
    end and the response cue), as a model trained at that length saw them. `bar`: a
    caller's progress bar to advance instead of a new one."""
    lm = _lm(model, ctx)
    prompts = []
    for record in records:
        first = Record(record.id, [Turn(record.turns[0].instruction, "", record.turns[0].input)], system=record.system)
        ids = lm.encode(context_pieces(first, prompt, lm.tokenizer)[0])
        prompts.append(ids[-max_length:] if max_length else ids)
    if bar is not None:
        outputs = lm.generate(prompts, max_new_tokens=max_new_tokens, on_progress=bar.update)
    else:
        with _bar(ctx, len(prompts), "evaluate generate") as own:
            outputs = lm.generate(prompts, max_new_tokens=max_new_tokens, on_progress=own.update)
    return [lm.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]


ANSWERS_VERSION = 1
ANSWER_CHUNK = 64  # answers stored every this many records: an interrupted generation loses at most one chunk


def answers_key(model_fingerprint: str, max_new_tokens: int, prompt: str, max_length: int | None,
                precision: str = "float32") -> str:
    """What determines a greedy answer besides the record: the model's weights, the generation
    settings and the precision it runs in (a bf16 greedy path can part from fp32's)."""
    from cherrybench.fingerprint import hash_json

    return hash_json({"artifact": "greedy_answers", "version": ANSWERS_VERSION, "model": model_fingerprint,
                      "max_new_tokens": max_new_tokens, "prompt": prompt, "max_length": max_length,
                      **precision_entry(precision)})


def _precision(ctx) -> str:
    return ctx.precision() if hasattr(ctx, "precision") else "float32"


def cached_answers(model, records: list[Record], max_new_tokens: int = 128, prompt: str = "alpaca",
                   max_length: int | None = None, ctx=None, model_fingerprint: str | None = None) -> list[str]:
    """`generate_answers`, cached per record content: shards under
    `cache_dir()/answers/greedy/<key>/` keyed by the model's fingerprint (its weights;
    `model_fingerprint` overrides) and the settings, one row per record content hash,
    so a set that partly overlaps an earlier one generates only the new records, and an
    interrupted one (answers are stored every ANSWER_CHUNK records) resumes where it stopped."""
    import pandas as pd

    from cherrybench.cache import HASH_COLUMN, ShardStore
    from cherrybench.context import Context

    ctx = ctx or Context(progress=False)
    spec = str(model) if model is not None else None
    if model_fingerprint is None:
        model_fingerprint = ctx.model_ref(spec).fingerprint
    key = answers_key(model_fingerprint, max_new_tokens, prompt, max_length, _precision(ctx))
    store = ShardStore("answers", "greedy", key, meta={"model": spec, "model_fingerprint": model_fingerprint,
                                                       "max_new_tokens": max_new_tokens, "prompt": prompt,
                                                       "max_length": max_length})
    cached = store.load()
    known: dict[str, str] = dict(cached["answer"].items()) if cached is not None else {}
    missing: dict[str, Record] = {}
    for record in records:
        if record.content_hash not in known:
            missing.setdefault(record.content_hash, record)
    todo = list(missing.values())
    if todo:
        with _bar(ctx, len(todo), "evaluate generate") as bar:
            for start in range(0, len(todo), ANSWER_CHUNK):
                part = todo[start:start + ANSWER_CHUNK]
                generated = generate_answers(model, part, max_new_tokens=max_new_tokens, prompt=prompt, ctx=ctx,
                                             max_length=max_length, bar=bar)
                hashes = [r.content_hash for r in part]
                store.append(pd.DataFrame({HASH_COLUMN: hashes, "answer": generated}))
                known.update(zip(hashes, generated))
    return [known[r.content_hash] for r in records]
