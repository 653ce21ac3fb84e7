"""The steps of one comparison trial: choose its subset (`choose_step`: the selection,
with what the pool audit removed, and IterIT's per-epoch window), then its expensive part
(`train_and_evaluate`: fine-tune on the subset, then eval loss per set, generated answers
with their judge and reference scores, and pairwise judging against the baseline's answers).
Nothing here talks to MLflow: `compare` logs what these steps return. With `--engine ray`,
`compare` sends `train_and_evaluate` to a Ray task by its module path, so a worker imports
this module and runs the very code the driver runs without Ray.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cherrybench.eval_sets import EvalSet
from cherrybench.finetune import discard_finetuned_model, finetuned_model, training_summary
from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners.comparison import Comparison, Trial

log = logging.getLogger(__name__)
QUALITY_METRICS = ("judge_quality", "deita_quality")  # quality alone first: half the judge prompts


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

    registered = [m for m in QUALITY_METRICS if m in METRICS]
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


def train_and_evaluate(ctx, trial: Trial, records: list[Record], comparison: Comparison, args, options: dict,
                       baseline_answers: dict, reselect=None, pack_model: bool = False,
                       drop_model: bool = False) -> TrialResult:
    """A trial's expensive part, the same in this process and in a Ray task: fine-tune on
    `records`, evaluate, generate and judge answers (against `baseline_answers` pairwise).
    `drop_model` deletes the fine-tuned model from the cache once all that (and `pack_model`'s
    archive) is done: a Ray worker's trial, run with --no-keep-models."""
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
    summary = training_summary(model_dir)
    if drop_model:
        discard_finetuned_model(model_dir)
    return TrialResult(str(model_dir), summary, metrics, reasons, per_record, answers, training_s, eval_s, archive)
