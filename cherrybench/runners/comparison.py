"""What a comparison is, and how its data is loaded and audited: what every trial shares
(`Comparison`: the pool, the eval sets, the training settings, the budgets), the published
subsets trained as if a selector had chosen them (`PublishedSubset`), what one trial is
(`Trial`), and the pool audit that drops contaminated and duplicate records before anything
is scored. All of it is settled before the first trial starts and none of it trains,
evaluates or keys a trial, so `trial_steps` and `compare` both build on it and it imports
neither of them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cherrybench.eval_sets import EvalSet, load_eval_set
from cherrybench.finetune import TrainConfig
from cherrybench.records import Dataset, Record
from cherrybench.runners import tracking
from cherrybench.runners.options import train_config_from_args


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
