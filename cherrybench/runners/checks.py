"""Fail fast: every setting of a run is checked before any model is loaded,
anything is scored or anything is trained, and a mistake is one line naming the
flag and what is wrong with it (the CLI prints it as `cherrybench: error: ...`
and exits with status 2).

- `check_param_keys`: a `--param` key must be taken by a metric or selector
  that this run builds (options shared by every plugin, such as `--model`, are
  not checked: each plugin takes the ones it knows);
- `check_tracking_uri`: the MLflow store's syntax, before anything connects;
- `check_score`, `check_select` (score and select; `compare.check_compare` and
  `regress.check_regress` use the helpers here): everything else, the sizes against the
  data included. Building a plugin with `from_options` runs its
  `check_params`, so bad parameter values fail here too.
"""

from __future__ import annotations

import difflib
import os
import re
from urllib.parse import urlsplit

from cherrybench.registry import UnknownNameError

# what the CLI reports as a user's mistake (one line, status 2) rather than a traceback:
# DataError and ModelConfigError are ValueErrors, an unknown plugin name an UnknownNameError;
# OSError covers a missing file, a directory where a file belongs, a refused permission,
# an unreachable tracking store (ConnectionError). Any other KeyError is a bug: it keeps its traceback.
USER_ERRORS = (ValueError, UnknownNameError, OSError)


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


def check_tracking_flag(args) -> None:
    from cherrybench.runners.tracking import tracking_uri

    if getattr(args, "tracking_uri", None) is not None:
        check_tracking_uri(args.tracking_uri)
    else:
        check_tracking_uri(tracking_uri(None), "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI")
                           else "the default tracking URI")


# -- score and select ---------------------------------------------------------------
def split_names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def check_score(args) -> None:
    from cherrybench.runners.options import plugin_options

    names = split_names(args.metrics)
    if not names:
        raise ValueError("--metrics: give at least one metric name (see `cherrybench metrics`)")
    check_param_keys(user_params(args), built_classes(metrics=names, options=plugin_options(args)))


def check_select(args) -> None:
    from cherrybench.runners.options import plugin_options
    from cherrybench.selectors import Budget

    Budget.parse(args.budget)
    options = plugin_options(args)
    options.setdefault("seed", args.seed)  # as cmd_select: a --param seed wins
    classes = built_classes(selectors=[args.selector], options=options)
    check_param_keys(user_params(args), classes)


COMMAND_CHECKS = {"score": check_score, "select": check_select}


def check_command(args) -> None:
    """The checks of `score` and `select`, run by the CLI before the command
    (`compare` and `regress` call theirs from `run`, so both entry points check)."""
    check = COMMAND_CHECKS.get(getattr(args, "command", None))
    if check is not None:
        check(args)


# -- compare ----------------------------------------------------------------------------
def at_least(args, flag: str, low: int) -> None:
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
