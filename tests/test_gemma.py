"""The second embedded model, Gemma 3 270M: short names resolve, the chunks join
to the published file, and (slow) the converted model loads offline, its
tokenizer round-trips text, and IFD on three records is finite."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cherrybench import models
from cherrybench.records import Record, Turn


def test_join_chunks_concatenates_in_order_and_checks_the_sha256(tmp_path):
    parts = []
    for i, text in enumerate([b"GGUF head ", b"middle ", b"tail"]):
        parts.append(tmp_path / f"part{i}")
        parts[-1].write_bytes(text)
    whole = b"GGUF head middle tail"
    out = models.join_chunks(parts, hashlib.sha256(whole).hexdigest(), tmp_path / "joined.gguf")
    assert out.read_bytes() == whole
    with pytest.raises(ValueError, match="sha256"):
        models.join_chunks(parts[::-1], hashlib.sha256(whole).hexdigest(), tmp_path / "wrong.gguf")


def test_the_installed_chunks_are_the_published_file():
    """The packages' chunk files exist, in order, and their sizes add up (the sha256 is checked on joining)."""
    chunks, sha256, name = models.gemma_chunks()
    assert name == "gemma-3-270m-q4_k_m.gguf" and len(sha256) == 64
    assert [c.name for c in chunks] == [f"{name}.part0{i}" for i in range(4)]
    assert chunks[0].read_bytes()[:4] == b"GGUF"
    assert 200e6 < sum(c.stat().st_size for c in chunks) < 300e6


def test_short_names():
    assert models.SHORT_NAMES["smollm2-135m"] == models.SHORT_NAMES["smollm2"] == models.DEFAULT_MODEL
    assert models.SHORT_NAMES["gemma3-270m"] == "gemma3-270m"


RECORDS = [
    Record("colours", [Turn("Name three primary colours.", "Red, blue and yellow are the primary colours.")]),
    Record("french", [Turn("Translate to French.", "Bonjour, comment allez-vous ?", input="Good morning!")]),
    Record("sum", [Turn("What is 12 + 30?", "12 + 30 equals 42.")]),
]


@pytest.fixture(scope="module")
def gemma_ctx():
    from cherrybench.context import Context

    return Context(model="gemma3-270m", device="cpu", progress=False)


@pytest.mark.slow
def test_gemma_loads_offline_and_is_the_base_model(gemma_ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = gemma_ctx.model_ref()
    assert ref.spec == "gemma3-270m" and ref.fingerprint == models.resolve_model("gemma3-270m").fingerprint
    assert ref.fingerprint != models.resolve_model("smollm2-135m").fingerprint
    assert models.resolve_model("smollm2-135m") == models.resolve_model(None)
    lm = gemma_ctx.lm()
    assert lm.model.config.model_type == "gemma3_text" and lm.model.config.num_hidden_layers == 18
    assert not (ref.directory / "chat_template.jinja").exists() and not lm.tokenizer.chat_template  # base model
    assert not list(ref.directory.glob("*.gguf"))  # the joined GGUF was removed after conversion


@pytest.mark.slow
def test_gemma_tokenizer_round_trip(gemma_ctx):
    tokenizer = gemma_ctx.lm().tokenizer
    for text in ["Hello world!", "  indented\n\ttabs and newlines\n", "Grüße, 你好, ✓ and emoji 🙂", "x = f(2) ** 3"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids and tokenizer.bos_token_id not in ids
        assert tokenizer.decode(ids) == text


@pytest.mark.slow
def test_gemma_ifd_on_three_records_is_finite(gemma_ctx):
    from cherrybench.metrics.ifd import IFD

    frame = IFD(model="gemma3-270m", max_length=128).compute(RECORDS, gemma_ctx)
    values = frame[["cas", "das", "ifd", "ifd_ppl", "ppl"]].to_numpy(float)
    assert np.isfinite(values).all() and (values > 0).all()
    assert np.allclose(frame["ifd"], frame["cas"] / frame["das"])


@pytest.mark.slow
def test_weak_vs_strong_table_for_the_two_embedded_models(tmp_path):
    """`cherrybench agreement --model-b`: IFD from SmolLM2-135M against Gemma 3 270M, same records."""
    import json

    import pandas as pd

    from cherrybench.agreement import weak_vs_strong
    from cherrybench.cli import main

    rows = [{"instruction": r.turns[0].instruction, "input": r.turns[0].input, "output": r.turns[0].output}
            for r in RECORDS]
    rows += [{"instruction": f"Write the number {i} in words.", "input": "", "output": f"The number {i} is written "
              f"as {w}."} for i, w in [(3, "three"), (7, "seven"), (11, "eleven"), (20, "twenty"), (42, "forty-two")]]
    data = tmp_path / "pool.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "wvs"
    assert main(["agreement", "--data", str(data), "--metrics", "ifd", "--model", "smollm2-135m",
                 "--model-b", "gemma3-270m", "--max-length", "128", "--budget", "0.25", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    table = pd.read_csv(out / "weak_vs_strong.csv").set_index("column")
    a, b = pd.read_parquet(out / "scores.parquet"), pd.read_parquet(out / "scores_b.parquet")
    assert not np.allclose(a["ifd"], b["ifd"])  # two different models
    expected = weak_vs_strong(a["id"], a["ifd"], b["ifd"], 0.25, higher=True)
    assert table.loc["ifd", "a"] == "smollm2-135m" and table.loc["ifd", "b"] == "gemma3-270m"
    assert table.loc["ifd", "n"] == 8 and table.loc["ifd", "k"] == 2
    assert table.loc["ifd", "spearman"] == pytest.approx(expected["spearman"])
    assert table.loc["ifd", "enrichment"] == pytest.approx(expected["enrichment"])


@pytest.mark.slow
def test_gemma_as_judge_and_as_training_model(gemma_ctx, tmp_path):
    from cherrybench.evaluate import eval_loss
    from cherrybench.finetune import TrainConfig, finetune
    from cherrybench.metrics.deita import Deita

    quality = Deita(judge="gemma3-270m", judge_max_length=256).compute(RECORDS[:2], gemma_ctx)
    values = quality[["deita_complexity", "deita_quality"]].to_numpy(float)
    assert np.isfinite(values).all() and ((values >= 1) & (values <= 6)).all()  # expected value of digits 1..6

    config = TrainConfig(model="gemma3-270m", max_length=48, epochs=3, batch_size=3, learning_rate=1e-3, lora=True,
                         device="cpu")
    before = eval_loss("gemma3-270m", RECORDS, max_length=48, ctx=gemma_ctx)
    out = finetune(RECORDS, config, tmp_path / "model", progress=False)
    after = eval_loss(out, RECORDS, max_length=48, ctx=gemma_ctx)
    assert after < before - 0.2, (before, after)
