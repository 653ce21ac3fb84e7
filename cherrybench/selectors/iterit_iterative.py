"""IterIT's iterative variant (SPEC: IterIT): epoch 1 trains on the static picks
(the base model's IFD); before each later epoch the window of the k x u records
the static greedy ranked highest is rescored with the weights being trained,
through the same batched IFD code as scoring, and the greedy pick is rerun inside
it. The fine-tune engine runs the loop (`finetune.Reselect`); this module says
what to rescore and how to pick, so the engine never imports a selector."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cherrybench.finetune import Reselect
from cherrybench.lm import LanguageModel
from cherrybench.records import Record
from cherrybench.scoring import compute_rows
from cherrybench.selectors.base import Budget
from cherrybench.selectors.iterit import IterIT, iterit_pick

RESELECT_VERSION = 1


class LiveLM(LanguageModel):
    """The batched LM backend over a model already in memory (the one being trained):
    the same batch methods, nothing loaded (so not `LanguageModel.__init__`, which loads
    from disk; this sets the attributes the batch methods read). A PEFT model is read
    through its base model, whose layers carry the LoRA adapters."""

    def __init__(self, model, tokenizer, batch_tokens: int | None = None):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        first = next(inner.parameters())
        self.ref = None
        self.device = str(first.device)
        self.dtype = first.dtype
        self._attach(inner, tokenizer, batch_tokens, None)


class _LiveContext:
    """What `Metric.compute` asks of a context, answered by the live model."""

    def __init__(self, lm: LiveLM):
        self._lm = lm
        self.progress = False

    def lm(self, spec=None) -> LiveLM:
        return self._lm


def live_scores(metric, records: list[Record], model, tokenizer, batch_tokens: int | None = None) -> pd.DataFrame:
    """`metric`'s columns for `records` from the weights of this moment (eval mode, so
    dropout and NEFTune's noise are off; the model's mode is restored after)."""
    training = model.training
    model.eval()
    try:
        return compute_rows(metric, records, _LiveContext(LiveLM(model, tokenizer, batch_tokens)), None)
    finally:
        model.train(training)


def _json_number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class IterITReselect(Reselect):
    """Before each epoch after the first: rescore the window's IFD with the current
    weights and rerun IterIT's pick (k of them) inside the window (`iterit_pick`:
    IFD < 1 eligible, TF-IDF over the eligible window responses, greedy with decay).
    `info` keeps, per epoch, every window record's IFD and the picks as window
    positions (the model store is keyed by content, so positions, not ids, stay true)."""

    def __init__(self, selector, window: list[Record], k: int, batch_tokens: int | None = None):
        self.selector = selector
        self.window = window
        self.k = k
        self.batch_tokens = batch_tokens
        self.metric = next(m for m in selector.requires() if m.name == "ifd")
        self.key = {"method": "iterit", "version": RESELECT_VERSION, "k": k, "delta": selector.delta,
                    "metric": self.metric.get_params(), "window": [r.content_hash for r in window]}

    def choose(self, epoch: int, model, tokenizer) -> tuple[list[Record], dict]:
        table = live_scores(self.metric, self.window, model, tokenizer, self.batch_tokens)
        picked, excluded = iterit_pick(self.window, table["ifd"].to_numpy(float), self.k, self.selector.delta)
        return [self.window[i] for i in picked], {
            "ifd": [_json_number(v) for v in table["ifd"]],
            "reasons": [r if isinstance(r, str) else None for r in table[self.metric.reason_column]],
            "picks": [int(i) for i in picked], "excluded": {k: v for k, v in excluded.items() if v}}


def is_iterative(selector) -> bool:
    """An IterIT selector asked to rescore its window every epoch (`--param iterative=true`)."""
    return isinstance(selector, IterIT) and selector.iterative


def iterit_reselect(selector: IterIT, selection, table: pd.DataFrame, budget: Budget, pool: list[Record],
                    ctx) -> IterITReselect:
    """The moving selection of an iterative IterIT trial (`selection` is its static pick
    over `table`): the window is the first u x k of the static greedy's ranking of the pool."""
    k = budget.resolve(len(table))
    ranking = selector.select(table, Budget(k * selector.u), ctx).ids
    if ranking[: len(selection.ids)] != list(selection.ids):
        raise RuntimeError("iterit: the window's ranking does not start with the static picks")
    by_id = {r.id: r for r in pool}
    return IterITReselect(selector, [by_id[i] for i in ranking], k, ctx.batch_tokens)


def epoch_table(reselect_log: list[dict], window_ids: list[str], first_ifd: dict,
                first_picks: list[str]) -> pd.DataFrame:
    """Every epoch's window, IFDs and picks as one table: epoch, window rank, id, ifd,
    picked, pick order (epoch 1 from the base model's scores, later ones from the log)."""
    rows = []
    order = {i: n for n, i in enumerate(first_picks)}
    for rank, rid in enumerate(window_ids):
        rows.append({"epoch": 1, "window_rank": rank, "id": rid, "ifd": first_ifd.get(rid, np.nan),
                     "picked": rid in order, "pick_order": order.get(rid)})
    for entry in reselect_log:
        order = {p: n for n, p in enumerate(entry.get("picks", []))}
        for rank, rid in enumerate(window_ids):
            value = entry["ifd"][rank] if "ifd" in entry else None
            rows.append({"epoch": entry["epoch"], "window_rank": rank, "id": rid,
                         "ifd": np.nan if value is None else value, "picked": rank in order,
                         "pick_order": order.get(rank)})
    return pd.DataFrame(rows).astype({"pick_order": "Int64"})
