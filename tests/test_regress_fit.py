"""The InstructMining fit, checked independently of statsmodels: planted
linear relations are recovered within their intervals at the nominal rate,
leave-one-out predictions equal naive refits, elimination drops what is not
there, subsets are seeded and mixed as documented, and rule files round-trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cherrybench.regress.fit import cv_r2, fit_rule, loo_predictions
from cherrybench.regress.rules import FORMAT, Rule, load_rule
from cherrybench.regress.subsets import draw_subsets

TRUE = {"b0": 0.8, "a": -0.3, "b": 0.05, "c": 0.0}


def planted(seed: int, n_subsets: int = 30, size: int = 20, noise: float = 0.05):
    """Per-record indicators of a pool of two sources with different levels;
    subsets drawn by the real drawer; y planted on the subsets' means."""
    rng = np.random.default_rng(seed)
    pool = pd.DataFrame({"a": np.r_[rng.normal(1, 1, 200), rng.normal(2, 1, 200)],
                         "b": np.r_[rng.normal(5, 3, 200), rng.normal(3, 3, 200)],
                         "c": rng.normal(0, 1, 400)}, index=[f"s{i // 200}:{i}" for i in range(400)])
    sources = {"s0": list(pool.index[:200]), "s1": list(pool.index[200:])}
    subsets = draw_subsets(sources, n_subsets, size, seed=seed, mix="dirichlet")
    position = {name: i for i, name in enumerate(pool.index)}
    values = pool.to_numpy()
    X = pd.DataFrame([values[[position[x] for x in ids]].mean(axis=0) for ids in subsets], columns=pool.columns)
    y = TRUE["b0"] + X["a"] * TRUE["a"] + X["b"] * TRUE["b"] + rng.normal(0, noise, n_subsets)
    return X, y.to_numpy()


@pytest.mark.slow  # 300 regressions: about 10 s
def test_planted_coefficients_covered_at_nominal_rate():
    names = ["const", "a", "b", "c"]
    truth = {"const": TRUE["b0"], "a": TRUE["a"], "b": TRUE["b"], "c": TRUE["c"]}
    covered = {n: 0 for n in names}
    runs = 300
    for seed in range(runs):
        X, y = planted(seed)
        fit = fit_rule(X, y)
        for n in names:
            low, high = fit.conf_int[n]
            covered[n] += low <= truth[n] <= high
    # 95% intervals: over 300 independent fits the binomial sd is 1.3 points
    for n in names:
        assert 0.90 <= covered[n] / runs <= 0.99, (n, covered[n] / runs)


def test_single_fit_recovers_coefficients_and_reports_stats():
    X, y = planted(7, n_subsets=60, noise=0.02)
    fit = fit_rule(X, y)
    for n, true in (("a", TRUE["a"]), ("b", TRUE["b"]), ("c", TRUE["c"])):
        low, high = fit.conf_int[n]
        assert low <= true <= high
        assert abs(fit.coefficients[n] - true) < 4 * fit.std_errors[n]
    assert fit.p_values["a"] < 1e-6 and fit.p_values["b"] < 1e-6
    # R2 and adjusted R2 from their definitions
    resid = y - fit.fitted
    r2 = 1 - np.sum(resid ** 2) / np.sum((y - y.mean()) ** 2)
    assert fit.r2 == pytest.approx(r2)
    assert fit.adj_r2 == pytest.approx(1 - (1 - r2) * (len(y) - 1) / (len(y) - 3 - 1))
    assert fit.cv_r2 < fit.r2


def test_loo_predictions_equal_naive_refits():
    X, y = planted(3, n_subsets=15, noise=0.2)
    fast = loo_predictions(X, y)
    naive = np.empty(len(y))
    A = np.column_stack([np.ones(len(X)), X.to_numpy()])
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        beta, *_ = np.linalg.lstsq(A[keep], y[keep], rcond=None)
        naive[i] = A[i] @ beta
    np.testing.assert_allclose(fast, naive, rtol=1e-9, atol=1e-10)
    press = np.sum((y - naive) ** 2)
    assert cv_r2(y, fast) == pytest.approx(1 - press / np.sum((y - y.mean()) ** 2))
    assert fit_rule(X, y).cv_r2 == pytest.approx(1 - press / np.sum((y - y.mean()) ** 2))


def test_backward_elimination_drops_the_absent_indicator():
    X, y = planted(11, n_subsets=60, noise=0.02)
    fit = fit_rule(X, y, eliminate=True, alpha=0.05)
    assert [e["indicator"] for e in fit.eliminated] == ["c"]
    assert fit.eliminated[0]["p_value"] > 0.05
    assert set(fit.coefficients) == {"a", "b"}
    assert all(p <= 0.05 for n, p in fit.p_values.items() if n != "const")
    # the final model is the plain OLS on the kept columns
    A = np.column_stack([np.ones(len(X)), X[["a", "b"]].to_numpy()])
    beta, *_ = np.linalg.lstsq(A, y, rcond=None)
    assert [fit.intercept, fit.coefficients["a"], fit.coefficients["b"]] == pytest.approx(beta.tolist())


def test_fit_errors_are_clear():
    X, y = planted(0, n_subsets=4)
    with pytest.raises(ValueError, match="at least indicators \\+ 2 subsets"):
        fit_rule(X, y)
    X, y = planted(0, n_subsets=10)
    X["d"] = 2 * X["a"] + X["b"]
    with pytest.raises(ValueError, match="collinear"):
        fit_rule(X, y)
    X, y = planted(0, n_subsets=10)
    X["const_col"] = 1.0
    fit = fit_rule(X, y)
    assert fit.dropped == [{"indicator": "const_col", "why": "constant across subsets"}]


def test_subsets_are_seeded_prefix_stable_and_mixed_as_documented():
    sources = {"x": [f"x{i}" for i in range(50)], "y": [f"y{i}" for i in range(8)]}
    five = draw_subsets(sources, 5, 12, seed=3, mix="stratified")
    assert draw_subsets(sources, 8, 12, seed=3, mix="stratified")[:5] == five  # more subsets keep the first ones
    assert draw_subsets(sources, 5, 12, seed=4, mix="stratified") != five
    for subset in five:
        assert len(set(subset)) == 12
        assert sum(s.startswith("x") for s in subset) == 6  # equal shares
    # a source too small for its share hands the rest to the other one
    wide = draw_subsets(sources, 3, 30, seed=0, mix="stratified")
    assert all(sum(s.startswith("y") for s in subset) == 8 for subset in wide)
    shares = [sum(s.startswith("x") for s in subset) / 8 for subset in draw_subsets(
        {"x": sources["x"], "y": [f"y{i}" for i in range(50)]}, 40, 8, seed=0, mix="dirichlet")]
    assert min(shares) <= 0.25 and max(shares) >= 0.75  # proportions vary from subset to subset
    with pytest.raises(ValueError, match="subset size"):
        draw_subsets(sources, 1, 59, seed=0)


def test_rule_file_round_trip_and_prediction(tmp_path):
    specs = {"mtld": {"metric": "mtld", "params": {"threshold": 0.72}, "columns": ["mtld"]},
             "output_length": {"metric": "length", "params": {"model": None}, "columns": ["response_length"]}}
    rule = Rule(0.5, {"mtld": -0.01, "output_length": 0.002}, specs, fit={"r2": 0.4}, name="mine")
    path = rule.save(tmp_path / "rule.json")
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["coefficients"] == {"mtld": -0.01, "output_length": 0.002}
    loaded = load_rule(str(path))
    assert loaded.to_dict() == rule.to_dict() and loaded.fingerprint == rule.fingerprint
    values = pd.DataFrame({"mtld": [10.0, np.nan], "output_length": [100.0, 3.0]})
    predicted = loaded.predict(values)
    assert predicted[0] == pytest.approx(0.5 - 0.1 + 0.2) and np.isnan(predicted[1])
    bad = dict(data, coefficients={"knn6": 1.0})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="knn6.*no entry in 'indicators'"):
        load_rule(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="not a built-in"):
        load_rule(str(tmp_path / "nope.json"))
