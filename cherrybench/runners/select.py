"""Score what a selector needs (through the cache), select, and write the
subset in the input's own format with its report beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cherrybench.records import Dataset, write_subset
from cherrybench.scoring import score
from cherrybench.selectors.base import Budget, Selection, Selector


def scores_for(dataset: Dataset, selector: Selector, ctx, given: pd.DataFrame | None = None) -> pd.DataFrame:
    """The score table a selector reads: given columns are used as they are,
    the rest of what it requires is scored (cached)."""
    ids = [r.id for r in dataset.records]
    table = pd.DataFrame({"id": ids})
    if given is not None:
        unknown = set(given["id"]) - set(ids)
        missing = set(ids) - set(given["id"])
        if unknown or missing:
            raise ValueError(f"the score table does not match the data: {len(missing)} ids missing "
                             f"(e.g. {sorted(missing)[:3]}), {len(unknown)} unknown (e.g. {sorted(unknown)[:3]})")
        table = table.merge(given, on="id", how="left")
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
    for suffix in (".jsonl", ".json", ".parquet"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return out.with_name(f"{name}.report.json")


def write_selection(dataset: Dataset, selection: Selection, out) -> tuple[Path, Path]:
    out = Path(out)
    write_subset(dataset, selection.ids, out)
    path = report_path(out)
    body = dict(selection.report, ids=selection.ids)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return out, path
