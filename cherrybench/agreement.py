"""Do two scorers agree? Rank correlations between score columns, overlaps
between selections, and a weak scorer against a strong one (Superfiltering's
claim that a small model ranks IFD like a large one).

- `pair_correlations`: Spearman's rho and Kendall's tau-b (scipy.stats) for every
  pair of columns, each pair on the rows where both are finite (NaN excluded
  pairwise; `n` and `n_excluded` say how many), with their p-values. A pair with
  fewer than 3 such rows, or a constant column among them, has NaN and a `note`.
- `top_ids`: the k best ids by one column in a direction, ties broken by id
  (as the selectors do), NaN never picked.
- `overlap_table`: for every pair of selections, the intersection and the
  Jaccard index |A & B| / |A | B|.
- `weak_vs_strong`: the same column from two scorers A and B: rank correlations,
  and at k (a share of the records both scored) the top-k overlap |A_k & B_k| / k,
  the enrichment of B's top-k in A's top-k (that share over k / n, the share a
  random k would have; 1 = chance, n / k = identical) and the hypergeometric
  p-value of an overlap at least that large by chance.
Plain numbers in, tables out: no model, no file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CORRELATION_COLUMNS = ["a", "b", "n", "n_excluded", "spearman", "spearman_p", "kendall", "kendall_p", "note"]


def _finite(values) -> np.ndarray:
    values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return np.isfinite(values)


def correlation(x, y) -> dict:
    """Spearman and Kendall (tau-b) of x and y on the rows where both are finite."""
    from scipy import stats

    x = pd.to_numeric(pd.Series(x), errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(pd.Series(y), errors="coerce").to_numpy(dtype=float)
    both = np.isfinite(x) & np.isfinite(y)
    out = {"n": int(both.sum()), "n_excluded": int((~both).sum()), "spearman": np.nan, "spearman_p": np.nan,
           "kendall": np.nan, "kendall_p": np.nan, "note": ""}
    x, y = x[both], y[both]
    if len(x) < 3:
        out["note"] = f"too_few_rows ({len(x)} with both scores; 3 needed)"
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        out["note"] = "constant column: no ranking to compare"
    else:
        rho = stats.spearmanr(x, y)
        tau = stats.kendalltau(x, y)
        out.update(spearman=float(rho.statistic), spearman_p=float(rho.pvalue),
                   kendall=float(tau.statistic), kendall_p=float(tau.pvalue))
    return out


def pair_correlations(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per unordered pair of `columns` (in the order given)."""
    rows = [{"a": a, "b": b, **correlation(table[a], table[b])}
            for i, a in enumerate(columns) for b in columns[i + 1:]]
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def correlation_matrix(pairs: pd.DataFrame, columns: list[str], stat: str) -> pd.DataFrame:
    """The symmetric matrix of one statistic ('spearman' or 'kendall') from `pair_correlations`."""
    matrix = pd.DataFrame(np.eye(len(columns)), index=columns, columns=columns)
    for row in pairs.itertuples(index=False):
        value = getattr(row, stat)
        matrix.loc[row.a, row.b] = matrix.loc[row.b, row.a] = value
    return matrix


def top_ids(ids, values, k: int, higher: bool) -> list:
    """The k best ids by `values` (NaN never), best first, ties broken by id."""
    frame = pd.DataFrame({"id": list(ids), "v": pd.to_numeric(pd.Series(list(values)), errors="coerce")})
    frame = frame[np.isfinite(frame["v"].to_numpy(dtype=float))]
    frame["key"] = -frame["v"] if higher else frame["v"]
    return frame.sort_values(["key", "id"], kind="mergesort")["id"].head(k).tolist()


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def overlap_table(selections: dict[str, list]) -> pd.DataFrame:
    """One row per unordered pair of named selections: sizes, intersection, Jaccard."""
    names = list(selections)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa, sb = set(selections[a]), set(selections[b])
            rows.append({"a": a, "b": b, "n_a": len(sa), "n_b": len(sb), "intersection": len(sa & sb),
                         "jaccard": jaccard(sa, sb)})
    return pd.DataFrame(rows, columns=["a", "b", "n_a", "n_b", "intersection", "jaccard"])


def overlap_matrix(selections: dict[str, list]) -> pd.DataFrame:
    names = list(selections)
    return pd.DataFrame([[jaccard(selections[a], selections[b]) for b in names] for a in names],
                        index=names, columns=names)


def weak_vs_strong(ids, a, b, fraction: float, higher: bool) -> dict:
    """Scorer A against scorer B on one column, over the records both scored (finite).
    k = round(fraction x n), at least 1."""
    from scipy import stats

    ids = list(ids)
    a = pd.to_numeric(pd.Series(list(a)), errors="coerce").to_numpy(dtype=float)
    b = pd.to_numeric(pd.Series(list(b)), errors="coerce").to_numpy(dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    out = correlation(a, b)
    n = int(both.sum())
    k = max(1, int(round(fraction * n))) if n else 0
    kept = [i for i, keep in zip(ids, both) if keep]
    top_a = set(top_ids(kept, a[both], k, higher))
    top_b = set(top_ids(kept, b[both], k, higher))
    common = len(top_a & top_b)
    out.update(k=k, top_k_common=common, top_k_overlap=common / k if k else np.nan,
               top_k_jaccard=jaccard(top_a, top_b) if k else np.nan,
               enrichment=(common / k) / (k / n) if k else np.nan,
               # P(X >= common), X ~ hypergeometric: k of A's top drawn at random from n holding k of B's top
               overlap_p=float(stats.hypergeom.sf(common - 1, n, k, k)) if k else np.nan)
    return out
