"""What a command reads stays as it was, and a score table says how it was made:

1. no output replaces any file the command reads: a rule file or `--target` given to
   score, select or regress, not only `--data` and `--scores`;
2. a score table stores each metric's score-cache key, and `select --scores` refuses
   scores computed with other settings (a table without keys is used, and said to be);
3. a --scores column with text names the first value that is not a number;
4. +inf and -inf are excluded under their own reason, not as NaN;
5. a budget with a decimal point is a fraction below 1, and compare refuses two
   spellings of one budget;
6. a --param key given twice is an error.

No model is loaded: mtld and hand-made tables only."""

from __future__ import annotations

import csv
import importlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cherrybench.cli import main
from cherrybench.context import Context
from cherrybench.metrics import METRICS
from cherrybench.metrics.mtld import MTLD as Mtld, mtld, words
from cherrybench.outputs import read_scores, write_scores
from cherrybench.records import DataError, load_dataset
from cherrybench.regress.rules import Rule
from cherrybench.runners.options import parse_params
from cherrybench.runners.select import run_selection
from cherrybench.selectors import Budget
from cherrybench.selectors.base import RankingSelector, nan_exclusions

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
# ten records whose answers differ in lexical diversity (mtld ranks them)
ROWS = [{"id": f"r{i}", "instruction": f"Question {i}: describe item {i}.", "input": "",
         "output": " ".join(WORDS[: 3 + i] * (1 + i % 3))} for i in range(10)]
QUIET = ["--no-progress", "--device", "cpu"]


def write_json(path: Path, rows=ROWS) -> Path:
    path.write_text(json.dumps(rows, indent=1))
    return path


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("cherrybench: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def topk_mtld(data, out, *extra, budget="3"):
    return ["select", "--data", str(data), "--selector", "topk", "--param", "column=mtld", "--budget", budget,
            "--out", str(out), *QUIET, *extra]


def mtld_key(data: Path, threshold: float = 0.72) -> str:
    return Mtld(threshold=threshold).cache_key(Context(progress=False), load_dataset(data).fingerprint)


@pytest.fixture
def no_scoring(monkeypatch):
    """Scoring fails the test: the output checks must come first."""
    def boom(*args, **kwargs):
        raise AssertionError("scored before checking --out")

    importlib.import_module("cherrybench.runners.select")
    monkeypatch.setattr("cherrybench.scoring.score", boom)
    monkeypatch.setattr("cherrybench.runners.select.score", boom)


def mtld_rule(path: Path) -> Path:
    """A fitted InstructMining rule over mtld only (no model needed)."""
    indicators = {"mtld": {"metric": "mtld", "params": {"threshold": 0.72}, "columns": ["mtld"]}}
    Rule(0.7, {"mtld": -0.005}, indicators).save(path)
    return path


# ---- 1. no output replaces an input ---------------------------------------------------------------

@pytest.mark.parametrize("command", ["score", "select"])
def test_a_rule_file_named_by_param_is_never_overwritten(tmp_path, monkeypatch, capsys, no_scoring, command):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "mt.json")
    mtld_rule(tmp_path / "rule.json")
    before = listing(tmp_path)
    if command == "score":
        argv = ["score", "--data", "mt.json", "--metrics", "instructmining", "--param", "rule=rule.json",
                "--out", "rule.json", *QUIET]
    else:
        argv = ["select", "--data", "mt.json", "--selector", "instructmining", "--param", "rule=rule.json",
                "--budget", "2", "--out", "rule.json", *QUIET]
    assert main(argv) == 2
    assert error_line(capsys) == ("cherrybench: error: --out rule.json is the input file rule.json: refusing to "
                                  "overwrite it; write the output to another path")
    assert listing(tmp_path) == before


def test_a_rule_file_where_the_report_would_go_is_never_overwritten(tmp_path, monkeypatch, capsys, no_scoring):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "mt.json")
    mtld_rule(tmp_path / "sub.report.json")  # the report of --out sub.json
    before = listing(tmp_path)
    assert main(["select", "--data", "mt.json", "--selector", "instructmining", "--param", "rule=sub.report.json",
                 "--budget", "2", "--out", "sub.json", *QUIET]) == 2
    assert "report path sub.report.json is the input file sub.report.json" in error_line(capsys)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command", ["score", "select"])
def test_a_target_file_is_never_overwritten(tmp_path, monkeypatch, capsys, no_scoring, command):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "mt.json")
    write_json(tmp_path / "target.json", ROWS[:2])
    (tmp_path / "link.json").symlink_to("target.json")  # the same file by another name
    before = listing(tmp_path)
    if command == "score":
        argv = ["score", "--data", "mt.json", "--metrics", "mtld", "--target", "target.json", "--out", "link.json"]
    else:
        argv = ["select", "--data", "mt.json", "--selector", "rds", "--target", "target.json", "--budget", "2",
                "--out", "link.json"]
    assert main([*argv, *QUIET]) == 2
    assert "--out link.json is the input file target.json: refusing to overwrite it" in error_line(capsys)
    assert listing(tmp_path) == before


def test_regress_never_writes_its_rule_over_a_target(tmp_path, monkeypatch, capsys, no_scoring):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "mt.json")
    write_json(tmp_path / "ev.json", ROWS[:3])
    write_json(tmp_path / "target.json", ROWS[:2])
    before = listing(tmp_path)
    assert main(["regress", "--data", "mt.json", "--eval", "ev.json", "--indicators", "mtld", "--subsets", "3",
                 "--target", "target.json", "--out", "target.json", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'm.db'}", *QUIET]) == 2
    assert "--out target.json is the input file target.json" in error_line(capsys)
    assert listing(tmp_path) == before


def test_write_scores_refuses_an_input_it_is_told_of(tmp_path):
    data = write_json(tmp_path / "mt.json")
    rule = mtld_rule(tmp_path / "rule.json")
    dataset = load_dataset(data)
    table = pd.DataFrame({"id": [r.id for r in dataset.records], "mtld": 1.0})
    before = rule.read_bytes()
    with pytest.raises(DataError, match="is the input file"):
        write_scores(table, rule, dataset, inputs=[rule])
    assert rule.read_bytes() == before


# ---- 2. score tables say how they were scored ------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json"])
def test_score_tables_store_each_metrics_cache_key(tmp_path, capsys, suffix):
    data = write_json(tmp_path / "mt.json")
    out = tmp_path / f"s{suffix}"
    assert main(["score", "--data", str(data), "--metrics", "mtld", "--param", "threshold=0.3", "--out", str(out),
                 *QUIET]) == 0
    assert read_scores(out).attrs["score_keys"] == {"mtld": mtld_key(data, 0.3)}
    assert mtld_key(data, 0.3) != mtld_key(data)  # the setting is in the key


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json"])
def test_scores_computed_with_other_settings_are_refused(tmp_path, capsys, suffix):
    data = write_json(tmp_path / "mt.json")
    scores = tmp_path / f"s{suffix}"
    assert main(["score", "--data", str(data), "--metrics", "mtld", "--param", "threshold=0.3", "--out", str(scores),
                 *QUIET]) == 0
    capsys.readouterr()
    before = listing(tmp_path)
    assert main(topk_mtld(data, tmp_path / "sub.json", "--scores", str(scores))) == 2
    err = error_line(capsys)
    assert f"--scores {scores}: its 'mtld' scores were computed with other settings or models than this run's " \
           "(mtld with threshold=0.72" in err
    assert f"score-cache key is {mtld_key(data, 0.3)[:12]}..., this run's {mtld_key(data)[:12]}..." in err
    assert listing(tmp_path) == before  # no subset, report or manifest


class MtldTop(RankingSelector):
    """Test-only selector whose metric takes a parameter: the best records by mtld at `threshold`."""

    name = "mtld_top"
    column = "mtld"

    def __init__(self, threshold: float = 0.72):
        self.threshold = threshold

    def requires(self):
        return [Mtld(threshold=self.threshold)]


def test_the_same_settings_are_accepted_and_recorded(tmp_path, capsys):
    data = write_json(tmp_path / "mt.json")
    scores = tmp_path / "s.csv"
    assert main(["score", "--data", str(data), "--metrics", "mtld", "--param", "threshold=0.3", "--out", str(scores),
                 *QUIET]) == 0
    dataset, ctx = load_dataset(data), Context(progress=False)
    with pytest.raises(DataError, match="its 'mtld' scores were computed with other settings"):
        run_selection(dataset, MtldTop(threshold=0.5), Budget.parse("3"), ctx, read_scores(scores))
    selection, table = run_selection(dataset, MtldTop(threshold=0.3), Budget.parse("3"), ctx, read_scores(scores))
    expected = {r["id"]: mtld(words(r["output"]), 0.3) for r in ROWS}
    assert list(table["mtld"]) == pytest.approx([expected[r["id"]] for r in ROWS], rel=1e-12)
    assert selection.ids == sorted(expected, key=lambda i: (-expected[i], i))[:3]
    assert selection.report["scores"] == {"path": str(scores), "checked": ["mtld"], "without_provenance": [],
                                        "not_checked": []}
    key = mtld_key(data, 0.3)
    assert selection.provenance["score_cache"] == [{"metric": "mtld", "version": Mtld.version,
                                                    "params": {"threshold": 0.3}, "key": key, "fingerprints": {},
                                                    "source": "scores"}]


def test_matching_table_is_used_and_the_manifest_names_its_key(tmp_path, capsys):
    data = write_json(tmp_path / "mt.json")
    scores = tmp_path / "s.parquet"
    assert main(["score", "--data", str(data), "--metrics", "mtld", "--out", str(scores), *QUIET]) == 0
    out = tmp_path / "sub.json"
    assert main(topk_mtld(data, out, "--scores", str(scores))) == 0
    report = json.loads((tmp_path / "sub.report.json").read_text())
    assert report["scores"] == {"path": str(scores), "checked": ["mtld"], "without_provenance": [],
                                        "not_checked": []}
    manifest = json.loads((tmp_path / "sub.manifest.json").read_text())
    assert [(e["metric"], e["key"], e["source"]) for e in manifest["score_cache"]] == [("mtld", mtld_key(data),
                                                                                        "scores")]


def test_a_table_without_keys_is_used_and_said_to_have_no_provenance(tmp_path, capsys, caplog):
    """As an older cherrybench wrote it: hashes and fingerprint, no score-cache keys."""
    data = write_json(tmp_path / "mt.json")
    dataset = load_dataset(data)
    values = [mtld(words(r["output"]), 0.3) for r in ROWS]  # scored at another threshold: nothing can tell
    old = tmp_path / "old.csv"
    write_scores(pd.DataFrame({"id": [r["id"] for r in ROWS], "mtld": values, "mtld_reason": None}), old, dataset)
    assert read_scores(old).attrs["score_keys"] is None
    out = tmp_path / "sub.json"
    assert main(topk_mtld(data, out, "--scores", str(old))) == 0
    assert "the columns of mtld come from a table without provenance" in caplog.text
    report = json.loads((tmp_path / "sub.report.json").read_text())
    assert report["scores"]["checked"] == [] and report["scores"]["without_provenance"] == ["mtld"]
    assert "without provenance" in report["scores"]["note"]
    kept = sorted(range(10), key=lambda i: (-values[i], f"r{i}"))[:3]
    assert [r["id"] for r in json.loads(out.read_text())] == [f"r{i}" for i in sorted(kept)]
    entry, = json.loads((tmp_path / "sub.manifest.json").read_text())["score_cache"]
    assert entry["metric"] == "mtld" and entry["key"] is None and entry["source"] == "scores"


@pytest.mark.slow
def test_score_keys_follow_the_weights_not_how_the_model_is_named(tmp_path, capsys):
    """`longest --model M --scores T`: T's length scores must come from M's tokenizer. The same
    weights under another name are the same model; other weights are refused; a model that is
    not on this machine cannot be checked, and the report says so."""
    from cherrybench.models import default_gguf, resolve_model

    data = write_json(tmp_path / "mt.json")
    default = resolve_model(None).directory  # the embedded model, converted
    same = tmp_path / "same.gguf"
    same.symlink_to(default_gguf())  # the embedded model's own file, named by another path
    other = tmp_path / "other"  # the same files but one config entry: other weights as far as keys go
    other.mkdir()
    for f in default.iterdir():
        (other / f.name).symlink_to(f)
    config = json.loads((default / "config.json").read_text())
    (other / "config.json").unlink()
    (other / "config.json").write_text(json.dumps(dict(config, rope_theta=float(config.get("rope_theta", 1e4)) * 2)))
    scores = tmp_path / "s.parquet"
    assert main(["score", "--data", str(data), "--metrics", "length", "--out", str(scores), *QUIET]) == 0

    def select(model: str, out: str) -> int:
        return main(["select", "--data", str(data), "--selector", "longest", "--model", model, "--budget", "2",
                     "--scores", str(scores), "--out", str(tmp_path / out), *QUIET])

    for i, model in enumerate([str(same), "smollm2-135m"]):
        assert select(model, f"same{i}.json") == 0
        assert json.loads((tmp_path / f"same{i}.report.json").read_text())["scores"]["checked"] == ["length"]
    capsys.readouterr()
    assert select(str(other), "other.json") == 2
    assert "computed with other settings or models" in error_line(capsys) and not (tmp_path / "other.json").exists()
    assert select(str(tmp_path / "gone.gguf"), "gone.json") == 0  # scored elsewhere: used as given, said
    report = json.loads((tmp_path / "gone.report.json").read_text())["scores"]
    assert report["not_checked"] == ["length"] and report["checked"] == report["without_provenance"] == []


def test_a_table_without_keys_is_used_and_reported_as_without_provenance(tmp_path):
    data = write_json(tmp_path / "mt.json")
    dataset = load_dataset(data)
    columns = {c: [float(i) for i in range(10)] for c in METRICS.get("mtld").columns}
    plain = tmp_path / "plain.parquet"
    write_scores(pd.DataFrame({"id": [r["id"] for r in ROWS], **columns, "mtld_reason": None}), plain, dataset)
    assert main(["select", "--data", str(data), "--selector", "topk", "--param", "column=mtld", "--budget", "2",
                 "--scores", str(plain), "--out", str(tmp_path / "b.json"), *QUIET]) == 0
    report = json.loads((tmp_path / "b.report.json").read_text())
    assert report["scores"]["without_provenance"] == ["mtld"] and report["scores"]["checked"] == []
    assert [r["id"] for r in json.loads((tmp_path / "b.json").read_text())] == ["r8", "r9"]


def test_rows_with_different_keys_are_refused(tmp_path, capsys):
    data = write_json(tmp_path / "mt.json")
    scores = tmp_path / "s.jsonl"
    assert main(["score", "--data", str(data), "--metrics", "mtld", "--out", str(scores), *QUIET]) == 0
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    rows[4]["_score_keys"] = json.dumps({"mtld": "f" * 64})
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"rows scored with 2 different settings \(_score_keys\)"):
        read_scores(scores)


# ---- 3. the first value that is not a number is named ------------------------------------------------

def test_csv_text_in_a_score_column_names_the_row_that_holds_it(tmp_path, capsys):
    data = write_json(tmp_path / "mt.json")
    good = tmp_path / "good.csv"
    assert main(["score", "--data", str(data), "--metrics", "mtld", "--out", str(good), *QUIET]) == 0
    with open(good, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[3]["mtld"] = "abc"
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(topk_mtld(data, tmp_path / "sub.json", "--scores", str(bad))) == 2
    assert error_line(capsys) == (f"cherrybench: error: --scores {bad}: column 'mtld' must hold numbers; the row for "
                                  "id 'r3' has 'abc' (str)")


# ---- 4. infinities have their own reason ---------------------------------------------------------------

def test_nan_and_infinite_scores_are_excluded_under_their_own_reasons():
    scores = pd.DataFrame({"id": list("abcdef"), "x": [1.0, np.inf, np.nan, -np.inf, np.nan, 2.0],
                           "x_reason": [None, None, "too_long", None, None, None]})
    usable, reasons = nan_exclusions(scores, "x")
    assert list(usable) == [True, False, False, False, False, True]
    assert reasons == Counter({"non_finite_x": 2, "no_x:too_long": 1, "no_x:nan": 1})


def test_a_selection_report_counts_infinite_scores_apart(tmp_path, capsys):
    data = write_json(tmp_path / "mt.json")
    values = [float(i) for i in range(10)]
    values[9], values[8], values[0] = np.inf, -np.inf, np.nan
    scores = tmp_path / "s.csv"  # written as inf, -inf and an empty cell; read back as such
    write_scores(pd.DataFrame({"id": [r["id"] for r in ROWS], "mtld": values, "mtld_reason": None}), scores,
                 load_dataset(data))
    out = tmp_path / "sub.json"
    assert main(topk_mtld(data, out, "--scores", str(scores))) == 0
    report = json.loads((tmp_path / "sub.report.json").read_text())
    assert report["excluded"] == {"no_mtld:nan": 1, "non_finite_mtld": 2, "over_budget": 4}
    assert [r["id"] for r in json.loads(out.read_text())] == ["r5", "r6", "r7"]


# ---- 5. budgets ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1.0", "2.5", "10.", "100.0"])
def test_a_budget_with_a_decimal_point_must_be_a_fraction(text):
    with pytest.raises(ValueError, match=r"a number with a decimal point is a fraction, which must be below 1; "
                                         r"write a number of records as a whole count"):
        Budget.parse(text)


@pytest.mark.parametrize("text, value", [("1", 1), ("10", 10), ("1e1", 10), ("0.5", 0.5), (" 3 ", 3)])
def test_counts_and_fractions_still_parse(text, value):
    assert Budget.parse(text).value == value


def test_select_refuses_budget_one_point_zero(tmp_path, capsys, no_scoring):
    data = write_json(tmp_path / "mt.json")
    assert main(["select", "--data", str(data), "--selector", "random", "--budget", "1.0",
                 "--out", str(tmp_path / "sub.json"), *QUIET]) == 2
    assert "got '1.0': a number with a decimal point is a fraction" in error_line(capsys)
    assert not (tmp_path / "sub.json").exists()


def test_compare_refuses_two_spellings_of_one_budget(tmp_path, capsys, no_scoring):
    from cherrybench.runners.comparison import parse_budgets

    with pytest.raises(ValueError, match=r"--budget: '0\.1' and '0\.10' are the same budget"):
        parse_budgets("0.1,0.05,0.10")
    assert parse_budgets("0.1,5,0.1") == ["0.1", "5"]  # typed twice: once
    data = write_json(tmp_path / "mt.json")
    db = tmp_path / "m.db"
    for budget, message in (("0.1,0.10", "'0.1' and '0.10' are the same budget"),
                            ("0.1,2.0", "got '2.0': a number with a decimal point is a fraction")):
        assert main(["compare", "--data", str(data), "--eval-size", "4", "--budget", budget,
                     "--tracking-uri", f"sqlite:///{db}", *QUIET]) == 2
        assert message in error_line(capsys)
    assert not db.exists()


# ---- 6. a --param key given twice -----------------------------------------------------------------------

def test_a_param_key_given_twice_is_an_error(tmp_path, capsys, no_scoring):
    with pytest.raises(ValueError, match=r"--param max_length is given twice \('max-length=3' and 'max_length=4'\)"):
        parse_params(["max-length=3", "max_length=4"])
    assert parse_params(["seed=1", "column=mtld"]) == {"seed": 1, "column": "mtld"}
    data = write_json(tmp_path / "mt.json")
    assert main(["select", "--data", str(data), "--selector", "random", "--budget", "3", "--param", "seed=1",
                 "--param", "seed=2", "--out", str(tmp_path / "sub.json"), *QUIET]) == 2
    assert error_line(capsys) == ("cherrybench: error: --param seed is given twice ('seed=1' and 'seed=2'); "
                                  "give each key once")
    assert not (tmp_path / "sub.json").exists()
