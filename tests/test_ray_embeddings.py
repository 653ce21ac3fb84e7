"""Embeddings on Ray (`--engine ray`) against the local path, on one local Ray
(2 CPUs, no dashboard) shared by the module: the real MiniLM and the SmolLM2
mean-pooling embedder give the local vectors (fp32, within 1e-5), the driver
loads no model and writes every chunk to the embedding cache once, and a rerun
hands nothing to Ray. Chunks of 6 texts make 20 records several Ray blocks."""

from __future__ import annotations


import numpy as np
import pyarrow.parquet as pq
import pytest
from local_ray import local_ray

from alpaca30 import alpaca30
from cherrybench import embedders
from cherrybench.cache import HASH_COLUMN
from cherrybench.context import Context
from cherrybench.embedders import embed, record_text, resolve_embedder
from cherrybench.fingerprint import hash_json
from cherrybench.ray_engine import RayEngine

CHUNK = 6  # texts per chunk (one Ray block each): 20 records, 4 blocks
RECORDS = alpaca30().records[:20]


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module, shut down at the end."""
    with local_ray() as address:
        yield address


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(embedders, "CHUNK", CHUNK)


def ray_context() -> Context:
    ctx = Context(device="cpu", progress=False)
    ctx.engine = RayEngine(workers=2)
    return ctx


def cached_hashes(cache, embedder_name: str) -> tuple[list[str], int]:
    """Every text hash in the embedder's cache shards, and the number of shards."""
    parts = sorted((cache / "embeddings" / embedder_name).glob("*/part-*.parquet"))
    return [h for p in parts for h in pq.read_table(p).column(HASH_COLUMN).to_pylist()], len(parts)


@pytest.mark.slow  # starts Ray and loads MiniLM in its workers
def test_minilm_vectors_on_ray_equal_the_local_ones_and_a_rerun_computes_nothing(ray_address, fresh_cache):
    text = "conversation"
    local = embed(RECORDS, None, text, Context(device="cpu", progress=False), use_cache=False)
    texts = {record_text(r, text) for r in RECORDS}

    ctx = ray_context()
    embedder = resolve_embedder(None)
    got = embed(RECORDS, embedder, text, ctx)
    assert got.shape == (len(RECORDS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, local, rtol=0, atol=1e-5)
    assert not ctx._resources  # the driver loaded no model: every vector came from a Ray worker
    assert embedder.texts_encoded == len(texts)  # each distinct text once, by the workers
    hashes, shards = cached_hashes(fresh_cache, embedder.name)
    assert sorted(hashes) == sorted(hash_json(t) for t in texts)  # each text once in the cache, none lost
    assert shards == -(-len(texts) // CHUNK)  # one shard per chunk

    again = embed(RECORDS, embedder, text, ray_context())
    assert embedder.texts_encoded == len(texts)  # nothing handed to Ray
    assert cached_hashes(fresh_cache, embedder.name) == (hashes, shards)
    np.testing.assert_array_equal(again, got)


@pytest.mark.slow  # starts Ray and loads SmolLM2 in its workers
def test_lm_pooling_vectors_on_ray_equal_the_local_ones(ray_address, fresh_cache):
    local = embed(RECORDS, "lm:mean", "instruction", Context(device="cpu", progress=False), use_cache=False)
    ctx = ray_context()
    got = embed(RECORDS, "lm:mean", "instruction", ctx)
    assert got.shape == local.shape == (len(RECORDS), 576)
    np.testing.assert_allclose(got, local, rtol=0, atol=1e-5)
    assert not ctx._resources  # the SmolLM2 pooling ran on the workers
    hashes, _ = cached_hashes(fresh_cache, "lm")
    assert sorted(hashes) == sorted({hash_json(record_text(r, "instruction")) for r in RECORDS})
