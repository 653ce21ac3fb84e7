"""Reward: a tiny real sequence classifier (random BERT, MiniLM's tokenizer)
built offline exercises the reward-model path against a direct computation and
resumes from the cache; without a reward model, the judge's quality stands in."""

import logging

import numpy as np
import pytest
import torch

from cherrybench.metrics.deita import JudgeQuality
from cherrybench.metrics.reward import Reward
from cherrybench.records import Dataset, Record, Turn
from cherrybench.scoring import score_metric

RECORDS = [Record(str(i), [Turn(q, a, x)]) for i, (q, x, a) in enumerate([
    ("How do I bake bread?", "", "Knead, proof, bake."),
    ("Translate to French", "good morning", "Bonjour"),
    ("What is the capital of Peru?", "", "Lima."),
    ("Name a prime number.", "", "Seven."),
    ("Describe the colour blue.", "", "Calm, like the sky."),
    ("Say hi.", "", "Hi!"),
])] + [Record("mt", [Turn("Hi", "Hello!"), Turn("Count to two.", "1, 2.")])]


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory, make_reward_model):
    return make_reward_model(tmp_path_factory.mktemp("reward-model"), seed=0, layers=2)


def direct_reward(path, question, answer, max_length=None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    cut = {"truncation": True, "max_length": max_length} if max_length else {}
    with torch.no_grad():
        return float(model(**tokenizer(question, answer, return_tensors="pt", **cut)).logits[0, 0])


@pytest.mark.slow
def test_reward_model_scores_pairs_as_logits0_and_resumes(ctx, tiny_reward_model):
    metric = Reward(reward_model=str(tiny_reward_model))
    half = Dataset(RECORDS[:3], None, "alpaca", "json")
    full = Dataset(RECORDS, None, "alpaca", "json")
    first = score_metric(half, metric, ctx)  # an interrupted run
    model = metric.model(ctx)
    assert model.pairs_scored == 3
    table = score_metric(full, metric, ctx)  # resumed: only the rest (the multi-turn record has two pairs)
    assert model.pairs_scored == 3 + 3 + 2
    score_metric(full, metric, ctx)
    assert model.pairs_scored == 8
    np.testing.assert_allclose(table["reward"].iloc[:3], first["reward"], atol=1e-9)
    for record in RECORDS:
        expected = np.mean([direct_reward(tiny_reward_model, t.query, t.output) for t in record.turns])
        assert table.at[record.id, "reward"] == pytest.approx(expected, abs=1e-4)
    assert (table["reward_source"] == "reward_model").all()


def test_missing_reward_model_directory_is_a_clear_error(ctx, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Reward(reward_model=str(tmp_path)).fingerprints(ctx)


@pytest.mark.slow
def test_without_a_reward_model_the_judge_quality_stands_in(ctx, caplog):
    """The fallback is a declared input: scored first by the core, said once per scoring."""
    from cherrybench.records import Dataset
    from cherrybench.scoring import score_metric

    records = RECORDS[:2]
    assert [m.name for m in Reward().inputs()] == ["judge_quality"]
    assert Reward(reward_model="x").inputs() == []
    with caplog.at_level(logging.WARNING, logger="cherrybench.scoring"):
        table = score_metric(Dataset(records, None, "alpaca", "json"), Reward(), ctx, use_cache=False)
    said = [r for r in caplog.records if "no --reward-model" in r.getMessage()]
    assert len(said) == 1  # said once
    quality = JudgeQuality().compute(records, ctx)
    np.testing.assert_allclose(table["reward"], quality["judge_quality"], atol=1e-9)
    assert (table["reward_source"] == "judge_quality").all()
    table = table.reset_index(drop=True)
    assert list(table.columns) == ["reward", "reward_source", "reward_reason"]


@pytest.mark.slow
def test_two_reward_lengths_in_one_run_each_truncate_at_their_own(tiny_reward_model):
    """`score --metrics reward,instructmining --param reward_max_length=128`: instructmining's own
    Reward keeps 512. One context, one model: each metric must still score at its own length."""
    from cherrybench.context import Context

    ctx = Context(device="cpu", progress=False)
    question, answer = "Summarise: " + "the cat sat on the mat and looked at the door. " * 20, "It sat."
    record = Record("long", [Turn(question, answer)])
    short = Reward(reward_model=str(tiny_reward_model), reward_max_length=16)
    full = Reward(reward_model=str(tiny_reward_model))
    got_short = short.compute([record], ctx)["reward"].iloc[0]
    got_full = full.compute([record], ctx)["reward"].iloc[0]
    expected_short = direct_reward(tiny_reward_model, question, answer, max_length=16)
    expected_full = direct_reward(tiny_reward_model, question, answer, max_length=512)
    assert expected_short != pytest.approx(expected_full, abs=1e-6)  # the cut matters (tiny random model: ~6e-5)
    assert got_short == pytest.approx(expected_short, abs=1e-6)
    assert got_full == pytest.approx(expected_full, abs=1e-6)
