"""Score what a selector needs (through the cache), select, and write the
subset in the input's own record format with its report and its provenance
manifest (cherrybench.manifest) beside it. A given score table must have been
computed for exactly this data (see cherrybench.outputs.check_scores_match);
outputs are checked and written through cherrybench.outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from cherrybench import manifest
from cherrybench.outputs import (SUBSET_SUFFIXES, atomic_write, check_numeric_columns, check_output,
                                 check_scores_match, write_subset)
from cherrybench.records import DataError, Dataset
from cherrybench.scoring import score
from cherrybench.selectors.base import Budget, RankingSelector, Selection, Selector

log = logging.getLogger(__name__)


def scores_for(dataset: Dataset, selector: Selector, ctx, given: pd.DataFrame | None = None,
               checked: bool = False) -> pd.DataFrame:
    """The score table a selector reads: given columns are used as they are (`checked`:
    already matched to the data), the rest of what it requires is scored (cached)."""
    ids = [r.id for r in dataset.records]
    table = pd.DataFrame({"id": ids})
    if given is not None:
        given = given if checked else check_scores_match(given, dataset)
        read = [c for m in selector.requires() for c in m.columns]
        if isinstance(selector, RankingSelector):
            read.append(selector.score_column())
        check_numeric_columns(given, dict.fromkeys(read))  # text in a score column: named, never cast
        table = table.merge(given, on="id", how="left")
    needed = [m for m in selector.requires() if not set(m.columns) <= set(table.columns)]
    if needed:
        scored = score(dataset, needed, ctx)
        table = table.merge(scored[[c for c in scored.columns if c not in table.columns or c == "id"]], on="id")
    return table


def deduplicate(dataset: Dataset, level: str, ctx, embedder: str | None = None) -> tuple[Dataset, dict]:
    """The data without the records that duplicate an earlier one at `level` (exact, near or
    semantic; cherrybench.audit), the first record of each group kept, in input order; and
    the report: the groups, how many were dropped, and the audit summary."""
    from cherrybench.audit import AuditSettings, audit, summary

    result = audit(dataset.records, [], AuditSettings(levels=(), dedup_levels=(level,), embedder=embedder), ctx)
    drop = set(result.duplicates_to_drop(level))
    kept = Dataset([r for r in dataset.records if r.id not in drop], None, dataset.format, dataset.container)
    report = {"level": level, "text": result.settings.dedup_text, "n_input": len(dataset), "n_dropped": len(drop),
              "groups": result.duplicate_groups(level),
              "audit": summary(result, {"duplicates": [r.id for r in dataset.records if r.id in drop]})}
    return kept, report


def run_selection(dataset: Dataset, selector: Selector, budget: Budget, ctx,
                  given: pd.DataFrame | None = None, dedup: str | None = None,
                  embedder: str | None = None) -> tuple[Selection, pd.DataFrame]:
    """Score what the selector needs and select. `dedup` (exact, near, semantic) first drops
    the records that duplicate an earlier one; the report's `dedup` lists the groups."""
    checked, dedup_report, from_table = False, None, []
    if given is not None:
        given, checked = check_scores_match(given, dataset), True  # against the data as read
        from_table = check_given_scores(dataset, selector, ctx, given)
    if dedup:
        dataset, dedup_report = deduplicate(dataset, dedup, ctx, embedder)
        if given is not None:
            given = given[given["id"].isin({r.id for r in dataset.records})]
    table = scores_for(dataset, selector, ctx, given, checked)
    ctx.dataset = dataset  # selectors that read the records themselves (embeddings, fine-tuning) find them here
    selection = selector.select(table, budget, ctx)
    if not isinstance(selection, Selection):  # a plugin's mistake, said in one line
        raise ValueError(f"selector {selector.name!r}: select() must return cherrybench.selectors.Selection(ids, "
                         f"report), not {type(selection).__name__}")
    if len(set(selection.ids)) != len(selection.ids):
        raise RuntimeError(f"selector {selector.name!r} returned duplicate ids")
    unknown = set(selection.ids) - set(table["id"])
    if unknown:
        raise RuntimeError(f"selector {selector.name!r} returned unknown ids {sorted(unknown)[:5]}")
    selection.provenance = selection_provenance(dataset, selector, budget, ctx, given, from_table)  # for the manifest
    if given is not None:
        selection.report["scores"] = given_scores_report(given, from_table)
    if dedup_report is not None:
        selection.report["dedup"] = {k: v for k, v in dedup_report.items() if k != "audit"}
        selection.audit = dedup_report["audit"]  # the manifest's `audit` field
    return selection, table


CHECKED, WITHOUT_PROVENANCE, NOT_CHECKED = "checked", "without_provenance", "not_checked"


def check_given_scores(dataset: Dataset, selector: Selector, ctx, given: pd.DataFrame) -> list[tuple]:
    """The metrics the selector requires whose columns the --scores table `given` (already matched
    to `dataset`, the data as read) supplies, each as (metric, status, its manifest `score_cache`
    entries). Status `checked`: the table's stored key equals this run's; `without_provenance`:
    the table stores none for the metric (hand-made, or written before tables stored keys);
    `not_checked`: the metric's model is not on this machine. A stored key that differs from this
    run's is refused: those scores were computed with other parameters, models or precision than
    the ones this run names (and its report and manifest would record)."""
    stored = given.attrs.get("score_keys")
    source = given.attrs.get("path") or "the score table"
    out = []
    for metric in selector.requires():
        if not set(metric.columns) <= set(given.columns):
            continue  # scored by this run
        if stored is None or metric.name not in stored:
            out.append((metric, WITHOUT_PROVENANCE, [{
                "metric": metric.name, "version": None, "params": None, "key": None, "fingerprints": {},
                "note": "from a score table without provenance: the settings and models it was scored with "
                        "are not known"}]))
            continue
        try:
            key = metric.provenance_key(ctx, dataset.fingerprint)
        except (OSError, ValueError) as exc:  # its model is not on this machine: the table is used as given
            log.warning("--scores %s: cannot check how its %r scores were computed here (%s): used as given",
                        source, metric.name, exc)
            out.append((metric, NOT_CHECKED, [{"metric": metric.name, "version": metric.version,
                                               "params": metric.get_params(), "key": None, "fingerprints": {},
                                               "note": f"not checked: {exc}"}]))
            continue
        if stored[metric.name] != key:
            params = ", ".join(f"{k}={v!r}" for k, v in metric.get_params().items()) or "no parameters"
            raise DataError(f"--scores {source}: its {metric.name!r} scores were computed with other settings or "
                            f"models than this run's ({metric.name} with {params}, --model, --device): its "
                            f"score-cache key is {stored[metric.name][:12]}..., this run's {key[:12]}...; rescore "
                            f"with this run's settings (`cherrybench score --metrics {metric.name} ...`) or pass "
                            "the settings the table was scored with")
        out.append((metric, CHECKED, manifest.score_cache_entries([metric], ctx, dataset.fingerprint)))
    unknown = [m.name for m, status, _ in out if status == WITHOUT_PROVENANCE]
    if unknown:
        log.warning("--scores %s: the columns of %s come from a table without provenance (no score-cache key): "
                    "the settings and models they were scored with are not known", source, ", ".join(unknown))
    return out


def given_scores_report(given: pd.DataFrame, from_table: list[tuple]) -> dict:
    """The selection report's account of a --scores table: which metrics' columns it supplied,
    checked against this run's settings, without provenance, or not checked (their model is not
    on this machine)."""
    report = {"path": given.attrs.get("path"),
              **{status: [m.name for m, s, _ in from_table if s == status]
                 for status in (CHECKED, WITHOUT_PROVENANCE, NOT_CHECKED)}}
    if report[WITHOUT_PROVENANCE]:
        report["note"] = (f"the columns of {', '.join(report[WITHOUT_PROVENANCE])} came from a score table "
                          "without provenance (it stores no score-cache key): the settings and models they "
                          "were scored with are not known")
    return report


def selection_provenance(dataset: Dataset, selector: Selector, budget: Budget, ctx,
                         given: pd.DataFrame | None = None, from_table: list[tuple] = ()) -> dict:
    """What a selection read, for its manifest: the selector, its parameters, budget and
    seed, the score-cache keys of the metrics scored for it, and of those a given table
    supplied (`from_table`, from `check_given_scores`; `source: scores`, `key` None for
    a table without provenance), and the fingerprints of the models and embedders behind them."""
    scored = [m for m in selector.requires() if given is None or not set(m.columns) <= set(given.columns)]
    params = selector.get_params()
    embedders = {}
    if "embedder" in params:  # a selector that embeds records itself (kcenter, deita, mods ...)
        from cherrybench.embedders import resolve_embedder

        embedders[params["embedder"] or "all-MiniLM-L6-v2"] = resolve_embedder(params["embedder"]).fingerprint(ctx)
    cache = manifest.score_cache_entries(scored, ctx, dataset.fingerprint)
    keys = {entry["key"] for entry in cache}
    for _, _, entries in from_table:  # the table's, checked equal to this run's (or unknown: key None)
        for entry in entries:
            if entry["key"] is None or entry["key"] not in keys:
                keys.add(entry["key"])
                cache.append(dict(entry, source="scores"))
    provenance = manifest.selection_provenance(selector.name, params, budget, params.get("seed", ctx.seed),
                                               cache, embedders)
    if given is not None:
        provenance["scores"] = given.attrs.get("path")
    return provenance


def report_path(out: Path) -> Path:
    name = out.name
    for suffix in SUBSET_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.report.json")


def check_selection_outputs(out, inputs) -> tuple[Path, Path]:
    """The subset and report paths, refused (DataError) when either (or the manifest
    beside them) is an input, not a regular file, or `out` has an unsupported suffix;
    run before scoring."""
    out = Path(out)
    check_output(out, inputs, SUBSET_SUFFIXES)
    report = report_path(out)
    check_output(report, inputs, what="report path")
    check_output(manifest.manifest_path(out), inputs, what="manifest path")
    return out, report


def write_selection(dataset: Dataset, selection: Selection, out, inputs=(), command: str | None = None,
                    audit: dict | None = None, protected=()) -> tuple[Path, Path]:
    """Write the subset, NAME.report.json and NAME.manifest.json beside it; `inputs` are
    other files the run read (e.g. --scores) that none may replace, `protected` more such
    files (a rule file, a --target; see `options.input_files`) that the manifest does not
    list. The manifest takes what the selection read from `selection.provenance` (set by
    `run_selection`), the command line (default: this process's, when it is the cherrybench
    command) and the audit summary when one ran."""
    others = [p for p in inputs if p is not None]
    inputs = [dataset.path, *others, *protected]
    out, path = check_selection_outputs(out, inputs)
    target = check_output(path, inputs, what="report path")
    manifest_target = check_output(manifest.manifest_path(out), inputs, what="manifest path")
    body = dict(selection.report, ids=selection.ids)
    text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"  # before the subset: a report that cannot
    write_subset(dataset, selection.ids, out, inputs)              # be serialised fails before anything is written
    atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))
    provenance = getattr(selection, "provenance", None) or manifest.selection_provenance(
        selection.report.get("selector", "?"), selection.report.get("params", {}), selection.report.get("budget"), None)
    scores = provenance.get("scores")
    read = [("scores" if scores is not None and str(p) == str(scores) else "input", Path(p)) for p in others]
    chosen = set(selection.ids)
    written = manifest.Written(out, [r for r in dataset.records if r.id in chosen], out.suffix.lower()[1:], path)
    manifest.write_manifest(manifest_target, manifest.build_manifest(
        written, dataset, provenance, command or manifest.current_command(), audit, read, manifest=manifest_target))
    return out, path
