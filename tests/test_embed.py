"""Embedders: MiniLM and LM pooling against direct computation, the cache
resumes after an interruption and never pickles, bad settings are clear errors."""

import numpy as np
import pytest
import torch

from cherrybench.embedders import (EMBEDDERS, LMPoolingEmbedder, SentenceTransformerEmbedder, embed, minilm_dir,
                                   record_text, resolve_embedder)
from cherrybench.paths import cache_dir
from cherrybench.records import Record, Turn

RECORDS = [Record(str(i), [Turn(q, a, x)]) for i, (q, x, a) in enumerate([
    ("How do I bake bread?", "", "Knead, proof, bake."),
    ("Translate to French", "good morning", "Bonjour"),
    ("What is the capital of Peru?", "", "Lima."),
    ("Name a prime number.", "", "Seven."),
    ("How do I bake bread?", "", "Knead, proof, bake."),  # same text as record 0
    ("Describe the colour blue.", "", "Calm, like the sky."),
])] + [Record("mt", [Turn("Hi", "Hello!"), Turn("Count to two.", "1, 2.")])]


def test_record_text():
    assert record_text(RECORDS[1], "instruction") == "Translate to French\ngood morning"
    assert record_text(RECORDS[1], "conversation") == "Translate to French\ngood morning\nBonjour"
    assert record_text(RECORDS[-1], "conversation") == "Hi\nHello!\n\nCount to two.\n1, 2."
    with pytest.raises(ValueError, match="instruction"):
        record_text(RECORDS[0], "title")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_and_is_normalised(ctx):
    from sentence_transformers import SentenceTransformer

    got = embed(RECORDS, None, "conversation", ctx, use_cache=False)
    reference = SentenceTransformer(str(minilm_dir()), device="cpu").encode(
        [record_text(r, "conversation") for r in RECORDS])
    assert got.shape == (len(RECORDS), 384)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_lm_pooling_matches_a_manual_forward(ctx, lm):
    texts = [record_text(r, "instruction") for r in RECORDS[1:3]]
    for pooling in ("mean", "last"):
        got = embed(RECORDS[1:3], f"lm:{pooling}", "instruction", ctx, use_cache=False)
        for row, text in zip(got, texts):
            ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                hidden = lm.model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1][0]
            expected = hidden.mean(0) if pooling == "mean" else hidden[-1]
            np.testing.assert_allclose(row, expected.numpy(), atol=2e-4)


@pytest.mark.slow
def test_cache_resumes_after_interruption(ctx):
    embedder = SentenceTransformerEmbedder()
    first = embed(RECORDS[:3], embedder, "instruction", ctx)  # a run stopped halfway
    assert embedder.texts_encoded == 3
    full = embed(RECORDS, embedder, "instruction", ctx)  # the resumed run: only the rest
    assert embedder.texts_encoded == 3 + 3  # record 4 repeats record 0's text
    np.testing.assert_allclose(full[:3], first, atol=1e-6)
    np.testing.assert_array_equal(full[4], full[0])
    again = embed(RECORDS, embedder, "instruction", ctx)
    assert embedder.texts_encoded == 6
    np.testing.assert_array_equal(again, full)
    fresh = embed(RECORDS, SentenceTransformerEmbedder(), "instruction", ctx, use_cache=False)
    np.testing.assert_allclose(fresh, full, atol=1e-5)
    files = list((cache_dir() / "embeddings").rglob("*"))
    assert any(f.suffix == ".parquet" for f in files)
    assert not any(f.suffix in (".pkl", ".pickle") for f in files)


def test_resolve_embedder_settings(tmp_path):
    assert isinstance(resolve_embedder(None), SentenceTransformerEmbedder)
    last = resolve_embedder("lm:last")
    assert isinstance(last, LMPoolingEmbedder) and last.pooling == "last" and last.model is None
    assert resolve_embedder(str(minilm_dir())).path == str(minilm_dir())
    assert set(EMBEDDERS.names()) >= {"lm", "sentence-transformers"}
    with pytest.raises(ValueError, match="pooling"):
        resolve_embedder("lm:max")
    with pytest.raises(KeyError, match="unknown embedder"):
        resolve_embedder("no-such-embedder")
    with pytest.raises(FileNotFoundError, match="not a sentence-transformers directory"):
        SentenceTransformerEmbedder(path=str(tmp_path)).directory()


@pytest.mark.slow
def test_an_embedder_on_another_device_gets_its_own_model():
    """The loaded model is shared per directory *and* device: one asking for another device
    does not get the first one's (meta: a second device every machine has)."""
    from cherrybench.context import Context

    ctx = Context(device="cpu", progress=False)
    assert str(SentenceTransformerEmbedder(device="cpu").model(ctx).device) == "cpu"
    assert str(SentenceTransformerEmbedder(device="meta").model(ctx).device) == "meta"
    assert SentenceTransformerEmbedder().model(ctx) is SentenceTransformerEmbedder(device="cpu").model(ctx)
