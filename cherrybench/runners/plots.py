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


def budget_curve(curves: dict, out: Path, ylabel: str, title: str, full=None,
                 xlabel: str = "budget (share of the pool)") -> Path:
    """The headline metric against budget, so a reader sees where selection starts
    to pay off: one line per selector with its 95% CI band, `random` dashed grey,
    `full` (all of the pool) a horizontal black line with its band.

    curves: selector -> (x, mean, ci_low, ci_high), x a share of the pool in (0, 1];
    full: (mean, ci_low, ci_high) or None."""
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    xs = np.concatenate([np.asarray(c[0], dtype=float) for c in curves.values()]) if curves else np.array([])
    colours = iter(plt.get_cmap("tab10").colors[:7] + plt.get_cmap("tab10").colors[8:])  # grey (7) is random's
    for name in sorted(curves, key=lambda n: (n != "random", n)):
        x, mean, low, high = (np.asarray(v, dtype=float) for v in curves[name])
        order = np.argsort(x)
        x, mean, low, high = x[order], mean[order], low[order], high[order]
        style = dict(color="#7f7f7f", linestyle="--") if name == "random" else dict(color=next(colours, "#333333"))
        ax.plot(x, mean, marker="o", linewidth=1.8, label=name, **style)
        band = np.isfinite(low) & np.isfinite(high)
        if band.sum() > 1:
            ax.fill_between(x[band], low[band], high[band], color=style["color"], alpha=0.1, linewidth=0)
        elif band.any():  # one budget: a band has no width, an error bar shows the interval
            ax.errorbar(x[band], mean[band], yerr=[mean[band] - low[band], high[band] - mean[band]],
                        color=style["color"], capsize=4, linewidth=1)
    if full is not None and np.isfinite(full[0]):
        ax.axhline(full[0], color="black", linewidth=1.5, label="full (whole pool)")
        if np.isfinite(full[1]) and np.isfinite(full[2]):
            ax.axhspan(full[1], full[2], color="black", alpha=0.06, linewidth=0)
    if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 8:
        ax.set_xscale("log")
    if len(xs):
        ax.set_xticks(np.unique(xs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))
        ax.xaxis.set_minor_locator(plt.NullLocator())
        pad = 0.15 if ax.get_xscale() == "log" else 0.05
        low, high = xs.min(), xs.max()
        span = (np.log10(high) - np.log10(low)) if ax.get_xscale() == "log" else high - low
        if ax.get_xscale() == "log":
            ax.set_xlim(low / 10 ** (pad * (span or 1)), high * 10 ** (pad * (span or 1)))
        else:
            ax.set_xlim(low - pad * (span or low), high + pad * (span or low))
    else:
        ax.text(0.5, 0.5, "no budget with a known share of the pool", ha="center", va="center",
                transform=ax.transAxes, color="#666666")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    # own intervals carry the eval records' spread, which a paired comparison cancels: overlap is no verdict
    fig.text(0.01, 0.01, "bands: each line's own 95% CI; differences are tested paired (see the leaderboard)",
             fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def matrix_heatmap(matrix, title: str, out: Path, vmin: float = -1.0, vmax: float = 1.0,
                   cmap: str = "coolwarm") -> Path:
    """A labelled square heatmap of a pandas DataFrame (index = columns = names);
    NaN cells (no value could be computed) are grey and read 'n/a'."""
    plt = _pyplot()
    names = [str(n) for n in matrix.index]
    values = matrix.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    colours = plt.get_cmap(cmap).with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(values), vmin=vmin, vmax=vmax, cmap=colours)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            v = values[i, j]
            ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", color="k")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
