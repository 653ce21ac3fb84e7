"""compare's inputs before any training: a published subset (--subset) goes through the
contamination audit as the pool does (drop, keep or fail), and every eval set needs its
own name whether or not the audit runs (metrics are named by the set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cherrybench.cli import build_parser, main
from cherrybench.records import load_dataset

LEAK = "Describe the water cycle in detail, including evaporation, condensation and precipitation, for a class."


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def compare_args(tmp_path, *extra):
    return build_parser().parse_args(["compare", "--eval-size", "0", "--budget", "2", "--selectors", "random",
                                      "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *extra])


@pytest.fixture
def leak_files(tmp_path):
    """A pool of d0..d7 where d5 asks the Vicuna question; a published subset of d5, d6 and x,
    a record outside the pool that asks the same question again; the Vicuna file."""
    rows = [{"id": f"d{i}", "instruction": f"Question number {i}: name {i} things you find in a kitchen drawer.",
             "output": f"Here are {i} kitchen things."} for i in range(8)]
    rows[5] = {"id": "d5", "instruction": LEAK, "output": "Water evaporates, condenses and falls."}
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    outside = {"id": "x", "instruction": LEAK, "output": "Another answer, not in the pool."}
    pub = write_jsonl(tmp_path / "pub.jsonl", [rows[5], rows[6], outside])
    vic = write_jsonl(tmp_path / "vicuna_test_set.jsonl", [{"question_id": 1, "text": LEAK}])
    return data, pub, vic


def audited(tmp_path, data, pub, vic, *extra):
    from cherrybench.runners.compare import check_compare
    from cherrybench.runners.comparison import audit_step, load_comparison

    args = compare_args(tmp_path, "--data", str(data), "--eval", str(vic), "--subset", f"pub:{pub}",
                        "--contamination-levels", "exact", "--dedup", "off", *extra)
    check_compare(args)
    args.seed = 0
    comparison = load_comparison(args)
    return comparison, *audit_step(comparison, args, None)


def test_a_subset_drops_its_contaminated_records_in_the_pool_or_not(tmp_path, leak_files, capsys):
    from cherrybench.runners.comparison import Trial
    from cherrybench.runners.trial_steps import select_step, trial_records

    data, pub, vic = leak_files
    before, after, pool_audit = audited(tmp_path, data, pub, vic)
    assert pool_audit.dropped["contamination"] == ["d5"]  # the pool's own audit, as before
    subset = after.subsets[0]
    # worked out by hand: d5 and x ask the Vicuna question word for word, d6 does not
    assert subset.contaminated == ["d5", "x"] and subset.dropped == ["d5", "x"]
    trial = Trial("pub", subset.budget, 0, subset=subset)
    assert [r.id for r in trial_records(trial, [], after)] == ["d6"]  # what it trains on
    assert subset.budget == "1" and subset.pool_ids == ["d6"] and subset.ids == ["d6"]
    selection, _, params = select_step(trial, after, None, {})
    assert selection.ids == ["d6"]
    assert selection.report["excluded"] == {"contamination": 2} and selection.report["n_input"] == 3
    assert selection.report["contamination"] == {"found": ["d5", "x"], "dropped": ["d5", "x"]}
    assert params["dropped_contaminated"] == 2
    note = subset.note()
    assert note.startswith("pub: published subset pub.jsonl, 1 records, 1 in the pool, 0 not")
    assert "2 more of its 3 records repeat an eval record and were dropped (--contamination drop: d5, x)" in note
    assert "--subset pub: dropped 2 of its 3 records" in capsys.readouterr().err
    assert [r.id for r in before.subsets[0].records] == ["d5", "d6", "x"]  # the loaded comparison is left as it was


def test_a_subset_keeps_its_contaminated_records_with_keep_and_warns(tmp_path, leak_files, capsys):
    from cherrybench.runners.comparison import Trial
    from cherrybench.runners.trial_steps import trial_records

    data, pub, vic = leak_files
    _, after, pool_audit = audited(tmp_path, data, pub, vic, "--contamination", "keep")
    assert pool_audit.dropped["contamination"] == []
    subset = after.subsets[0]
    assert subset.contaminated == ["d5", "x"] and subset.dropped == []
    trial = Trial("pub", subset.budget, 0, subset=subset)
    assert [r.id for r in trial_records(trial, [], after)] == ["d5", "d6", "x"]
    assert subset.pool_ids == ["d5", "d6", None]  # keep: d5 stays in the pool
    assert "2 of these repeat an eval record, trained on all the same (--contamination keep: d5, x)" in subset.note()
    assert "warning: --subset pub: 2 of its 3 records repeat an eval record" in capsys.readouterr().err


def test_a_contaminated_subset_fails_with_fail(tmp_path, leak_files):
    data, pub, vic = leak_files
    clean = load_dataset(data).records
    # the pool without d5: only the subset repeats the Vicuna question
    data.write_text(json.dumps([r.raw for r in clean if r.id != "d5"]))
    with pytest.raises(ValueError, match=r"--contamination fail: 2 of the 3 records of --subset pub repeat an eval "
                                         r"record at exact \(first: id 'd5' matches vicuna:1"):
        audited(tmp_path, data, pub, vic, "--contamination", "fail")


def test_a_clean_subset_is_untouched_by_the_audit(tmp_path, leak_files):
    data, _, vic = leak_files
    pool = load_dataset(data).records
    pub = write_jsonl(tmp_path / "clean.jsonl", [pool[6].raw, pool[1].raw])
    before, after, _ = audited(tmp_path, data, pub, vic)
    subset = after.subsets[0]
    assert subset.records == before.subsets[0].records and subset.contaminated == [] == subset.dropped
    assert subset.note() == before.subsets[0].note()  # the note (and the trial's key, of these records) as before


def test_the_logged_subset_is_what_the_trial_trains_on(tmp_path, leak_files, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from cherrybench.runners.compare import log_selection
    from cherrybench.runners.comparison import Trial
    from cherrybench.runners.trial_steps import select_step

    data, pub, vic = leak_files
    _, after, _ = audited(tmp_path, data, pub, vic)
    trial = Trial("pub", after.subsets[0].budget, 0, subset=after.subsets[0])
    selection, table, params = select_step(trial, after, None, {})
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'log.db'}")
    mlflow.set_experiment("inputs")
    with mlflow.start_run() as run:
        log_selection(trial, selection, table, params, after, "0" * 64)
    client = MlflowClient(f"sqlite:///{tmp_path / 'log.db'}")
    logged = Path(client.download_artifacts(run.info.run_id, "subset.jsonl", str(tmp_path)))
    assert [json.loads(line) for line in logged.read_text().splitlines()] == [r.raw for r in load_dataset(pub).records
                                                                            if r.id == "d6"]
    manifest = json.loads(Path(client.download_artifacts(run.info.run_id, "subset.manifest.json",
                                                         str(tmp_path))).read_text())
    assert manifest["subset"]["records"] == 1 and manifest["subset"]["ids"] == ["d6"]


# -- eval set names ------------------------------------------------------------------------------------------
@pytest.fixture
def two_vicunas(tmp_path):
    row = {"question_id": 1, "text": "How can I sleep better?"}
    first = write_jsonl(tmp_path / "e1" / "vicuna_test_set.jsonl", [row])
    second = write_jsonl(tmp_path / "e2" / "vicuna.jsonl", [dict(row, text="How do I cook rice?")])
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": f"Q{i}?", "output": f"A{i}."} for i in range(30)]))
    return data, first, second


@pytest.mark.parametrize("eval_size", ["0", "20"])
def test_two_eval_sets_of_one_name_are_refused_with_the_audit_off(tmp_path, two_vicunas, eval_size):
    from cherrybench.runners.compare import check_compare
    from cherrybench.runners.comparison import load_comparison

    data, first, second = two_vicunas
    args = compare_args(tmp_path, "--data", str(data), "--eval", str(first), "--eval", str(second),
                        "--contamination-levels", "none", "--dedup", "off", "--eval-size", eval_size)
    expected = (f"--eval {second}: eval set name 'vicuna' is already taken by {first}; give it a name of its own: "
                f"--eval NAME:{second}")
    with pytest.raises(ValueError) as found:
        check_compare(args)
    assert str(found.value) == expected
    args.seed, args.pool_size = 0, 30 - int(eval_size)
    with pytest.raises(ValueError) as found:
        load_comparison(args)
    assert str(found.value) == expected


def test_an_eval_set_named_heldout_clashes_with_the_held_out_split(tmp_path, two_vicunas, capsys):
    from cherrybench.runners.compare import check_compare
    from cherrybench.runners.comparison import load_comparison

    data, _, second = two_vicunas
    args = compare_args(tmp_path, "--data", str(data), "--eval", f"heldout:{second}", "--eval-size", "20",
                        "--contamination-levels", "none", "--dedup", "off")
    expected = (f"--eval {second}: eval set name 'heldout' is already taken by the held-out split (--eval-size 20); "
                f"give it a name of its own: --eval NAME:{second}")
    with pytest.raises(ValueError) as found:
        check_compare(args)
    assert str(found.value) == expected
    args.seed, args.pool_size = 0, 10
    with pytest.raises(ValueError) as found:
        load_comparison(args)
    assert str(found.value) == expected
    # without a held-out split, `heldout` is a name like any other; with a NAME each, both sets load
    args = compare_args(tmp_path, "--data", str(data), "--eval", f"heldout:{second}", "--contamination-levels",
                        "none", "--dedup", "off")
    check_compare(args)
    args.seed = 0
    assert [(e.name, len(e.records)) for e in load_comparison(args).evals] == [("heldout", 1)]
    # from the command line: status 2, one line, before connecting to the tracking store
    argv = ["compare", "--data", str(data), "--eval", str(two_vicunas[1]), "--eval", f"heldout:{second}",
            "--contamination-levels", "none", "--dedup", "off", "--tracking-uri", f"sqlite:///{tmp_path / 'u.db'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(expected) and len(err.splitlines()) == 1 and not (tmp_path / "u.db").exists()


def test_distinct_names_for_same_stem_files_load(tmp_path, two_vicunas):
    from cherrybench.runners.compare import check_compare
    from cherrybench.runners.comparison import load_comparison

    data, first, second = two_vicunas
    args = compare_args(tmp_path, "--data", str(data), "--eval", str(first), "--eval", f"vic2:{second}",
                        "--eval-size", "5", "--contamination-levels", "none", "--dedup", "off")
    check_compare(args)
    args.seed = 0
    evals = load_comparison(args).evals
    assert [(e.name, len(e.records)) for e in evals] == [("heldout", 5), ("vicuna", 1), ("vic2", 1)]
    assert [e.records[0].instruction for e in evals[1:]] == ["How can I sleep better?", "How do I cook rice?"]
