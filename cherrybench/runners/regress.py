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
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cherrybench.fingerprint import hash_json
from cherrybench.records import Dataset, Record
from cherrybench.regress.subsets import MIXES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cherrybench.runners.options import add_model_arguments
    from cherrybench.runners.options import add_training_arguments

    group = parser.add_argument_group("data")
    group.add_argument("--data", action="append", required=True, metavar="PATH",
                       help="a source data file; repeat for several sources of different quality")
    group.add_argument("--format", choices=["alpaca", "sharegpt", "messages"], help="force the record format")
    group.add_argument("--pool-size", type=int, default=0,
                       help="records sampled (seeded) from each source file into the pool (default 0: all)")
    group.add_argument("--eval", action="append", required=True, metavar="[NAME:]PATH",
                       help="eval set with reference answers (repeatable; e.g. the Self-Instruct test set)")
    group.add_argument("--eval-size", type=int, default=0, help="seeded sample of eval records (default 0: all)")
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
    group = parser.add_argument_group("tracking")
    group.add_argument("--experiment", default="cherrybench-regress", help="MLflow experiment")
    group.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def load_sources(paths: list[str], fmt: str | None, pool_size: int, seed: int) -> tuple[Dataset, dict[str, list[str]]]:
    """One pool from every file, ids prefixed by the file's stem (sources often
    share positional ids); each file optionally cut to a seeded sample."""
    from cherrybench.records import load_dataset

    records, sources = [], {}
    for j, path in enumerate(paths):
        dataset = load_dataset(path, fmt)
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


def load_eval_records(specs: list[str], size: int, seed: int) -> list[Record]:
    from cherrybench.eval_sets import load_eval_set

    records = []
    for spec in specs:
        eval_set = load_eval_set(spec)
        with_answers = [r for r in eval_set.records if any(t.output for t in r.turns)]
        if not with_answers:
            raise ValueError(f"eval set {spec!r} has no reference answers; eval loss needs them")
        records += with_answers
    if 0 < size < len(records):
        picked = sorted(np.random.default_rng(seed).choice(len(records), size, replace=False).tolist())
        records = [records[i] for i in picked]
    return records


def run_subset(index: int, records: list[Record], eval_records: list[Record], train, key: str, ctx,
               keep_model: bool) -> dict:
    """Fine-tune on one subset and measure eval loss; the result is cached by `key`."""
    from cherrybench.paths import cache_dir
    from cherrybench.evaluate import eval_loss
    from cherrybench.finetune import finetune, training_summary

    results = cache_dir() / "regress" / "subsets"
    path = results / f"{key[:32]}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()), cached=True)
    model_dir = cache_dir() / "finetuned" / f"regress-{key[:24]}"
    started = time.perf_counter()
    finetune(records, train, model_dir, progress=ctx.progress)
    train_s = time.perf_counter() - started
    summary = training_summary(model_dir)
    started = time.perf_counter()
    loss = eval_loss(model_dir, eval_records, train.prompt, train.max_length, ctx)
    eval_s = time.perf_counter() - started
    ctx.unload_lm(str(model_dir))
    result = {"index": index, "ids": [r.id for r in records], "eval_loss": loss, "train_loss": summary["train_loss"],
              "train_seconds": train_s, "eval_seconds": eval_s}
    results.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    if not keep_model:
        shutil.rmtree(model_dir, ignore_errors=True)
    return dict(result, cached=False)


def run(args) -> int:
    import mlflow

    from cherrybench.runners.options import make_context, plugin_options
    from cherrybench.models import resolve_model
    from cherrybench.regress.fit import fit_rule, predicted_vs_actual
    from cherrybench.regress.indicators import build_metrics, indicator_values, parse_indicators, spec_for
    from cherrybench.regress.rules import Rule
    from cherrybench.regress.subsets import draw_subsets
    from cherrybench.runners import tracking
    from cherrybench.runners.options import train_config_from_args
    from cherrybench.scoring import score

    names = parse_indicators(args.indicators)
    uri = tracking.tracking_uri(args.tracking_uri)
    client = tracking.check_tracking(uri)
    exp_id = tracking.experiment_id(client, args.experiment, uri)
    pool, sources = load_sources(args.data, args.format, args.pool_size, args.seed)
    eval_records = load_eval_records(args.eval, args.eval_size, args.seed)
    mix = args.mix or ("dirichlet" if len(sources) > 1 else "pooled")
    subsets = draw_subsets(sources, args.subsets, args.subset_size, args.seed, mix)
    train = train_config_from_args(args, seed=args.seed)
    ctx = make_context(args)

    # indicators first: a missing model fails here, before any training
    options = plugin_options(args)
    specs = {n: spec_for(n, options) for n in names}
    table = score(pool, build_metrics(specs), ctx, use_cache=not args.no_cache).set_index("id")
    values, _ = indicator_values(table, specs)

    base_fp = resolve_model(train.model).fingerprint
    eval_fp = hash_json([r.content_hash for r in eval_records])
    by_id = {r.id: r for r in pool.records}
    command = "cherrybench regress " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "regress")
    rows = []
    with mlflow.start_run(experiment_id=exp_id, run_name=f"regress-{time.strftime('%Y%m%d-%H%M%S')}",
                          tags={tracking.COMMAND_TAG: command, tracking.ROLE_TAG: "parent"}) as parent:
        mlflow.log_params({"subsets": args.subsets, "subset_size": args.subset_size, "mix": mix, "seed": args.seed,
                           "indicators": ",".join(names), "sources": ",".join(sources), "pool_size": len(pool),
                           "eval_size": len(eval_records), "eliminate": args.eliminate, "alpha": args.alpha,
                           "model": train.model or "smollm2", **train.params()})
        for i, ids in enumerate(subsets):
            records = [by_id[x] for x in ids]
            key = hash_json({"train": train.fingerprint(base_fp), "records": sorted(r.content_hash for r in records),
                             "eval": eval_fp})
            means = values.loc[ids].mean()
            composition = {s: sum(1 for x in ids if x.startswith(f"{s}:")) for s in sources}
            done = tracking.finished_child(client, exp_id, key)
            if done is None:
                with mlflow.start_run(experiment_id=exp_id, run_name=f"subset-{i:03d}", nested=True,
                                      parent_run_id=parent.info.run_id,
                                      tags={tracking.KEY_TAG: key, tracking.ROLE_TAG: "child"}):
                    result = run_subset(i, records, eval_records, train, key, ctx, args.keep_models)
                    mlflow.log_params({"subset": i, "n": len(ids), **{f"n.{s}": c for s, c in composition.items()}})
                    mlflow.log_metrics({"eval_loss": result["eval_loss"], "log_eval_loss": np.log(result["eval_loss"]),
                                        "train_loss": result["train_loss"],
                                        **{f"mean.{k}": float(v) for k, v in means.items() if np.isfinite(v)}})
            else:
                result = run_subset(i, records, eval_records, train, key, ctx, args.keep_models)
            print(f"[subset {i + 1}/{len(subsets)}] eval_loss={result['eval_loss']:.4f}"
                  + (" (cached)" if result.get("cached") else f" ({result['train_seconds']:.0f}s training)"),
                  file=sys.stderr)
            rows.append({"subset": i, **{f"n.{s}": c for s, c in composition.items()},
                         "eval_loss": result["eval_loss"], "log_eval_loss": float(np.log(result["eval_loss"])),
                         **means.to_dict()})

        frame = pd.DataFrame(rows)
        fit = fit_rule(frame[names], frame["log_eval_loss"].to_numpy(), eliminate=args.eliminate, alpha=args.alpha)
        frame["fitted"], frame["loo_predicted"] = fit.fitted, fit.loo_predicted
        stats = dict(fit.stats(), subset_size=args.subset_size, mix=mix, sources=list(sources), seed=args.seed,
                     eval_records=len(eval_records), train=train.params(), model_fingerprint=base_fp[:16],
                     indicator_means={"mean": frame[names].mean().to_dict(), "std": frame[names].std().to_dict()})
        rule = Rule(fit.intercept, fit.coefficients, {n: specs[n] for n in fit.coefficients}, fit=stats,
                    name=Path(args.out).stem, notes=f"fitted by: {command}")
        out = rule.save(args.out)
        mlflow.log_metrics({"r2": fit.r2, "adj_r2": fit.adj_r2, "n_subsets": fit.n,
                            **({"cv_r2": fit.cv_r2} if np.isfinite(fit.cv_r2) else {})})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "fit_summary.txt").write_text(fit.summary + "\n")
            frame.to_csv(tmp / "subsets.csv", index=False)
            predicted_vs_actual(frame["log_eval_loss"], fit, tmp / "predicted_vs_actual.png")
            for f in tmp.iterdir():
                mlflow.log_artifact(str(f))
        mlflow.log_artifact(str(out))
    print(fit.summary)
    print(f"R2 {fit.r2:.3f}  adjusted R2 {fit.adj_r2:.3f}  leave-one-out CV R2 {fit.cv_r2:.3f}  ({fit.n} subsets)")
    if fit.eliminated:
        print("eliminated: " + ", ".join(f"{e['indicator']} (p={e['p_value']:.3g})" for e in fit.eliminated))
    if fit.dropped:
        print("dropped: " + ", ".join(f"{d['indicator']} ({d['why']})" for d in fit.dropped))
    terms = " ".join(f"{c:+.4g} {n}" for n, c in fit.coefficients.items())
    print(f"rule: log L = {fit.intercept:.4g} {terms}\nwrote {out}")
    print(f"MLflow: mlflow ui --backend-store-uri {uri}  (experiment {args.experiment!r})")
    return 0
