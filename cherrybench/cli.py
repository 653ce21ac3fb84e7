"""The `cherrybench` command: score, select, list plugins, and (from the
runner modules) compare, leaderboard and regress."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import signal
import sys
import threading
from contextlib import contextmanager

from cherrybench.runners.checks import USER_ERRORS, check_command
from cherrybench.runners.options import (add_common_arguments, add_data_arguments, add_model_arguments, input_files,
                                         load_data, make_context, plugin_options)

# subcommands that live in their own runner module: (name, module, help)
RUNNER_COMMANDS = [
    ("compare", "cherrybench.runners.compare", "fine-tune and evaluate each selector's subset, log to MLflow"),
    ("leaderboard", "cherrybench.runners.leaderboard", "write leaderboards/NAME.md and .csv from MLflow runs"),
    ("regress", "cherrybench.runners.regress", "InstructMining: fit log(eval loss) on indicators"),
    ("agreement", "cherrybench.runners.agreement", "rank correlations and selection overlaps between scorers"),
    ("audit", "cherrybench.runners.audit", "find pool records that repeat an eval record or each other"),
    ("verify", "cherrybench.runners.verify", "recheck a subset's NAME.manifest.json: say which files and records changed"),
]


def cmd_score(args) -> int:
    from cherrybench.metrics import build_metrics
    from cherrybench.outputs import SCORE_SUFFIXES, check_output, write_scores
    from cherrybench.scoring import score

    inputs = input_files(args)  # --data, and any rule file, target or model the options name
    check_output(args.out, inputs, SCORE_SUFFIXES)  # fail before scoring, not after
    dataset = load_data(args)
    metrics = build_metrics([m.strip() for m in args.metrics.split(",") if m.strip()], plugin_options(args))
    ctx = make_context(args)
    table = score(dataset, metrics, ctx, use_cache=not args.no_cache)
    keys = {m.name: m.provenance_key(ctx, dataset.fingerprint) for m in metrics}  # `select --scores` checks them
    write_scores(table, args.out, dataset, inputs, score_keys=keys)
    print(f"wrote {len(table)} rows x {len(table.columns)} columns to {args.out}")
    return 0


def cmd_select(args) -> int:
    from cherrybench.outputs import read_scores
    from cherrybench.runners.select import check_selection_outputs, run_selection, write_selection
    from cherrybench.selectors import SELECTORS, Budget

    inputs = input_files(args)  # --data, --scores, and any rule file, target or model the options name
    check_selection_outputs(args.out, inputs)  # fail before scoring, not after
    dataset = load_data(args)
    options = plugin_options(args)
    options.setdefault("seed", args.seed)
    selector = SELECTORS.get(args.selector).from_options(options)
    given = read_scores(args.scores) if args.scores else None
    selection, _ = run_selection(dataset, selector, Budget.parse(args.budget), make_context(args), given,
                                 dedup=None if args.dedup == "off" else args.dedup, embedder=args.embedder)
    out, report = write_selection(dataset, selection, args.out, [args.scores] if args.scores else [],
                                  command=args.command_line, audit=getattr(selection, "audit", None),
                                  protected=inputs)
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


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line and status 2, like every other user error."""

    def error(self, message: str):
        self.exit(2, f"cherrybench: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cherrybench", description=__doc__,
                     epilog="--plugin runs the given file's Python code: only load files you trust.")
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, help_text: str, func):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(p, suppress=True)  # also accepted after the subcommand's name
        p.set_defaults(func=func)
        return p

    p = add_command("score", "score records with metrics", cmd_score)
    add_data_arguments(p)
    add_model_arguments(p)
    p.add_argument("--metrics", required=True, help="comma-separated metric names (see `cherrybench metrics`)")
    p.add_argument("--out", required=True, help="output table (.parquet, .csv, .jsonl or .json)")

    p = add_command("select", "select a subset under a budget", cmd_select)
    add_data_arguments(p)
    add_model_arguments(p)
    p.add_argument("--selector", required=True, help="selector name (see `cherrybench selectors`)")
    p.add_argument("--budget", required=True, help="a count (1000) or a fraction (0.05)")
    p.add_argument("--scores", help="a score table to use instead of scoring what it holds")
    p.add_argument("--dedup", choices=["exact", "near", "semantic", "off"], default="off",
                   help="first drop records that duplicate an earlier one at this level, keeping the first of each "
                        "group in input order (see `cherrybench audit`; default off)")
    p.add_argument("--out", required=True, help="subset file; the report goes beside it as NAME.report.json")

    add_command("metrics", "list registered metrics", cmd_metrics)
    add_command("selectors", "list registered selectors", cmd_selectors)

    for name, module_name, help_text in RUNNER_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that runner is not built yet
            raise
        module.add_arguments(add_command(name, help_text, module.run))
    return parser


def load_plugins(paths: list[str]) -> None:
    """Import each --plugin file (this runs its code); any failure is one line naming the file."""
    from cherrybench.registry import load_plugin_file

    for path in paths:
        try:
            load_plugin_file(path)
        except Exception as exc:  # the plugin's own code failed: name the file and the error, not a traceback
            if isinstance(exc, USER_ERRORS) and str(exc).startswith("--plugin"):
                raise  # missing or not a Python file: already says so
            raise ValueError(f"--plugin {path}: failed to load ({type(exc).__name__}: {_one_line(exc)})") from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1 and type(exc) is KeyError:
        text = str(exc.args[0])
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


@contextmanager
def interrupt_on_sigterm():
    """SIGTERM (a scheduler's or `kill`'s stop) acts like Ctrl-C: runs end as KILLED and the
    atomic stores keep what is finished, instead of the process vanishing mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # parse first: no plugin code runs before the arguments are known to be valid (names such
        # as --selector are free strings, resolved after the plugins load)
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else 2
    args.plugin = [*args.plugin, *getattr(args, "plugin_after", [])]
    args.command_line = "cherrybench " + " ".join(shlex.quote(a) for a in argv)  # recorded with results
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # one bar per stage and cherrybench's own messages; -v: every library's logs and bars
        from cherrybench.quiet import quiet_libraries

        quiet_libraries()
    try:
        with interrupt_on_sigterm():
            load_plugins(args.plugin)
            check_command(args)  # score and select; compare and regress check in their run()
            return args.func(args)
    except USER_ERRORS as exc:
        print(f"cherrybench: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cherrybench: interrupted; finished work is kept: run the same command again to resume",
              file=sys.stderr)
        return 130
