"""The InstructMining fit: OLS of log(eval loss) on the subsets' mean
indicators (statsmodels), with standard errors, p-values, 95% intervals, R2,
adjusted R2, leave-one-out cross-validated R2, and optional backward
elimination by p-value.

LOO predictions come from the hat matrix: the held-out residual of subset i
is e_i / (1 - h_ii), exactly what refitting without i gives (the tests check
it against refits). CV R2 = 1 - PRESS / sum((y - mean(y))^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Fit:
    intercept: float
    coefficients: dict[str, float]
    std_errors: dict[str, float]  # "const" and each kept indicator
    p_values: dict[str, float]
    conf_int: dict[str, list[float]]  # 95%
    r2: float
    adj_r2: float
    cv_r2: float
    n: int
    fitted: np.ndarray
    loo_predicted: np.ndarray
    eliminated: list[dict] = field(default_factory=list)  # [{"indicator", "p_value"}] in removal order
    dropped: list[dict] = field(default_factory=list)  # [{"indicator", "why"}] before fitting
    result: object = field(default=None, repr=False)  # the statsmodels results of the final model

    @property
    def summary(self) -> str:
        """statsmodels' fit summary table (built on demand: it is slow)."""
        return str(self.result.summary()) if self.result is not None else ""

    def stats(self) -> dict:
        """What the rule file keeps of the fit."""
        return {"n_subsets": self.n, "r2": self.r2, "adj_r2": self.adj_r2, "cv_r2": self.cv_r2,
                "std_errors": self.std_errors, "p_values": self.p_values, "conf_int": self.conf_int,
                "eliminated": self.eliminated, "dropped": self.dropped}


def design(X: pd.DataFrame) -> np.ndarray:
    return np.column_stack([np.ones(len(X)), X.to_numpy(dtype=np.float64)])


def loo_predictions(X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """Each row's prediction by the OLS fit on all other rows (hat-matrix identity)."""
    A = design(X)
    y = np.asarray(y, dtype=np.float64)
    pinv = np.linalg.pinv(A)
    hat = np.einsum("ij,ji->i", A, pinv)
    residual = y - A @ (pinv @ y)
    with np.errstate(divide="ignore", invalid="ignore"):
        loo_residual = np.where(hat < 1 - 1e-10, residual / (1 - hat), np.nan)
    return y - loo_residual


def cv_r2(y: np.ndarray, loo_predicted: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    total = float(np.sum((y - y.mean()) ** 2))
    press = float(np.sum((y - loo_predicted) ** 2))
    return 1 - press / total if total > 0 else float("nan")


def _ols(X: pd.DataFrame, y: np.ndarray):
    import statsmodels.api as sm

    return sm.OLS(np.asarray(y, dtype=np.float64), sm.add_constant(X.astype(np.float64), has_constant="add")).fit()


def _check(X: pd.DataFrame, y: np.ndarray) -> tuple[pd.DataFrame, list[dict]]:
    if len(X) != len(y):
        raise ValueError(f"{len(X)} rows of indicators but {len(y)} eval losses")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"log eval loss is not finite for subsets {np.flatnonzero(~np.isfinite(y)).tolist()}")
    bad = [c for c in X.columns if not np.all(np.isfinite(X[c].to_numpy(dtype=float)))]
    if bad:
        raise ValueError(f"indicator means are not finite for {bad} (every record of a subset unscorable?)")
    dropped = [{"indicator": c, "why": "constant across subsets"} for c in X.columns if X[c].nunique() <= 1]
    X = X.drop(columns=[d["indicator"] for d in dropped])
    if len(X) < X.shape[1] + 2:
        raise ValueError(f"the fit needs at least indicators + 2 subsets: {len(X)} subsets for {X.shape[1]} "
                         f"indicators ({', '.join(X.columns)}); draw more --subsets or use fewer --indicators")
    if np.linalg.matrix_rank(design(X)) < X.shape[1] + 1:
        raise ValueError(f"the indicator means are collinear across subsets ({', '.join(X.columns)}); "
                         "drop one with --indicators")
    return X, dropped


def fit_rule(X: pd.DataFrame, y, eliminate: bool = False, alpha: float = 0.05) -> Fit:
    """OLS of y (log eval loss) on the columns of X (mean indicators per subset).
    With `eliminate`, repeatedly drop the indicator with the largest p-value
    above `alpha` and refit, until every one left is significant (or none is left)."""
    y = np.asarray(y, dtype=np.float64)
    X, dropped = _check(X.copy(), y)
    eliminated: list[dict] = []
    result = _ols(X, y)
    while eliminate and X.shape[1]:
        p = result.pvalues.drop("const")
        worst = p.idxmax()
        if not p[worst] > alpha:
            break
        eliminated.append({"indicator": str(worst), "p_value": float(p[worst])})
        X = X.drop(columns=[worst])
        result = _ols(X, y)
    loo = loo_predictions(X, y)
    names = ["const"] + list(X.columns)
    ci = result.conf_int(alpha=0.05)
    return Fit(
        intercept=float(result.params["const"]),
        coefficients={c: float(result.params[c]) for c in X.columns},
        std_errors={c: float(result.bse[c]) for c in names},
        p_values={c: float(result.pvalues[c]) for c in names},
        conf_int={c: [float(ci.loc[c, 0]), float(ci.loc[c, 1])] for c in names},
        r2=float(result.rsquared), adj_r2=float(result.rsquared_adj), cv_r2=cv_r2(y, loo), n=len(y),
        fitted=np.asarray(result.fittedvalues, dtype=np.float64), loo_predicted=loo,
        eliminated=eliminated, dropped=dropped, result=result,
    )
