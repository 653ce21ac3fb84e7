"""Fail fast: every setting of a run is checked before any model is loaded,
anything is scored or anything is trained, and a mistake is one line naming the
flag and what is wrong with it (the CLI prints it as `cherrybench: error: ...`
and exits with status 2).

- argparse types for numeric flags (`positive_int`, `max_length`, ...);
- `check_param_keys`: a `--param` key must be taken by a metric or selector
  that this run builds (options shared by every plugin, such as `--model`, are
  not checked: each plugin takes the ones it knows);
- `check_tracking_uri`: the MLflow store's syntax, before anything connects;
- `check_score`, `check_select`, `check_pool` (score and select),
  `check_compare` and `check_regress`: everything else, the sizes against the
  data included. Building a plugin with `from_options` runs its
  `check_params`, so bad parameter values fail here too.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from urllib.parse import urlsplit

# what the CLI reports as a user's mistake (one line, status 2) rather than a traceback:
# DataError, ModelConfigError and UnknownNameError are ValueError and KeyError subclasses;
# OSError covers a missing file, a directory where a file belongs, a refused permission,
# an unreachable tracking store (ConnectionError).
USER_ERRORS = (ValueError, KeyError, OSError)


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


# -- --param keys -----------------------------------------------------------------
def user_params(args) -> dict:
    from cherrybench.runners.options import parse_params

    return parse_params(getattr(args, "param", None))


def check_param_keys(params: dict, classes) -> None:
    """Each `--param` key must be a parameter of at least one of `classes` (the
    metrics and selectors this run builds), else it would be silently ignored."""
    accepted = sorted({name for cls in classes for name in cls.param_names()})
    for key in params:
        if key in accepted:
            continue
        close = difflib.get_close_matches(key, accepted, n=3)
        hint = (f". Did you mean {' or '.join(close)}?" if close
                else f"; they take: {', '.join(accepted)}" if accepted else "; they take no parameters")
        raise ValueError(f"--param {key}: no metric or selector of this run takes it{hint}")


def built_classes(selectors: list[str] = (), metrics: list[str] = (), options: dict | None = None,
                  seed: int | None = None) -> list[type]:
    """Build the named selectors (with the metrics they require) and metrics exactly as
    the run will, so each one's `check_params` runs now; returns their classes."""
    from cherrybench.metrics import METRICS
    from cherrybench.selectors import SELECTORS

    options = dict(options or {})
    classes = []
    for name in selectors:
        selector_options = options if seed is None else dict(options, seed=seed)
        selector = SELECTORS.get(name).from_options(selector_options)
        classes.append(type(selector))
        for metric in selector.requires():
            metric.check_params()
            classes.append(type(metric))
    for name in metrics:
        metric = METRICS.get(name).from_options(options)
        classes.append(type(metric))
    return classes


# -- the MLflow tracking URI --------------------------------------------------------
TRACKING_FORMS = ("sqlite:///PATH", "http(s)://HOST[:PORT][/PATH]", "databricks[://PROFILE]",
                  "postgresql://, mysql:// or mssql:// database URLs",
                  "file:///PATH, file:PATH or a local directory (absolute, ./ or ../; "
                  "MLflow 3 needs MLFLOW_ALLOW_FILE_STORE=true for these)")
_DB_SCHEMES = ("postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str, where: str = "--tracking-uri") -> str:
    """`uri` when its syntax is one MLflow can use; else a ValueError listing the accepted forms.
    Nothing connects here (`tracking.check_tracking` does, right after)."""
    problem = _tracking_problem(uri)
    if problem:
        raise ValueError(f"{where} {uri!r}: {problem}; accepted: {'; '.join(TRACKING_FORMS)}")
    return uri


def _tracking_problem(uri: str) -> str | None:
    if not uri or not uri.strip():
        return "empty"
    if uri != uri.strip():
        return "leading or trailing spaces"
    if uri in ("databricks", "databricks-uc"):
        return None
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if scheme_match is None or re.match(r"^[A-Za-z]:[\\/]", uri):  # a plain path (C:\ on Windows)
        if uri.startswith(("/", "./", "../", "~")) or re.match(r"^[A-Za-z]:[\\/]", uri) or not re.search(r"\s", uri):
            return _file_store_problem()
        return "not a URI, and a relative path with spaces (write it as ./PATH if you mean a directory)"
    scheme = scheme_match.group(1).lower()
    rest = uri[len(scheme) + 1:]
    base = scheme.split("+", 1)[0]
    if scheme == "sqlite":
        if not rest.startswith("///") or not rest[3:]:
            return "a SQLite store is sqlite:/// followed by the database file's path"
        return None
    if scheme == "file":
        return _file_store_problem() if rest.strip("/") else "a file store needs a path"
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        if not parts.hostname or re.search(r"\s", uri):
            return f"an {scheme} store is {scheme}://HOST[:PORT][/PATH]"
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
        except ValueError:
            return f"the port of {parts.netloc!r} is not a number in 1..65535"
        return None
    if scheme in ("databricks", "databricks-uc"):
        return None if rest.startswith("//") and rest[2:] else "use databricks or databricks://PROFILE"
    if base in _DB_SCHEMES:
        if not rest.startswith("//") or not rest[2:].strip("/"):
            return f"a database store is {base}://USER:PASSWORD@HOST[:PORT]/DATABASE"
        return None
    return f"unknown scheme {scheme!r}"


def _file_store_problem() -> str | None:
    """MLflow 3 refuses a directory (file) store unless MLFLOW_ALLOW_FILE_STORE is set."""
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow without that switch accepts file stores
        return None
    if MLFLOW_ALLOW_FILE_STORE.get():
        return None
    return ("a directory (file) store, which this MLflow refuses unless MLFLOW_ALLOW_FILE_STORE=true; "
            "use sqlite:///PATH instead")


def _check_tracking(args) -> None:
    from cherrybench.runners.tracking import tracking_uri

    if getattr(args, "tracking_uri", None) is not None:
        check_tracking_uri(args.tracking_uri)
    else:
        check_tracking_uri(tracking_uri(None), "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI")
                           else "the default tracking URI")


# -- score and select ---------------------------------------------------------------
def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def check_score(args) -> None:
    from cherrybench.runners.options import plugin_options

    names = _names(args.metrics)
    if not names:
        raise ValueError("--metrics: give at least one metric name (see `cherrybench metrics`)")
    check_param_keys(user_params(args), built_classes(metrics=names, options=plugin_options(args)))


def check_select(args) -> None:
    from cherrybench.runners.options import plugin_options
    from cherrybench.selectors import Budget

    Budget.parse(args.budget)
    classes = built_classes(selectors=[args.selector], options=plugin_options(args), seed=args.seed)
    check_param_keys(user_params(args), classes)


def check_pool(args, n_records: int, where: str) -> None:
    """Once the pool is known (`load_data`): a budget must keep at least one of its records."""
    from cherrybench.selectors import Budget

    if getattr(args, "budget", None) is not None:
        Budget.parse(args.budget).check(n_records, f"records in {where}")


COMMAND_CHECKS = {"score": check_score, "select": check_select}


def check_command(args) -> None:
    """The checks of `score` and `select`, run by the CLI before the command
    (`compare` and `regress` call theirs from `run`, so both entry points check)."""
    check = COMMAND_CHECKS.get(getattr(args, "command", None))
    if check is not None:
        check(args)


# -- compare ----------------------------------------------------------------------------
def _at_least(args, flag: str, low: int) -> None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{flag} must be an integer >= {low}, got {value!r}")


def resolve_seeds(args) -> list[int]:
    """compare's seeds: `--seed` (repeatable) or `--seeds N` (0..N-1), default [0]."""
    seeds = list(args.seed or [])
    count = getattr(args, "seeds", None)
    if count is not None:
        if seeds:
            raise ValueError("give --seed (repeatable) or --seeds N, not both")
        if count < 1:
            raise ValueError(f"--seeds must be at least 1, got {count}")
        seeds = list(range(count))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seed {repeated[0]} is given more than once")
    return seeds or [0]


def check_compare(args) -> None:
    """Every setting of `compare`, sizes against the data included; resolves
    `args.seed` (the list of seeds) and `args.pool_size` (a number) for the run."""
    from cherrybench.eval_sets import load_eval_set
    from cherrybench.metrics import METRICS
    from cherrybench.runners.options import plugin_options
    from cherrybench.selectors import SELECTORS, Budget

    budget = Budget.parse(args.budget)
    for flag, low in (("--pool-size", 1), ("--eval-size", 0), ("--eval-limit", 0), ("--gen-size", 0),
                      ("--max-new-tokens", 1)):
        _at_least(args, flag, low)
    args.seed = resolve_seeds(args)
    if not args.experiment or not args.experiment.strip():
        raise ValueError("--experiment: give the MLflow experiment a name")
    _check_tracking(args)

    names = _names(args.selectors)
    if not names and args.no_baselines:
        raise ValueError("--selectors: nothing to compare (no selectors and --no-baselines)")
    from cherrybench.runners.compare import BASELINES, QUALITY_METRICS

    everything = names + ([] if args.no_baselines else [b for b in BASELINES if b not in names])
    for name in everything:
        if name != "full":
            SELECTORS.resolve(name)  # unknown names: did-you-mean
    options = plugin_options(args)
    quality = [m for m in QUALITY_METRICS if _registered(METRICS, m)][:1]  # the one compare scores answers with
    classes = built_classes(selectors=[n for n in everything if n != "full"],
                            metrics=quality if args.gen_size > 0 else [], options=options, seed=args.seed[0])
    check_param_keys(user_params(args), classes)

    for spec in args.eval:
        load_eval_set(spec)  # a missing or malformed eval file fails now
    if args.eval_size == 0 and not args.eval:
        raise ValueError("no eval set: give --eval or a positive --eval-size")

    if args.data:
        from cherrybench.records import load_dataset

        n = len(load_dataset(args.data, args.format))
        if args.eval_size >= n:
            raise ValueError(f"--data {args.data}: {n} records cannot hold --eval-size {args.eval_size} held-out "
                             "records plus a pool; lower --eval-size")
        room = n - args.eval_size
        if args.pool_size is None:
            args.pool_size = room
        elif args.pool_size > room:
            raise ValueError(f"--data {args.data}: {n} records minus --eval-size {args.eval_size} held-out leave "
                             f"{room} for the pool, not --pool-size {args.pool_size}; lower --pool-size or --eval-size")
    elif args.pool_size is None:
        args.pool_size = 200  # records of the embedded ShareGPT sample
    k = budget.check(args.pool_size, "pool records")
    if k >= args.pool_size and everything != ["full"]:
        raise ValueError(f"--budget {budget} keeps all {args.pool_size} pool records: every selector would train "
                         "on the whole pool, like the full baseline; give a smaller --budget")


def _registered(registry, name: str) -> bool:
    try:
        registry.resolve(name)
        return True
    except KeyError:
        return False


# -- regress ----------------------------------------------------------------------------
def check_regress(args) -> None:
    """Every setting of `regress`, the pool's size against the subsets included."""
    from cherrybench.regress.indicators import INDICATORS, parse_indicators, spec_for
    from cherrybench.records import load_dataset
    from cherrybench.metrics import METRICS
    from cherrybench.runners.options import plugin_options

    names = parse_indicators(args.indicators)
    for flag, low in (("--subsets", 1), ("--subset-size", 1), ("--per-source", 0), ("--eval-limit", 0)):
        _at_least(args, flag, low)
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be in (0, 1), got {args.alpha!r}")
    if args.subsets < len(names) + 2:
        raise ValueError(f"--subsets {args.subsets}: the fit needs at least indicators + 2 = {len(names) + 2} "
                         f"subsets for the {len(names)} indicators ({', '.join(names)}); raise --subsets or name "
                         "fewer --indicators")
    _check_tracking(args)
    options = plugin_options(args)
    for name in names:
        spec_for(name, options)  # builds the indicator's metric: its check_params runs
    check_param_keys(user_params(args), [METRICS.get(INDICATORS[n].metric) for n in names])

    total = 0
    for path in args.data:
        n = len(load_dataset(path, args.format))
        total += min(n, args.per_source) if args.per_source else n
    if args.subset_size >= total:
        raise ValueError(f"--subset-size {args.subset_size}: the pool has {total} records (--data"
                         f"{', --per-source ' + str(args.per_source) if args.per_source else ''}), so every subset "
                         "would be the same records; lower --subset-size")
    if "knn6" in names and total <= 6:
        raise ValueError(f"indicator knn6 needs a pool of more than 6 records, the pool has {total}")
    from cherrybench.runners.regress import load_eval_records

    load_eval_records(args.eval, args.eval_limit, args.seed)  # missing files or reference answers fail now
