"""Leaderboards from MLflow runs: one row per selector, mean and spread over
seeds of every metric, and the command that produced them.

    cherrybench leaderboard --experiment NAME [--tracking-uri URI] [--out-dir leaderboards]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cherrybench.runners import tracking

# the columns a reader looks at first, when present
FIRST = ["n_selected", "heldout.eval_loss"]
TIMING = ("scoring_seconds", "training_seconds", "eval_seconds")


def child_runs(client, experiment: str) -> pd.DataFrame:
    """One row per finished trial: selector, seed, metrics, and NaN metrics with their reasons."""
    rows = []
    for run in tracking.finished_trials(client, experiment):
        row = {"selector": run.data.tags.get(tracking.SELECTOR_TAG), "seed": run.data.tags.get(tracking.SEED_TAG),
               "key": run.data.tags.get(tracking.KEY_TAG), "start": run.info.start_time}
        row.update(run.data.metrics)
        nan = tracking.nan_reasons(run)
        row.update({metric: np.nan for metric in nan})
        row["notes"] = "; ".join(f"{metric}: NaN ({why})" for metric, why in sorted(nan.items()))
        rows.append(row)
    if not rows:
        raise ValueError(f"experiment {experiment!r} has no finished selector runs")
    frame = pd.DataFrame(rows).sort_values("start")
    return frame.drop_duplicates("key", keep="last")  # a rerun of the same configuration counts once


def build_leaderboard(client, experiment: str) -> pd.DataFrame:
    runs = child_runs(client, experiment)
    metrics = [c for c in runs.columns if c not in ("selector", "seed", "key", "start", "notes")]
    ordered = [c for c in FIRST if c in metrics] + sorted(c for c in metrics if c not in FIRST and c not in TIMING) \
        + [c for c in TIMING if c in metrics]
    rows = []
    for selector, group in runs.groupby("selector", sort=False):
        row = {"selector": selector, "seeds": int(group["seed"].nunique())}
        for column in ordered:
            values = group[column].dropna().to_numpy(float)
            row[f"{column} mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{column} std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        row["notes"] = "; ".join(sorted({n for n in group["notes"] if n}))
        rows.append(row)
    board = pd.DataFrame(rows)
    sort_by = "heldout.eval_loss mean" if "heldout.eval_loss mean" in board.columns else None
    if sort_by is None:
        loss_columns = [c for c in board.columns if c.endswith("eval_loss mean")]
        sort_by = loss_columns[0] if loss_columns else None
    return board.sort_values(sort_by) if sort_by else board


def _cell(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return ""
    text = f"{mean:.4g}"
    return text if std is None or np.isnan(std) else f"{text} ± {std:.2g}"


def write_leaderboard(board: pd.DataFrame, experiment: str, out_dir: Path, command: str | None = None):
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    csv = out_dir / f"{safe}.csv"
    md = out_dir / f"{safe}.md"
    board.to_csv(csv, index=False)
    metrics = [c[: -len(" mean")] for c in board.columns if c.endswith(" mean")]
    header = ["selector", "seeds"] + metrics + ["notes"]
    lines = [f"# Leaderboard: {experiment}", ""]
    if command:
        lines += ["Produced by:", "", "```bash", command, "```", ""]
    lines += ["Mean ± standard deviation over seeds; eval_loss is answer-token cross-entropy (lower is better); "
              "winning_score = (wins - losses) / n + 1 against the pairwise baseline (above 1 beats it).", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for _, row in board.iterrows():
        cells = [str(row["selector"]), str(row["seeds"])]
        notes = row.get("notes") or ""
        cells += [_cell(row.get(f"{m} mean"), row.get(f"{m} std")) or ("NaN" if f"{m}: NaN" in notes else "")
                  for m in metrics] + [notes]
        lines.append("| " + " | ".join(cells) + " |")
    md.write_text("\n".join(lines) + "\n")
    return md, csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--out-dir", default="leaderboards")


def run(args) -> int:
    uri = tracking.tracking_uri(args.tracking_uri)
    client = tracking.check_tracking(uri)
    board = build_leaderboard(client, args.experiment)
    md, csv = write_leaderboard(board, args.experiment, Path(args.out_dir),
                                tracking.latest_command(client, args.experiment))
    print(md.read_text())
    print(f"wrote {md} and {csv}")
    return 0
