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


@pytest.mark.parametrize("name", ["spm.model", "source.spm", "modeling_custom.py", "tokenization_custom.py",
                                  "vocab.bpe", "bpe.codes", "dict.txt", "qwen.tiktoken", "prophetnet.tokenizer",
                                  "spm.vocab"])
def test_remote_code_and_other_tokenizer_files_count(model_dir, name):
    """Code run under --trust-remote-code and tokenizer data outside the usual names
    (DeBERTa-v3's spm.model, Marian's source.spm, GPT-2's vocab.bpe, fairseq's dict.txt)."""
    path = model_dir / name
    path.write_bytes(b"first")
    before = directory_fingerprint(model_dir)
    path.write_bytes(b"second, longer")  # another size: the weight memo cannot hide it either
    assert directory_fingerprint(model_dir) != before


def test_a_directory_without_such_files_keeps_the_fingerprint_it_had(model_dir):
    """The payload, written out: only the files hashed before remote code and other tokenizer
    files were added (README.md and .gitattributes stay out)."""
    from cherrybench.fingerprint import hash_file, hash_json

    (model_dir / ".gitattributes").write_text("*.safetensors filter=lfs")
    (model_dir / "notes").mkdir()
    (model_dir / "notes" / "x.py").write_text("print(1)")  # a sub-folder that no modules.json names
    names = ["chat_template.jinja", "config.json", "merges.txt", "model.safetensors", "tokenizer.model", "vocab.txt"]
    assert directory_fingerprint(model_dir) == hash_json({n: hash_file(model_dir / n) for n in names})


def fine_tuned_directory(path, weights: bytes, seconds: float, base: str):
    """What `finetune` leaves: weights, config, tokenizer and its done marker."""
    import json

    from cherrybench.finetune import DONE_MARKER

    path.mkdir()
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (path / "model.safetensors").write_bytes(weights)
    (path / DONE_MARKER).write_text(json.dumps({"n_records": 2, "train_loss": 1.5, "base_model": base,
                                                "train_seconds": seconds}))
    return path


def test_a_fine_tuned_model_is_fingerprinted_by_what_decides_its_outputs(tmp_path):
    """An identical retrain (another duration) or the same model trained from another machine's path
    fingerprints the same; other weights do not. Separate directories: the weight-hash memo, keyed
    by path, size and mtime, shares nothing between them."""
    first = fine_tuned_directory(tmp_path / "a", b"weights", 12.5, "/home/one/models/base")
    again = fine_tuned_directory(tmp_path / "b", b"weights", 99.0, "/srv/two/models/base")
    other = fine_tuned_directory(tmp_path / "c", b"weightz", 12.5, "/home/one/models/base")
    assert directory_fingerprint(first) == directory_fingerprint(again)
    assert directory_fingerprint(other) != directory_fingerprint(first)
