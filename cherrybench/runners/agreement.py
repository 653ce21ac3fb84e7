"""`cherrybench agreement`: do the metrics agree, and does a weak scorer pick
what a strong one would? Scores what is asked (through the cache), then writes
to `--out DIR`:

- `correlations.csv`: Spearman and Kendall between every pair of score columns,
  NaN rows excluded pairwise (`n`, `n_excluded`), p-values; `spearman.png`,
  `kendall.png` heatmaps;
- `overlap.csv`, `overlap.png`: Jaccard of the subsets picked at `--budget`: by
  each column that has a direction (its top records, ties by id) and by each
  `--selectors` selector (`NAME (selector)`);
- `weak_vs_strong.csv` (with `--model-b` or `--scores-b`): each column from
  scorer A against the same column from B: correlations, top-k overlap,
  enrichment, hypergeometric p-value (`cherrybench.agreement`);
- `scores.parquet` (and `scores_b.parquet`): the scores compared, with record
  hashes, reusable as `--scores`; `agreement.md`: every table in one page.

The statistics live in `cherrybench.agreement`; `compare` logs the same tables
to its parent run through `agreement_files`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cherrybench import agreement as stats
from cherrybench.runners.options import add_data_arguments, add_model_arguments

DIRECTIONS = ("higher", "lower")
OUTPUT_NAMES = ("correlations.csv", "overlap.csv", "weak_vs_strong.csv", "agreement.md", "spearman.png", "kendall.png",
                "overlap.png", "scores.parquet", "scores_b.parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_model_arguments(parser)
    group = parser.add_argument_group("agreement")
    group.add_argument("--metrics", help="comma-separated metrics or columns to score and compare (a metric "
                                         "name alone: all its columns; see `cherrybench metrics`)")
    group.add_argument("--scores", action="append", default=[], metavar="FILE",
                       help="a score table of this data whose numeric columns join the comparison (repeatable)")
    group.add_argument("--selectors", help="comma-separated selectors whose subsets at --budget are compared too")
    group.add_argument("--budget", default="0.1", help="subset size for the overlaps: a count or a fraction "
                                                       "(default 0.1)")
    group.add_argument("--direction", action="append", default=[], metavar="COLUMN=higher|lower",
                       help="which way is better for a column that declares none (ppl, cas, das) or comes from "
                            "a file (repeatable); without one a column joins the correlations only")
    group.add_argument("--model-b", help="weak vs strong: score the same --metrics with this model (or judge) "
                                         "too and compare each column with --model's")
    group.add_argument("--scores-b", metavar="FILE", help="weak vs strong: scorer B's score table of this data")
    group.add_argument("--out", required=True, help="directory for the tables and heatmaps (created)")


# -- checks (before anything is loaded or scored) ---------------------------------------
def parse_directions(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        column, sep, way = pair.partition("=")
        if not sep or not column.strip() or way.strip() not in DIRECTIONS:
            raise ValueError(f"--direction expects COLUMN=higher or COLUMN=lower, got {pair!r}")
        out[column.strip()] = way.strip()
    return out


def check_agreement(args) -> None:
    from cherrybench.runners.checks import built_classes, check_param_keys, split_names, user_params
    from cherrybench.runners.options import input_files, plugin_options
    from cherrybench.selectors import Budget

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a directory for the agreement tables")
    inputs = [Path(p).resolve() for p in [args.data, *args.scores, args.scores_b, *input_files(args)] if p]
    for name in OUTPUT_NAMES:  # what this run writes into --out never replaces what it reads
        if (out / name).resolve() in inputs:
            raise ValueError(f"--out {out}: would overwrite the input {out / name}; write to another directory")
    Budget.parse(args.budget)
    parse_directions(args.direction)
    metrics, selectors = split_names(args.metrics), split_names(args.selectors)
    if not metrics and not args.scores:
        raise ValueError("--metrics or --scores: give the scores to compare")
    if args.model_b and args.scores_b:
        raise ValueError("give --model-b (score B now) or --scores-b (B's score table), not both")
    if args.model_b and not metrics:
        raise ValueError("--model-b scores the --metrics with a second model: give --metrics")
    options = dict(plugin_options(args), seed=args.seed)
    check_param_keys(user_params(args), built_classes(selectors=selectors, metrics=metrics, options=options))


# -- which columns, which way is better --------------------------------------------------
def metric_columns(name: str) -> list[str]:
    """The columns a --metrics name stands for: itself when it is a column of its metric, else all of them."""
    from cherrybench.metrics import METRICS

    cls = METRICS.get(name)
    return [name] if name in cls.columns else list(cls.columns)


def declared_direction(column: str, given: dict[str, str]) -> str | None:
    """'higher' or 'lower' from --direction, else from the metric that outputs the column; None if neither."""
    from cherrybench.metrics import METRICS
    from cherrybench.registry import UnknownNameError

    if column in given:
        return given[column]
    try:
        cls = METRICS.get(column)
    except UnknownNameError:
        return None
    way = cls.columns.get(column)
    return way if way in DIRECTIONS else None


def numeric_columns(table: pd.DataFrame) -> list[str]:
    skip = {"id"}
    return [c for c in table.columns if c not in skip and not c.startswith("_") and not c.endswith("_reason")
            and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]


def read_matching(path: str, dataset) -> pd.DataFrame:
    """A --scores table checked against the data; a metric's column in it must hold numbers."""
    from cherrybench.metrics import METRICS
    from cherrybench.outputs import check_numeric_columns, check_scores_match, read_scores
    from cherrybench.registry import UnknownNameError

    table = check_scores_match(read_scores(path), dataset).reset_index(drop=True)
    declared = []
    for column in table.columns:
        try:
            if isinstance(column, str) and column in METRICS.get(column).columns:
                declared.append(column)
        except UnknownNameError:
            pass  # not a metric's column: compared when numeric (numeric_columns)
    check_numeric_columns(table, declared)
    return table


def score_table(dataset, metric_names: list[str], files: list[str], options: dict, ctx,
                use_cache: bool) -> tuple[pd.DataFrame, list[str]]:
    """The table to compare (id + score columns, input order) and its columns:
    the --metrics columns first (a column a file already has is not rescored), then the files'."""
    from cherrybench.metrics import build_metrics
    from cherrybench.scoring import score

    table = pd.DataFrame({"id": [r.id for r in dataset.records]})
    from_files: list[str] = []
    owner: dict[str, str] = {}
    for path in files:
        given = read_matching(path, dataset)
        for column in numeric_columns(given):
            if column in owner:
                raise ValueError(f"--scores {path}: column {column!r} is also in --scores {owner[column]}; "
                                 "compare it from one file")
            owner[column] = path
            from_files.append(column)
        keep = [c for c in given.columns if c != "id" and (c in owner and owner[c] == path or c.endswith("_reason"))
                and c not in table.columns]
        table = table.merge(given[["id", *keep]], on="id", how="left")
    wanted = [c for name in metric_names for c in metric_columns(name)]
    todo = [n for n in metric_names if not set(metric_columns(n)) <= set(from_files)]
    if todo:
        scored = score(dataset, build_metrics(todo, options), ctx, use_cache=use_cache)
        new = [c for c in scored.columns if c != "id" and c not in table.columns]
        table = table.merge(scored[["id", *new]], on="id", how="left")
    for column in wanted:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    columns = list(dict.fromkeys(wanted + from_files))
    return table, columns


def scores_b(dataset, metric_names: list[str], args, options: dict, ctx, use_cache: bool) -> tuple[pd.DataFrame, str]:
    """Scorer B's table: the same metrics with `--model-b` as model and judge, or `--scores-b`."""
    from cherrybench.metrics import METRICS
    from cherrybench.scoring import score

    if args.scores_b:
        return read_matching(args.scores_b, dataset), args.scores_b
    metrics = []
    for name in dict.fromkeys(metric_names):
        cls = METRICS.get(name)
        takes = [p for p in ("model", "judge") if p in cls.param_names()]
        if not takes:
            print(f"agreement: metric {cls.name!r} uses no model: not scored by --model-b", file=sys.stderr)
            continue
        metrics.append(cls.from_options({**options, **{p: args.model_b for p in takes}}))
    table = score(dataset, metrics, ctx, use_cache=use_cache) if metrics else \
        pd.DataFrame({"id": [r.id for r in dataset.records]})
    return table, args.model_b


# -- the tables and figures ----------------------------------------------------------------
def selections_at(table: pd.DataFrame, columns: list[str], directions: dict[str, str | None], k: int) -> dict:
    """Each column's top k (in its direction, ties by id); columns without a direction are left out."""
    return {c: stats.top_ids(table["id"], table[c], k, directions[c] == "higher")
            for c in columns if directions.get(c)}


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "NaN" if value != value else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows]) if rows else "(none)"


def agreement_files(table: pd.DataFrame, columns: list[str], selections: dict[str, list], out: Path,
                    weak: pd.DataFrame | None = None, header: str = "") -> list[Path]:
    """Write the agreement tables (CSV + one markdown page) and heatmaps into `out`; returns the paths."""
    from cherrybench.outputs import atomic_write
    from cherrybench.runners import plots

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def csv(frame: pd.DataFrame, name: str) -> None:
        text = frame.to_csv(index=False).encode("utf-8")
        written.append(atomic_write(out / name, lambda handle: handle.write(text)))

    pairs = stats.pair_correlations(table, columns)
    csv(pairs, "correlations.csv")
    sections = [f"# Scorer agreement\n\n{header}".rstrip() + "\n",
                f"## Rank correlations ({len(table)} records; NaN rows excluded pairwise)\n",
                markdown_table(pairs) + "\n"]
    if len(columns) >= 2:
        for stat in ("spearman", "kendall"):
            matrix = stats.correlation_matrix(pairs, columns, stat)
            written.append(plots.matrix_heatmap(matrix, f"{stat.capitalize()} rank correlation",
                                                out / f"{stat}.png"))
    if len(selections) >= 2:
        overlap = stats.overlap_table(selections)
        csv(overlap, "overlap.csv")
        written.append(plots.matrix_heatmap(stats.overlap_matrix(selections), "selection overlap (Jaccard)",
                                            out / "overlap.png", vmin=0.0, vmax=1.0, cmap="viridis"))
        sections += ["## Selection overlap (Jaccard)\n", markdown_table(overlap) + "\n"]
    if weak is not None:
        csv(weak, "weak_vs_strong.csv")
        sections += ["## Weak vs strong scorer\n", markdown_table(weak) + "\n"]
    text = "\n".join(sections).encode("utf-8")
    written.append(atomic_write(out / "agreement.md", lambda handle: handle.write(text)))
    return written


def weak_vs_strong_table(table_a: pd.DataFrame, table_b: pd.DataFrame, columns: list[str],
                         directions: dict, budget: float, label_a: str, label_b: str) -> pd.DataFrame:
    rows = []
    for column in columns:
        if column not in table_b.columns:
            continue
        way = directions.get(column)
        row = stats.weak_vs_strong(table_a["id"], table_a[column], table_b[column], budget, way == "higher")
        if way is None:
            row.update({k: float("nan") for k in ("top_k_overlap", "top_k_jaccard", "enrichment", "overlap_p")},
                       top_k_common=None, note=(row["note"] + "; " if row["note"] else "") +
                       f"no direction: give --direction {column}=higher|lower for the top-k figures")
        rows.append({"column": column, "a": label_a, "b": label_b, **row})
    if not rows:
        raise ValueError(f"weak vs strong: scorer B ({label_b}) has none of the columns {columns}")
    return pd.DataFrame(rows)


def run(args) -> int:
    from cherrybench.outputs import write_scores
    from cherrybench.runners.checks import split_names
    from cherrybench.runners.options import load_data, make_context, plugin_options
    from cherrybench.runners.select import run_selection
    from cherrybench.selectors import SELECTORS, Budget

    check_agreement(args)
    dataset = load_data(args)
    ctx = make_context(args)
    options = plugin_options(args)
    use_cache = not args.no_cache
    metric_names = split_names(args.metrics)
    table, columns = score_table(dataset, metric_names, args.scores, options, ctx, use_cache)
    given = parse_directions(args.direction)
    unknown = sorted(set(given) - set(columns))
    if unknown:
        raise ValueError(f"--direction {unknown[0]}: not a compared column ({', '.join(columns)})")
    directions = {c: declared_direction(c, given) for c in columns}
    budget = Budget.parse(args.budget)
    k = budget.check(len(dataset), f"records in {args.data or 'the default data sample'}")
    weak = None
    if args.model_b or args.scores_b:
        table_b, label_b = scores_b(dataset, metric_names, args, options, ctx, use_cache)
        weak = weak_vs_strong_table(table, table_b, columns, directions, budget.value, args.model or "smollm2-135m",
                                    label_b)
    elif len(columns) < 2:
        raise ValueError(f"only one score column ({columns[0]}): give more --metrics or --scores, "
                         "or --model-b / --scores-b to compare two scorers")
    selections = selections_at(table, columns, directions, k)
    for name in split_names(args.selectors):
        selector = SELECTORS.get(name).from_options(dict(options, seed=args.seed))
        selection, _ = run_selection(dataset, selector, budget, ctx)
        selections[f"{name} (selector)"] = selection.ids
    out = Path(args.out)
    header = (f"Data: {args.data or 'the default ShareGPT sample'}, {len(dataset)} records; budget {budget} "
              f"({k} records). Columns without a direction ({', '.join(c for c in columns if not directions[c]) or 'none'}) "
              "join the correlations only.")
    written = agreement_files(table, columns, selections, out, weak, header)
    write_scores(table, out / "scores.parquet", dataset)
    if args.model_b:
        write_scores(table_b, out / "scores_b.parquet", dataset)
    print((out / "agreement.md").read_text())
    print(f"wrote {', '.join(p.name for p in written)} and scores.parquet to {out}")
    return 0


def comparison_agreement(pool, names: list[str], options: dict, ctx, selections: dict[str, list], out: Path,
                         seed: int = 0) -> list[Path]:
    """What `compare` logs to its parent run (artifacts `agreement/`): the rank correlations
    between the columns its ranking selectors rank by (one column per selector, named after
    it; scores come from the cache, as the trials left them) and the Jaccard overlap of
    every trial's subset."""
    from cherrybench.registry import UnknownNameError
    from cherrybench.runners.select import scores_for
    from cherrybench.selectors import SELECTORS
    from cherrybench.selectors.base import RankingSelector

    table = pd.DataFrame({"id": [r.id for r in pool.records]})
    columns = []
    for name in names:
        try:
            selector = SELECTORS.get(name).from_options(dict(options, seed=seed))
        except UnknownNameError:  # `full`, a published subset
            continue
        if not isinstance(selector, RankingSelector):
            continue
        scored = scores_for(pool, selector, ctx)
        table[name] = pd.to_numeric(scored[selector.score_column()], errors="coerce").to_numpy()
        columns.append(name)
    header = (f"Pool: {len(pool)} records. Columns: the score each ranking selector ranks by "
              f"({', '.join(f'{n}' for n in columns) or 'none'}); overlaps: every trial's subset.")
    return agreement_files(table, columns, selections, out, header=header)
