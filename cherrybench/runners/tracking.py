"""MLflow plumbing for comparisons: choosing and checking the tracking store
(fail fast, before any scoring or training), finding finished child runs so an
interrupted comparison resumes, and the plots each run carries."""

from __future__ import annotations

import os
from pathlib import Path

KEY_TAG = "cherrybench.key"
SELECTOR_TAG = "cherrybench.selector"
SEED_TAG = "cherrybench.seed"
COMMAND_TAG = "cherrybench.command"
ROLE_TAG = "cherrybench.role"
NAN_TAG = "cherrybench.nan."  # + metric name: why that metric is NaN (MLflow metrics carry no reason)


def tracking_uri(cli_value: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else a SQLite store in the working directory."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_tracking(uri: str, timeout_s: int = 5):
    """Connect now and fail with a clear message if the store cannot be reached."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    # no retries and a short timeout for this probe only; later logging keeps MLflow's own retry policy
    probe = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in probe}
    os.environ.update(probe)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # any failure here means no run could be logged
        text = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ConnectionError(f"MLflow tracking store {uri} is unreachable ({type(exc).__name__}: {text}); "
                              "start it or pass another --tracking-uri") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return client


def experiment_id(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # keep artifacts next to a local database, not in the cwd
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def finished_child(client, exp_id: str, key: str):
    """The latest FINISHED run with this key, or None."""
    runs = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def score_histogram(values, kept_mask, column: str, title: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
