"""Scorer agreement: the statistics against scipy and hand-worked sets, and
`cherrybench agreement` end to end (outputs, exit 2 on bad input)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cherrybench import agreement
from cherrybench.cli import main
from cherrybench.outputs import write_scores
from cherrybench.records import load_dataset

# a hand-built score table: row 2 has no `a`, row 5 no `b`, row 6 neither
TABLE = pd.DataFrame({
    "id": [f"r{i}" for i in range(8)],
    "a": [0.1, 0.5, np.nan, 0.9, 0.3, 0.7, np.nan, 0.2],
    "b": [1.0, 4.0, 2.0, 3.0, 2.5, np.nan, np.nan, 0.5],
    "c": [8.0, 1.0, 3.0, 2.0, 5.0, 4.0, 7.0, 6.0],
})


def test_correlations_equal_scipy_on_the_rows_both_columns_have():
    pairs = agreement.pair_correlations(TABLE, ["a", "b", "c"]).set_index(["a", "b"])
    assert list(pairs.index) == [("a", "b"), ("a", "c"), ("b", "c")]
    for x, y in pairs.index:
        both = TABLE[x].notna() & TABLE[y].notna()
        rho = sps.spearmanr(TABLE.loc[both, x], TABLE.loc[both, y])
        tau = sps.kendalltau(TABLE.loc[both, x], TABLE.loc[both, y])
        row = pairs.loc[(x, y)]
        assert row["n"] == both.sum() and row["n_excluded"] == 8 - both.sum()
        assert row["spearman"] == pytest.approx(rho.statistic) and row["spearman_p"] == pytest.approx(rho.pvalue)
        assert row["kendall"] == pytest.approx(tau.statistic) and row["kendall_p"] == pytest.approx(tau.pvalue)
    assert pairs.loc[("a", "b"), "n"] == 5 and pairs.loc[("a", "c"), "n"] == 6 and pairs.loc[("b", "c"), "n"] == 6


def test_correlation_hand_worked():
    # ranks 1 2 3 4 vs 1 3 2 4: sum d^2 = 2, rho = 1 - 6*2 / (4*15) = 0.8;
    # 5 concordant pairs, 1 discordant: tau = (5 - 1) / 6
    out = agreement.correlation([10, 20, 30, 40], [1, 3, 2, 4])
    assert out["spearman"] == pytest.approx(0.8) and out["kendall"] == pytest.approx(4 / 6)
    assert out["n"] == 4 and out["note"] == ""


def test_too_few_rows_and_constant_columns_are_nan_with_a_note():
    few = agreement.correlation([1, np.nan, 3, 4], [1, 2, np.nan, np.nan])
    assert math.isnan(few["spearman"]) and few["n"] == 1 and few["note"].startswith("too_few_rows")
    flat = agreement.correlation([1, 2, 3, 4], [5, 5, 5, 5])
    assert math.isnan(flat["kendall"]) and "constant" in flat["note"]


def test_correlation_matrix_is_symmetric_with_unit_diagonal():
    pairs = agreement.pair_correlations(TABLE, ["a", "b", "c"])
    matrix = agreement.correlation_matrix(pairs, ["a", "b", "c"], "spearman")
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T) and list(np.diag(matrix)) == [1.0, 1.0, 1.0]
    assert matrix.loc["c", "a"] == pytest.approx(pairs.iloc[1]["spearman"])


def test_top_ids_direction_ties_by_id_and_no_nan():
    ids = ["d", "b", "a", "c", "e"]
    values = [2.0, 3.0, 3.0, np.nan, 1.0]
    assert agreement.top_ids(ids, values, 2, higher=True) == ["a", "b"]  # tie at 3.0: by id
    assert agreement.top_ids(ids, values, 2, higher=False) == ["e", "d"]
    assert agreement.top_ids(ids, values, 10, higher=True) == ["a", "b", "d", "e"]  # NaN never picked


def test_jaccard_and_overlap_table_hand_worked():
    sel = {"x": ["1", "2", "3", "4"], "y": ["3", "4", "5"], "z": []}
    table = agreement.overlap_table(sel).set_index(["a", "b"])
    # x & y = {3, 4}, x | y = {1..5}: 2/5
    assert table.loc[("x", "y"), "intersection"] == 2 and table.loc[("x", "y"), "jaccard"] == pytest.approx(0.4)
    assert table.loc[("x", "z"), "jaccard"] == 0.0
    assert agreement.jaccard([], []) == 1.0
    matrix = agreement.overlap_matrix(sel)
    assert matrix.loc["y", "x"] == pytest.approx(0.4) and matrix.loc["x", "x"] == 1.0


def test_weak_vs_strong_top_k_overlap_enrichment_and_p_value():
    ids = [f"r{i}" for i in range(10)]
    a = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    b = [10, 1, 8, 2, 3, 4, 5, 6, 7, 9]  # B's top 3: r0, r9, r2; A's top 3: r0, r1, r2
    out = agreement.weak_vs_strong(ids, a, b, 0.3, higher=True)
    assert out["k"] == 3 and out["top_k_common"] == 2
    assert out["top_k_overlap"] == pytest.approx(2 / 3)
    assert out["top_k_jaccard"] == pytest.approx(2 / 4)
    assert out["enrichment"] == pytest.approx((2 / 3) / (3 / 10))
    # P(X >= 2) for 3 draws from 10 holding 3 marked: (C(3,2)C(7,1) + C(3,3)) / C(10,3)
    assert out["overlap_p"] == pytest.approx((3 * 7 + 1) / math.comb(10, 3))
    assert out["spearman"] == pytest.approx(sps.spearmanr(a, b).statistic)


def test_weak_vs_strong_uses_only_rows_both_scored():
    out = agreement.weak_vs_strong(["a", "b", "c", "d", "e"], [5, 4, np.nan, 2, 1], [5, 4, 3, np.nan, 1], 0.5,
                                   higher=True)
    assert out["n"] == 3 and out["k"] == 2 and out["top_k_common"] == 2 and out["enrichment"] == pytest.approx(1.5)


# -- the command -------------------------------------------------------------------------

ROWS = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer number {i} " + "word " * i}
        for i in range(8)]


@pytest.fixture()
def scored(tmp_path):
    """A data file and a score file of it (columns a, b, c of TABLE, with record hashes)."""
    data = tmp_path / "pool.json"
    data.write_text(json.dumps(ROWS))
    dataset = load_dataset(str(data))
    table = TABLE.assign(id=[r.id for r in dataset.records])
    scores = tmp_path / "abc.parquet"
    write_scores(table, scores, dataset)
    return data, scores, dataset


def test_agreement_command_writes_tables_and_heatmaps(scored, tmp_path, capsys):
    data, scores, dataset = scored
    out = tmp_path / "agree"
    assert main(["agreement", "--data", str(data), "--scores", str(scores), "--direction", "a=higher",
                 "--direction", "c=lower", "--budget", "3", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"correlations.csv", "spearman.png", "kendall.png", "overlap.csv", "overlap.png", "agreement.md",
            "scores.parquet"} <= names
    pairs = pd.read_csv(out / "correlations.csv").set_index(["a", "b"])
    expected = agreement.pair_correlations(TABLE, ["a", "b", "c"]).set_index(["a", "b"])
    assert np.allclose(pairs["spearman"], expected["spearman"]) and list(pairs["n"]) == [5, 6, 6]
    overlap = pd.read_csv(out / "overlap.csv", dtype={"a": str, "b": str})
    # a (higher) top 3 of ids 0..7: 3 (0.9), 5 (0.7), 1 (0.5); c (lower) top 3: 1 (1.0), 3 (2.0), 2 (3.0)
    assert list(overlap[["a", "b", "intersection"]].itertuples(index=False, name=None)) == [("a", "c", 2)]
    assert overlap["jaccard"].iloc[0] == pytest.approx(2 / 4)
    page = (out / "agreement.md").read_text()
    assert "Columns without a direction (b)" in page and "| a | c | 3 | 3 | 2 | 0.5 |" in page


def test_agreement_weak_vs_strong_from_two_score_files(scored, tmp_path):
    data, scores, dataset = scored
    other = tmp_path / "b.parquet"
    write_scores(TABLE.assign(id=[r.id for r in dataset.records], a=TABLE["c"]), other, dataset)
    out = tmp_path / "wvs"
    assert main(["agreement", "--data", str(data), "--scores", str(scores), "--scores-b", str(other),
                 "--direction", "a=higher", "--budget", "0.5", "--out", str(out)]) == 0
    weak = pd.read_csv(out / "weak_vs_strong.csv").set_index("column")
    row = agreement.weak_vs_strong(TABLE["id"], TABLE["a"], TABLE["c"], 0.5, higher=True)
    assert weak.loc["a", "spearman"] == pytest.approx(row["spearman"])
    assert weak.loc["a", "top_k_common"] == row["top_k_common"] and weak.loc["a", "k"] == 3
    assert weak.loc["b", "spearman"] == pytest.approx(1.0) and math.isnan(weak.loc["b", "enrichment"])


@pytest.mark.parametrize("extra,message", [
    (["--direction", "a=up"], "--direction expects COLUMN=higher or COLUMN=lower"),
    (["--direction", "zz=higher"], "--direction zz: not a compared column"),
    (["--budget", "0"], "--budget must be"),
    (["--metrics", "ifdd"], "unknown metric 'ifdd'"),
    (["--scores-b", "SCORES", "--model-b", "x"], "not both"),
])
def test_agreement_bad_settings_exit_2(scored, tmp_path, capsys, extra, message):
    data, scores, _ = scored
    extra = [str(scores) if e == "SCORES" else e for e in extra]
    assert main(["agreement", "--data", str(data), "--scores", str(scores), "--out", str(tmp_path / "o"),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_agreement_refuses_a_file_as_out_and_scores_of_other_data(scored, tmp_path, capsys):
    data, scores, _ = scored
    file_out = tmp_path / "file.txt"
    file_out.write_text("keep me")
    assert main(["agreement", "--data", str(data), "--scores", str(scores), "--out", str(file_out)]) == 2
    assert "is a file" in capsys.readouterr().err and file_out.read_text() == "keep me"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(ROWS[::-1]))
    assert main(["agreement", "--data", str(other), "--scores", str(scores), "--out", str(tmp_path / "o")]) == 2
    assert "does not match" in capsys.readouterr().err


def test_agreement_one_column_alone_is_refused(scored, tmp_path, capsys):
    data, _, dataset = scored
    single = tmp_path / "one.parquet"
    write_scores(TABLE[["id", "a"]].assign(id=[r.id for r in dataset.records]), single, dataset)
    assert main(["agreement", "--data", str(data), "--scores", str(single), "--out", str(tmp_path / "o")]) == 2
    assert "only one score column (a)" in capsys.readouterr().err


@pytest.mark.slow
def test_agreement_on_30_real_records(tmp_path):
    """Done-when of issue 14: ifd, response_length and ppl on 30 real Alpaca records."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared/data/alpaca/alpaca_random_9k.json"
    if not data.is_file():
        pytest.skip(f"{data} is not here")
    out = tmp_path / "real"
    assert main(["agreement", "--data", str(data), "--pool-size", "30", "--metrics", "ifd,response_length,ppl",
                 "--selectors", "longest", "--budget", "0.2", "--out", str(out), "--no-progress",
                 "--device", "cpu", "--max-length", "256"]) == 0
    scores = pd.read_parquet(out / "scores.parquet")
    pairs = pd.read_csv(out / "correlations.csv").set_index(["a", "b"])
    both = scores["ifd"].notna() & scores["ppl"].notna()
    assert pairs.loc[("ifd", "ppl"), "n"] == both.sum() >= 20
    assert pairs.loc[("ifd", "ppl"), "spearman"] == pytest.approx(
        sps.spearmanr(scores.loc[both, "ifd"], scores.loc[both, "ppl"]).statistic)
    overlap = pd.read_csv(out / "overlap.csv").set_index(["a", "b"])
    # the longest selector ranks response_length too: the same 6 records
    assert overlap.loc[("response_length", "longest (selector)"), "jaccard"] == 1.0
    assert (out / "spearman.png").stat().st_size > 0 and (out / "overlap.png").stat().st_size > 0


def test_comparison_agreement_correlates_ranking_selectors_and_overlaps_trials(tmp_path):
    """What compare logs: one column per ranking selector (here topk and threshold over mtld, which
    load no model; `random` ranks nothing and `full` is no selector), and every trial's overlap."""
    from cherrybench.context import Context
    from cherrybench.metrics.mtld import MTLD
    from cherrybench.runners.agreement import comparison_agreement

    data = tmp_path / "pool.json"
    data.write_text(json.dumps(ROWS))
    pool = load_dataset(str(data))
    selections = {"topk-0.5-seed0": ["0", "1", "2", "3"], "random-0.5-seed0": ["2", "3", "4", "5"],
                  "full-seed0": [str(i) for i in range(8)]}
    ctx = Context(device="cpu", progress=False)
    written = comparison_agreement(pool, ["full", "random", "topk", "threshold"], {"column": "mtld", "minimum": 0},
                                   ctx, selections, tmp_path / "a")
    assert {p.name for p in written} == {"correlations.csv", "spearman.png", "kendall.png", "overlap.csv",
                                         "overlap.png", "agreement.md"}
    pairs = pd.read_csv(tmp_path / "a" / "correlations.csv")
    finite = MTLD().compute(pool.records, ctx)["mtld"].notna().sum()
    assert list(pairs[["a", "b"]].itertuples(index=False, name=None)) == [("topk", "threshold")]
    assert pairs["n"].iloc[0] == finite and pairs["spearman"].iloc[0] == pytest.approx(1.0)  # the same column
    overlap = pd.read_csv(tmp_path / "a" / "overlap.csv").set_index(["a", "b"])
    assert overlap.loc[("topk-0.5-seed0", "random-0.5-seed0"), "jaccard"] == pytest.approx(2 / 6)
    assert overlap.loc[("topk-0.5-seed0", "full-seed0"), "jaccard"] == pytest.approx(4 / 8)
    assert "ranks by (topk, threshold)" in (tmp_path / "a" / "agreement.md").read_text()


def test_agreement_never_overwrites_a_score_file_it_reads(scored, tmp_path, capsys):
    data, scores, dataset = scored
    inside = tmp_path / "agree"
    inside.mkdir()
    given = inside / "scores.parquet"
    given.write_bytes(scores.read_bytes())
    assert main(["agreement", "--data", str(data), "--scores", str(given), "--out", str(inside)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert given.read_bytes() == scores.read_bytes()


def test_agreement_never_overwrites_a_file_a_param_names(scored, tmp_path, capsys):
    """A file named by --param (a rule file, a target) is an input too: an output of the same name is refused."""
    data, scores, dataset = scored
    inside = tmp_path / "agree2"
    inside.mkdir()
    named = inside / "overlap.csv"
    named.write_text("a rule or target file the user keeps here\n")
    assert main(["agreement", "--data", str(data), "--scores", str(scores), "--out", str(inside),
                 "--param", f"target={named}"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert named.read_text() == "a rule or target file the user keeps here\n"
