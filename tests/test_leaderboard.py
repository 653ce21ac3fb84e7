"""Leaderboards from MLflow runs: paired comparisons on constructed per-record
losses whose truth is known (clearly better, clearly worse, the same
distribution, `full` far better), Holm across the leaderboard, one section per
budget with its sentence, the one-seed note, the markdown's meaning lines and
sanitised command, the budget curve, and the older semantics: a rerun of the
same configuration counts once, FAILED runs are not counted, a NaN shows its
reason, and a run without per-record tables falls back to its pooled metric."""

from __future__ import annotations

import math
import struct

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cherrybench import stats
from cherrybench.runners import tracking
from cherrybench.runners.leaderboard import build_leaderboard, sanitize_command, write_leaderboard

N_RECORDS, SEEDS, POOL = 40, (0, 1, 2), 200
rng_world = np.random.default_rng(7)
DIFFICULTY = rng_world.uniform(1.0, 3.0, N_RECORDS)  # shared by every trial: what pairing cancels
TOKENS = rng_world.integers(5, 40, N_RECORDS)
TOKENS[0] = 0  # one record without answer tokens: no weight, never a zero loss


def per_record(shift: float, seed: int, salt: int) -> pd.DataFrame:
    """A trial's eval table: record difficulty + the selector's shift + a small seed effect + noise."""
    rng = np.random.default_rng([seed, salt])
    mean = DIFFICULTY + shift + 0.02 * rng.standard_normal() + 0.05 * rng.standard_normal(N_RECORDS)
    scored = TOKENS > 0
    return pd.DataFrame({"id": [f"r{i}" for i in range(N_RECORDS)], "n_tokens": TOKENS,
                         "loss_sum": np.where(scored, mean * TOKENS, np.nan),
                         "loss_mean": np.where(scored, mean, np.nan),
                         "reason": [None if s else "no_answer_tokens" for s in scored]})


N_ANSWERED = 30  # the first 30 heldout prompts get generated answers (`--gen-size`)


def answers(shift: float, seed: int, salt: int) -> pd.DataFrame:
    """A trial's answer scores: prompt difficulty + the selector's shift + noise; one unscorable answer."""
    rng = np.random.default_rng([seed, salt, 1])
    rouge = 0.3 + 0.1 * (DIFFICULTY[:N_ANSWERED] - 2) + shift + 0.03 * rng.standard_normal(N_ANSWERED)
    rouge[3] = np.nan  # an unscorable reference (the same prompt for every model): no weight
    return pd.DataFrame({"id": [f"r{i}" for i in range(N_ANSWERED)], "answer": ["a"] * N_ANSWERED,
                         "rouge_l": rouge, "embedding_similarity": 0.6 + 0.03 * rng.standard_normal(N_ANSWERED)})


def log_child(client, exp_id, selector, seed, key, metrics, status="FINISHED", tags=None, params=None,
              tables=None, tmp=None, answer_tables=None):
    run = client.create_run(exp_id, tags={tracking.ROLE_TAG: "child", tracking.SELECTOR_TAG: selector,
                                          tracking.SEED_TAG: str(seed), tracking.KEY_TAG: key, **(tags or {})})
    for name, value in (params or {}).items():
        client.log_param(run.info.run_id, name, value)
    for name, table in (tables or {}).items():
        path = tmp / f"{name}.per_record.parquet"
        table.to_parquet(path, index=False)
        client.log_artifact(run.info.run_id, str(path), artifact_path="eval")
        metrics = {f"{name}.eval_loss": table["loss_sum"].sum() / table["n_tokens"].sum(), **metrics}
    for name, table in (answer_tables or {}).items():
        path = tmp / f"{name}{tracking.ANSWERS_SUFFIX}"
        table.to_parquet(path, index=False)
        client.log_artifact(run.info.run_id, str(path), artifact_path="eval")
        metrics = {f"{name}.rouge_l": table["rouge_l"].mean(), **metrics}  # what compare logs: a mean, no CI
    for name, value in metrics.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id, status)


def log_trial(client, exp_id, tmp, selector, seed, budget, shift, salt, n_selected):
    tables = {"heldout": per_record(shift, seed, salt), "alpaca": per_record(shift, seed, salt + 100).iloc[:20]}
    log_child(client, exp_id, selector, seed, f"{selector}-{budget}-{seed}",
              {"n_selected": n_selected, "heldout.judge_quality": 3 + seed, "scoring_seconds": 1.0,
               "training_seconds": 2.0 + seed, "eval_seconds": 0.5},
              tags={tracking.BUDGET_TAG: budget}, params={"budget": budget, "pool_size": POOL}, tables=tables, tmp=tmp,
              answer_tables={"heldout": answers(ANSWER_SHIFT.get(selector, 0.0), seed, salt)})


# budget -> selector -> true shift of the per-record losses against random
TRUTH = {"0.05": {"random": 0.0, "good": -0.5, "bad": 0.5, "same": 0.0}, "20": {"random": 0.0, "good": -0.3}}
FULL_SHIFT = -1.0
ANSWER_SHIFT = {"good": 0.1, "bad": -0.1, "full": 0.2}  # ROUGE-L against random: higher is better


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store (its migrations take seconds) with the constructed experiments."""
    tmp = tmp_path_factory.mktemp("board")
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.create_experiment("paired", artifact_location=(tmp / "art").as_uri())
    for seed in SEEDS:
        log_trial(client, exp, tmp, "full", seed, "full", FULL_SHIFT, 99, POOL)  # one run per seed, every budget's
        for budget, shifts in TRUTH.items():
            for salt, (selector, shift) in enumerate(shifts.items()):
                log_trial(client, exp, tmp, selector, seed, budget, shift, salt + 10 * len(budget), 10)
    one = client.create_experiment("oneseed", artifact_location=(tmp / "art1").as_uri())
    for salt, (selector, shift) in enumerate({"random": 0.0, "good": -0.5, "full": FULL_SHIFT}.items()):
        log_trial(client, one, tmp, selector, 0, "full" if selector == "full" else "0.1", shift, salt, 20)
    return client, tmp


@pytest.fixture(scope="module")
def board(store):
    return build_leaderboard(store[0], "paired")


def section(board, budget) -> pd.DataFrame:
    return board.table[board.table["budget"] == budget].set_index("selector")


@pytest.mark.slow
def test_paired_verdicts_match_the_constructed_truth(board):
    assert board.headline == "heldout.eval_loss"
    assert list(board.table["budget"].unique()) == ["0.05", "20"]  # 5% before 20 of 200 records (10%)
    rows = section(board, "0.05")
    assert list(rows.index) == ["full", "good", "same", "random", "bad"] or \
        list(rows.index) == ["full", "good", "random", "same", "bad"]  # sorted by the headline, lower first
    assert rows.loc["good", "verdict_vs_random"] == "better"
    assert rows.loc["bad", "verdict_vs_random"] == "worse"
    assert rows.loc["same", "verdict_vs_random"] == "no difference"
    assert rows.loc["random", "verdict_vs_full"] == "worse" and rows.loc["good", "verdict_vs_full"] == "worse"
    assert rows.loc["full", "verdict_vs_random"] == "better"  # the same test as random's vs_full, turned round
    assert rows.loc["good", "vs_random_delta"] == pytest.approx(-0.5, abs=0.05)
    assert rows.loc["good", "vs_random_ci_low"] < -0.5 + 0.05 and rows.loc["good", "vs_random_ci_high"] > -0.5 - 0.05
    assert rows.loc["same", "vs_random_ci_low"] < 0 < rows.loc["same", "vs_random_ci_high"]
    assert rows.loc["bad", "best"] == "good" and rows.loc["bad", "verdict_vs_best"] == "worse"
    assert math.isnan(rows.loc["random", "vs_random_delta"]) and pd.isna(rows.loc["random", "verdict_vs_random"])
    assert bool(rows.loc["random", "baseline"]) and not bool(rows.loc["good", "baseline"])
    assert section(board, "20").loc["good", "verdict_vs_random"] == "better"
    assert section(board, "20").loc["good", "budget_label"] == "20 records (10%)"
    # the selector's own value is its pooled answer-token mean over seeds and records, inside its own CI
    num = sum(per_record(-0.5, s, 1 + 10 * len("0.05"))["loss_sum"].sum() for s in SEEDS)
    assert rows.loc["good", "heldout.eval_loss"] == pytest.approx(num / (3 * TOKENS.sum()))
    assert rows.loc["good", "heldout.eval_loss_ci_low"] < rows.loc["good", "heldout.eval_loss"] \
        < rows.loc["good", "heldout.eval_loss_ci_high"]
    assert rows.loc["good", "alpaca.eval_loss_ci_low"] < rows.loc["good", "alpaca.eval_loss"]
    assert rows.loc["good", "seeds"] == 3 and rows.loc["good", "n_selected"] == 10
    assert rows.loc["good", "heldout.judge_quality mean"] == pytest.approx(4.0)
    assert rows.loc["good", "training_seconds"] == pytest.approx(3.0)


@pytest.mark.slow
def test_holm_runs_across_the_whole_leaderboard(board):
    comps = board.comparisons
    assert set(comps["budget"]) == {"0.05", "20"}
    np.testing.assert_allclose(comps["p_holm"], stats.holm(comps["p"].to_numpy(float)))
    pairs = [frozenset(p) for p in zip(comps["budget"], comps["selector"], comps["reference"])]
    assert len(pairs) == len(set(pairs))  # each pair is one test, counted once
    row = section(board, "0.05").loc["bad"]
    match = comps[(comps["budget"] == "0.05") & (comps["selector"] == "bad") & (comps["reference"] == "random")]
    assert row["vs_random_p_holm"] == pytest.approx(match["p_holm"].item())
    assert (comps["levels"] == "seeds+records").all()


@pytest.mark.slow
def test_written_markdown_csv_and_budget_curve(board, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = (f"cherrybench compare --data {tmp_path}/data/pool.json --budget 0.05 "
               f"--tracking-uri sqlite:///{store[1]}/mlflow.db --eval vic:/home/someone/evals/vic.json")
    md, csv, png = write_leaderboard(board, "paired", tmp_path / "lb", command)
    text = md.read_text()
    assert "cherrybench compare --data data/pool.json --budget 0.05" in text
    assert f"sqlite:///<abs>/{store[1].name}/mlflow.db" in text and "--eval vic:<abs>/evals/vic.json" in text
    assert str(tmp_path) not in text and "/home/someone" not in text
    for budget, sentence in board.sentences.items():
        assert f"Verdict: {sentence}" in text
    assert board.sentences["0.05"] == ("at 5%, good beats random and bad does worse than random; "
                                       "good, random, same and bad do worse than full.")
    assert "## Budget: 5% (`--budget 0.05`)" in text and "## Budget: 20 records (10%) (`--budget 20`)" in text
    assert "| random (baseline) |" in text and "| full (baseline) |" in text and "| good |" in text
    header = next(line for line in text.splitlines() if line.startswith("| selector |"))
    assert header.startswith("| selector | heldout.eval_loss [95% CI] | vs_random_delta | vs_random_ci | "
                             "verdict_vs_random | vs_full_delta |")
    assert "answer-token cross-entropy in nats" in text and "negative is better" in text
    assert "CI excludes 0 and the Holm-adjusted p < 0.05" in text and "1..6, higher is better" in text
    assert text.index("| full (baseline) |") < text.index("| good |") < text.index("| bad |")
    table = pd.read_csv(csv)
    assert len(table) == len(board.table) and {"budget", "selector", "vs_random_delta", "vs_random_ci_low",
                                                "vs_random_ci_high", "vs_random_p", "vs_random_p_holm",
                                                "verdict_vs_random", "vs_full_p_holm"} <= set(table.columns)
    data = png.read_bytes()
    assert png.name == "paired.budget.png" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert struct.unpack(">II", data[16:24]) == (880, 528)  # 8 x 4.8 inches at 110 dpi


@pytest.mark.slow
def test_one_seed_says_its_intervals_come_from_records_alone(store):
    board = build_leaderboard(store[0], "oneseed", n_resamples=2000)
    note = " ".join(board.notes["0.1"])
    assert "One seed per selector" in note and "training-seed variation" in note
    assert (board.comparisons["levels"] == "records").all()
    rows = section(board, "0.1")
    assert rows.loc["good", "verdict_vs_random"] == "better"  # 39 records are enough for a shift of 0.5
    assert np.isfinite(rows.loc["good", "heldout.eval_loss_ci_low"])


@pytest.mark.slow
def test_older_runs_fall_back_to_pooled_metrics(store):
    client, tmp = store
    exp = client.create_experiment("legacy", artifact_location=(tmp / "legacy").as_uri())
    old = {"budget": "4"}  # no budget tag and no per-record tables: the budget comes from the run's params
    log_child(client, exp, "ifd", 0, "k-ifd-0", {"heldout.eval_loss": 1.0, "n_selected": 4}, params=old)
    log_child(client, exp, "ifd", 1, "k-ifd-1", {"heldout.eval_loss": 2.0, "n_selected": 4}, params=old)
    log_child(client, exp, "ifd", 1, "k-ifd-1", {"heldout.eval_loss": 9.0, "n_selected": 4}, params=old)  # rerun
    log_child(client, exp, "random", 0, "k-rnd-0", {"heldout.eval_loss": 1.2, "n_selected": 4}, params=old,
              tags={f"{tracking.NAN_TAG}vic.eval_loss": "no_reference_answers"})
    log_child(client, exp, "longest", 0, "k-long-0", {"heldout.eval_loss": 0.5}, status="FAILED", params=old)

    board = build_leaderboard(client, "legacy", n_resamples=500)
    rows = section(board, "4")
    assert list(rows.index) == ["random", "ifd"]  # FAILED longest not counted; sorted lower first
    assert rows.loc["ifd", "seeds"] == 2
    assert rows.loc["ifd", "heldout.eval_loss"] == pytest.approx(5.0)  # seeds 1.0 and 9.0: the rerun counts
    assert math.isnan(rows.loc["ifd", "heldout.eval_loss_ci_low"])
    assert rows.loc["ifd", "vs_random_delta"] == pytest.approx(3.8)
    assert pd.isna(rows.loc["ifd", "verdict_vs_random"]) and math.isnan(rows.loc["ifd", "vs_random_p"])
    assert "per-record losses missing" in rows.loc["ifd", "notes"]
    assert "No per-record eval losses for" in " ".join(board.notes["4"])
    assert board.sentences["4"] == "at 4 records, no comparison was made."

    md, _, png = write_leaderboard(board, "legacy", tmp / "lb-legacy", "cherrybench compare --selectors ifd")
    text = md.read_text()
    assert "| ifd | 5.000 (no CI) | +3.8000 | no CI | n/a (no test) |" in text
    assert "| random (baseline) | 1.200 (no CI) | — | — | (self) |" in text
    assert "vic.eval_loss: NaN (no_reference_answers)" in text
    assert "| — | — | (best) | NaN | 4 | 1 |" in text  # random: vic NaN with its reason
    assert "| n/a (no test) |  | 4 | 2 |" in text  # ifd never logged vic: blank, not NaN
    assert "pool size is unknown" in text and png.exists()


def test_sanitize_command_keeps_no_machine_paths(tmp_path):
    (tmp_path / ".git").mkdir()
    cwd = tmp_path / "runs"
    cwd.mkdir()
    command = (f"cherrybench compare --data {cwd}/data/pool.json --eval vic:{tmp_path}/evals/vic.json "
               f"--tracking-uri sqlite:///{cwd}/mlflow.db --out={tmp_path} --model /opt/models/smol/model.gguf "
               "--tracking-uri http://host:5000/api --leaderboard-dir boards/x --x file:///srv/a/b/c "
               "--tracking-uri sqlite:///rel/mlflow.db")
    assert sanitize_command(command, cwd) == (
        "cherrybench compare --data data/pool.json --eval vic:../evals/vic.json "
        "--tracking-uri sqlite:///mlflow.db --out=.. --model <abs>/smol/model.gguf "
        "--tracking-uri http://host:5000/api --leaderboard-dir boards/x --x file://<abs>/b/c "
        "--tracking-uri sqlite:///rel/mlflow.db")  # three slashes: a relative path, kept as typed


@pytest.mark.slow
def test_missing_experiment_is_a_clear_error(store):
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'"):
        build_leaderboard(store[0], "nope")


@pytest.mark.slow
def test_answer_scores_get_intervals_and_paired_verdicts(board, tmp_path):
    assert board.answers == ["heldout.embedding_similarity", "heldout.rouge_l"]
    assert "heldout.rouge_l" not in board.extras  # shown with its CI, not as mean ± std
    rows = section(board, "0.05")
    assert rows.loc["good", "heldout.rouge_l_verdict_vs_random"] == "better"
    assert rows.loc["bad", "heldout.rouge_l_verdict_vs_random"] == "worse"
    assert rows.loc["same", "heldout.rouge_l_verdict_vs_random"] == "no difference"
    assert rows.loc["random", "heldout.rouge_l_verdict_vs_full"] == "worse"
    assert rows.loc["full", "heldout.rouge_l_verdict_vs_random"] == "better"  # the same test, turned round
    assert rows.loc["good", "heldout.rouge_l_vs_random_delta"] == pytest.approx(0.1, abs=0.02)
    assert rows.loc["good", "heldout.embedding_similarity_verdict_vs_random"] == "no difference"  # no shift there
    # the row's own value: the plain mean of every scored answer over its seeds, inside its CI
    salt = 1 + 10 * len("0.05")
    naive = np.nanmean(np.concatenate([answers(0.1, s, salt)["rouge_l"].to_numpy() for s in SEEDS]))
    assert rows.loc["good", "heldout.rouge_l"] == pytest.approx(naive)
    assert rows.loc["good", "heldout.rouge_l_ci_low"] < naive < rows.loc["good", "heldout.rouge_l_ci_high"]
    # Holm within each answer metric's family, apart from the headline's
    comps = board.answer_comparisons
    for metric, family in comps.groupby("metric"):
        np.testing.assert_allclose(family["p_holm"], stats.holm(family["p"].to_numpy(float)))
    assert set(comps["reference"]) == {"random", "full"} and (comps["n_records"] == N_ANSWERED).all()
    np.testing.assert_allclose(board.comparisons["p_holm"], stats.holm(board.comparisons["p"].to_numpy(float)))
    md, csv, _ = write_leaderboard(board, "paired", tmp_path, None)
    text = md.read_text()
    assert "heldout.rouge_l [95% CI] | heldout.rouge_l vs_random |" in text and "ROUGE-L F-measure" in text
    header = next(line for line in text.splitlines() if line.startswith("| selector |")).split(" | ")
    good = next(line for line in text.splitlines() if line.startswith("| good |")).split(" | ")
    cell = good[header.index("heldout.rouge_l vs_random")]
    assert cell.startswith("+0.1") and " better (p_holm " in cell
    assert {"heldout.rouge_l_vs_full_delta", "heldout.rouge_l_verdict_vs_random"} <= set(pd.read_csv(csv).columns)


@pytest.fixture(scope="module")
def awkward(store):
    """Rows that once got a wrong verdict: a diverged model (NaN losses on scored records), a
    model that answers nothing on the prompts it finds hard (logged as runs did before empty
    answers scored 0: NaN, reason `empty_prediction`), and one that ran other seeds."""
    client, tmp = store
    exp = client.create_experiment("awkward", artifact_location=(tmp / "awk").as_uri())
    hard = np.argsort(0.1 * (DIFFICULTY[:N_ANSWERED] - 2))[:12]  # the prompts with the lowest ROUGE-L
    for seed in SEEDS:
        params = {"budget": "0.05", "pool_size": POOL}
        tags = {tracking.BUDGET_TAG: "0.05"}
        for selector, shift in (("random", 0.0), ("silent", 0.0), ("diverged", -0.5)):
            table = per_record(shift, seed, 1)
            if selector == "diverged":
                table.loc[5:9, "loss_sum"] = np.nan  # scored records (tokens > 0) without a finite loss
            said = answers(0.0, seed, 1)
            if selector == "silent":
                said.loc[hard, ["answer", "rouge_l"]] = ["", np.nan]
                said["rouge_l_reason"] = [("empty_prediction" if i in set(hard) else None) for i in range(N_ANSWERED)]
            judged = {} if selector == "random" else {"heldout.vs_random.tie_rate": 0.95}  # a judge that cannot tell
            log_child(client, exp, selector, seed, f"{selector}-{seed}", {"n_selected": 10, **judged}, tags=tags,
                      params=params, tables={"heldout": table}, tmp=tmp, answer_tables={"heldout": said})
    for seed in (0, 2, 3):
        log_child(client, exp, "other_seeds", seed, f"other_seeds-{seed}", {"n_selected": 10},
                  tags={tracking.BUDGET_TAG: "0.05"}, params={"budget": "0.05", "pool_size": POOL},
                  tables={"heldout": per_record(0.0, seed, 1)}, tmp=tmp)
    return build_leaderboard(client, "awkward", n_resamples=2000)


@pytest.mark.slow
def test_a_diverged_model_gets_no_value_and_no_verdict(awkward):
    rows = section(awkward, "0.05")
    assert np.isnan(rows.loc["diverged", "heldout.eval_loss"])  # never the loss 0 of its NaN records
    assert pd.isna(rows.loc["diverged", "verdict_vs_random"]) and np.isnan(rows.loc["diverged", "vs_random_delta"])
    assert rows.loc["random", "best"] != "diverged"
    note = " ".join(awkward.notes["0.05"])
    assert "diverged: 15 heldout records have answer tokens but no finite loss" in note


@pytest.mark.slow
def test_an_empty_answer_counts_as_zero_not_as_missing(awkward):
    rows = section(awkward, "0.05")
    scores = np.concatenate([answers(0.0, s, 1)["rouge_l"].to_numpy() for s in SEEDS])
    hard = np.argsort(0.1 * (DIFFICULTY[:N_ANSWERED] - 2))[:12]
    silent = np.concatenate([np.where(np.isin(np.arange(N_ANSWERED), hard), 0.0, answers(0.0, s, 1)["rouge_l"])
                             for s in SEEDS])
    assert rows.loc["silent", "heldout.rouge_l"] == pytest.approx(np.nanmean(silent))
    assert rows.loc["random", "heldout.rouge_l"] == pytest.approx(np.nanmean(scores))
    assert rows.loc["silent", "heldout.rouge_l_verdict_vs_random"] == "worse"


@pytest.mark.slow
def test_rows_of_other_seeds_are_said_and_drawn_apart(awkward):
    note = " ".join(awkward.notes["0.05"])
    assert "Not every row ran seeds 0, 1, 2: other_seeds (3 seeds)" in note
    rows = section(awkward, "0.05")
    assert rows.loc["other_seeds", "seeds"] == 3 and rows.loc["other_seeds", "verdict_vs_random"] == "no difference"


@pytest.mark.slow
def test_a_judge_that_ties_almost_everything_is_a_warning_on_the_leaderboard(awkward, board):
    assert "Warning: the judge tied 95% of the pairs in heldout.vs_random (over 90%)" in " ".join(awkward.notes["0.05"])
    assert not any("Warning: the judge tied" in n for notes in board.notes.values() for n in notes)  # none judged


@pytest.mark.slow
def test_a_run_under_another_key_replaces_the_earlier_one_not_adds_a_seed(store):
    """The same selector, budget and seed run again under other settings (another key): the
    latest counts, once, and the section says what it replaced; never two runs as two seeds."""
    client, tmp = store
    exp = client.create_experiment("replaced", artifact_location=(tmp / "replaced").as_uri())
    params, tags = {"budget": "4"}, {tracking.BUDGET_TAG: "4"}
    log_child(client, exp, "random", 0, "old-settings", {"heldout.eval_loss": 2.0}, params=params, tags=tags)
    log_child(client, exp, "random", 0, "new-settings", {"heldout.eval_loss": 1.0}, params=params, tags=tags)
    log_child(client, exp, "random", 1, "new-settings-1", {"heldout.eval_loss": 3.0}, params=params, tags=tags)
    rows = section(build_leaderboard(client, "replaced", n_resamples=200), "4")
    assert rows.loc["random", "seeds"] == 2
    assert rows.loc["random", "heldout.eval_loss"] == pytest.approx((1.0 + 3.0) / 2)  # not (2 + 1 + 3) / 3
    board = build_leaderboard(client, "replaced", n_resamples=200)
    assert "replaced by a later run of the same selector, budget and seed" in " ".join(board.notes["4"])
    assert "random seed 0 (1)" in " ".join(board.notes["4"])


@pytest.mark.slow
def test_pairwise_results_of_an_earlier_judging_budget_are_said(store):
    """Trials judged before pairwise judging had its own prompt budget log no `clipped` count;
    mixed with later ones in one section, the leaderboard says which they are."""
    client, tmp = store
    exp = client.create_experiment("pairwise-budget", artifact_location=(tmp / "pairwise-budget").as_uri())
    params, tags = {"budget": "4"}, {tracking.BUDGET_TAG: "4"}
    pairs = {"heldout.vs_random.wins": 1, "heldout.vs_random.ties": 1, "heldout.vs_random.losses": 0}
    log_child(client, exp, "random", 0, "r0", {"heldout.eval_loss": 2.0}, params=params, tags=tags)
    log_child(client, exp, "ifd", 0, "i0", {"heldout.eval_loss": 1.9, **pairs}, params=params, tags=tags)
    log_child(client, exp, "longest", 0, "l0", {"heldout.eval_loss": 1.8, **pairs, "heldout.vs_random.clipped": 0},
              params=params, tags=tags)
    notes = " ".join(build_leaderboard(client, "pairwise-budget", n_resamples=200).notes["4"])
    assert "heldout.vs_random: ifd seed 0 were judged pairwise by an earlier version" in notes
    assert "longest seed 0" not in notes
    exp2 = client.create_experiment("pairwise-same", artifact_location=(tmp / "pairwise-same").as_uri())
    log_child(client, exp2, "random", 0, "r0", {"heldout.eval_loss": 2.0}, params=params, tags=tags)
    log_child(client, exp2, "ifd", 0, "i0", {"heldout.eval_loss": 1.9, **pairs}, params=params, tags=tags)
    assert not any("earlier version" in n for n in build_leaderboard(client, "pairwise-same", n_resamples=200).notes["4"])
