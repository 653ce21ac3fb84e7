"""Compute metric columns for a data set, reusing and extending the score cache.

Chunks are fixed once over the whole data set (records sorted by size, cut into
chunks), so an interrupted run, resumed, computes exactly the chunks it had not
finished, batched as they would have been: nothing lost, nothing duplicated,
identical numbers."""

from __future__ import annotations

import logging
import sys

import pandas as pd
from tqdm import tqdm

from cherrybench.cache import HASH_COLUMN, ShardStore
from cherrybench.records import Dataset, Record

log = logging.getLogger(__name__)


def _size(record: Record) -> int:
    return sum(len(t.instruction) + len(t.input) + len(t.output) for t in record.turns)


def size_sorted_chunks(records: list[Record], chunk_size: int) -> list[list[int]]:
    """Record indices sorted by size (ties by position), in fixed-size chunks."""
    order = sorted(range(len(records)), key=lambda i: (_size(records[i]), i))
    return [order[i: i + chunk_size] for i in range(0, len(order), chunk_size)]


def is_per_record(metric) -> bool:
    """False when the metric, or one it is derived from, scores a record against the whole pool."""
    return bool(metric.per_record) and all(is_per_record(m) for m in metric.inputs())


def has_empty_answer(record: Record) -> bool:
    """An answer that is empty once whitespace is stripped: no metric scores such a record."""
    return any(not turn.output.strip() for turn in record.turns)


def input_table(dataset: Dataset, metric, ctx, use_cache: bool) -> pd.DataFrame | None:
    """The columns a derived metric is computed from, scored (and cached) first, in input order."""
    needed = metric.inputs()
    if not needed:
        return None
    return score(dataset, needed, ctx, use_cache=use_cache)


def compute_rows(metric, records: list[Record], ctx, inputs: pd.DataFrame | None) -> pd.DataFrame:
    """`metric.compute` on the scorable records; NaN with `empty_answer` for the others,
    whatever the metric (a blank answer is never a real score)."""
    empty = [has_empty_answer(r) for r in records]
    keep = [i for i, e in enumerate(empty) if not e]
    parts = []
    if keep:
        chosen = [records[i] for i in keep]
        if inputs is None:
            frame = metric.compute(chosen, ctx)
        else:
            frame = metric.compute(chosen, ctx, inputs=inputs.iloc[keep].reset_index(drop=True))
        if list(frame.columns) != metric.output_columns or len(frame) != len(keep):
            raise RuntimeError(f"metric {metric.name!r} returned columns {list(frame.columns)} for {len(frame)} "
                               f"records; declared {metric.output_columns} for {len(keep)}")
        parts.append(frame.set_axis(keep))
    if len(keep) < len(records):
        blank = pd.DataFrame({c: [float("nan")] * (len(records) - len(keep)) for c in metric.output_columns},
                             index=[i for i, e in enumerate(empty) if e])
        blank[metric.reason_column] = "empty_answer"
        blank = blank.astype({c: object for c in metric.output_columns if c not in metric.columns})
        parts.append(blank)
    frame = pd.concat(parts) if len(parts) > 1 else parts[0]
    return frame.sort_index().reset_index(drop=True)


def compute_locally(metric, tasks: list, ctx):
    """(chunk number, its rows) for each (records, inputs) chunk, computed here, one after another."""
    for n, (records, inputs) in enumerate(tasks):
        yield n, compute_rows(metric, records, ctx, inputs)


def score_metric(dataset: Dataset, metric, ctx, use_cache: bool = True) -> pd.DataFrame:
    """One metric's columns for every record, in input order, indexed by record id."""
    records = dataset.records
    hashes = [r.content_hash for r in records]
    inputs = input_table(dataset, metric, ctx, use_cache)
    store = None
    cached = None
    if use_cache:
        key = metric.cache_key(ctx, dataset.fingerprint)
        store = ShardStore("scores", metric.name, key,
                           meta={"metric": metric.name, "version": metric.version, "params": metric.get_params(),
                                 "models": metric.fingerprints(ctx), "per_record": is_per_record(metric)})
        cached = store.load()
    done = set(cached.index) if cached is not None else set()
    fresh: list[pd.DataFrame] = []
    if is_per_record(metric):
        chunks = size_sorted_chunks(records, metric.chunk_size)
    else:
        chunks = [list(range(len(records)))] if any(h not in done for h in hashes) else []
    todo = sum(1 for h in hashes if h not in done)
    bar = tqdm(total=len(records), initial=len(records) - todo, desc=f"score {metric.name}", unit="rec",
               disable=not ctx.progress or not todo, file=sys.stderr, dynamic_ncols=True)  # no bar for cached scores
    jobs: list[tuple[list[int], list[int]]] = []  # (chunk, its records still to compute), in chunk order
    for chunk in chunks:
        pending, pending_hashes = [], set()
        for i in chunk:
            if hashes[i] not in done and hashes[i] not in pending_hashes:
                pending.append(i)
                pending_hashes.add(hashes[i])
        if pending:
            jobs.append((chunk, pending))
            done |= pending_hashes
    tasks = [([records[i] for i in pending], None if inputs is None else inputs.iloc[pending].reset_index(drop=True))
             for _, pending in jobs]
    engine = ctx.engine  # another executor (cherrybench.ray_engine), for the metrics it takes
    run = engine.run if engine is not None and tasks and engine.takes(metric) else compute_locally
    for n, frame in run(metric, tasks, ctx):  # as each chunk finishes, in any order
        chunk, pending = jobs[n]
        frame.insert(0, HASH_COLUMN, [hashes[i] for i in pending])
        if store is not None:
            store.append(frame)
        fresh.append(frame.set_index(HASH_COLUMN))
        computed = {hashes[i] for i in pending}
        bar.update(sum(1 for i in chunk if hashes[i] in computed))
    bar.close()
    parts = ([cached] if cached is not None else []) + fresh
    table = pd.concat(parts) if parts else pd.DataFrame(columns=metric.output_columns)
    table = table[~table.index.duplicated(keep="first")]
    result = table.loc[hashes].reset_index(drop=True)
    result.index = pd.Index([r.id for r in records], name="id")
    for message in metric.warnings(result):
        log.warning("%s: %s", metric.name, message)
    return result


def score(dataset: Dataset, metrics: list, ctx, use_cache: bool = True) -> pd.DataFrame:
    """All metrics' columns side by side: `id` plus each metric's columns and reason."""
    tables = []
    owners: dict[str, str] = {}
    for metric in metrics:
        for column in metric.output_columns:
            if column in owners:
                raise ValueError(f"metrics {owners[column]!r} and {metric.name!r} both output column {column!r}; "
                                 "score them in separate runs")
            owners[column] = metric.name
        tables.append(score_metric(dataset, metric, ctx, use_cache=use_cache))
    table = pd.concat(tables, axis=1) if tables else pd.DataFrame(index=[r.id for r in dataset.records])
    table.index.name = "id"
    return table.reset_index()
