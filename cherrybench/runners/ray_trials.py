"""Comparison trials on Ray (`compare --engine ray`): each trial's expensive
part runs as one Ray task with its own resources (one CPU, and one GPU a trial
where the cluster has GPUs: `--gpus-per-worker`), while the driver keeps the
rest: the selections, the order in which trials may start, and every MLflow
call. A task builds its own context from the driver's settings, checks that
it sees the driver's base model, runs the runner's function, and returns its
whole result through Ray's object store, so the driver needs no model and no
disk shared with the workers. This module knows nothing of comparisons: it
runs `fn(ctx, *args)` for each `Job` once the job it waits for has finished.

Retries are this module's, not Ray's: a task that raised, or whose worker
died, starts again up to `max_retries` times, each failure reported with its
attempt; one that fails every attempt comes back as a `Failure` for the driver
to log, and the other jobs go on."""

from __future__ import annotations

import io
import logging
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

log = logging.getLogger(__name__)


@dataclass
class Job:
    """`fn(ctx, *args())` on a worker, started once the job named `after` has finished, or
    failed its last attempt, and its `Done` been handled (that can change what `args` returns:
    a baseline's answers; after a failure the caller decides, e.g. compare marks the trials
    judged without them). `info` is the caller's own, handed back with the result."""

    name: str
    fn: Callable
    args: Callable[[], tuple]
    after: str | None = None
    info: object = None


@dataclass
class Failure:
    """Why a job failed its last attempt: one line, and in full (the worker's traceback)."""

    error: str
    detail: str


@dataclass
class Done:
    job: Job
    result: object  # fn's return value; None when it failed
    failure: Failure | None
    attempts: int


def gpus_per_trial(engine) -> float:
    """GPUs each trial task takes: `--gpus-per-worker`, else 1 where the cluster has GPUs, else 0."""
    engine.connect()
    return engine.plan()[1]


def run_task(fn: Callable, settings: dict, models: dict, args: tuple):
    """The Ray task: a context like the driver's, the same base model, then `fn`."""
    from cherrybench.context import Context

    ctx = Context(progress=False, **settings)
    here = {spec: ctx.model_ref(spec).fingerprint for spec in models}
    if here != models:
        import socket

        raise ValueError(f"the Ray worker on {socket.gethostname()} sees models {here}, the driver {models}: "
                         "every worker needs the same models")
    return fn(ctx, *args)


def failure_of(exc: Exception) -> Failure:
    """The task's own exception (Ray wraps it), or what Ray says happened to the worker."""
    from ray.exceptions import RayTaskError

    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    text = str(cause).strip().splitlines()
    return Failure(f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": "), str(exc))


def run_jobs(jobs: Iterable[Job], settings: dict, models: dict, gpus: float, max_retries: int,
             limit: int | None = None) -> Iterator[Done]:
    """Each job as a Ray task (1 CPU, `gpus` GPUs), at most `limit` at once, yielded as each
    finishes (or fails its last attempt). Jobs are pulled one at a time, so the caller can
    prepare each (select its subset) while earlier ones run; one waiting for another starts
    after the other's `Done` was yielded and the caller came back for the next."""
    import ray
    from ray import cloudpickle

    for name, module in list(sys.modules.items()):  # a --plugin file's classes travel by value
        if name.startswith("cherrybench_plugin_"):
            cloudpickle.register_pickle_by_value(module)
    task = ray.remote(run_task)
    running: dict = {}  # ObjectRef -> (job, attempt)
    waiting: list[Job] = []
    pulled: set[str] = set()
    finished: set[str] = set()

    def start(job: Job, attempt: int) -> None:
        ref = task.options(name=f"cherrybench-trial:{job.name}", num_cpus=1, num_gpus=gpus or 0,
                           max_retries=0).remote(job.fn, settings, models, job.args())  # retries: below
        running[ref] = (job, attempt)
        print(f"[{job.name}] started on Ray" + (f" (attempt {attempt})" if attempt > 1 else ""), file=sys.stderr)

    def start_ready() -> None:
        for job in list(waiting):
            if limit is not None and len(running) >= limit:
                return
            if job.after is None or job.after in finished or job.after not in pulled:
                waiting.remove(job)
                start(job, 1)

    def collect(block: bool) -> list[Done]:
        ready, _ = ray.wait(list(running), num_returns=1 if block else len(running), timeout=None if block else 0)
        out = []
        for ref in ready:
            job, attempt = running.pop(ref)
            try:
                out.append(Done(job, ray.get(ref), None, attempt))
            except ray.exceptions.RayError as exc:  # the task raised, or its worker died
                failure = failure_of(exc)
                if attempt <= max_retries:
                    log.warning("[%s] attempt %d of %d failed (%s): starting it again", job.name, attempt,
                                max_retries + 1, failure.error)
                    start(job, attempt + 1)
                    continue
                out.append(Done(job, None, failure, attempt))
        return out

    def handed(done: Done) -> Done:
        # finished only once the caller has it: a job waiting on it (a trial judged against
        # the pairwise baseline) must not start before the caller took its answers
        finished.add(done.job.name)
        return done

    for job in jobs:  # pulling a job prepares it in the driver (its selection)
        pulled.add(job.name)
        waiting.append(job)
        start_ready()
        if running:
            for done in collect(block=False):
                yield handed(done)
                start_ready()
    while running or waiting:
        if not running:
            raise RuntimeError(f"Ray trials: {[j.name for j in waiting]} wait for trials that never ran")
        for done in collect(block=True):
            yield handed(done)
            start_ready()


def pack_directory(path: Path) -> bytes:
    """A directory as an uncompressed tar (a model sent back to the driver through Ray)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buffer.getvalue()


@contextmanager
def unpacked(archive: bytes) -> Iterator[Path]:
    """`pack_directory`'s tar as a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="cherrybench-model-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)
