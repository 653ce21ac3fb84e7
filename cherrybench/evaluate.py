"""Evaluating a fine-tuned model the same way for every selector: answer-token
cross-entropy on a held-out set, and greedy answers for judges to score."""

from __future__ import annotations

import numpy as np

from cherrybench.prompts import context_pieces, tokenize_record
from cherrybench.records import Record, Turn


def _lm(model, ctx):
    from cherrybench.context import Context

    ctx = ctx or Context(progress=False)
    return ctx.lm(str(model) if model is not None else None)


def eval_loss(model, records: list[Record], prompt: str = "alpaca", max_length: int = 512, ctx=None) -> float:
    """Mean cross-entropy over every answer token after the first (the tokens
    IFD's CAS averages over), pooled over all records; NaN if none has one."""
    lm = _lm(model, ctx)
    tokenized = [tokenize_record(r, lm, prompt, max_length) for r in records]
    sequences = [p.sequence for p in tokenized if not p.reason]
    targets = [[q for t in p.turns for q in range(t.start + 1, t.start + len(t.answer))] for p in tokenized if not p.reason]
    losses = lm.token_losses(sequences, targets)
    flat = np.concatenate(losses) if losses else np.zeros(0)
    return float(flat.mean()) if len(flat) else float("nan")


def generate_answers(model, records: list[Record], max_new_tokens: int = 128, prompt: str = "alpaca",
                     ctx=None, max_length: int | None = None) -> list[str]:
    """Greedy answers to each record's first question, in the training prompt format;
    with `max_length`, a longer prompt keeps its last max_length tokens (the question's
    end and the response cue), as a model trained at that length saw them."""
    lm = _lm(model, ctx)
    prompts = []
    for record in records:
        first = Record(record.id, [Turn(record.turns[0].instruction, "", record.turns[0].input)], system=record.system)
        ids = lm.encode(context_pieces(first, prompt, lm.tokenizer)[0])
        prompts.append(ids[-max_length:] if max_length else ids)
    outputs = lm.generate(prompts, max_new_tokens=max_new_tokens)
    return [lm.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]


ANSWERS_VERSION = 1


def answers_key(model_fingerprint: str, max_new_tokens: int, prompt: str, max_length: int | None) -> str:
    """What determines a greedy answer besides the record: the model's weights and the generation settings."""
    from cherrybench.fingerprint import hash_json

    return hash_json({"artifact": "greedy_answers", "version": ANSWERS_VERSION, "model": model_fingerprint,
                      "max_new_tokens": max_new_tokens, "prompt": prompt, "max_length": max_length})


def cached_answers(model, records: list[Record], max_new_tokens: int = 128, prompt: str = "alpaca",
                   max_length: int | None = None, ctx=None, model_fingerprint: str | None = None) -> list[str]:
    """`generate_answers`, cached per record content: shards under
    `cache_dir()/answers/greedy/<key>/` keyed by the model's fingerprint (its weights;
    `model_fingerprint` overrides) and the settings, one row per record content hash,
    so a set that partly overlaps an earlier one generates only the new records."""
    import pandas as pd

    from cherrybench.cache import HASH_COLUMN, ShardStore
    from cherrybench.context import Context

    ctx = ctx or Context(progress=False)
    spec = str(model) if model is not None else None
    if model_fingerprint is None:
        model_fingerprint = ctx.model_ref(spec).fingerprint
    key = answers_key(model_fingerprint, max_new_tokens, prompt, max_length)
    store = ShardStore("answers", "greedy", key, meta={"model": spec, "model_fingerprint": model_fingerprint,
                                                       "max_new_tokens": max_new_tokens, "prompt": prompt,
                                                       "max_length": max_length})
    cached = store.load()
    known: dict[str, str] = dict(cached["answer"].items()) if cached is not None else {}
    missing: dict[str, Record] = {}
    for record in records:
        if record.content_hash not in known:
            missing.setdefault(record.content_hash, record)
    if missing:
        generated = generate_answers(model, list(missing.values()), max_new_tokens=max_new_tokens, prompt=prompt,
                                     ctx=ctx, max_length=max_length)
        store.append(pd.DataFrame({HASH_COLUMN: list(missing), "answer": generated}))
        known.update(zip(missing, generated))
    return [known[r.content_hash] for r in records]
