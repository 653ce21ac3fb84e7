"""The pool-audit note on leaderboards. compare's `log_audit` tags its parent run with
the audit's sentence; every leaderboard built from the store then notes it once per
budget: compare's own (built while its run is still open), a standalone
`cherrybench leaderboard` afterwards, and after a resumed compare that audited the
same pool again. A parent run logged before the tag existed (audit params, metrics and
artifacts, no sentence) still gives a leaderboard, without the note."""

from __future__ import annotations

import argparse

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cherrybench.audit import AuditSettings, audit
from cherrybench.cli import main
from cherrybench.eval_sets import EvalSet
from cherrybench.records import Record, Turn
from cherrybench.runners import tracking
from cherrybench.runners.comparison import PoolAudit, log_audit
from cherrybench.runners.leaderboard import build_leaderboard, write_leaderboard

LEAK = ("Describe the water cycle in detail, including evaporation, condensation, precipitation and collection, "
        "for a class of ten year old students.")
ARGS = argparse.Namespace(contamination="drop", contamination_levels="exact", dedup="exact")
# worked out by hand from the pool below: b repeats the vic question, d repeats c (same normalised text)
EXPECTED = ("Pool audit: of 5 pool records, 1 repeat an eval record at exact (vic), dropped; 1 exact-duplicates of "
            "earlier records dropped (--dedup exact); details in the parent run's audit/ artifacts.")
BUDGETS = ("0.1", "0.2")


def rec(rid: str, question: str, answer: str) -> Record:
    return Record(rid, [Turn(question, answer)])


def pool_audit() -> PoolAudit:
    """What compare's audit_step makes of a pool with one leak and one duplicate (drop, then dedup)."""
    pool = [rec("a", "Give me a recipe for a vegetarian lasagna with spinach and ricotta.", "Layer it."),
            rec("b", LEAK, "Water evaporates, condenses and falls."),
            rec("c", "What is the capital of France?", "Paris."),
            rec("d", "what is the capital of FRANCE", "Paris"),
            rec("e", "Name three primary colours.", "Red, yellow and blue.")]
    result = audit(pool, [EvalSet("vic", [rec("v1", LEAK, "")])],
                   AuditSettings(levels=("exact",), dedup_levels=("exact",)))
    dropped = {"contamination": result.contaminated(("exact",))}
    dropped["duplicates"] = result.duplicates_to_drop("exact", exclude=dropped["contamination"])
    assert dropped == {"contamination": ["b"], "duplicates": ["d"]}
    return PoolAudit(result, dropped, len(pool))


def log_trials(client, exp_id: str, parent_id: str) -> None:
    """Finished trials of that compare run: random and one selector at two budgets (pooled losses)."""
    for budget in BUDGETS:
        for selector, loss in (("random", 2.0), ("longest", 1.9)):
            run = client.create_run(exp_id, tags={
                tracking.ROLE_TAG: "child", tracking.SELECTOR_TAG: selector, tracking.SEED_TAG: "0",
                tracking.BUDGET_TAG: budget, tracking.KEY_TAG: f"{selector}-{budget}", "mlflow.parentRunId": parent_id})
            client.log_metric(run.info.run_id, "heldout.eval_loss", loss)
            client.set_terminated(run.info.run_id, "FINISHED")


def compare_run(client, exp_id: str, name: str, audited: PoolAudit | None, trials: bool):
    """A parent run as compare logs it: opened, the audit logged, trials below it; returns the
    leaderboard compare builds before its run ends, and the run."""
    with tracking.parent_run(exp_id, name, f"cherrybench compare --experiment {name}") as parent:
        log_audit(audited, ARGS)
        if trials:
            log_trials(client, exp_id, parent.info.run_id)
        board = build_leaderboard(client, client.get_experiment(exp_id).name, n_resamples=200)
    return board, client.get_run(parent.info.run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store (its migrations take seconds) for every test here."""
    tmp = tmp_path_factory.mktemp("audit-board")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # the fluent API compare's parent run uses
    return MlflowClient(uri), uri, tmp


def new_experiment(store, name: str) -> str:
    client, _, tmp = store
    return client.create_experiment(name, artifact_location=(tmp / "art" / name).as_uri())


def note_counts(board) -> dict:
    return {budget: notes.count(EXPECTED) for budget, notes in board.notes.items()}


def test_compare_tags_the_audit_sentence_and_its_leaderboard_notes_it_once(store, tmp_path):
    client = store[0]
    audited = pool_audit()
    assert audited.sentence(ARGS) == EXPECTED  # what compare prints when it audits
    board, parent = compare_run(client, new_experiment(store, "aud"), "aud", audited, trials=True)
    assert parent.data.tags[tracking.AUDIT_NOTE_TAG] == EXPECTED
    assert parent.data.metrics["audit.dropped.contamination"] == 1  # the rest of log_audit still ran
    assert note_counts(board) == {b: 1 for b in BUDGETS}
    md, _, _ = write_leaderboard(board, "aud", tmp_path)
    assert md.read_text().count(EXPECTED) == len(BUDGETS)  # once in each budget's notes


def test_standalone_leaderboard_shows_the_same_note(store, tmp_path, capsys):
    client, uri, _ = store
    compare_run(client, new_experiment(store, "alone"), "alone", pool_audit(), trials=True)
    assert note_counts(build_leaderboard(client, "alone", n_resamples=200)) == {b: 1 for b in BUDGETS}
    assert main(["leaderboard", "--experiment", "alone", "--tracking-uri", uri, "--out-dir", str(tmp_path),
                 "--resamples", "200"]) == 0
    assert capsys.readouterr().out.count(EXPECTED) == len(BUDGETS)
    assert (tmp_path / "alone.md").read_text().count(EXPECTED) == len(BUDGETS)


def test_a_resumed_compare_does_not_repeat_the_note(store):
    client = store[0]
    exp_id = new_experiment(store, "resumed")
    compare_run(client, exp_id, "resumed", pool_audit(), trials=True)
    board, _ = compare_run(client, exp_id, "resumed", pool_audit(), trials=False)  # every trial found done
    assert note_counts(board) == {b: 1 for b in BUDGETS}
    assert note_counts(build_leaderboard(client, "resumed", n_resamples=200)) == {b: 1 for b in BUDGETS}


def test_runs_logged_before_the_tag_still_build_without_a_note(store):
    client = store[0]
    _, parent = compare_run(client, new_experiment(store, "before"), "before", pool_audit(), trials=True)
    client.delete_tag(parent.info.run_id, tracking.AUDIT_NOTE_TAG)  # what the earlier log_audit left: no sentence
    assert parent.data.params["audit.dedup"] == "exact"
    board = build_leaderboard(client, "before", n_resamples=200)
    assert set(board.notes) == set(BUDGETS) and len(board.table) == 2 * len(BUDGETS)
    assert not [n for notes in board.notes.values() for n in notes if n.startswith("Pool audit")]


def test_a_compare_without_an_audit_adds_no_note(store):
    client = store[0]
    board, parent = compare_run(client, new_experiment(store, "noaudit"), "noaudit", None, trials=True)
    assert tracking.AUDIT_NOTE_TAG not in parent.data.tags
    assert not [n for notes in board.notes.values() for n in notes if n.startswith("Pool audit")]
