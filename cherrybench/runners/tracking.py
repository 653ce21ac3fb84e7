"""Every MLflow call of cherrybench, in one place: choosing and checking the
tracking store (fail fast, before any scoring or training), experiments,
parent and trial runs, params without unset values, metrics whose NaN carries
a reason, artifacts, and finding finished trials so an interrupted run
resumes. The runners orchestrate; they do not talk to MLflow themselves."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

KEY_TAG = "cherrybench.key"
SELECTION_TAG = "cherrybench.selection_key"  # what else chose a trial's subset: scores, selector code (compare.selection_key)
EVALUATION_TAG = "cherrybench.evaluation_key"  # what judged its answers: judge and embedder weights (compare.evaluation_key)
UNPAIRED_TAG = "cherrybench.unpaired"  # a trial judged without its pairwise baseline's answers: why (a rerun judges it)
SELECTOR_TAG = "cherrybench.selector"
SEED_TAG = "cherrybench.seed"
BUDGET_TAG = "cherrybench.budget"  # the budget as typed (`0.05`, `10`); `full` for the baseline every budget shares
COMMAND_TAG = "cherrybench.command"
ROLE_TAG = "cherrybench.role"
MODEL_DIR_TAG = "cherrybench.model_dir"
NAN_TAG = "cherrybench.nan."  # + metric name: why that metric is NaN (MLflow metrics carry no reason)
NOTE_TAG = "cherrybench.note"  # a sentence the leaderboard adds to the trial's notes (e.g. a published subset's)
AUDIT_NOTE_TAG = "cherrybench.audit_note"  # on a compare (parent) run: what its pool audit did, one sentence
HOST_TAG = "cherrybench.host"  # the machine and process that opened a run: a rerun closes the runs
PID_TAG = "cherrybench.pid"  # a killed process left RUNNING (`close_orphans`)
# The experiment kind MLflow's tools read ("custom_model_development": model training, not GenAI). The
# MLflow 3.x UI itself picks its view from `?workflowType=machine_learning` in the link (else the last
# choice in the browser, GenAI by default), so `experiment_link` carries that too.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
UI_VIEW_QUERY = "workflowType=machine_learning"
DIGEST_LENGTH = 16  # dataset digests: the content fingerprint's first 16 hex digits (MLflow keeps at most 36)


def tracking_uri(cli_value: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else a SQLite store in the working directory."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


PROBE_TIMEOUTS_S = (5, 5, 10)  # a server that is up but slow (a loaded machine) gets three tries, ~22 s at most


def check_tracking(uri: str, timeouts_s: tuple[int, ...] = PROBE_TIMEOUTS_S):
    """Connect now and fail with a clear message if the store cannot be reached.
    A tracking server is tried once per entry of `timeouts_s`, a second apart, because a
    loaded server can miss one short timeout; a local store is tried once (its errors last)."""
    import time

    import mlflow

    mlflow.set_tracking_uri(uri)
    tries = timeouts_s if uri.lower().startswith(("http://", "https://")) else timeouts_s[:1]
    for attempt, timeout_s in enumerate(tries, 1):
        try:
            return _probe(uri, timeout_s)
        except Exception as exc:  # any failure here means no run could be logged
            if attempt < len(tries):
                time.sleep(1)
                continue
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            tried = f" after {len(tries)} tries" if len(tries) > 1 else ""
            raise ConnectionError(f"MLflow tracking store {uri} is unreachable{tried} ({type(exc).__name__}: {text}); "
                                  "start it or pass another --tracking-uri") from None


def _probe(uri: str, timeout_s: int):
    """One request with a short timeout and no retries; later logging keeps MLflow's own retry policy."""
    from mlflow.tracking import MlflowClient

    probe = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in probe}
    os.environ.update(probe)
    try:
        client = MlflowClient(uri)  # MLflow refuses some stores here already (a file store, an unknown scheme)
        client.search_experiments(max_results=1)
        return client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def experiment_id(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # keep artifacts next to a local database, not in the cwd
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def mark_model_training(client, exp_id: str) -> None:
    """Tag the experiment as model training (not a GenAI app), for the tools that read the kind."""
    client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def experiment_link(uri: str, exp_id: str) -> str:
    """Where a person sees the experiment: the URL for a tracking server; for a local
    store (sqlite, file) the `mlflow ui` command to start and the page to open."""
    import shlex

    route = f"#/experiments/{exp_id}?{UI_VIEW_QUERY}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{route}"
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}  then open http://127.0.0.1:5000/{route}"


def finished_trial(client, exp_id: str, key: str):
    """The latest FINISHED trial run with this key, or None."""
    runs = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def finished_trials(client, experiment: str) -> list:
    """Every FINISHED trial run of an experiment (the leaderboard's rows come from these)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r}")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'child' "
                              "and attributes.status = 'FINISHED'", max_results=10000)


def nan_reasons(run) -> dict[str, str]:
    """metric name -> why it is NaN, from a run's tags."""
    return {k[len(NAN_TAG):]: v for k, v in run.data.tags.items() if k.startswith(NAN_TAG)}


def latest_parent(client, experiment: str):
    """The experiment's latest compare (parent) run, running or ended, or None."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'parent'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def latest_command(client, experiment: str) -> str | None:
    run = latest_parent(client, experiment)
    return run.data.tags.get(COMMAND_TAG) if run else None


def audit_note(client, experiment: str) -> str | None:
    """The pool-audit sentence of the latest compare run (the run whose command the leaderboard
    shows); None when it audited nothing or was logged before the sentence was kept."""
    run = latest_parent(client, experiment)
    return run.data.tags.get(AUDIT_NOTE_TAG) if run else None


def _owner() -> dict:
    import socket

    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def close_orphans(client, exp_id: str) -> int:
    """Runs left RUNNING by a process that was killed outright (SIGKILL, a machine's end of
    session: no chance to end them as KILLED) are ended KILLED, so the UI stops showing them
    as running. Only runs this machine opened, whose process is gone; a run of another
    machine, or of a live process (a comparison running beside this one), is left as it is."""
    import socket

    host = socket.gethostname()
    runs = client.search_runs([exp_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
                              max_results=10000)
    closed = 0
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")
            closed += 1
    if closed:
        print(f"{closed} run(s) left RUNNING by a killed process of this machine ended as KILLED", file=sys.stderr)
    return closed


@contextmanager
def parent_run(exp_id: str, name: str, command: str):
    import mlflow

    with mlflow.start_run(experiment_id=exp_id, run_name=name,
                          tags={COMMAND_TAG: command, ROLE_TAG: "parent", **_owner()}) as run:
        with _killed_on_interrupt():
            yield run


@contextmanager
def trial_run(exp_id: str, parent_id: str, name: str, key: str, tags: dict | None = None):
    """A nested run for one trial, found again by `key` when the run is resumed."""
    import mlflow

    with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True, parent_run_id=parent_id,
                          tags={KEY_TAG: key, ROLE_TAG: "child", **_owner(), **(tags or {})}) as run:
        with _killed_on_interrupt():
            yield run


@contextmanager
def _killed_on_interrupt():
    """An interrupted run (Ctrl-C, or SIGTERM turned into one by the CLI) ends as KILLED,
    not FAILED and not RUNNING for ever: the UI then tells an interruption from a crash,
    and a rerun of the same command resumes (finished trials are found by their key)."""
    import mlflow

    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise


def log_params(params: dict) -> None:
    """Params without unset values (MLflow would show the string 'None')."""
    import mlflow

    mlflow.log_params({k: v for k, v in params.items() if v is not None})


def log_metrics(metrics: dict) -> None:
    """Finite metrics as metrics; a NaN or missing one as a tag saying so, never a silent 0."""
    import mlflow

    for name, value in metrics.items():
        if value is None or not np.isfinite(value):
            mlflow.set_tag(f"{NAN_TAG}{name}", "not_finite")
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})


def metric_name(*parts) -> str:
    """A metric name from parts joined by `.`: characters MLflow refuses in a name become `_`."""
    import re

    return ".".join(re.sub(r"[^\w\-. /]", "_", str(p)) for p in parts)


def log_step_metrics(name: str, values, first_step: int = 1) -> None:
    """A metric's history on the active run, one point per step (a chart in the UI,
    e.g. the training loss at each logged optimizer step); non-finite values are skipped."""
    import time

    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    points = [Metric(name, float(v), now, step) for step, v in enumerate(values, start=first_step)
              if v is not None and np.isfinite(v)]
    client, run_id = MlflowClient(), mlflow.active_run().info.run_id
    for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=points[start: start + 1000])


def log_nan_reason(metric: str, reason: str) -> None:
    import mlflow

    mlflow.set_tag(f"{NAN_TAG}{metric}", reason)


def set_tag(name: str, value: str) -> None:
    import mlflow

    mlflow.set_tag(name, value)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path)


def log_json(obj, name: str) -> None:
    """A JSON artifact of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
        log_file(path)


def log_files(write, artifact_path: str | None = None) -> None:
    """Call write(tmp_dir) and log every file it leaves there (under `artifact_path/` when given)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write(tmp)
        for path in sorted(tmp.iterdir()):
            log_file(path, artifact_path)


def log_tables(tables: dict, artifact_path: str) -> None:
    """DataFrames as Parquet artifacts under `artifact_path/` (e.g. eval/heldout.per_record.parquet)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            path = Path(tmp) / name
            table.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_table(table, artifact_file: str) -> None:
    """A DataFrame as a table the MLflow UI renders (`mlflow.log_table`, JSON), e.g. tables/heldout.answers.json."""
    import mlflow

    mlflow.log_table(data=table, artifact_file=artifact_file)


def log_dataset(frame, name: str, fingerprint: str, context: str) -> None:
    """A dataset as an input of the active run ("training" or "eval"), so the UI's dataset
    columns show it; the digest is its content fingerprint (first DIGEST_LENGTH digits).
    MLflow stores the name, digest, schema and profile, not the rows."""
    import mlflow

    dataset = mlflow.data.from_pandas(frame, name=name, digest=fingerprint[:DIGEST_LENGTH])
    mlflow.log_input(dataset, context=context)


def log_model_dir(model_dir: Path) -> None:
    """The fine-tuned model directory (LoRA already merged) as the run's `model/` artifacts,
    so the tracking server holds everything needed to load it again."""
    import mlflow

    with _no_progress_bars():
        mlflow.log_artifacts(str(model_dir), "model")


def read_json_artifact(run, name: str):
    import mlflow

    return json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=name)).read_text())


PER_RECORD_SUFFIX = ".per_record.parquet"
ANSWERS_SUFFIX = ".answers.parquet"


def per_record_tables(client, run, suffix: str = PER_RECORD_SUFFIX) -> dict:
    """set name -> the run's table `eval/<set><suffix>`: per-record eval losses
    (`.per_record.parquet`: id, n_tokens, loss_sum, loss_mean, reason) or generated
    answers with their scores (`.answers.parquet`); {} for a run logged before these existed.
    Paired comparisons resample these rows; the pooled metric alone cannot give an interval.
    Read straight from the run's artifact location: going through the run id costs
    three database lookups per file, which dominated a leaderboard's time."""
    import pandas as pd
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    tables = {}
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
        for item in repo.list_artifacts("eval"):
            name = Path(item.path).name
            if item.is_dir or not name.endswith(suffix):
                continue
            local = repo.download_artifacts(item.path, dst_path=tmp)
            tables[name[: -len(suffix)]] = pd.read_parquet(local)
    return tables


@contextmanager
def _no_progress_bars():
    """MLflow draws a bar per downloaded file; a bar per small table buries the output."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
