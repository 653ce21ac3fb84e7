"""`regress` drops or shrinks nothing silently:
- eval records without a reference answer are counted and named (log, rule file, output);
  an eval file with none is an error;
- a subset's indicator mean is over its scorable records, and says how many were not
  scorable and why (`unscored.NAME`, `why.NAME`); a subset with no scorable record for an
  indicator is NaN and left out of the fit, with a stated count;
- the same --data file given twice (by path or by content) is refused, naming both;
- --per-source above a file's size is refused, as --pool-size is.
Scoring uses mtld only (no model); the fit step runs on eval losses given here, not trained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cherrybench.cli import build_parser, main
from cherrybench.context import Context
from cherrybench.metrics.mtld import mtld, words
from cherrybench.runners import regress

EMPTY = "!!! ???"  # no words: mtld is NaN with reason empty_response
OUTPUTS = [f"{' '.join(['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'][: 2 + i % 5] * (1 + i % 3))} end"
           for i in range(12)]


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture
def files(tmp_path):
    outputs = list(OUTPUTS)
    for i in (1, 8, 9, 10, 11):
        outputs[i] = EMPTY
    pool = write_json(tmp_path / "pool.json", [{"instruction": f"Q{i}", "input": "", "output": o}
                                               for i, o in enumerate(outputs)])
    evals = write_json(tmp_path / "ev.json", [{"id": f"e{i}", "instruction": f"E{i}", "input": "",
                                               "output": "" if i in (1, 3) else f"answer {i}"} for i in range(5)])
    return tmp_path, pool, evals, outputs


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("cherrybench: error: ") and "\n" not in err, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    """Anything past the checks (scoring the pool, training a subset) fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before the settings were checked")

    monkeypatch.setattr(regress, "prepare", boom)
    monkeypatch.setattr(regress, "run_subset", boom)


# -- eval records without answers -------------------------------------------------------------
def test_eval_records_without_answers_are_counted_and_named(files):
    _, _, evals, _ = files
    records, left_out = regress.read_eval_records([f"ev:{evals}"], 0, seed=0)
    assert [r.id for r in records] == ["e0", "e2", "e4"]
    assert left_out == [{"eval": f"ev:{evals}", "records": 5, "without_answers": 2, "ids": ["e1", "e3"]}]
    assert regress.left_out_text(left_out[0]) == (f"eval set 'ev:{evals}': 2 of 5 records have no reference answer "
                                                  "and are left out of eval loss ('e1', 'e3')")
    assert regress.load_eval_records([f"ev:{evals}"], 0, seed=0) == records


def test_an_eval_file_without_any_answer_is_an_error(tmp_path):
    path = write_json(tmp_path / "noanswers.json", [{"instruction": "a", "output": ""}, {"instruction": "b",
                                                                                      "output": ""}])
    with pytest.raises(ValueError, match="none of its 2 records has a reference answer"):
        regress.read_eval_records([str(path)], 0, seed=0)


# -- indicators with unscorable records ------------------------------------------------------
def regress_args(tmp_path, pool, evals, *extra):
    return build_parser().parse_args(["regress", "--data", str(pool), "--eval", f"ev:{evals}", "--indicators",
                                      "mtld", "--subsets", "3", "--subset-size", "4", "--out",
                                      str(tmp_path / "rule.json"), "--no-progress", *extra])


def test_subset_means_say_how_many_records_were_unscorable_and_an_empty_one_leaves_the_fit(files, capsys):
    tmp_path, pool, evals, outputs = files
    args = regress_args(tmp_path, pool, evals)
    exp = regress.prepare(args, Context(progress=False))
    assert "2 of 5 records have no reference answer" in capsys.readouterr().err  # in the log

    truth = [mtld(words(o)) if o != EMPTY else np.nan for o in outputs]  # computed here, record by record
    chosen = [[0, 2, 3, 4], [1, 5, 6, 7], [0, 1, 2, 3], [4, 5, 6, 7], [2, 4, 6, 0], [8, 9, 10, 11]]
    rng = np.random.default_rng(0)
    rows = []
    for i, picks in enumerate(chosen):
        scorable = [truth[j] for j in picks if np.isfinite(truth[j])]
        log_loss = 0.2 + 0.01 * np.mean(scorable) + rng.normal(0, 0.01) if scorable else 0.7
        row = regress.subset_row(i, [f"pool:{j}" for j in picks], {"eval_loss": float(np.exp(log_loss))}, exp)
        n_empty = sum(outputs[j] == EMPTY for j in picks)
        assert row["unscored.mtld"] == n_empty
        assert row["why.mtld"] == (f"{n_empty} empty_response" if n_empty else "")
        if scorable:
            assert row["mtld"] == pytest.approx(np.mean(scorable))  # the mean over the scorable records
        else:
            assert np.isnan(row["mtld"])
        rows.append(row)

    import pandas as pd

    frame = pd.DataFrame(rows)
    fit, out, notes = regress.fit_step(frame, exp, args, "0" * 64, "cherrybench regress ...")
    used = frame.iloc[:5]
    beta, *_ = np.linalg.lstsq(np.column_stack([np.ones(5), used["mtld"]]), used["log_eval_loss"], rcond=None)
    assert fit.n == 5 and [fit.intercept, fit.coefficients["mtld"]] == pytest.approx(beta.tolist())
    assert frame["in_fit"].tolist() == [True] * 5 + [False] and np.isnan(frame["fitted"].iloc[5])

    rule = json.loads(out.read_text())["fit"]
    assert rule["subsets_drawn"] == 6 and rule["n_subsets"] == 5
    assert rule["subsets_left_out"] == [{"subset": 5, "why": "no scorable record for mtld (4 empty_response)"}]
    assert rule["partly_unscored_subsets"] == [
        {"subset": 1, "indicator": "mtld", "unscored": 1, "of": 4, "why": "1 empty_response"},
        {"subset": 2, "indicator": "mtld", "unscored": 1, "of": 4, "why": "1 empty_response"}]
    assert rule["eval_without_answers"] == [{"eval": f"ev:{evals}", "records": 5, "without_answers": 2,
                                             "ids": ["e1", "e3"]}]
    assert any(n.startswith("1 of 6 subsets left out of the fit: subset 5: no scorable record for mtld") for n in notes)
    assert any(n.startswith("2 of 6 subsets have records without a value of mtld") for n in notes)
    assert any("2 of 5 records have no reference answer" in n for n in notes)
    regress.print_fit(fit, out, notes)
    printed = capsys.readouterr().out
    assert "note: 1 of 6 subsets left out of the fit" in printed and "note: eval set 'ev:" in printed


def test_too_few_subsets_with_every_indicator_is_a_clear_error(files):
    tmp_path, pool, evals, _ = files
    args = regress_args(tmp_path, pool, evals)
    exp = regress.prepare(args, Context(progress=False))
    import pandas as pd

    rows = [regress.subset_row(i, [f"pool:{j}" for j in picks], {"eval_loss": 1.0 + i}, exp)
            for i, picks in enumerate([[0, 2, 3, 4], [8, 9, 10, 11], [4, 5, 6, 7]])]
    with pytest.raises(ValueError, match=r"only 2 of 3 subsets have a value of every indicator; the fit needs at "
                                         r"least indicators \+ 2 = 3\. 1 of 3 subsets left out of the fit: subset 1"):
        regress.fit_step(pd.DataFrame(rows), exp, args, "0" * 64, "cmd")


# -- the same source twice, --per-source above a file -----------------------------------------
def cli(tmp_path, *data_and_flags) -> list[str]:
    return ["regress", *data_and_flags, "--eval", "ev.json", "--indicators", "mtld", "--subsets", "3",
            "--subset-size", "4", "--out", "rule.json", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]


def test_the_same_data_file_twice_is_refused_naming_both(files, monkeypatch, capsys, no_work):
    tmp_path, _, _, _ = files
    monkeypatch.chdir(tmp_path)
    assert main(cli(tmp_path, "--data", "pool.json", "--data", "./pool.json")) == 2
    assert error_line(capsys) == ("cherrybench: error: --data pool.json and --data ./pool.json are the same file; "
                                  "give each source once")
    shutil.copy(tmp_path / "pool.json", tmp_path / "copy.json")
    assert main(cli(tmp_path, "--data", "pool.json", "--data", "copy.json")) == 2
    assert error_line(capsys) == ("cherrybench: error: --data pool.json and --data copy.json are the same records "
                                  "(same content, same ids); give each source once")
    assert not (tmp_path / "m.db").exists()  # refused before connecting


def test_load_sources_refuses_duplicates_too(files):
    tmp_path, pool, _, _ = files
    with pytest.raises(ValueError, match="are the same file"):
        regress.load_sources([str(pool), str(tmp_path / "." / "pool.json")], None, 0, 0)


def test_per_source_above_a_file_is_refused_as_pool_size_is(files, monkeypatch, capsys, no_work):
    tmp_path, _, _, _ = files
    monkeypatch.chdir(tmp_path)
    assert main(cli(tmp_path, "--data", "pool.json", "--per-source", "50")) == 2
    assert error_line(capsys) == "cherrybench: error: --per-source 50: --data pool.json has only 12 records"
    with pytest.raises(ValueError, match="--per-source 50: --data pool.json has only 12 records"):
        regress.load_sources(["pool.json"], None, 50, 0)
    pool, sources = regress.load_sources(["pool.json"], None, 12, 0)  # exactly the file: all of it
    assert len(pool) == 12 and sources["pool"] == [f"pool:{i}" for i in range(12)]


def test_indicator_table_gives_each_missing_value_its_reason_and_values_keep_the_first():
    """indicator_values (used by the instructmining metric) still names the first missing
    indicator in spec order; indicator_table gives every missing value its own reason."""
    import pandas as pd

    from cherrybench.regress.indicators import count_reasons, indicator_table, indicator_values

    table = pd.DataFrame({"mtld": [1.0, np.nan, np.nan, 4.0], "mtld_reason": [None, "empty_response", None, None],
                          "knn_distance": [0.5, np.nan, 0.2, np.nan]}, index=["a", "b", "c", "d"])
    specs = {"mtld": {"metric": "mtld", "columns": ["mtld"]}, "knn6": {"metric": "knn", "columns": ["knn_distance"]}}
    values, why = indicator_table(table, specs)
    assert values["mtld"].tolist()[::3] == [1.0, 4.0] and values["knn6"].tolist()[::2] == [0.5, 0.2]
    assert why.to_dict("list") == {"mtld": [None, "empty_response", "nan", None], "knn6": [None, "nan", None, "nan"]}
    _, first = indicator_values(table, specs)
    assert first.tolist() == [None, "no_mtld:empty_response", "no_mtld:nan", "no_knn6:nan"]
    assert count_reasons(["nan", None, "empty_response", "nan"]) == "2 nan, 1 empty_response"
