"""The figures a comparison or a regression run carries: score histograms with
the selected records marked, the selection-overlap heatmap, and the
InstructMining predicted-vs-actual scatter. Matplotlib with the Agg backend,
written to PNG files the tracking module logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def score_histogram(values, kept_mask, column: str, title: str, out: Path) -> Path:
    plt = _pyplot()
    values = np.asarray(values, dtype=float)
    kept_mask = np.asarray(kept_mask, dtype=bool)
    finite = np.isfinite(values)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(values[finite], bins=30) if finite.any() else 10
    ax.hist(values[finite], bins=bins, color="#bbbbbb", label="pool")
    ax.hist(values[finite & kept_mask], bins=bins, color="#d62728", label="selected")
    ax.set_xlabel(column)
    ax.set_ylabel("records")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def jaccard_heatmap(selections: dict[str, list[str]], out: Path) -> Path:
    plt = _pyplot()
    names = list(selections)
    sets = [set(selections[n]) for n in names]
    matrix = np.array([[len(a & b) / len(a | b) if a | b else 1.0 for b in sets] for a in sets])
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w" if matrix[i, j] < 0.6 else "k")
    ax.set_title("selection overlap (Jaccard)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def predicted_vs_actual(y, fit, out) -> None:
    """Scatter of fitted and leave-one-out predictions against the actual log loss."""
    plt = _pyplot()
    y = np.asarray(y, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, fit.fitted, label=f"fitted (R2 {fit.r2:.3f})", color="#1f77b4")
    ax.scatter(y, fit.loo_predicted, label=f"leave-one-out (CV R2 {fit.cv_r2:.3f})", color="#d62728", marker="x")
    finite = np.concatenate([y, fit.fitted, fit.loo_predicted])
    finite = finite[np.isfinite(finite)]
    low, high = float(finite.min()), float(finite.max())
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#888888", linewidth=1)
    ax.set_xlabel("actual log eval loss")
    ax.set_ylabel("predicted log eval loss")
    ax.set_title(f"InstructMining fit, {fit.n} subsets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
