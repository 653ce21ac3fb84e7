"""`compare --subset NAME:PATH`: a published subset (LIMA's 1k, AlpaGasus's 9k ...)
trained and evaluated as if a selector had chosen it: matched to the pool by
content (counts of records in and not in the pool), every record trained on,
its size as its budget (with `random` at that size), bad files refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cherrybench.cli import main
from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners.compare import trials
from cherrybench.runners.comparison import Comparison, PublishedSubset, load_subset

POOL = [Record("p0", [Turn("Name a fruit.", "An apple.")]),
        Record("p1", [Turn("Add 2 and 2.", "4")]),
        Record("p2", [Turn("Translate 'cat'", "chat", "to French")]),
        Record("p3", [Turn("Name a fruit.", "An apple.")])]  # same content as p0


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_records_are_matched_to_the_pool_by_content_whatever_the_format(tmp_path):
    # ShareGPT rows: the same question and answer as pool records p1 and p0, one record the pool lacks,
    # and one whose answer differs from p2's by a character
    path = write_json(tmp_path / "pub.json", [
        {"id": "a", "conversations": [{"from": "human", "value": "Add 2 and 2."}, {"from": "gpt", "value": "4"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi!"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Name a fruit."},
                                      {"from": "gpt", "value": "An apple."}]},
    ])
    alpaca = write_json(tmp_path / "pub2.jsonl", [])
    alpaca.write_text(json.dumps({"instruction": "Translate 'cat'", "input": "to French", "output": "chat."}) + "\n")
    subset = load_subset(f"pub:{path}", POOL)
    assert subset.name == "pub" and subset.budget == "3"
    assert subset.pool_ids == ["p1", None, "p0"]  # the first pool record of that content
    assert subset.n_in_pool == 2 and subset.ids == ["p1", "pub:b", "p0"]
    assert [r.id for r in subset.records] == ["a", "b", "c"]  # all of them, in file order: what is trained on
    assert "3 records, 2 in the pool, 1 not (trained on all the same)" in subset.note()
    other = load_subset(f"x:{alpaca}", POOL)
    assert other.pool_ids == [None] and other.n_in_pool == 0  # one character differs: not the same record


def test_a_subset_runs_at_its_size_with_random_beside_it():
    comparison = Comparison(pool=Dataset(POOL, None, "alpaca", "json"), evals=[], train=None, budgets=["2", "0.5"])
    three = PublishedSubset("three", "t.json", POOL[:3], ["p0", "p1", "p2"])
    two = PublishedSubset("two", "w.json", POOL[:2], ["p0", "p1"])
    run = [(t.name, t.subset, answers) for t, answers in trials(["full", "ifd", "random"], [0], comparison)]
    shared = run[0][2]
    assert [name for name, _, _ in run] == [
        "full-seed0", "ifd-2-seed0", "random-2-seed0", "ifd-0.5-seed0", "random-0.5-seed0"]
    comparison.subsets = [three, two]
    run = [(t.name, t.subset, answers) for t, answers in trials(["full", "ifd", "random"], [0], comparison)]
    assert [name for name, _, _ in run][5:] == ["random-3-seed0", "three-3-seed0", "two-2-seed0"]  # a budget of 2 ran
    assert run[6][1] is three and run[7][1] is two and run[5][1] is None
    assert all(answers is run[0][2] for _, _, answers in run)  # full's answers serve the subsets too
    assert shared is not run[0][2]  # (a fresh dict per call of trials)
    whole = PublishedSubset("all", "a.json", POOL, ["p0", "p1", "p2", "p3"])
    comparison.subsets = [whole]
    names = [t.name for t, _ in trials(["random"], [0], comparison)]
    assert names[-1] == "all-4-seed0" and "random-4-seed0" not in names  # random at the pool's size is full


@pytest.mark.parametrize("spec, expected", [
    ("lima", "--subset expects NAME:PATH"),
    ("ifd:{ok}", "'ifd' already names a selector"),
    ("random:{ok}", "'random' already names a selector"),
    ("lima:{missing}", "missing.json: no such file"),
    ("lima:{bad}", "bad.json"),
    ("lima:{nofield}", "nofield.json"),
])
def test_a_bad_subset_is_a_one_line_error_naming_it(spec, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ok = write_json(tmp_path / "ok.json", [{"instruction": "Q", "output": "A"}])
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "Q", "output": "A"')
    nofield = write_json(tmp_path / "nofield.json", [{"instruction": "Q", "output": "A"}, {"instruction": "Q2"}])
    spec = spec.format(ok=ok, missing=tmp_path / "missing.json", bad=bad, nofield=nofield)
    assert main(["compare", "--selectors", "ifd", "--subset", spec, "--tracking-uri", "sqlite:///unused.db"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "unused.db").exists()  # refused before connecting, scoring or training


def test_two_subsets_need_two_names(tmp_path, capsys):
    ok = write_json(tmp_path / "ok.json", [{"instruction": "Q", "output": "A"}])
    assert main(["compare", "--subset", f"s:{ok}", "--subset", f"s:{ok}", "--tracking-uri", "sqlite:///u.db"]) == 2
    assert "'s' already names a selector or subset" in capsys.readouterr().err


@pytest.mark.slow
def test_a_subset_is_trained_evaluated_and_logged_like_a_selector(tmp_path, monkeypatch, ctx):
    from mlflow.tracking import MlflowClient

    from cherrybench.finetune import FINETUNED, TrainConfig, finetune_key, training_summary
    from cherrybench.records import load_dataset

    monkeypatch.chdir(tmp_path)
    rows = [{"instruction": f"Question {i}?", "output": f"Answer number {i}."} for i in range(12)]
    data = write_json(tmp_path / "data.json", rows)
    pool = load_dataset(data).records  # --eval-size 0: the whole file is the pool
    evalset = write_json(tmp_path / "ev.json", [{"instruction": "Name a colour.", "output": "Blue."},
                                                 {"instruction": "Say hello.", "output": "Hello!"}])
    published = write_json(tmp_path / "published.json", [
        {"instruction": "Question 9?", "output": "Answer number 9."}, {"instruction": "Outside?", "output": "Yes."},
        {"instruction": "Question 3?", "output": "Answer number 3."}])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["compare", "--data", str(data), "--eval-size", "0", "--eval", f"ev:{evalset}",
                 "--selectors", "random", "--no-baselines",
                 "--budget", "3", "--subset", f"pub:{published}", "--neftune-alpha", "5", "--max-length", "64",
                 "--gen-size", "0", "--train-batch-size", "4", "--no-progress", "--device", "cpu",
                 "--experiment", "sub", "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sub")
    runs = {r.data.tags["cherrybench.selector"]: r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("cherrybench.role") == "child"}
    assert set(runs) == {"random", "pub"}  # random already runs at 3: not twice
    run = runs["pub"]
    assert run.info.run_name == "pub-3-seed0" and run.data.tags["cherrybench.budget"] == "3"
    params = run.data.params
    assert params["selector.in_pool"] == "2" and params["selector.not_in_pool"] == "1"
    assert params["selector.file"] == "published.json"
    assert all(r.data.params["train.neftune_alpha"] == "5.0" for r in runs.values())  # identical for every run
    assert run.data.metrics["n_selected"] == 3 and run.data.metrics["ev.eval_loss"] > 0
    ids = json.loads(Path(client.download_artifacts(run.info.run_id, "selected_ids.json", str(tmp_path))).read_text())
    by_content = {r.content_hash: r.id for r in pool}
    file_records = load_dataset(published).records
    assert ids == [by_content[file_records[0].content_hash], "pub:1", by_content[file_records[2].content_hash]]
    logged = Path(client.download_artifacts(run.info.run_id, "subset.json", str(tmp_path)))
    assert json.loads(logged.read_text()) == json.loads(published.read_text())
    # the model trained on every record of the file, in file order, with the run's settings
    model_dir = Path(run.data.tags["cherrybench.model_dir"])
    config = TrainConfig(max_length=64, batch_size=4, seed=0, device="cpu", neftune_alpha=5.0)
    assert model_dir == FINETUNED.path_for(finetune_key(file_records, config, ctx=ctx))
    assert training_summary(model_dir)["n_records"] == 3
    board = (tmp_path / "leaderboards" / "sub.md").read_text()
    assert "pub: published subset published.json, 3 records, 2 in the pool, 1 not (trained on all the same)" in board
    assert "\n| pub |" in board and "\n| random (baseline) |" in board  # one section: the subset beside random
