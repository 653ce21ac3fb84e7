"""NEFTune (Long Is More's refinement): `--neftune-alpha` reaches the Trainer's
`neftune_noise_alpha`, really puts noise of the documented size on the input
embeddings while training, changes the trained weights, and enters the fine-tune
key only when set (models trained before the setting existed keep their keys)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from cherrybench.cli import build_parser, main
from cherrybench.fingerprint import hash_json
from cherrybench.finetune import Reselect, TrainConfig, finetune, finetuned_model
from cherrybench.records import Record, Turn
from cherrybench.runners.options import train_config_from_args

RECORDS = [Record("0", [Turn("What colour is the sky?", "The sky is blue on a clear day.")]),
           Record("1", [Turn("What do bees make?", "Bees make honey from nectar.")])]


def test_unset_alpha_keeps_the_keys_of_models_trained_before_it():
    # the settings hashed before `neftune_alpha` existed, written out by hand
    old = {"prompt": "alpaca", "max_length": 64, "epochs": 1.0, "learning_rate": 5e-5, "batch_size": 4,
           "gradient_accumulation": 1, "warmup_ratio": 0.0, "weight_decay": 0.0, "lora": False, "lora_r": 8,
           "lora_alpha": 16, "lora_dropout": 0.0, "seed": 0}
    config = TrainConfig(max_length=64)
    assert config.fingerprint("base") == hash_json({"model": "base", "settings": old})
    noisy = replace(config, neftune_alpha=5.0)
    assert noisy.fingerprint("base") == hash_json({"model": "base", "settings": {**old, "neftune_alpha": 5.0}})
    assert noisy.fingerprint("base") != config.fingerprint("base")
    assert replace(config, neftune_alpha=5).fingerprint("base") == noisy.fingerprint("base")  # 5 and 5.0 alike


@pytest.mark.parametrize("command", [["compare"],
                                     ["regress", "--data", "d.json", "--eval", "e.json", "--out", "r.json"]])
def test_flag_sets_the_training_config_and_its_params(command):
    args = build_parser().parse_args([*command, "--neftune-alpha", "5"])
    config = train_config_from_args(args)
    assert config.neftune_alpha == 5.0 and config.params()["train.neftune_alpha"] == 5.0
    assert train_config_from_args(build_parser().parse_args(command)).neftune_alpha is None  # off by default


@pytest.mark.parametrize("value", ["0", "-1", "nan", "five"])
def test_bad_alpha_is_a_one_line_error(value, capsys):
    assert main(["compare", "--neftune-alpha", value, "--tracking-uri", "sqlite:///unused.db"]) == 2
    err = capsys.readouterr().err
    assert "--neftune-alpha" in err and "Traceback" not in err


class EmbeddingProbe(Reselect):
    """Before epoch 2, with the model being trained (train mode, Trainer's hooks on):
    the input embeddings' forward output against the embedding rows themselves."""

    key = {"probe": 1}

    def __init__(self):
        self.seen = []

    def choose(self, epoch, model, tokenizer):
        ids = torch.tensor([tokenizer("The sky is blue on a clear day.")["input_ids"]])
        embeddings = model.get_input_embeddings()
        with torch.no_grad():
            rows = embeddings.weight[ids]
            first, second = embeddings(ids), embeddings(ids)
        self.seen.append({"training": embeddings.training, "shape": tuple(rows.shape),
                          "first": (first - rows).abs(), "second": (second - rows).abs()})
        return RECORDS, {}


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_noise_is_added_in_training_and_changes_the_weights(tmp_path):
    config = TrainConfig(max_length=64, epochs=2, batch_size=2, learning_rate=1e-4, device="cpu", seed=0)
    plain_probe, noisy_probe = EmbeddingProbe(), EmbeddingProbe()
    plain = finetuned_model(RECORDS, config, progress=False, reselect=plain_probe)
    noisy = finetuned_model(RECORDS, replace(config, neftune_alpha=5.0), progress=False, reselect=noisy_probe)

    (seen,) = plain_probe.seen
    assert seen["training"] and seen["first"].max() == 0 and seen["second"].max() == 0  # off: the rows as they are
    (seen,) = noisy_probe.seen
    _, length, width = seen["shape"]
    bound = 5.0 / math.sqrt(length * width)  # SPEC: uniform noise of scale alpha / sqrt(L x d)
    for noise in (seen["first"], seen["second"]):
        assert noise.max() <= bound * (1 + 1e-5) and noise.max() > 0.9 * bound
        assert noise.mean() == pytest.approx(bound / 2, rel=0.05)  # |U(-b, b)| has mean b / 2
    assert not torch.equal(seen["first"], seen["second"])  # fresh noise on every forward

    control = finetune(RECORDS, config, tmp_path / "control", progress=False)  # same seed, no probe: same training
    a, b, c = weights(plain), weights(noisy), weights(control)
    assert all(torch.equal(a[k], c[k]) for k in a)  # training is deterministic here ...
    assert any(not torch.equal(a[k], b[k]) for k in a)  # ... so the difference is the noise
    from cherrybench.finetune import training_summary

    assert training_summary(noisy)["config"]["neftune_alpha"] == 5.0
