"""Scoring on Ray (`--engine ray`): the chunks a metric still has to compute
become a Ray Data data set, one row a chunk, and `map_batches` runs them on a
pool of actors that each load the models once and call the local engine's own
`compute_rows` (scoring.py), so a chunk is batched and scored exactly as it
would be here. Chunks are fixed by scoring.py (records sorted by size), so long
records share chunks and make no stragglers. Each chunk's rows come back to the
driver as its block finishes, and the driver writes them to the score cache,
so workers need no shared disk and a rerun resumes like a local one.
Embeddings go the same way (`encode`): the chunks of texts the embedding
cache lacks, fixed by embedders.py, each encoded by an actor that loads the
embedder once, the vectors written to that cache by the driver.

Fault tolerance is Ray Data's: a dead actor is restarted and its chunk retried;
a chunk that arrives twice is kept once, and one that never arrives is an error.
An error in a metric is raised on the driver as the metric raised it."""

from __future__ import annotations

import logging
import os
import pickle
import sys

from cherrybench.scoring import compute_rows, is_per_record

log = logging.getLogger(__name__)

MODEL_NEEDS = ("lm", "judge", "reward", "embedder")  # what loads a model: such metrics run on the workers


def runs_a_model(metric) -> bool:
    return bool(set(metric.needs) & set(MODEL_NEEDS))


def context_settings(ctx) -> dict:
    """What a worker needs to rebuild the run's context (the models are resolved there)."""
    return {"model": ctx.model, "device": ctx.device, "batch_tokens": ctx.batch_tokens,
            "trust_remote_code": ctx.trust_remote_code, "seed": ctx.seed, "settings": dict(ctx.settings)}


def dump_plugin(plugin) -> bytes:
    """A metric or embedder pickled for the workers; a --plugin file's classes travel by value
    (the workers cannot import a module that exists only in the driver)."""
    from ray import cloudpickle

    for klass in type(plugin).__mro__:
        module = sys.modules.get(klass.__module__)
        if module is not None and klass.__module__.startswith("cherrybench_plugin_"):
            cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps(plugin)


class ChunkActor:
    """A Ray Data actor: builds its own context once (models load on first use and
    stay), checks that it sees the driver's models, then computes one chunk a call.
    An error is returned as data, so the driver raises the plugin's own exception
    (Ray Data would wrap it in one that has lost it)."""

    kind = "plugin"

    def __init__(self, plugin: bytes, settings: dict, fingerprints):
        from ray import cloudpickle

        from cherrybench.context import Context

        self.error = None
        try:
            self.plugin = cloudpickle.loads(plugin)
            self.ctx = Context(progress=False, **settings)
            here = self.fingerprints()
            if here != fingerprints:
                import socket

                raise ValueError(f"{self.kind} {self.plugin.name!r}: the Ray worker on {socket.gethostname()} sees "
                                 f"models {here}, the driver {fingerprints}: every worker needs the same models")
        except Exception as exc:
            self.error = exc

    def fingerprints(self):
        raise NotImplementedError

    def compute(self, task):
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        frames, errors = [], []
        for task in batch["task"]:
            frame, error = b"", self.error  # bytes, never None: Arrow keeps the column's type
            if error is None:
                try:
                    frame = pickle.dumps(self.compute(pickle.loads(task)))
                except Exception as exc:
                    error = exc
            frames.append(frame)
            errors.append(b"" if error is None else dump_error(error))
        return {"chunk": batch["chunk"], "frame": frames, "error": errors}


class ChunkScorer(ChunkActor):
    """Scores a chunk of (records, inputs) with the metric, as the local engine does."""

    kind = "metric"

    def fingerprints(self):
        return self.plugin.fingerprints(self.ctx)

    def compute(self, task):
        records, inputs = task
        return compute_rows(self.plugin, records, self.ctx, inputs)


class ChunkEmbedder(ChunkActor):
    """Embeds a chunk of texts with the embedder ([n, dim] float32), as `embedders.embed_texts` does."""

    kind = "embedder"

    def fingerprints(self):
        return self.plugin.fingerprint(self.ctx)

    def compute(self, texts):
        import numpy as np

        return np.asarray(self.plugin.encode(texts, self.ctx), dtype=np.float32)


def dump_error(exc: Exception) -> bytes:
    try:
        return pickle.dumps(exc)
    except Exception:  # an exception that cannot be pickled: its type and message
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


class RayEngine:
    """Hands the uncached chunks of every model-backed, per-record metric to Ray
    (`score_metric` asks `takes`, then iterates `run`). Connects on first use:
    a run whose scores are all cached starts no Ray."""

    def __init__(self, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or "local"  # local: a new Ray on this machine
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.started = False  # this engine called ray.init (and so shuts it down)

    def takes(self, metric) -> bool:
        return is_per_record(metric) and runs_a_model(metric)

    def connect(self) -> None:
        import ray

        if ray.is_initialized():  # a Ray the caller started (a notebook, a test): use it as it is
            return
        from cherrybench.quiet import QUIET_ENV

        verbose = logging.getLogger().isEnabledFor(logging.INFO)  # the CLI's -v
        env = {k: os.environ[k] for k in (*QUIET_ENV, "OMP_NUM_THREADS") if k in os.environ}
        ray.init(address=self.address, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR,
                 runtime_env={"env_vars": env} if env else None)
        self.started = True

    def shutdown(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def precision(self, device: str | None) -> str:
        """The float type the workers' language models run in: that of `device` when one is set,
        else of CUDA where the workers get GPUs, else of the CPU (`_map` gives them that device)."""
        from cherrybench.models import precision_name

        if device:
            return precision_name(device)
        self.connect()
        return precision_name("cuda" if self._gpus_each()[0] else "cpu")

    def _gpus_each(self) -> tuple[float, float]:
        """(GPUs each worker gets, GPUs of the cluster)."""
        import ray

        gpus = ray.cluster_resources().get("GPU", 0)
        return (self.gpus_per_worker if self.gpus_per_worker is not None else (1 if gpus else 0)), gpus

    def plan(self) -> tuple[int, float]:
        """(workers, GPUs each): one GPU a worker where the cluster has GPUs, else CPU workers."""
        import ray

        per_worker, gpus = self._gpus_each()
        if per_worker > gpus:
            raise ValueError(f"--gpus-per-worker {per_worker}: the Ray cluster has {gpus:g} GPUs")
        workers = self.workers or (max(1, int(gpus // per_worker)) if per_worker else 1)
        cpus = ray.cluster_resources().get("CPU", 0)
        if workers > cpus or (per_worker and workers * per_worker > gpus):
            log.warning("%d Ray workers of 1 CPU and %g GPUs each, on a cluster of %g CPUs and %g GPUs: those that do "
                        "not fit wait for resources (an autoscaling cluster adds them)", workers, per_worker, cpus, gpus)
        return workers, per_worker

    def run(self, metric, tasks: list, ctx):
        """(chunk number, rows) for every (records, inputs) chunk, as blocks finish."""
        return self._map(ChunkScorer, metric, metric.fingerprints(ctx), tasks, ctx)

    def encode(self, embedder, chunks: list[list[str]], ctx):
        """(chunk number, vectors [n, dim] float32) for every chunk of texts, as blocks finish
        (`embedders.embed_texts` hands it the texts its cache lacks)."""
        return self._map(ChunkEmbedder, embedder, embedder.fingerprint(ctx), chunks, ctx)

    def _map(self, actor: type[ChunkActor], plugin, fingerprints, tasks: list, ctx):
        """Each task on a pool of `actor`s, one Ray block a task: (task number, result) as blocks
        finish, each once; a task whose result never arrives is an error."""
        import ray.data

        self.connect()
        workers, gpus = self.plan()
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False  # scoring's own bar counts the records
        data_context.print_on_execution_start = False
        if not logging.getLogger().isEnabledFor(logging.INFO):  # the CLI without -v
            logging.getLogger("ray.data").setLevel(logging.ERROR)  # "execution finished in ..." per metric
        settings = context_settings(ctx)
        if not gpus and settings["device"] is None:
            settings["device"] = "cpu"  # a CPU worker: never a GPU Ray did not give it
        items = [{"chunk": n, "task": pickle.dumps(task)} for n, task in enumerate(tasks)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        done = dataset.map_batches(
            actor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
            num_cpus=1, num_gpus=gpus or None,
            fn_constructor_kwargs={"plugin": dump_plugin(plugin), "settings": settings,
                                   "fingerprints": fingerprints})
        log.info("%s %s: %d chunks on %d Ray workers (%g GPUs each)", actor.kind, plugin.name, len(items), workers,
                 gpus)
        seen: set[int] = set()
        for batch in done.iter_batches(batch_size=None, batch_format="numpy"):
            for n, frame, error in zip(batch["chunk"].tolist(), batch["frame"], batch["error"]):
                if len(error):
                    raise pickle.loads(error)
                if n in seen:  # a retried chunk whose first result also arrived
                    continue
                seen.add(n)
                yield n, pickle.loads(frame)
        if len(seen) < len(items):
            raise RuntimeError(f"{actor.kind} {plugin.name!r}: Ray returned {len(seen)} of {len(items)} chunks")
