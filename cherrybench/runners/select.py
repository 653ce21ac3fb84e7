"""Score what a selector needs (through the cache), select, and write the
subset in the input's own record format with its report beside it. A given
score table must have been computed for exactly this data (see
cherrybench.outputs.check_scores_match); outputs are checked and written
through cherrybench.outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cherrybench.outputs import SUBSET_SUFFIXES, atomic_write, check_output, check_scores_match, write_subset
from cherrybench.records import Dataset
from cherrybench.scoring import score
from cherrybench.selectors.base import Budget, Selection, Selector


def scores_for(dataset: Dataset, selector: Selector, ctx, given: pd.DataFrame | None = None) -> pd.DataFrame:
    """The score table a selector reads: given columns are used as they are,
    the rest of what it requires is scored (cached)."""
    ids = [r.id for r in dataset.records]
    table = pd.DataFrame({"id": ids})
    if given is not None:
        table = table.merge(check_scores_match(given, dataset), on="id", how="left")
    needed = [m for m in selector.requires() if not set(m.columns) <= set(table.columns)]
    if needed:
        scored = score(dataset, needed, ctx)
        table = table.merge(scored[[c for c in scored.columns if c not in table.columns or c == "id"]], on="id")
    return table


def run_selection(dataset: Dataset, selector: Selector, budget: Budget, ctx,
                  given: pd.DataFrame | None = None) -> tuple[Selection, pd.DataFrame]:
    table = scores_for(dataset, selector, ctx, given)
    ctx.dataset = dataset  # selectors that read the records themselves (embeddings, fine-tuning) find them here
    selection = selector.select(table, budget, ctx)
    if len(set(selection.ids)) != len(selection.ids):
        raise RuntimeError(f"selector {selector.name!r} returned duplicate ids")
    unknown = set(selection.ids) - set(table["id"])
    if unknown:
        raise RuntimeError(f"selector {selector.name!r} returned unknown ids {sorted(unknown)[:5]}")
    return selection, table


def report_path(out: Path) -> Path:
    name = out.name
    for suffix in SUBSET_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.report.json")


def check_selection_outputs(out, inputs) -> tuple[Path, Path]:
    """The subset and report paths, refused (DataError) when either is an input,
    not a regular file, or `out` has an unsupported suffix; run before scoring."""
    out = Path(out)
    check_output(out, inputs, SUBSET_SUFFIXES)
    report = report_path(out)
    check_output(report, inputs, what="report path")
    return out, report


def write_selection(dataset: Dataset, selection: Selection, out, inputs=()) -> tuple[Path, Path]:
    """Write the subset and NAME.report.json beside it; `inputs` are other files
    the run read (e.g. --scores) that neither may replace."""
    inputs = [dataset.path, *inputs]
    out, path = check_selection_outputs(out, inputs)
    target = check_output(path, inputs, what="report path")
    body = dict(selection.report, ids=selection.ids)
    text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"  # before the subset: a report that cannot
    write_subset(dataset, selection.ids, out, inputs)              # be serialised fails before anything is written
    atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))
    return out, path
