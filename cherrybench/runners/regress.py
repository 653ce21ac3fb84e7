"""`cherrybench regress`: InstructMining's experiment. Draw seeded training
subsets from one or several data files, fine-tune the same model on each with
the common runner, measure eval loss, average each subset's indicators, and
fit log(eval loss) ~ indicators with OLS; write the rule file.

Each subset is a nested MLflow run; the fit summary, the rule, the per-subset
table and a predicted-vs-actual plot are artifacts of the parent run. Subset
results are cached on disk by content (training settings, the subset's
records, the eval set), so an interrupted run continues where it stopped and a
larger --subsets reuses the subsets already trained.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cherrybench.fingerprint import hash_json
from cherrybench.records import Dataset, Record
from cherrybench.regress.subsets import MIXES
from cherrybench.runners import plots, tracking


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cherrybench.runners.options import Renamed, add_model_arguments, add_tracking_arguments, add_training_arguments

    group = parser.add_argument_group("data")
    group.add_argument("--data", action="append", required=True, metavar="PATH",
                       help="a source data file; repeat for several sources of different quality")
    group.add_argument("--format", choices=["alpaca", "sharegpt", "messages"], help="force the record format")
    group.add_argument("--per-source", type=int, default=0,
                       help="records sampled (seeded) from each source file into the pool (default 0: all)")
    group.add_argument("--pool-size", action=Renamed, new="--per-source (records sampled from each --data file)")
    group.add_argument("--eval", action="append", required=True, metavar="[NAME:]PATH",
                       help="eval set with reference answers (repeatable; e.g. the Self-Instruct test set)")
    group.add_argument("--eval-limit", type=int, default=0,
                       help="use a seeded sample of at most this many records of each --eval file (0: all)")
    group.add_argument("--eval-size", action=Renamed, new="--eval-limit (a seeded sample of each --eval file)")
    group.add_argument("--seed", type=int, default=0, help="seed for pools, subsets and training (default 0)")
    group = parser.add_argument_group("experiment")
    group.add_argument("--subsets", type=int, default=24, help="number of training subsets S (default 24)")
    group.add_argument("--subset-size", type=int, default=100, help="records per subset n (default 100)")
    group.add_argument("--mix", choices=MIXES,
                       help="how subsets mix the sources (default: dirichlet with several files, else pooled)")
    group.add_argument("--indicators", help="comma-separated indicators (default: all; see the README)")
    group.add_argument("--eliminate", action="store_true", help="backward elimination by p-value")
    group.add_argument("--alpha", type=float, default=0.05, help="p-value an indicator must beat to stay (0.05)")
    group.add_argument("--out", required=True, help="the rule file to write (JSON)")
    add_model_arguments(parser)
    group = add_training_arguments(parser, "subset")
    group.add_argument("--keep-models", action="store_true",
                       help="keep each subset's fine-tuned model (default: delete it once evaluated)")
    add_tracking_arguments(parser, "cherrybench-regress")


def check_sources(paths: list[str], datasets: list[Dataset], per_source: int) -> None:
    """Each --data file once (the same file by its resolved path, or the same records in the
    same order: a pool with every record twice would weigh that source double), and none
    smaller than --per-source (a seeded N of each, as --pool-size is: never fewer, silently)."""
    seen: dict = {}
    for path, dataset in zip(paths, datasets):
        for key, what in ((("path", Path(path).resolve()), "the same file"),
                          (("records", dataset.fingerprint), "the same records (same content, same ids)")):
            if key in seen:
                raise ValueError(f"--data {seen[key]} and --data {path} are {what}; give each source once")
            seen[key] = path
        if per_source and per_source > len(dataset):
            raise ValueError(f"--per-source {per_source}: --data {path} has only {len(dataset)} records")


def load_sources(paths: list[str], fmt: str | None, pool_size: int, seed: int) -> tuple[Dataset, dict[str, list[str]]]:
    """One pool from every file, ids prefixed by the file's stem (sources often
    share positional ids); each file optionally cut to a seeded sample of
    `pool_size` records (--per-source; a file with fewer is refused)."""
    from cherrybench.records import load_dataset

    datasets = [load_dataset(path, fmt) for path in paths]
    check_sources(paths, datasets, pool_size)
    records, sources = [], {}
    for j, (path, dataset) in enumerate(zip(paths, datasets)):
        name = Path(path).stem
        while name in sources:
            name += f"_{j}"
        chosen = dataset.records
        if 0 < pool_size < len(chosen):
            picked = sorted(np.random.default_rng([seed, j]).choice(len(chosen), pool_size, replace=False).tolist())
            chosen = [chosen[i] for i in picked]
        renamed = [Record(f"{name}:{r.id}", r.turns, r.system, r.raw, r.where) for r in chosen]
        sources[name] = [r.id for r in renamed]
        records += renamed
    return Dataset(records, None, "alpaca", "json"), sources


def read_eval_records(specs: list[str], limit: int, seed: int) -> tuple[list[Record], list[dict]]:
    """The records with reference answers of each eval file (`limit` > 0 keeps a seeded
    sample of at most that many of each file, as compare's --eval-limit), and for each
    file that had records without one, what was left out: {"eval", "records",
    "without_answers", "ids" (the first five)}. A file with no answer at all is an error."""
    from cherrybench.eval_sets import load_eval_set

    records, left_out = [], []
    for spec in specs:
        eval_set = load_eval_set(spec)
        with_answers = [r for r in eval_set.records if any(t.output for t in r.turns)]
        if not with_answers:
            raise ValueError(f"eval set {spec!r}: none of its {len(eval_set.records)} records has a reference "
                             "answer; eval loss needs them")
        without = [r.id for r in eval_set.records if not any(t.output for t in r.turns)]
        if without:
            left_out.append({"eval": spec, "records": len(eval_set.records), "without_answers": len(without),
                             "ids": without[:5]})
        if 0 < limit < len(with_answers):
            picked = sorted(np.random.default_rng(seed).choice(len(with_answers), limit, replace=False).tolist())
            with_answers = [with_answers[i] for i in picked]
        records += with_answers
    return records, left_out


def load_eval_records(specs: list[str], limit: int, seed: int) -> list[Record]:
    """read_eval_records' records alone."""
    return read_eval_records(specs, limit, seed)[0]


def left_out_text(entry: dict) -> str:
    ids = ", ".join(repr(i) for i in entry["ids"]) + (", ..." if entry["without_answers"] > len(entry["ids"]) else "")
    return (f"eval set {entry['eval']!r}: {entry['without_answers']} of {entry['records']} records have no reference "
            f"answer and are left out of eval loss ({ids})")


SUBSET_RESULT_VERSION = 1


def run_subset(index: int, records: list[Record], eval_records: list[Record], train, key: str, ctx,
               keep_model: bool) -> dict:
    """Fine-tune on one subset and measure eval loss. The result is a content-keyed
    artifact (`cache_dir()/regress/`): the fine-tune's key (settings, base model,
    the records' content in training order), the eval records' content and the precision
    the eval loss is measured in (as `evaluate.cached_eval_losses` keys it); `key` is the
    run's tracking key and plays no part in caching."""
    from cherrybench.evaluate import eval_loss
    from cherrybench.finetune import finetune_key, finetuned_model, remove_finetuned_model, training_summary
    from cherrybench.models import precision_entry
    from cherrybench.store import ArtifactStore

    results = ArtifactStore("regress")
    payload = {"artifact": "regress_subset", "version": SUBSET_RESULT_VERSION,
               "finetune": finetune_key(records, train, ctx=ctx), "eval": [r.content_hash for r in eval_records],
               "prompt": train.prompt, "max_length": train.max_length, **precision_entry(ctx.precision())}
    ids = [r.id for r in records]
    cached = results.get_json(payload)
    if cached is not None:
        return dict(cached, index=index, ids=ids, cached=True)
    started = time.perf_counter()
    model_dir = finetuned_model(records, train, progress=ctx.progress, ctx=ctx)
    train_s = time.perf_counter() - started
    summary = training_summary(model_dir)
    started = time.perf_counter()
    loss = eval_loss(model_dir, eval_records, train.prompt, train.max_length, ctx)
    eval_s = time.perf_counter() - started
    ctx.unload_lm(str(model_dir))
    result = {"index": index, "ids": ids, "eval_loss": loss, "train_loss": summary["train_loss"],
              "train_seconds": train_s, "eval_seconds": eval_s}
    results.put_json(payload, result)
    if not keep_model:
        remove_finetuned_model(records, train, ctx=ctx)
    return dict(result, cached=False)


@dataclass
class Experiment:
    """What every subset of one regress run shares."""

    pool: Dataset
    sources: dict[str, list[str]]
    eval_records: list[Record]
    subsets: list[list[str]]
    mix: str
    train: object  # TrainConfig
    names: list[str]  # indicators
    specs: dict[str, dict]  # indicator -> rule-file entry
    values: pd.DataFrame  # per-record indicator values, indexed by id
    why: pd.DataFrame  # beside each missing value, the reason (None where present)
    eval_left_out: list[dict]  # eval records without a reference answer, per file (read_eval_records)


def prepare(args, ctx) -> Experiment:
    """Load the sources and eval records, draw the subsets and score the indicators:
    a missing model fails here, before any training."""
    from cherrybench.regress.indicators import build_metrics, indicator_table, parse_indicators, spec_for
    from cherrybench.regress.subsets import draw_subsets
    from cherrybench.runners.options import plugin_options, train_config_from_args
    from cherrybench.scoring import score

    names = parse_indicators(args.indicators)
    pool, sources = load_sources(args.data, args.format, args.per_source, args.seed)
    eval_records, eval_left_out = read_eval_records(args.eval, args.eval_limit, args.seed)
    for entry in eval_left_out:
        print(left_out_text(entry), file=sys.stderr)
    mix = args.mix or ("dirichlet" if len(sources) > 1 else "pooled")
    subsets = draw_subsets(sources, args.subsets, args.subset_size, args.seed, mix)
    options = plugin_options(args)
    specs = {n: spec_for(n, options) for n in names}
    table = score(pool, build_metrics(specs), ctx, use_cache=not args.no_cache).set_index("id")
    values, why = indicator_table(table, specs)
    return Experiment(pool, sources, eval_records, subsets, mix, train_config_from_args(args, seed=args.seed),
                      names, specs, values, why, eval_left_out)


def subset_row(i: int, ids: list[str], result: dict, exp: Experiment) -> dict:
    """The subset's line of the fit table: composition, eval loss, indicator means.
    An indicator's mean is over the subset's records that have a value (ours: SPEC's
    mean over D, with unscorable records left out); `unscored.NAME` counts those
    left out and `why.NAME` gives their reasons. No scorable record: NaN."""
    from cherrybench.regress.indicators import count_reasons

    composition = {s: sum(1 for x in ids if x.startswith(f"{s}:")) for s in exp.sources}
    row = {"subset": i, **{f"n.{s}": c for s, c in composition.items()}, "eval_loss": result["eval_loss"],
           "log_eval_loss": float(np.log(result["eval_loss"]))}
    values, why = exp.values.loc[ids], exp.why.loc[ids]
    for n in exp.names:
        scorable = np.isfinite(values[n].to_numpy(dtype=np.float64))
        row[n] = float(values[n][scorable].mean()) if scorable.any() else float("nan")
    for n in exp.names:
        row[f"unscored.{n}"] = int((~np.isfinite(values[n].to_numpy(dtype=np.float64))).sum())
        row[f"why.{n}"] = count_reasons(why[n])
    return row


def log_subset(row: dict, exp: Experiment, result: dict) -> None:
    tracking.log_params({"subset": row["subset"], "n": len(result["ids"]),
                         **{k: v for k, v in row.items() if k.startswith("n.")}})
    tracking.log_metrics({"eval_loss": result["eval_loss"], "log_eval_loss": row["log_eval_loss"],
                          "train_loss": result["train_loss"],
                          **{f"mean.{n}": float(row[n]) for n in exp.names if np.isfinite(row[n])},
                          **{f"unscored.{n}": row[f"unscored.{n}"] for n in exp.names if row[f"unscored.{n}"]}})


def unscored_report(frame: pd.DataFrame, names: list[str]) -> tuple[list[dict], list[dict]]:
    """The subsets whose indicator means rest on fewer records than they trained on
    ({"subset", "indicator", "unscored", "of", "why"}), and those left out of the fit for
    an indicator with no scorable record at all ({"subset", "why"})."""
    partial, excluded = [], []
    for row in frame.to_dict("records"):
        size = sum(v for k, v in row.items() if k.startswith("n."))
        empty = []
        for n in names:
            if row[f"unscored.{n}"]:
                entry = {"subset": int(row["subset"]), "indicator": n, "unscored": int(row[f"unscored.{n}"]),
                         "of": int(size), "why": row[f"why.{n}"]}
                (empty if not np.isfinite(row[n]) else partial).append(entry)
        if empty:
            excluded.append({"subset": int(row["subset"]),
                             "why": "; ".join(f"no scorable record for {e['indicator']} ({e['why']})" for e in empty)})
    return partial, excluded


def unscored_lines(partial: list[dict], excluded: list[dict], n_subsets: int) -> list[str]:
    lines = []
    if partial:
        worst = max(partial, key=lambda e: e["unscored"])
        indicators = sorted({e["indicator"] for e in partial})
        lines.append(f"{len({e['subset'] for e in partial})} of {n_subsets} subsets have records without a value of "
                     f"{', '.join(indicators)}: their means are over the scorable records only (at most "
                     f"{worst['unscored']} of {worst['of']} left out, subset {worst['subset']}: {worst['why']}); "
                     "see unscored.* and why.* in subsets.csv")
    if excluded:
        lines.append(f"{len(excluded)} of {n_subsets} subsets left out of the fit: "
                     + "; ".join(f"subset {e['subset']}: {e['why']}" for e in excluded[:5])
                     + ("; ..." if len(excluded) > 5 else ""))
    return lines


def fit_step(frame: pd.DataFrame, exp: Experiment, args, model_fingerprint: str, command: str):
    """OLS of log eval loss on the indicator means of the subsets that have every mean;
    returns the fit, the saved rule file and the notes on what was left out."""
    from cherrybench.regress.fit import fit_rule
    from cherrybench.regress.rules import Rule

    names = exp.names
    partial, excluded = unscored_report(frame, names)
    notes = [left_out_text(e) for e in exp.eval_left_out] + unscored_lines(partial, excluded, len(frame))
    frame["in_fit"] = np.isfinite(frame[names].to_numpy(dtype=np.float64)).all(axis=1)
    used = frame[frame["in_fit"]]
    if excluded and len(used) < len(names) + 2:
        raise ValueError(f"only {len(used)} of {len(frame)} subsets have a value of every indicator; the fit needs "
                         f"at least indicators + 2 = {len(names) + 2}. " + unscored_lines([], excluded, len(frame))[0])
    fit = fit_rule(used[names], used["log_eval_loss"].to_numpy(), eliminate=args.eliminate, alpha=args.alpha)
    frame["fitted"], frame["loo_predicted"] = np.nan, np.nan
    frame.loc[frame["in_fit"], "fitted"], frame.loc[frame["in_fit"], "loo_predicted"] = fit.fitted, fit.loo_predicted
    stats = dict(fit.stats(), subset_size=args.subset_size, mix=exp.mix, sources=list(exp.sources), seed=args.seed,
                 eval_records=len(exp.eval_records), eval_without_answers=exp.eval_left_out,
                 subsets_drawn=len(frame), subsets_left_out=excluded, partly_unscored_subsets=partial,
                 train=exp.train.params(), model_fingerprint=model_fingerprint[:16],
                 indicator_means={"mean": used[names].mean().to_dict(), "std": used[names].std().to_dict()})
    rule = Rule(fit.intercept, fit.coefficients, {n: exp.specs[n] for n in fit.coefficients}, fit=stats,
                name=Path(args.out).stem, notes=f"fitted by: {command}")
    return fit, rule.save(args.out), notes


def log_fit(fit, frame: pd.DataFrame, out: Path) -> None:
    tracking.log_metrics({"r2": fit.r2, "adj_r2": fit.adj_r2, "n_subsets": fit.n,
                          "subsets_left_out": int((~frame["in_fit"]).sum()),
                          **({"cv_r2": fit.cv_r2} if np.isfinite(fit.cv_r2) else {})})

    def write(tmp: Path) -> None:
        (tmp / "fit_summary.txt").write_text(fit.summary + "\n")
        frame.to_csv(tmp / "subsets.csv", index=False)
        plots.predicted_vs_actual(frame.loc[frame["in_fit"], "log_eval_loss"], fit, tmp / "predicted_vs_actual.png")

    tracking.log_files(write)
    tracking.log_file(out)


def print_fit(fit, out: Path, notes: list[str] = ()) -> None:
    print(fit.summary)
    print(f"R2 {fit.r2:.3f}  adjusted R2 {fit.adj_r2:.3f}  leave-one-out CV R2 {fit.cv_r2:.3f}  ({fit.n} subsets)")
    for note in notes:
        print("note: " + note)
    if fit.eliminated:
        print("eliminated: " + ", ".join(f"{e['indicator']} (p={e['p_value']:.3g})" for e in fit.eliminated))
    if fit.dropped:
        print("dropped: " + ", ".join(f"{d['indicator']} ({d['why']})" for d in fit.dropped))
    terms = " ".join(f"{c:+.4g} {n}" for n, c in fit.coefficients.items())
    print(f"rule: log L = {fit.intercept:.4g} {terms}\nwrote {out}")


def check_regress(args) -> None:
    """Every setting of `regress`, the pool's size against the subsets included."""
    from cherrybench.runners.checks import at_least, check_tracking_flag, check_param_keys, user_params
    from cherrybench.regress.indicators import INDICATORS, parse_indicators, spec_for
    from cherrybench.records import load_dataset
    from cherrybench.metrics import METRICS
    from cherrybench.runners.options import input_files, plugin_options
    from cherrybench.outputs import check_output

    # the rule file is written after every subset is trained: refuse an input or a directory now
    eval_paths = [spec if Path(spec).exists() else spec.rpartition(":")[2] for spec in args.eval]
    check_output(args.out, [*args.data, *eval_paths, *input_files(args)])  # --target, a --param rule file ...
    names = parse_indicators(args.indicators)
    for flag, low in (("--subsets", 1), ("--subset-size", 1), ("--per-source", 0), ("--eval-limit", 0)):
        at_least(args, flag, low)
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be in (0, 1), got {args.alpha!r}")
    if args.subsets < len(names) + 2:
        raise ValueError(f"--subsets {args.subsets}: the fit needs at least indicators + 2 = {len(names) + 2} "
                         f"subsets for the {len(names)} indicators ({', '.join(names)}); raise --subsets or name "
                         "fewer --indicators")
    check_tracking_flag(args)
    options = plugin_options(args)
    for name in names:
        spec_for(name, options)  # builds the indicator's metric: its check_params runs
    check_param_keys(user_params(args), [METRICS.get(INDICATORS[n].metric) for n in names])

    datasets = [load_dataset(path, args.format) for path in args.data]
    check_sources(args.data, datasets, args.per_source)
    total = sum(args.per_source or len(d) for d in datasets)
    if args.subset_size >= total:
        raise ValueError(f"--subset-size {args.subset_size}: the pool has {total} records (--data"
                         f"{', --per-source ' + str(args.per_source) if args.per_source else ''}), so every subset "
                         "would be the same records; lower --subset-size")
    if "knn6" in names and total <= 6:
        raise ValueError(f"indicator knn6 needs a pool of more than 6 records, the pool has {total}")
    load_eval_records(args.eval, args.eval_limit, args.seed)  # missing files or reference answers fail now


def run(args) -> int:
    from cherrybench.models import resolve_model
    from cherrybench.runners.options import make_context

    check_regress(args)  # every setting, sizes included, before connecting, scoring or training
    uri = tracking.tracking_uri(args.tracking_uri)
    client = tracking.check_tracking(uri)
    exp_id = tracking.experiment_id(client, args.experiment, uri)
    tracking.close_orphans(client, exp_id)
    ctx = make_context(args)
    exp = prepare(args, ctx)
    base_fp = resolve_model(exp.train.model).fingerprint
    eval_fp = hash_json([r.content_hash for r in exp.eval_records])
    by_id = {r.id: r for r in exp.pool.records}
    command = getattr(args, "command_line", None) or "cherrybench regress " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rows = []
    with tracking.parent_run(exp_id, f"regress-{time.strftime('%Y%m%d-%H%M%S')}", command) as parent:
        tracking.log_params({"subsets": args.subsets, "subset_size": args.subset_size, "mix": exp.mix,
                             "seed": args.seed, "indicators": ",".join(exp.names), "sources": ",".join(exp.sources),
                             "pool_size": len(exp.pool), "eval_size": len(exp.eval_records),
                             "eval_without_answers": sum(e["without_answers"] for e in exp.eval_left_out),
                             "eliminate": args.eliminate, "alpha": args.alpha, "model": exp.train.model or "smollm2",
                             **exp.train.params()})
        for i, ids in enumerate(exp.subsets):
            records = [by_id[x] for x in ids]
            key = hash_json({"train": exp.train.fingerprint(base_fp),
                             "records": sorted(r.content_hash for r in records), "eval": eval_fp})
            if tracking.finished_trial(client, exp_id, key) is None:
                with tracking.trial_run(exp_id, parent.info.run_id, f"subset-{i:03d}", key):
                    result = run_subset(i, records, exp.eval_records, exp.train, key, ctx, args.keep_models)
                    row = subset_row(i, ids, result, exp)
                    log_subset(row, exp, result)
            else:  # logged before; the result itself comes from the artifact store
                result = run_subset(i, records, exp.eval_records, exp.train, key, ctx, args.keep_models)
                row = subset_row(i, ids, result, exp)
            print(f"[subset {i + 1}/{len(exp.subsets)}] eval_loss={result['eval_loss']:.4f}"
                  + (" (cached)" if result.get("cached") else f" ({result['train_seconds']:.0f}s training)"),
                  file=sys.stderr)
            rows.append(row)
        frame = pd.DataFrame(rows)
        fit, out, notes = fit_step(frame, exp, args, base_fp, command)
        log_fit(fit, frame, out)
    print_fit(fit, out, notes)
    print(f"MLflow: mlflow ui --backend-store-uri {uri}  (experiment {args.experiment!r})")
    return 0
