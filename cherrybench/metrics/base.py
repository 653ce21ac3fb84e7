"""What a metric is: a named, versioned, parameterized computation of score
columns per record. A metric never decides what to keep (selectors do)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from cherrybench.fingerprint import hash_json
from cherrybench.params import Parameterized
from cherrybench.records import Record
from cherrybench.registry import Registry
from cherrybench.scoring import is_per_record

NEEDS = ("lm", "tokenizer", "embedder", "judge", "reward")
LANGUAGE_MODEL_NEEDS = ("lm", "judge")  # run through `Context.lm`, in the device's precision (reward: fp32;
# an embedder: fp32 unless it is a language model, see `Metric._key`)
# bumped when the scoring core or engine changes what metrics output (2: blank answers are NaN
# empty_answer; logits from the model's own head, so Granite, Cohere and the like change)
SCORING_CORE_VERSION = 2
# parameters that name a model: a score table's provenance leaves their spelling out (the
# models' fingerprints, also in the key, say which weights they are)
MODEL_PARAMS = frozenset({"model", "judge", "reward_model", "embedder", "tagger"})


class Metric(Parameterized):
    """Subclass, set the class attributes, take parameters as explicit keyword
    arguments stored unchanged, and implement `compute`.

    - `columns`: output column -> "higher" or "lower" (which way means more of
      what the column measures is better for selection, by the method's paper)
      or "none".
    - `needs`: resources from the context ("lm", "tokenizer", "embedder", ...); a metric
      that needs an embedder names it by its `embedder` parameter.
    - `per_record`: False when a record's score depends on the whole pool
      (then the pool's fingerprint is part of the cache key).
    - `volatile`: parameters that do not change results (kept out of the key).
    - `version`: bump when the output of the same inputs changes.
    """

    name: ClassVar[str]
    kind = "metric"  # names the owner in parameter errors (Parameterized.check_params)
    version: ClassVar[int] = 1
    columns: ClassVar[dict[str, str]] = {}
    needs: ClassVar[tuple[str, ...]] = ()
    per_record: ClassVar[bool] = True
    volatile: ClassVar[tuple[str, ...]] = ()
    chunk_size: ClassVar[int] = 64

    @property
    def reason_column(self) -> str:
        return f"{self.name}_reason"

    @property
    def output_columns(self) -> list[str]:
        return list(self.columns) + [self.reason_column]

    def fingerprints(self, ctx) -> dict:
        """Fingerprints of the models this metric reads; part of the cache key."""
        return {}

    def inputs(self) -> list["Metric"]:
        """Metrics whose columns this one is derived from. Scoring computes them
        first (cached as usual) and calls `compute(records, ctx, inputs=table)`
        with their columns for exactly these records, in order."""
        return []

    def cache_key(self, ctx, pool_fingerprint: str | None = None) -> str:
        return self._key(ctx, pool_fingerprint, spelled=True)

    def provenance_key(self, ctx, pool_fingerprint: str | None = None) -> str:
        """What a score table stores to say how its columns were scored, for `select --scores`
        to check: the cache key's content without how the models were named (an alias, a relative
        or an absolute path of the same weights), which their fingerprints already identify."""
        return self._key(ctx, pool_fingerprint, spelled=False)

    def _key(self, ctx, pool_fingerprint: str | None, spelled: bool) -> str:
        settings = self.get_params()
        params = {k: v for k, v in settings.items()
                  if k not in self.volatile and (spelled or k not in MODEL_PARAMS)}
        payload = {"metric": self.name, "version": self.version, "core": SCORING_CORE_VERSION, "params": params,
                   "models": self.fingerprints(ctx)}
        if set(self.needs) & set(LANGUAGE_MODEL_NEEDS):  # bf16 scores on CUDA differ from fp32 ones on a CPU
            from cherrybench.models import precision_entry

            payload.update(precision_entry(ctx.precision(self)))
        if "embedder" in self.needs and "embedder" in settings:  # an LM embedder's vectors: bf16 on CUDA too
            from cherrybench.embedders import precision_key

            payload.update(precision_key(settings["embedder"], ctx))
        sources = plugin_sources(type(self))
        if sources:  # a plugin's compute may change without a version bump
            payload["plugin_source"] = sources
        derived = self.inputs()
        if derived:
            payload["inputs"] = [m._key(ctx, pool_fingerprint, spelled) for m in derived]
        if not is_per_record(self):
            payload["pool"] = pool_fingerprint
        return hash_json(payload, where=f"metric {self.name!r} parameters")

    def compute(self, records: list[Record], ctx) -> pd.DataFrame:
        """One row per record, in order, with `output_columns`; NaN plus a reason where unscorable.
        A derived metric (see `inputs`) takes a third argument, `inputs`: the input columns."""
        raise NotImplementedError

    def warnings(self, table: pd.DataFrame) -> list[str]:
        """Data-set level warnings once the whole table is scored."""
        return []

    # helpers for subclasses
    def frame(self, rows: list[dict]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=self.output_columns)
        for column in self.columns:
            frame[column] = frame[column].astype(np.float64)
        reasons = [row.get(self.reason_column) for row in rows]
        frame[self.reason_column] = pd.Series([r if isinstance(r, str) else None for r in reasons], dtype=object)
        return frame

    def nan_row(self, reason: str) -> dict:
        row = {c: np.nan for c in self.columns}
        row[self.reason_column] = reason
        return row


_SOURCE_DIGESTS: dict[type, list] = {}


def plugin_sources(cls: type) -> list:
    """sha256 of the source file of every class in `cls`'s hierarchy that lives outside
    the cherrybench package (a --plugin file, an entry-point package), read once per
    class, i.e. the code as loaded; None for a class whose source cannot be found."""
    if cls not in _SOURCE_DIGESTS:
        import hashlib
        import inspect
        from pathlib import Path

        digests = []
        for klass in cls.__mro__:
            module = klass.__module__
            if module == "builtins" or module == "cherrybench" or module.startswith("cherrybench."):
                continue
            try:
                path = inspect.getsourcefile(klass)
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
            except (TypeError, OSError):
                digest = None
            digests.append([klass.__qualname__, digest])  # not the module name: a plugin's depends on its path
        _SOURCE_DIGESTS[cls] = digests
    return _SOURCE_DIGESTS[cls]


def validate_metric(cls) -> None:
    """Checked when a plugin registers, not when it first runs."""
    if not isinstance(cls, type) or not issubclass(cls, Metric):
        raise TypeError(f"{cls!r} must subclass cherrybench.metrics.Metric")
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} must set `name`")
    if not cls.columns:
        raise TypeError(f"metric {cls.name!r} must declare its output `columns`")
    bad = {k: v for k, v in cls.columns.items() if v not in ("higher", "lower", "none")}
    if bad:
        raise TypeError(f"metric {cls.name!r}: column directions must be 'higher', 'lower' or 'none', got {bad}")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise TypeError(f"metric {cls.name!r}: unknown needs {sorted(unknown)}; choose from {NEEDS}")


METRICS = Registry("metric", "cherrybench.metrics", validate=validate_metric)
register_metric = METRICS.register


def build_metrics(names: list[str], options: dict | None = None) -> list[Metric]:
    """Instantiate metrics by name or alias, each once, with the options it accepts."""
    options = options or {}
    seen, metrics = set(), []
    for name in names:
        cls = METRICS.get(name)
        metric = cls.from_options(options)
        key = (cls.name, repr(metric.get_params()))
        if key not in seen:
            seen.add(key)
            metrics.append(metric)
    return metrics
