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
