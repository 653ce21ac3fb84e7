"""Leaderboards from MLflow runs: one section per budget, one row per selector.

Selectors are fine-tuned and then scored on the *same* eval records, so they
are compared paired (`cherrybench.stats`): per budget, each selector against
`random` (same budget), against `full` (the whole pool, one run per seed that
every budget shares) and against the best selector of its budget, on the
headline metric (`heldout.eval_loss` if there is a held-out set, else the
first set with references alphabetically). Each comparison has a two-level
bootstrap interval and a sign-flip permutation p-value; all p-values of one
leaderboard are Holm-adjusted together, and a verdict needs both the interval
and the adjusted p (`stats.verdict`). A pair compared twice (random's
`vs_full` is full's `vs_random`) is one test, counted once by Holm.

Generated answers scored against their references (ROUGE-L, embedding
similarity; higher is better) get the same treatment: a mean with a two-level
bootstrap interval per selector, and paired comparisons with `random` and
`full` on the same answered records, Holm-adjusted within each (set, metric)
family so that they never weaken the headline's verdicts.

Runs logged before per-record eval tables existed fall back to their pooled
metric: shown without an interval or a test, and a note says so.

    cherrybench leaderboard --experiment NAME [--tracking-uri URI] [--out-dir leaderboards] [--resamples 10000]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cherrybench import stats
from cherrybench.manifest import sanitize_command
from cherrybench.runners import plots, tracking
from cherrybench.runners.checks import at_least

MIN_RESAMPLES = 100  # below this a 95% interval rests on a handful of draws and the smallest p is ~0.01

BASELINES = ("random", "full")
REFERENCES = ("random", "full", "best")  # what each selector is compared with
TIMING = ("scoring_seconds", "training_seconds", "eval_seconds")
LOSS = ".eval_loss"
DIVERGED = "diverged"  # a selector whose per-record losses on a set are not all finite (section notes say so)
# per-answer scores against the reference answer, from `eval/<set>.answers.parquet`; higher is better
ANSWER_METRICS = {
    "rouge_l": "ROUGE-L F-measure of the generated answer against the reference answer (`rouge-score`), 0..1",
    "embedding_similarity": "cosine similarity of the sentence embeddings of generated and reference answer "
                            "(the run's embedder, all-MiniLM-L6-v2 by default), -1..1",
}
ANSWER_REFERENCES = ("random", "full")


# -- the trials ---------------------------------------------------------------
@dataclass(eq=False)  # identity: two trials are never "equal" by their tables
class Trial:
    """One finished trial run (selector x seed x budget) and what the leaderboard needs of it."""

    selector: str
    seed: str
    budget: str  # normalised budget (`0.05`, `10`), `full` for the shared full baseline, `?` if unknown
    run: object
    metrics: dict  # NaN-with-reason metrics included, as NaN
    reasons: dict  # metric -> why it is NaN
    pool_size: int | None
    tables: dict = field(default_factory=dict)  # set -> per-record eval table
    answers: dict = field(default_factory=dict)  # set -> generated answers with their scores
    tables_error: str = ""
    superseded: int = 0  # earlier finished runs of the same selector, budget and seed that this one replaces


def _normalise_budget(text: str) -> str:
    """`0.050` and `0.05` are one budget; `full` and `?` stay as they are."""
    try:
        return f"{float(text):g}"
    except (TypeError, ValueError):
        return str(text)


def _trial(run) -> Trial:
    tags, params = run.data.tags, run.data.params
    reasons = tracking.nan_reasons(run)
    metrics = {**run.data.metrics, **{m: np.nan for m in reasons}}
    pool = params.get("pool_size")
    return Trial(selector=tags.get(tracking.SELECTOR_TAG) or params.get("selector") or "?",
                 seed=tags.get(tracking.SEED_TAG, "?"),
                 budget=_normalise_budget(tags.get(tracking.BUDGET_TAG) or params.get("budget") or "?"),
                 run=run, metrics=metrics, reasons=reasons,
                 pool_size=int(pool) if pool and str(pool).isdigit() else None)


def load_trials(client, experiment: str) -> list[Trial]:
    """Finished trials, one per selector, budget and seed: the latest. A rerun of the same
    configuration, or one under other settings, data or code (another key), replaces the
    earlier run instead of counting as one more seed; `superseded` says how many it replaced."""
    runs = sorted(tracking.finished_trials(client, experiment), key=lambda r: r.info.start_time or 0)
    latest: dict[tuple, Trial] = {}
    for run in runs:
        trial = _trial(run)
        slot = (trial.selector, trial.budget, trial.seed) if trial.seed != "?" else (run.info.run_id,)
        earlier = latest.get(slot)
        trial.superseded = earlier.superseded + 1 if earlier is not None else 0
        latest[slot] = trial
    if not latest:
        raise ValueError(f"experiment {experiment!r} has no finished selector runs")
    trials = list(latest.values())
    for trial in trials:
        try:
            trial.tables = tracking.per_record_tables(client, trial.run)
            trial.answers = tracking.per_record_tables(client, trial.run, tracking.ANSWERS_SUFFIX)
        except Exception as exc:  # an unreadable artifact store: fall back like an older run, and say so
            trial.tables_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return trials


def _seed_key(seed: str):
    return (0, int(seed), "") if str(seed).lstrip("-").isdigit() else (1, 0, str(seed))


# -- budget sections ----------------------------------------------------------
@dataclass
class Section:
    budget: str
    groups: dict  # selector -> its trials, sorted by seed (seed k of A pairs with seed k of B)
    pool_size: int | None

    @property
    def fraction(self) -> float | None:
        """The budget as a share of the pool, where it can be known (the curve's x)."""
        try:
            value = float(self.budget)
        except ValueError:
            return 1.0 if self.budget == "full" else None
        if value < 1:
            return value
        return min(1.0, value / self.pool_size) if self.pool_size else None

    @property
    def label(self) -> str:
        """How a person says this budget: `5%`, `20 records (10%)`."""
        if self.budget == "?":
            return "an unknown budget"
        if self.budget == "full":
            return "the full pool"
        try:
            value, share = float(self.budget), self.fraction
        except ValueError:
            return self.budget
        if value < 1:
            return f"{100 * value:g}%"
        return f"{int(value)} records" + (f" ({100 * share:.3g}%)" if share is not None else "")


def sections(trials: list[Trial]) -> list[Section]:
    """One section per budget; the shared `full` runs (budget tag `full`) join every one."""
    shared = [t for t in trials if t.selector == "full" and t.budget == "full"]
    budgets = {t.budget for t in trials if t not in shared} or {"full"}
    out = []
    for budget in budgets:
        members = [t for t in trials if t.budget == budget and t not in shared]
        if budget == "full" or not any(t.selector == "full" for t in members):
            members += shared
        groups: dict[str, list[Trial]] = {}
        for t in sorted(members, key=lambda t: (t.selector, _seed_key(t.seed))):
            groups.setdefault(t.selector, []).append(t)
        pools = [t.pool_size for t in members if t.pool_size]
        out.append(Section(budget, groups, pools[0] if pools else None))
    return sorted(out, key=lambda s: (s.fraction is None, s.fraction or 0.0, s.budget))


# -- per-record arrays and intervals ------------------------------------------
def _shared_ids(tables: list[pd.DataFrame]) -> tuple[list, bool]:
    """Record ids every table has, in the first table's order; False if any table differs."""
    first = list(tables[0]["id"])
    if all(list(t["id"]) == first for t in tables[1:]):
        return first, True
    common = set(first).intersection(*(set(t["id"]) for t in tables[1:]))
    return [i for i in dict.fromkeys(first) if i in common], False


def _arrays(trials: list[Trial], set_name: str, ids: list | None):
    """[n_seeds, n_records] answer-token loss sums and token counts; None when a trial lacks the table."""
    tables = [t.tables.get(set_name) for t in trials]
    if any(t is None for t in tables):
        return None
    if ids is not None:
        tables = [t.drop_duplicates("id").set_index("id").loc[ids].reset_index() for t in tables]
    num = np.stack([t["loss_sum"].to_numpy(float) for t in tables])
    den = np.stack([t["n_tokens"].fillna(0).to_numpy(float) for t in tables])
    num[den <= 0] = 0.0  # an unscored record carries no weight, on either side
    return (num, den) if den.sum() > 0 else None


def _diverged(arrays) -> int:
    """Records with answer tokens but no finite loss (a diverged fine-tune), over the seeds."""
    return 0 if arrays is None else int((~np.isfinite(arrays[0])).sum())


def own_interval(num, den, n_resamples: int, seed: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """A selector's pooled loss with its two-level bootstrap interval: the paired
    bootstrap of A against a constant B = 0 (stats has no one-sample function)."""
    zeros, ones = np.zeros((1, num.shape[1])), np.ones((1, num.shape[1]))
    deltas = stats.bootstrap_deltas(num, den, zeros, ones, n_resamples=n_resamples, seed=seed)
    alpha = 1 - confidence
    low, high = np.nanquantile(deltas, [alpha / 2, 1 - alpha / 2])
    return float(num.sum() / den.sum()), float(low), float(high)


def _finite(trials: list[Trial], metric: str) -> np.ndarray:
    """The metric's finite values over the trials (a NaN has its reason in the notes)."""
    values = np.array([t.metrics.get(metric, np.nan) for t in trials], dtype=float)
    return values[np.isfinite(values)]


def _mean(trials: list[Trial], metric: str) -> float:
    values = _finite(trials, metric)
    return float(values.mean()) if values.size else np.nan


def _std(trials: list[Trial], metric: str) -> float:
    values = _finite(trials, metric)
    return float(values.std(ddof=1)) if values.size > 1 else np.nan


# -- one section ---------------------------------------------------------------
@dataclass
class _SectionData:
    """What a section's rows and comparisons are computed from."""

    section: Section
    arrays: dict  # (selector, set) -> (num, den) or None
    notes: list
    answers: dict = field(default_factory=dict)  # (selector, answer column) -> (values, weights) or None


def _answer_arrays(trials: list[Trial], set_name: str, metric: str, ids: list):
    """[n_seeds, n_records] answer scores (0 where NaN) and weights (1 where scored, else 0):
    pooled num / den is then the mean of the scored answers; None when a trial lacks them."""
    tables = [t.answers.get(set_name) for t in trials]
    if any(t is None or metric not in t.columns for t in tables):
        return None
    values = np.stack([_scored(t, metric).reindex(ids).to_numpy(float) for t in tables])
    den = np.isfinite(values).astype(float)
    return (np.where(den > 0, values, 0.0), den) if den.sum() > 0 else None


def _scored(table: pd.DataFrame, metric: str) -> pd.Series:
    """The metric by id, with an empty answer as 0: runs logged before empty answers scored 0
    have NaN there (reason `empty_prediction`), which would drop the record from one side only."""
    table = table.drop_duplicates("id").set_index("id")
    values = table[metric].astype(float)
    reason = f"{metric}_reason"
    if reason in table.columns:
        values = values.mask(table[reason] == "empty_prediction", 0.0)
    return values


def answer_columns(trials: list[Trial]) -> list[str]:
    """`<set>.<metric>` for every answer score some trial has, sets alphabetically."""
    found = {f"{s}.{m}" for t in trials for s, table in t.answers.items() for m in ANSWER_METRICS
             if m in table.columns}
    return sorted(found)


def _section_answers(section: Section, columns: list[str], notes: list) -> dict:
    out = {}
    for column in columns:
        set_name, metric = column.rsplit(".", 1)
        present = [t.answers[set_name] for ts in section.groups.values() for t in ts if set_name in t.answers]
        if not present:
            continue
        ids, same = _shared_ids(present)
        if not same:
            notes.append(f"{column}: runs answered different prompts; compared on the {len(ids)} all of them share")
        for selector, trials in section.groups.items():
            out[selector, column] = _answer_arrays(trials, set_name, metric, ids)
    return out


def _section_data(section: Section, sets: list[str], answers: list[str] = ()) -> _SectionData:
    notes, arrays = [], {}
    for set_name in sets:
        present = [t.tables[set_name] for ts in section.groups.values() for t in ts if set_name in t.tables]
        ids, same = _shared_ids(present) if present else (None, True)
        if not same:
            notes.append(f"{set_name}: runs were scored on different records; compared on the "
                         f"{len(ids)} records all of them share")
        for selector, trials in section.groups.items():
            arrays[selector, set_name] = _arrays(trials, set_name, None if same else ids)
            bad = _diverged(arrays[selector, set_name])
            if bad:  # never a loss of 0: no value, interval or test for this selector on this set
                notes.append(f"{selector}: {bad} {set_name} records have answer tokens but no finite loss "
                             "(a diverged fine-tune?): its eval loss there is NaN, with no interval or test")
                arrays[selector, set_name] = DIVERGED
    return _SectionData(section, arrays, notes, _section_answers(section, list(answers), notes))


def _own_loss(data: _SectionData, selector: str, set_name: str, n_resamples: int, seed: int):
    """(value, ci_low, ci_high, note): pooled over seeds and records with a bootstrap CI, or
    for runs without per-record tables the mean of their pooled values, no CI, and a note why."""
    metric, trials = set_name + LOSS, data.section.groups[selector]
    arrays = data.arrays.get((selector, set_name))
    if arrays is DIVERGED:
        return np.nan, np.nan, np.nan, None  # the section's notes say why
    if arrays is not None:
        return (*own_interval(*arrays, n_resamples, seed), None)
    value = _mean(trials, metric)
    if not np.isfinite(value):
        return value, np.nan, np.nan, None  # no references: the NaN's reason is among the notes already
    missing = ", ".join(t.seed for t in trials if set_name not in t.tables)
    why = "; ".join(sorted({t.tables_error for t in trials if t.tables_error})) or "runs logged before them"
    return value, np.nan, np.nan, (f"{metric}: per-record losses missing for seed {missing} ({why}); "
                                   "mean of the pooled values, no CI or test")


def _row(data: _SectionData, selector: str, sets: list[str], extras: list[str], n_resamples: int, seed: int,
         answers: list[str] = ()) -> dict:
    """A selector's own numbers: eval_loss with a CI per set, extras as mean and std, timings."""
    trials = data.section.groups[selector]
    row = {"budget": data.section.budget, "budget_label": data.section.label,
           "budget_fraction": data.section.fraction, "selector": selector, "baseline": selector in BASELINES,
           "seeds": len({t.seed for t in trials})}
    notes = sorted({f"{m}: NaN ({why})" for t in trials for m, why in t.reasons.items()})
    notes += sorted({t.run.data.tags[tracking.NOTE_TAG] for t in trials if tracking.NOTE_TAG in t.run.data.tags})
    notes += sorted({f"seed {t.seed}: {t.run.data.tags[tracking.UNPAIRED_TAG]}" for t in trials
                     if tracking.UNPAIRED_TAG in t.run.data.tags})  # its baseline failed or kept no record
    for set_name in sets:
        metric = set_name + LOSS
        row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], note = \
            _own_loss(data, selector, set_name, n_resamples, seed)
        notes += [note] if note else []
    for column in answers:
        values = data.answers.get((selector, column))
        row[column], row[f"{column}_ci_low"], row[f"{column}_ci_high"] = (
            own_interval(*values, n_resamples, seed) if values is not None else (np.nan, np.nan, np.nan))
    row["n_selected"] = _mean(trials, "n_selected")
    for metric in extras:
        row[f"{metric} mean"], row[f"{metric} std"] = _mean(trials, metric), _std(trials, metric)
    row.update({metric: _mean(trials, metric) for metric in TIMING})
    row["notes"] = "; ".join(notes)
    return row


def _compare(data: _SectionData, a: str, b: str, headline: str, n_resamples: int, seed: int) -> dict:
    """A against B on the headline metric: paired when both have per-record losses, else the pooled means only."""
    set_name = headline[: -len(LOSS)]
    xa, xb = data.arrays[a, set_name], data.arrays[b, set_name]
    out = {"budget": data.section.budget, "selector": a, "reference": b}
    if any(x is None or x is DIVERGED for x in (xa, xb)):  # no paired test; a diverged side has no value either
        delta = np.nan if any(x is DIVERGED for x in (xa, xb)) else \
            _mean(data.section.groups[a], headline) - _mean(data.section.groups[b], headline)
        return {**out, "delta": delta, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "levels": "none",
                "n_records": np.nan}
    d = stats.paired_difference(*xa, *xb, n_resamples=n_resamples, seed=seed, n_permutations=n_resamples,
                                seeds_paired=_same_seeds(data, a, b))
    return {**out, "delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p_value,
            "levels": "+".join(d.levels), "n_records": d.n_records}


def _same_seeds(data: _SectionData, a: str, b: str) -> bool:
    """Whether A's and B's trials ran the same training seeds (rows are in seed order): their
    seed draws are then shared; other seed sets (`--full-seeds 1`, a lost seed) are drawn apart."""
    seeds = [[t.seed for t in data.section.groups[name]] for name in (a, b)]
    return seeds[0] == seeds[1]


def _compare_answers(data: _SectionData, a: str, b: str, column: str, n_resamples: int, seed: int) -> dict | None:
    """A against B on an answer score (higher is better), paired on the same answered prompts."""
    xa, xb = data.answers.get((a, column)), data.answers.get((b, column))
    if xa is None or xb is None:
        return None
    d = stats.paired_difference(*xa, *xb, n_resamples=n_resamples, seed=seed, n_permutations=n_resamples,
                                seeds_paired=_same_seeds(data, a, b))
    return {"budget": data.section.budget, "metric": column, "selector": a, "reference": b, "delta": d.delta,
            "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p_value, "levels": "+".join(d.levels),
            "n_records": d.n_records}


def _ask_once(done: dict, comparisons: list, selector: str, ref: str, compute) -> tuple[int, bool] | None:
    """(index in `comparisons`, asked the other way round?) for selector against ref. A pair is
    one test whichever way round it is asked, so `compute()` runs once per pair (None: no test)."""
    pair = frozenset((selector, ref))
    if pair not in done:
        result = compute()
        if result is None:
            return None
        done[pair] = len(comparisons)
        comparisons.append(result)
    return done[pair], comparisons[done[pair]]["selector"] != selector


def _answer_comparisons(data: _SectionData, rows: list[dict], columns: list[str], n_resamples: int, seed: int,
                        comparisons: list) -> None:
    """Every selector against random and full on each answer score; a pair is one test, asked once."""
    for column in columns:
        done: dict[frozenset, int] = {}
        for row in rows:
            for ref in ANSWER_REFERENCES:
                key = f"{column}_vs_{ref}"
                row[key] = None
                if ref == row["selector"] or ref not in data.section.groups:
                    continue
                row[key] = _ask_once(done, comparisons, row["selector"], ref, lambda: _compare_answers(
                    data, row["selector"], ref, column, n_resamples, seed))


def _fill_answer_comparisons(rows: list[dict], columns: list[str], comparisons: pd.DataFrame) -> None:
    for row in rows:
        for column in columns:
            for ref in ANSWER_REFERENCES:
                _fill_one(row, row.pop(f"{column}_vs_{ref}", None), comparisons, f"{column}_vs_{ref}",
                          f"{column}_verdict_vs_{ref}", lower_is_better=False)


def _best(rows: list[dict], headline: str | None) -> str | None:
    """The selector with the lowest headline loss at this budget (`full` is not a selection)."""
    ranked = [r for r in rows if headline and r["selector"] != "full" and np.isfinite(r.get(headline, np.nan))]
    return min(ranked, key=lambda r: r[headline])["selector"] if ranked else None


def _section_rows(data: _SectionData, sets, extras, headline, n_resamples, seed, comparisons: list,
                  answers: list[str] = (), answer_comparisons: list | None = None) -> list[dict]:
    """Rows of one section, each with the keys of its comparisons (filled in after Holm)."""
    rows = [_row(data, s, sets, extras, n_resamples, seed, answers) for s in data.section.groups]
    if answers:
        _answer_comparisons(data, rows, list(answers), n_resamples, seed, answer_comparisons)
    best = _best(rows, headline)
    done: dict[frozenset, int] = {}  # a pair is one test, whichever way round it is asked
    for row in rows:
        row["best"] = best
        refs = {"random": "random", "full": "full", "best": best}
        for name, ref in refs.items():
            if headline is None or ref is None or ref == row["selector"] or ref not in data.section.groups:
                row[f"vs_{name}"] = None
                continue
            row[f"vs_{name}"] = _ask_once(done, comparisons, row["selector"], ref, lambda: _compare(
                data, row["selector"], ref, headline, n_resamples, seed))
    return rows


def _fill_comparisons(rows: list[dict], comparisons: pd.DataFrame) -> None:
    """Each row's delta, CI, p, Holm-adjusted p and verdict per reference."""
    for row in rows:
        for name in REFERENCES:
            _fill_one(row, row.pop(f"vs_{name}"), comparisons, f"vs_{name}", f"verdict_vs_{name}", lower_is_better=True)


def _fill_one(row: dict, ref, comparisons: pd.DataFrame, prefix: str, verdict_key: str, lower_is_better: bool) -> None:
    """`<prefix>_delta|ci_low|ci_high|p|p_holm` and the verdict from comparison `ref` = (index, flipped),
    or NaN and None when there is none; a flipped pair negates delta and CI."""
    keys = [f"{prefix}_{k}" for k in ("delta", "ci_low", "ci_high", "p", "p_holm")]
    if ref is None:
        row.update(dict.fromkeys(keys, np.nan), **{verdict_key: None})
        return
    c = comparisons.iloc[ref[0]]
    sign = -1.0 if ref[1] else 1.0
    low, high = sorted((sign * c["ci_low"], sign * c["ci_high"])) if np.isfinite(c["ci_low"]) else (np.nan, np.nan)
    row.update(zip(keys, (sign * c["delta"], low, high, c["p"], c["p_holm"])))
    row[verdict_key] = (stats.verdict(low, high, c["p_holm"], lower_is_better=lower_is_better)
                        if np.isfinite(c["p_holm"]) else None)


def _fewer_seeds(data: _SectionData, rows: list[dict]) -> str | None:
    """How comparisons between selectors that ran different seeds are made, said once."""
    from collections import Counter

    seeds = {r["selector"]: tuple(t.seed for t in data.section.groups[r["selector"]]) for r in rows}
    if not seeds:
        return None
    counts = Counter(seeds.values())  # the seeds most rows ran (more seeds first on a tie)
    most = max(counts, key=lambda s: (counts[s], len(s)))
    other = [name for name, s in seeds.items() if s != most]
    if not other:
        return None
    which = ", ".join(f"{name} ({_count(len(seeds[name]), 'seed')})" for name in other)
    return (f"Not every row ran seeds {', '.join(most)}: {which}. A comparison with such a row draws each side's "
            "seeds on its own (the eval records stay paired), so the other side's seed variation is in its "
            "interval and that row's missing seeds add none.")


def _tie_warnings(rows: list[dict]) -> list[str]:
    """A judge that ties more than 90% of its pairs cannot tell the answers apart: said per eval
    set and baseline, with the share, so nobody reads its wins and losses as a result."""
    out = []
    for column in sorted({k for r in rows for k in r if k.endswith(".tie_rate mean")}):
        shares = [r[column] for r in rows if np.isfinite(r.get(column, np.nan))]
        if shares and float(np.mean(shares)) > 0.9:
            pairs = column[: -len(".tie_rate mean")]
            out.append(f"Warning: the judge tied {float(np.mean(shares)):.0%} of the pairs in {pairs} (over 90%): it "
                       "cannot tell these answers apart, so its wins and losses decide nothing; rely on eval loss "
                       "and the reference metrics, or point --judge at a stronger model.")
    return out


def _pairwise_budget_notes(data: _SectionData) -> list[str]:
    """Pairwise judging got the judges' own prompt budget (and its `clipped` count) in a later
    version; before, it cut prompts to the training --max-length. Trials of both in one section
    were judged on differently cut prompts: said, with which."""
    trials = [t for ts in data.section.groups.values() for t in ts]
    out = []
    for prefix in sorted({m[: -len("wins")] for t in trials for m in t.metrics if m.endswith(".wins")}):
        judged = [t for t in trials if f"{prefix}wins" in t.metrics]
        older = [t for t in judged if f"{prefix}clipped" not in t.metrics]
        if older and len(older) < len(judged):
            which = ", ".join(f"{t.selector} seed {t.seed}" for t in older)
            out.append(f"{prefix[:-1]}: {which} were judged pairwise by an earlier version, which cut the pair "
                       "prompt to the training --max-length (the others: to judge_max_length); their wins and "
                       "losses are not on quite the same footing.")
    return out


def _section_notes(data: _SectionData, rows: list[dict], headline: str | None) -> list[str]:
    notes = list(data.notes)
    one = [r["selector"] for r in rows if r["seeds"] == 1]
    if one and len(one) == len(rows):
        notes.append("One seed per selector: intervals and p-values come from the eval records alone; "
                     "they do not include training-seed variation.")
    elif one:
        notes.append(f"One seed for {', '.join(one)}: their own intervals come from the eval records alone.")
    fewer = _fewer_seeds(data, rows)
    if fewer:
        notes.append(fewer)
    notes += _tie_warnings(rows) + _pairwise_budget_notes(data)
    replaced = sorted((t.selector, t.seed, t.superseded) for ts in data.section.groups.values() for t in ts
                      if t.superseded)
    if replaced:
        which = ", ".join(f"{s} seed {seed} ({n})" for s, seed, n in replaced)
        notes.append(f"Earlier finished runs replaced by a later run of the same selector, budget and seed (other "
                     f"settings, data or code, or the same run again): {which}; only the latest counts.")
    best = rows[0].get("best") if rows else None
    if best:
        notes.append(f"vs_best compares with {best}, the lowest {headline} at this budget (full not counted).")
    if headline and data.section.fraction is None:
        notes.append("The pool size is unknown, so this budget is left off the budget curve.")
    fallback = [r["selector"] for r in rows if headline and np.isnan(r.get(f"{headline}_ci_low", np.nan))
                and np.isfinite(r.get(headline, np.nan))]
    if fallback:
        notes.append(f"No per-record eval losses for {', '.join(fallback)} (older runs): their {headline} is the "
                     "mean of pooled values, without a CI, and no verdict is given for them.")
    return notes


# -- the whole leaderboard -------------------------------------------------------
@dataclass
class Leaderboard:
    experiment: str
    headline: str | None  # e.g. "heldout.eval_loss"; None when no eval set has references
    table: pd.DataFrame  # one row per (budget, selector)
    comparisons: pd.DataFrame  # one row per distinct paired comparison, with p and Holm-adjusted p_holm
    sentences: dict  # budget -> stats.verdict_sentence
    notes: dict  # budget -> notes a reader needs (one seed, fallbacks, which selector is best)
    labels: dict  # budget -> how a person says it
    extras: list  # metrics shown as mean ± std over seeds
    n_resamples: int
    seed: int
    answers: list = field(default_factory=list)  # `<set>.<metric>` answer scores shown with CIs
    answer_comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)  # with p_holm per (metric) family


def _metric_names(trials: list[Trial]) -> tuple[list[str], list[str], list[str]]:
    """(every eval set, the sets with references, the extra metrics)."""
    names = {m for t in trials for m in t.metrics} | {f"{s}{LOSS}" for t in trials for s in t.tables}
    sets = sorted(m[: -len(LOSS)] for m in names if m.endswith(LOSS))
    with_refs = [s for s in sets if any(s in t.tables or np.isfinite(t.metrics.get(s + LOSS, np.nan))
                                        for t in trials)]
    extras = sorted(m for m in names if not m.endswith(LOSS) and m != "n_selected" and m not in TIMING)
    return sets, with_refs, extras


def build_leaderboard(client, experiment: str, n_resamples: int = 10_000, seed: int = 0) -> Leaderboard:
    """Every budget's rows, paired comparisons Holm-adjusted across the whole leaderboard, and a sentence per budget.
    The latest compare run's pool-audit sentence joins every budget's notes (compare logs it on that run)."""
    trials = load_trials(client, experiment)
    audit_note = tracking.audit_note(client, experiment)
    sets, with_refs, extras = _metric_names(trials)
    answers = answer_columns(trials)
    extras = [m for m in extras if m not in answers]  # shown with their CIs instead of mean ± std
    answer_comparisons: list[dict] = []
    headline_set = "heldout" if "heldout" in with_refs else (with_refs[0] if with_refs else None)
    headline = headline_set + LOSS if headline_set else None
    sets = ([headline_set] if headline_set else []) + [s for s in sets if s != headline_set]
    comparisons, rows, notes, labels = [], [], {}, {}
    per_section = []
    for section in sections(trials):
        data = _section_data(section, [s for s in sets if s in with_refs], answers)
        section_rows = _section_rows(data, sets, extras, headline, n_resamples, seed, comparisons, answers,
                                     answer_comparisons)
        per_section.append((data, section_rows))
        labels[section.budget] = section.label
    comps = pd.DataFrame(comparisons, columns=["budget", "selector", "reference", "delta", "ci_low", "ci_high", "p",
                                               "levels", "n_records"])
    comps["p_holm"] = stats.holm(comps["p"].to_numpy(float)) if len(comps) else []
    acomps = pd.DataFrame(answer_comparisons, columns=["budget", "metric", "selector", "reference", "delta", "ci_low",
                                                       "ci_high", "p", "levels", "n_records"])
    acomps["p_holm"] = np.nan
    for _, family in acomps.groupby("metric"):  # one Holm family per answer score, across the leaderboard
        acomps.loc[family.index, "p_holm"] = stats.holm(family["p"].to_numpy(float))
    sentences = {}
    for data, section_rows in per_section:
        _fill_comparisons(section_rows, comps)
        _fill_answer_comparisons(section_rows, answers, acomps)
        section_rows.sort(key=lambda r: _sort_key(r, headline))
        notes[data.section.budget] = _section_notes(data, section_rows, headline) + ([audit_note] if audit_note else [])
        sentences[data.section.budget] = stats.verdict_sentence(
            data.section.label, [(r["selector"], r["verdict_vs_random"], r["verdict_vs_full"])
                                 for r in section_rows if r["selector"] != "full"])
        rows += section_rows
    comps["verdict"] = [stats.verdict(c.ci_low, c.ci_high, c.p_holm, lower_is_better=True)
                        if np.isfinite(c.p_holm) else None for c in comps.itertuples()]
    acomps["verdict"] = [stats.verdict(c.ci_low, c.ci_high, c.p_holm, lower_is_better=False)
                         for c in acomps.itertuples()]
    return Leaderboard(experiment, headline, _ordered(pd.DataFrame(rows), headline, sets, extras, answers), comps,
                       sentences, notes, labels, extras, n_resamples, seed, answers, acomps)


def _sort_key(row: dict, headline: str | None):
    """Lowest headline first; rows without a value last, by name."""
    value = row.get(headline, np.nan) if headline else np.nan
    return (not np.isfinite(value), value if np.isfinite(value) else 0.0, row["selector"])


def _loss_columns(set_name: str) -> list[str]:
    return [f"{set_name}{LOSS}", f"{set_name}{LOSS}_ci_low", f"{set_name}{LOSS}_ci_high"]


def _answer_table_columns(column: str) -> list[str]:
    return [column, f"{column}_ci_low", f"{column}_ci_high"] + [
        f"{column}_vs_{r}_{k}" for r in ANSWER_REFERENCES for k in ("delta", "ci_low", "ci_high", "p", "p_holm")] + [
        f"{column}_verdict_vs_{r}" for r in ANSWER_REFERENCES]


def _ordered(table: pd.DataFrame, headline: str | None, sets: list[str], extras: list[str],
             answers: list[str] = ()) -> pd.DataFrame:
    """Headline columns first, then the other sets, answer scores, extras, sizes and timings."""
    first = ["budget", "budget_label", "budget_fraction", "selector", "baseline"]
    head = _loss_columns(headline[: -len(LOSS)]) if headline else []
    vs = [f"vs_{r}_{k}" for r in REFERENCES for k in ("delta", "ci_low", "ci_high", "p", "p_holm")] \
        + [f"verdict_vs_{r}" for r in REFERENCES] + ["best"]
    rest = [c for s in sets if f"{s}{LOSS}" != headline for c in _loss_columns(s)]
    extra = [f"{m} {k}" for m in extras for k in ("mean", "std")]
    scored = [c for column in answers for c in _answer_table_columns(column)]
    columns = first + head + vs + rest + scored + extra + ["n_selected", "seeds", *TIMING, "notes"]
    return table[[c for c in columns if c in table.columns]].reset_index(drop=True)


# -- the command line as written into the leaderboard: manifest.sanitize_command (one implementation)


# -- writing --------------------------------------------------------------------
def _missing(row, metric: str) -> str:
    """`NaN` where the run says why (the reason is in notes); blank where it never logged the metric."""
    return "NaN" if f"{metric}: NaN" in (row.get("notes") or "") else ""


def _num(row, metric: str, fmt: str) -> str:
    value = row.get(metric)
    return _missing(row, metric) if value is None or not np.isfinite(value) else format(value, fmt)


def _loss_cell(row, metric: str) -> str:
    value, low, high = row.get(metric), row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if value is None or not np.isfinite(value):
        return _missing(row, metric)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f} (no CI)"


def _comparison_cells(row, name: str) -> list[str]:
    if row["selector"] == name or (name == "best" and row["selector"] == row.get("best")):
        return ["—", "—", "(self)" if name != "best" else "(best)"]
    delta, verdict = row.get(f"vs_{name}_delta"), row.get(f"verdict_vs_{name}")
    if delta is None or not np.isfinite(delta):
        return ["", "", ""]
    low, high = row.get(f"vs_{name}_ci_low"), row.get(f"vs_{name}_ci_high")
    ci = f"[{low:+.4f}, {high:+.4f}]" if np.isfinite(low) else "no CI"
    said = f"{verdict} (p_holm {row[f'vs_{name}_p_holm']:.2g})" if isinstance(verdict, str) else "n/a (no test)"
    return [f"{delta:+.4f}", ci, said]


def _answer_cells(row, column: str) -> list[str]:
    """`mean [CI]` and, against random, `delta [CI] verdict`."""
    value, low, high = (row.get(column), row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high"))
    own = f"{value:.3f} [{low:.3f}, {high:.3f}]" if value is not None and np.isfinite(value) else ""
    if row["selector"] == "random":
        return [own, "—"]
    delta, verdict = row.get(f"{column}_vs_random_delta"), row.get(f"{column}_verdict_vs_random")
    if delta is None or not np.isfinite(delta):
        return [own, ""]
    lo, hi, p = (row.get(f"{column}_vs_random_{k}") for k in ("ci_low", "ci_high", "p_holm"))
    return [own, f"{delta:+.3f} [{lo:+.3f}, {hi:+.3f}] {verdict} (p_holm {p:.2g})"]


def _extra_cell(row, metric: str) -> str:
    mean, std = row.get(f"{metric} mean"), row.get(f"{metric} std")
    if mean is None or not np.isfinite(mean):
        return _missing(row, metric)
    return f"{mean:.4g}" + (f" ± {std:.2g}" if std is not None and np.isfinite(std) else "")


def _header(board: Leaderboard, sets: list[str]) -> list[str]:
    head = [f"{board.headline} [95% CI]"] if board.headline else []
    vs = [f"vs_{r}_{k}" if k != "verdict" else f"verdict_vs_{r}" for r in REFERENCES for k in ("delta", "ci", "verdict")]
    scored = [h for column in board.answers for h in (f"{column} [95% CI]", f"{column} vs_random")]
    return ["selector", *head, *(vs if board.headline else []), *[f"{s}{LOSS} [95% CI]" for s in sets],
            *scored, *board.extras, "n_selected", "seeds", *TIMING, "notes"]


def _table_lines(board: Leaderboard, rows: pd.DataFrame, sets: list[str]) -> list[str]:
    header = _header(board, sets)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in rows.iterrows():
        name = row["selector"] + (" (baseline)" if row["baseline"] else "")
        cells = [name] + ([_loss_cell(row, board.headline)] if board.headline else [])
        if board.headline:
            cells += [c for r in REFERENCES for c in _comparison_cells(row, r)]
        cells += [_loss_cell(row, f"{s}{LOSS}") for s in sets]
        cells += [c for column in board.answers for c in _answer_cells(row, column)]
        cells += [_extra_cell(row, m) for m in board.extras]
        cells += [_num(row, "n_selected", "g"), str(row["seeds"])] + [_num(row, m, ".1f") for m in TIMING]
        cells.append(row.get("notes") or "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


EXTRA_MEANINGS = {
    "judge_quality": "judge's quality score of generated answers, 1..6, higher is better",
    "deita_quality": "Deita quality score of generated answers, higher is better",
    "winning_score": "pairwise against the baseline's answers, (wins - losses) / n + 1 in 0..2, above 1 beats it",
    "wins": "pairwise comparisons won (both answer orders agree), a count",
    "ties": "pairwise comparisons tied, a count",
    "losses": "pairwise comparisons lost, a count",
    "tie_rate": "share of pairwise comparisons the judge tied, 0..1 (above 0.9: it cannot tell the answers apart)",
    "clipped": "pairwise comparisons whose question or an answer lost its tail to fit `judge_max_length`, a count",
    "train_loss": "final training loss on the selected subset, nats (not comparable across subsets)",
}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _legend(board: Leaderboard, sets: list[str]) -> list[str]:
    """Every column's meaning, scale and direction, once."""
    n_tests = int(np.isfinite(board.comparisons["p"]).sum()) if len(board.comparisons) else 0
    lines = ["## What the columns mean", ""]
    if board.headline:
        lines += [
            f"- `{board.headline}` (the headline) and every `<set>.eval_loss`: answer-token cross-entropy in nats "
            "on that eval set, pooled over its answer tokens and the selector's seeds; lower is better. "
            "[95% CI]: two-level bootstrap over seeds and eval records.",
            f"- `vs_random_delta`, `vs_full_delta`, `vs_best_delta`: {board.headline} of the row minus that of "
            "random / full / the best selector of the budget, on the same eval records, in nats; negative is better.",
            f"- `vs_*_ci`: 95% paired two-level bootstrap interval of that delta ({board.n_resamples:,} resamples, "
            "record draws shared by both sides; seed draws shared when both ran the same seeds, else drawn for each "
            "side on its own). `—` and `(self)` / `(best)`: the row is that reference.",
            "- `verdict_vs_*`: `better` or `worse` only when the CI excludes 0 and the Holm-adjusted p < 0.05, "
            f"else `no difference`; p is a two-sided sign-flip permutation test over eval records "
            f"({board.n_resamples:,} permutations, exact up to 16 records), Holm-adjusted "
            f"over {_count(n_tests, 'comparison')} of this leaderboard (p_holm shown). `n/a`: no per-record losses, no test.",
        ]
    for column in board.answers:
        set_name, metric = column.rsplit(".", 1)
        n = board.answer_comparisons
        n_tests = int((n["metric"] == column).sum()) if len(n) else 0
        lines.append(f"- `{column}`: {ANSWER_METRICS[metric]}, higher is better; the mean over the answered "
                     f"prompts of {set_name} (the first `--gen-size`) and the seeds, [95% CI] by the same two-level "
                     f"bootstrap. `{column} vs_random`: the row minus random, paired on the same prompts, with its "
                     f"95% CI and verdict; Holm-adjusted over {_count(n_tests, 'comparison')} of this metric (against "
                     "random and full, every budget: the CSV has both), separately from the headline's.")
    for metric in board.extras:
        meaning = next((v for k, v in EXTRA_MEANINGS.items() if metric.endswith(k)), "a logged metric")
        lines.append(f"- `{metric}`: {meaning}; mean ± standard deviation over seeds.")
    lines += ["- `n_selected`: records in the selected subset (mean over seeds); `seeds`: trials counted.",
              "- `scoring_seconds`, `training_seconds`, `eval_seconds`: wall-clock seconds the run that logged the "
              "trial spent on each step, mean over seeds. What it found in the cache (scores, a fine-tuned model, "
              "eval losses another trial or an earlier run computed) costs it about 0 s, so these are that run's "
              "costs, not the method's; a model's own training time is `train_seconds` in its "
              "`cherrybench_finetune.json`.",
              "- `notes`: metrics that are NaN, with the reason, and fallbacks."]
    return lines


def write_markdown(board: Leaderboard, path: Path, command: str | None) -> Path:
    sets = [c[: -len(LOSS)] for c in board.table.columns if c.endswith(LOSS) and c != board.headline]
    lines = [f"# Leaderboard: {board.experiment}", ""]
    if command:
        lines += ["Produced by:", "", "```bash", sanitize_command(command), "```", ""]
    if board.headline:
        lines += [f"Headline: `{board.headline}`, rows sorted by it (lower is better). Every selector is compared, "
                  "paired on the same eval records, with `random` at the same budget, with `full` and with the best "
                  "selector of its budget.", ""]
    for budget, rows in board.table.groupby("budget", sort=False):
        lines += [f"## Budget: {board.labels[budget]} (`--budget {budget}`)", ""]
        lines += _table_lines(board, rows, sets) + ["", f"Verdict: {board.sentences[budget]}", ""]
        lines += [f"- {n}" for n in board.notes[budget]] + ([""] if board.notes[budget] else [])
    lines += _legend(board, sets)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_curve(board: Leaderboard, path: Path) -> Path:
    """Headline metric against budget (share of the pool), one line per selector."""
    table, h = board.table, board.headline
    curves, full = {}, None
    if h:
        known = table[table["budget_fraction"].notna() & table[h].notna()]
        for selector, rows in known[known["selector"] != "full"].groupby("selector"):
            curves[selector] = (rows["budget_fraction"].astype(float), rows[h], rows[f"{h}_ci_low"], rows[f"{h}_ci_high"])
        full_rows = table[(table["selector"] == "full") & table[h].notna()]
        if len(full_rows):
            full = tuple(float(full_rows[c].mean()) for c in (h, f"{h}_ci_low", f"{h}_ci_high"))
    ylabel = f"{h} (nats, lower is better)" if h else "eval_loss"
    return plots.budget_curve(curves, path, ylabel=ylabel, full=full,
                              title=f"{board.experiment}: {h or 'eval_loss'} by budget, 95% CI")


def write_leaderboard(board: Leaderboard, experiment: str, out_dir: Path, command: str | None = None):
    """`<experiment>.md` for people, `.csv` with every number, `.budget.png` the budget curve."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    md, csv, png = out_dir / f"{safe}.md", out_dir / f"{safe}.csv", out_dir / f"{safe}.budget.png"
    board.table.to_csv(csv, index=False)
    write_markdown(board, md, command)
    write_curve(board, png)
    return md, csv, png


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--out-dir", default="leaderboards")
    parser.add_argument("--resamples", type=int, default=10_000,
                        help=f"bootstrap resamples and sign-flip permutations per comparison (default 10000, at "
                             f"least {MIN_RESAMPLES}); the smallest p is 1/(N+1), so keep N well above 20 x the "
                             "number of comparisons for Holm")


def check_resamples(args) -> None:
    """--resamples: a whole number >= MIN_RESAMPLES, checked before any work."""
    at_least(args, "--resamples", MIN_RESAMPLES)


def run(args) -> int:
    check_resamples(args)
    uri = tracking.tracking_uri(args.tracking_uri)
    client = tracking.check_tracking(uri)
    board = build_leaderboard(client, args.experiment, n_resamples=args.resamples)
    md, csv, png = write_leaderboard(board, args.experiment, Path(args.out_dir),
                                     tracking.latest_command(client, args.experiment))
    print(md.read_text())
    print(f"wrote {md}, {csv} and {png}")
    return 0
