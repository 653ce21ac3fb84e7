"""The `cherrybench` command: score, select, list plugins, and (from the
runner modules) compare, leaderboard and regress."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from cherrybench.records import DataError
from cherrybench.runners.options import (add_data_arguments, add_model_arguments, load_data, make_context,
                                         plugin_options)

# subcommands that live in their own runner module: (name, module, help)
RUNNER_COMMANDS = [
    ("compare", "cherrybench.runners.compare", "fine-tune and evaluate each selector's subset, log to MLflow"),
    ("leaderboard", "cherrybench.runners.leaderboard", "write leaderboards/NAME.md and .csv from MLflow runs"),
    ("regress", "cherrybench.runners.regress", "InstructMining: fit log(eval loss) on indicators"),
]


def cmd_score(args) -> int:
    from cherrybench.metrics import build_metrics
    from cherrybench.scoring import score, write_scores

    dataset = load_data(args)
    metrics = build_metrics([m.strip() for m in args.metrics.split(",") if m.strip()], plugin_options(args))
    table = score(dataset, metrics, make_context(args), use_cache=not args.no_cache)
    write_scores(table, args.out)
    print(f"wrote {len(table)} rows x {len(table.columns)} columns to {args.out}")
    return 0


def cmd_select(args) -> int:
    from cherrybench.scoring import read_scores
    from cherrybench.runners.select import run_selection, write_selection
    from cherrybench.selectors import SELECTORS, Budget

    dataset = load_data(args)
    options = plugin_options(args)
    options.setdefault("seed", args.seed)
    selector = SELECTORS.get(args.selector).from_options(options)
    given = read_scores(args.scores) if args.scores else None
    selection, _ = run_selection(dataset, selector, Budget.parse(args.budget), make_context(args), given)
    out, report = write_selection(dataset, selection, args.out)
    shown = {k: v for k, v in selection.report.items()}
    print(json.dumps(shown, indent=2, default=str))
    print(f"wrote {len(selection.ids)} records to {out} and the report to {report}")
    return 0


def _describe(cls) -> dict:
    import inspect

    sig = inspect.signature(cls.__init__)
    params = {n: (None if p.default is inspect.Parameter.empty else p.default)
              for n, p in sig.parameters.items() if n != "self"}
    return {"params": params, "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""}


def cmd_metrics(args) -> int:
    from cherrybench.metrics import METRICS

    for name in METRICS.names():
        cls = METRICS.get(name)
        info = _describe(cls)
        aliases = METRICS.aliases_of(name)
        print(f"{name}  columns={list(cls.columns)} needs={list(cls.needs)} params={info['params']}"
              + (f" aliases={aliases}" if aliases else ""))
        if info["doc"]:
            print(f"    {info['doc']}")
    return 0


def cmd_selectors(args) -> int:
    from cherrybench.selectors import SELECTORS

    for name in SELECTORS.names():
        cls = SELECTORS.get(name)
        info = _describe(cls)
        print(f"{name}  params={info['params']}")
        if info["doc"]:
            print(f"    {info['doc']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cherrybench", description=__doc__)
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="load a local plugin file that registers metrics or selectors (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="score records with metrics")
    add_data_arguments(p)
    add_model_arguments(p)
    p.add_argument("--metrics", required=True, help="comma-separated metric names (see `cherrybench metrics`)")
    p.add_argument("--out", required=True, help="output table (.parquet, .csv or .jsonl)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("select", help="select a subset under a budget")
    add_data_arguments(p)
    add_model_arguments(p)
    p.add_argument("--selector", required=True, help="selector name (see `cherrybench selectors`)")
    p.add_argument("--budget", required=True, help="a count (1000) or a fraction (0.05)")
    p.add_argument("--scores", help="a score table to use instead of scoring what it holds")
    p.add_argument("--out", required=True, help="subset file; the report goes beside it as NAME.report.json")
    p.set_defaults(func=cmd_select)

    sub.add_parser("metrics", help="list registered metrics").set_defaults(func=cmd_metrics)
    sub.add_parser("selectors", help="list registered selectors").set_defaults(func=cmd_selectors)

    for name, module_name, help_text in RUNNER_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that runner is not built yet
            raise
        p = sub.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # plugins must load before the parser lists choices
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    from cherrybench.registry import load_plugin_file

    for path in known.plugin:
        load_plugin_file(path)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError, KeyError, ConnectionError) as exc:
        print(f"cherrybench: error: {exc}", file=sys.stderr)
        return 2
