"""The InstructMining rule as a metric and selector, checked against
predictions computed here from independently computed indicators: token
counts from the tokenizer, reward logits from the reward model run by hand,
KNN-6 by brute force, judge digits from the model's own logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cherrybench.embedders import minilm_dir
from cherrybench.metrics.dialogue_judge import DIMENSIONS, DialogueJudge, prompt
from cherrybench.metrics.instructmining import InstructMining
from cherrybench.records import Dataset, Record, Turn
from cherrybench.regress.rules import Rule
from cherrybench.scoring import is_per_record
from cherrybench.scoring import score
from cherrybench.runners.select import run_selection
from cherrybench.selectors import SELECTORS, Budget

QA = [
    ("Name a primary colour.", "Red, the colour of blood and of ripe tomatoes."), ("What is 2 + 2?", "4"),
    ("Translate 'hello' to French.", "Bonjour."), ("Give a synonym of happy.", "Joyful, glad, cheerful."),
    ("Write a haiku about rain.", "Soft rain on the roof, soft rain on the road, rain rain rain."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."), ("Name a mammal that flies.", "The bat."),
    ("Sort 3, 1, 2.", "1, 2, 3"), ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600."),
]


@pytest.fixture(scope="module")
def records():
    return [Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate(QA)]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    """A small local reward model: MiniLM with a seeded random one-logit head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("reward")
    AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(out)
    return out


def response_tokens(ctx, text):
    return len(ctx.tokenizer()(text, add_special_tokens=False)["input_ids"])


def test_paper_v1_needs_a_reward_model_and_says_so(records, ctx):
    for rule in ("paper-v1", "paper-v2"):
        with pytest.raises(ValueError, match=f"rule '{rule}' needs indicators that are not available: reward .*--reward-model"):
            InstructMining(rule=rule).compute(records, ctx)


@pytest.mark.slow
def test_paper_v1_matches_hand_computed_prediction(records, ctx, reward_dir):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    table = score(Dataset(records, None, "alpaca", "json"), [InstructMining(rule="paper-v1", reward_model=str(reward_dir))],
                  ctx, use_cache=False)
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    vectors = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True).encode(
        [f"{q}\n{a}" for q, a in QA]).astype(np.float64)
    expected = []
    for i, (q, a) in enumerate(QA):
        with torch.no_grad():
            reward = float(model(**tokenizer(q, a, return_tensors="pt")).logits[0, 0])
        knn6 = np.mean(sorted(np.linalg.norm(vectors[i] - vectors[j]) for j in range(len(QA)) if j != i)[:6])
        expected.append(1.0694 - 0.1498 * reward + 8.257e-5 * response_tokens(ctx, a) - 0.9350 * knn6)
    np.testing.assert_allclose(table["instructmining"].to_numpy(), expected, rtol=1e-4, atol=1e-5)
    assert table["instructmining_reason"].isna().all()
    assert not is_per_record(InstructMining(rule="paper-v1", reward_model=str(reward_dir)))  # KNN is pool-level


@pytest.mark.slow
def test_paper_v1_offline_drops_only_the_reward_term(records, ctx):
    from sentence_transformers import SentenceTransformer

    assert "Rew term (-0.1498 Rew) is omitted" in InstructMining(rule="paper-v1-offline").load().notes
    table = score(Dataset(records, None, "alpaca", "json"), [InstructMining(rule="paper-v1-offline")], ctx,
                  use_cache=False)  # no reward model given, and none needed
    vectors = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True).encode(
        [f"{q}\n{a}" for q, a in QA]).astype(np.float64)
    expected = []
    for i, (q, a) in enumerate(QA):
        knn6 = np.mean(sorted(np.linalg.norm(vectors[i] - vectors[j]) for j in range(len(QA)) if j != i)[:6])
        expected.append(1.0694 + 8.257e-5 * response_tokens(ctx, a) - 0.9350 * knn6)
    np.testing.assert_allclose(table["instructmining"].to_numpy(), expected, rtol=1e-4, atol=1e-5)


def learned_rule(tmp_path) -> str:
    rule = Rule(0.7, {"output_length": 0.01, "input_length": -0.02, "mtld": -0.005},
                {"output_length": {"metric": "length", "params": {"model": None}, "columns": ["response_length"]},
                 "input_length": {"metric": "length", "params": {"model": None},
                                  "columns": ["instruction_length", "input_length"]},
                 "mtld": {"metric": "mtld", "params": {"threshold": 0.72}, "columns": ["mtld"]}})
    return str(rule.save(tmp_path / "rule.json"))


@pytest.mark.slow  # resolves the model for its tokenizer
def test_learned_rule_as_metric_and_selector(records, ctx, tmp_path):
    from cherrybench.metrics.mtld import mtld, words

    path = learned_rule(tmp_path)
    extra = Record("empty", [Turn("Say nothing.", "...")])  # MTLD has no words: NaN with the reason
    dataset = Dataset(records + [extra], None, "alpaca", "json")
    table = score(dataset, [InstructMining(rule=path)], ctx, use_cache=False)
    expected = [0.7 + 0.01 * response_tokens(ctx, a) - 0.02 * response_tokens(ctx, q) - 0.005 * mtld(words(a))
                for q, a in QA]
    np.testing.assert_allclose(table["instructmining"].to_numpy()[:-1], expected, rtol=1e-9)
    assert np.isnan(table["instructmining"].iloc[-1])
    assert table["instructmining_reason"].iloc[-1] == "no_mtld:empty_response"

    selector = SELECTORS.get("instructmining")(rule=path)
    selection, _ = run_selection(dataset, selector, Budget.parse(3), ctx)
    lowest = [str(i) for i in np.argsort(expected, kind="stable")[:3]]
    assert selection.ids == lowest
    assert selection.report["excluded"] == {"no_instructmining:no_mtld:empty_response": 1, "over_budget": 6}


def test_rule_with_unregistered_metric_names_it(records, ctx, tmp_path):
    data = json.loads(Path(learned_rule(tmp_path)).read_text())
    data["indicators"]["mtld"]["metric"] = "unieval"
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="mtld \\(metric 'unieval' is not registered\\)"):
        InstructMining(rule=str(tmp_path / "other.json")).compute(records, ctx)


@pytest.mark.slow
def test_dialogue_judge_is_the_expected_digit_rescaled(records, lm, ctx):
    table = DialogueJudge().compute(records[:1], ctx)
    digits = [lm.encode(str(d))[0] for d in range(1, 6)]
    for i, (q, a) in enumerate(QA[:1]):
        for dimension in DIMENSIONS:
            ids = lm.encode(prompt(dimension).format(query=q, output=a))
            with torch.no_grad():
                logits = lm.model(torch.tensor([ids])).logits[0, -1, digits].double()
            expected = float((torch.softmax(logits, 0) * torch.arange(1, 6)).sum() - 1) / 4
            assert table[dimension][i] == pytest.approx(expected, abs=1e-4)
            assert 0 <= table[dimension][i] <= 1
