"""The leaderboard on the comparison's parent MLflow run: as metrics named to sort and
filter (`b<budget>.<selector>.<metric>`) and as the table the UI renders, one short cell
per judgement. The leaderboard itself is computed in `leaderboard`."""

from __future__ import annotations

import numpy as np

from cherrybench.runners.tracking import metric_name

VERDICT_NUMBERS = {"better": 1, "no difference": 0, "worse": -1}  # verdict metrics: 1 = better than the reference


def leaderboard_metrics(board) -> dict[str, float]:
    """The leaderboard as parent-run metrics, named to sort and filter by budget, then selector:
    `b<budget>.<selector>.<headline>` (with `.ci_low`, `.ci_high`) and per reference
    `b<budget>.<selector>.vs_<random|full>.delta|ci_low|ci_high|p_holm|verdict`, the verdict
    as 1 (better than the reference), 0 (no difference), -1 (worse). Values that do not
    exist (a selector against itself, no CI, no test) are left out."""
    if not board.headline or board.table.empty:
        return {}
    h, metrics = board.headline, {}
    for row in board.table.to_dict("records"):
        prefix = ("b" + str(row["budget"]), row["selector"])
        values = {h: row.get(h), f"{h}.ci_low": row.get(f"{h}_ci_low"), f"{h}.ci_high": row.get(f"{h}_ci_high")}
        for ref in ("random", "full"):
            values.update({f"vs_{ref}.{k}": row.get(f"vs_{ref}_{k}") for k in ("delta", "ci_low", "ci_high", "p_holm")})
            values[f"vs_{ref}.verdict"] = VERDICT_NUMBERS.get(row.get(f"verdict_vs_{ref}"))
        for column in board.answers:  # answer scores against references: `<set>.rouge_l`, its CI and vs random
            values.update({column: row.get(column), f"{column}.ci_low": row.get(f"{column}_ci_low"),
                           f"{column}.ci_high": row.get(f"{column}_ci_high"),
                           f"{column}.vs_random.delta": row.get(f"{column}_vs_random_delta"),
                           f"{column}.vs_random.verdict": VERDICT_NUMBERS.get(row.get(f"{column}_verdict_vs_random"))})
        metrics.update({metric_name(*prefix, name): float(v) for name, v in values.items()
                        if v is not None and np.isfinite(float(v))})
    return metrics


def _interval(value, low, high, fmt: str) -> str:
    if value is None or not np.isfinite(value):
        return ""
    return format(value, fmt) + (f" [{low:{fmt}}, {high:{fmt}}]" if np.isfinite(low) and np.isfinite(high) else "")


def leaderboard_view(board):
    """The leaderboard as the table the parent run shows, one short cell per judgement: per
    budget and selector the headline with its 95% CI, and against random and full the delta
    with its CI and the verdict. Column names carry no `.` (the UI's table reads one as a
    path); the full-precision numbers (p_holm too) are the parent's metrics and the CSV."""
    import pandas as pd

    h = board.headline
    rows = []
    for row in board.table.to_dict("records"):
        out = {"budget": row["budget"], "selector": row["selector"]}
        if h:
            out[f"{h.replace('.', ' ')} [95% CI]"] = _interval(row.get(h), row.get(f"{h}_ci_low"),
                                                               row.get(f"{h}_ci_high"), ".3f")
            for ref in ("random", "full"):
                verdict = row.get(f"verdict_vs_{ref}")
                out[f"Δ vs {ref} [95% CI]"] = "—" if row["selector"] == ref else _interval(
                    row.get(f"vs_{ref}_delta"), row.get(f"vs_{ref}_ci_low"), row.get(f"vs_{ref}_ci_high"), "+.3f")
                out[f"verdict vs {ref}"] = "—" if row["selector"] == ref else (
                    verdict if isinstance(verdict, str) else "")
        for column in board.answers:
            name = column.replace(".", " ")
            out[f"{name} [95% CI]"] = _interval(row.get(column), row.get(f"{column}_ci_low"),
                                                row.get(f"{column}_ci_high"), ".3f")
            verdict = row.get(f"{column}_verdict_vs_random")
            out[f"{name} verdict vs random"] = "—" if row["selector"] == "random" else (
                verdict if isinstance(verdict, str) else "")
        n = row.get("n_selected")
        out.update({"n_selected": "" if n is None or not np.isfinite(n) else f"{n:g}", "seeds": row.get("seeds"),
                    "notes": row.get("notes") or ""})
        rows.append(out)
    return pd.DataFrame(rows)
