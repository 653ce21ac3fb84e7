"""A model directory's fingerprint, which keys every cached score, fine-tune and answer:
it changes with anything that changes the model's tokens or outputs, and only with that."""

from __future__ import annotations

import pytest

from cherrybench.models import directory_fingerprint


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "tokenizer.model").write_bytes(b"sentencepiece")
    (tmp_path / "merges.txt").write_text("a b\n")
    (tmp_path / "vocab.txt").write_text("[PAD]\na\n")
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    (tmp_path / "README.md").write_text("a model")
    return tmp_path


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.model", "merges.txt", "vocab.txt",
                                  "chat_template.jinja"])
def test_what_changes_the_model_changes_the_fingerprint(model_dir, name):
    before = directory_fingerprint(model_dir)
    path = model_dir / name
    path.write_bytes(path.read_bytes() + b" changed")
    assert directory_fingerprint(model_dir) != before


def test_a_readme_does_not(model_dir):
    before = directory_fingerprint(model_dir)
    (model_dir / "README.md").write_text("a model, described better")
    assert directory_fingerprint(model_dir) == before


def test_a_sentence_transformers_module_folder_counts(tmp_path):
    """all-MiniLM-L6-v2's layout: the pooling mode lives in 1_Pooling/config.json."""
    import json

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "modules.json").write_text(json.dumps([{"path": ""}, {"path": "1_Pooling"}, {"path": "2_Normalize"}]))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (tmp_path / "2_Normalize").mkdir()
    (tmp_path / "notes").mkdir()  # not a module: not read
    (tmp_path / "notes" / "a.json").write_text("{}")
    before = directory_fingerprint(tmp_path)
    (tmp_path / "notes" / "a.json").write_text('{"x": 1}')
    assert directory_fingerprint(tmp_path) == before
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert directory_fingerprint(tmp_path) != before
