"""SelectIT: the token, sentence and model levels against hand-worked examples and
a naive reference, the judge readout reused, NaN with a reason, determinism, two
real judges weighted by size, and the selector on 30 real Alpaca records with
the embedded SmolLM2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cherrybench.metrics import METRICS
from cherrybench.metrics.selectit import (N_PROMPTS, model_level, model_weights, rating_templates, sentence_level,
                                          token_level)
from cherrybench.records import Dataset, Record, Turn
from cherrybench.selectors import SELECTORS, Budget

REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/alpaca/alpaca_random_9k.json"
PROMPT_COLUMNS = [f"selectit_p{i + 1}" for i in range(N_PROMPTS)]
RECORDS = [
    Record("a", [Turn("What is 2+2?", "4")]),
    Record("b", [Turn("Translate to French", "Bonjour", "hello")]),
    Record("mt", [Turn("Hi, who are you?", "I am an assistant."), Turn("Count to three.", "1, 2, 3.")]),
]


def logits_of(probs) -> np.ndarray:
    """Digit logits whose softmax is `probs` (shifted by a constant: the readout must not care)."""
    return np.log(np.asarray(probs, dtype=np.float64)) + 3.7


def naive_token_score(probs: list[float]) -> float:
    """The paper's token level spelled out: the most likely rating (first on a tie) times the
    mean absolute gap between its probability and each other rating's."""
    k = len(probs)
    best = max(range(k), key=lambda i: (probs[i], -i))
    return (best + 1) * sum(abs(p - probs[best]) for p in probs) / (k - 1)


# -- token level ------------------------------------------------------------------------

def test_token_level_by_hand():
    # argmax 3 (0.4); gaps 0.3 + 0.2 + 0 + 0.2 + 0.3 = 1.0, over K-1 = 4: 0.25; 3 * 0.25 = 0.75
    # a tie between 1 and 2 (0.4 each) goes to 1; gaps 0 + 0 + 0.3 + 0.35 + 0.35 = 1.0: 1 * 0.25
    # a flat distribution is 0 whatever its argmax; a near one-hot 5 is about 5
    logits = np.stack([logits_of([0.1, 0.2, 0.4, 0.2, 0.1]), logits_of([0.4, 0.4, 0.1, 0.05, 0.05]),
                       logits_of([0.2] * 5), [0.0, 0.0, 0.0, 0.0, 40.0]])
    np.testing.assert_allclose(token_level(logits), [0.75, 0.25, 0.0, 5.0], atol=1e-12)
    # the expected-value readout: 0.1 + 0.4 + 1.2 + 0.8 + 0.5 = 3.0; 0.4 + 0.8 + 0.3 + 0.2 + 0.25 = 1.95
    np.testing.assert_allclose(token_level(logits[:2], "expected"), [3.0, 1.95], atol=1e-12)


def test_token_level_matches_naive_reference():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5, 9):
        logits = rng.normal(scale=2.0, size=(50, k))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        expected = [naive_token_score(list(row)) for row in probs]
        np.testing.assert_allclose(token_level(logits), expected, atol=1e-12)
        assert (token_level(logits) >= 0).all() and (token_level(logits) <= k).all()


def test_expected_readout_is_the_judge_readout():
    """readout='expected' is judge.expected_scores itself (the function Deita and AlpaGasus read with)."""
    from cherrybench.metrics.judge import expected_scores

    logits = np.random.default_rng(1).normal(size=(20, 5))
    np.testing.assert_array_equal(token_level(logits, "expected"), expected_scores(logits, 1))


# -- sentence and model levels ---------------------------------------------------------------

def test_sentence_level_by_hand():
    # mean 0.8; deviations -0.05, 0.2, -0.3, -0.05, 0.2: population variance 0.175 / 5 = 0.035
    token = np.array([[0.75, 1.0, 0.5, 0.75, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    score, mean, std = sentence_level(token, alpha=0.2)
    np.testing.assert_allclose(mean, [0.8, 2.0])
    np.testing.assert_allclose(std, [np.sqrt(0.035), 0.0])
    np.testing.assert_allclose(score, [0.8 / (1 + 0.2 * np.sqrt(0.035)), 2.0])
    np.testing.assert_allclose(sentence_level(token, alpha=0.0)[0], [0.8, 2.0])  # no penalty: the mean
    # the same mean, more spread: ranked lower
    assert sentence_level(np.array([[0.2, 1.4, 0.8, 0.8, 0.8]]), 0.2)[0][0] < score[0]


def test_model_level_by_hand():
    # the paper's three LLaMA-2 sizes: 7/90, 13/90, 70/90
    np.testing.assert_allclose(model_weights([7, 13, 70]), [7 / 90, 13 / 90, 70 / 90])
    sentence = np.array([[0.6, 3.0], [0.9, 0.0]])  # two judges (rows), two records
    # sizes 135 and 270: 1/3 and 2/3 -> 0.6/3 + 0.9 * 2/3 = 0.8 and 3.0/3 + 0 = 1.0
    np.testing.assert_allclose(model_level(sentence, [135, 270]), [0.8, 1.0])
    np.testing.assert_allclose(model_level(sentence[:1], [135]), sentence[0])  # one judge: its own score


def test_all_three_levels_by_hand():
    """Fixed digit distributions for two judges x five prompts -> the combined score by hand."""
    sharp, mid, flat = [0.05, 0.05, 0.1, 0.7, 0.1], [0.1, 0.2, 0.4, 0.2, 0.1], [0.2] * 5
    # token scores: sharp 4 * (0.65 + 0.65 + 0.6 + 0 + 0.6) / 4 = 2.5; mid 0.75; flat 0
    judge_a = token_level(np.stack([logits_of(p) for p in (sharp, sharp, sharp, mid, mid)]))
    judge_b = token_level(np.stack([logits_of(p) for p in (mid, mid, flat, flat, mid)]))
    np.testing.assert_allclose(judge_a, [2.5, 2.5, 2.5, 0.75, 0.75])
    np.testing.assert_allclose(judge_b, [0.75, 0.75, 0.0, 0.0, 0.75])
    # A: mean 1.8, std sqrt((3 * 0.7^2 + 2 * 1.05^2) / 5) = sqrt(0.735); B: mean 0.45, std sqrt(0.135)
    s_a = 1.8 / (1 + 0.2 * np.sqrt(0.735))
    s_b = 0.45 / (1 + 0.2 * np.sqrt(0.135))
    score, _, _ = sentence_level(np.stack([judge_a, judge_b]), 0.2)
    np.testing.assert_allclose(score, [s_a, s_b])
    np.testing.assert_allclose(model_level(score, [1, 3]), 0.25 * s_a + 0.75 * s_b)


# -- parameters and prompts -----------------------------------------------------------------

def test_prompts_state_the_scale_and_end_at_the_rating():
    for k in (3, 5, 9):
        templates = rating_templates(k)
        assert len(templates) == N_PROMPTS == 5 and len(set(templates)) == 5
        for template in templates:
            assert f"1 to {k}" in template and template.endswith("The answer is: ")
            assert "{query}" in template and "{output}" in template
    assert METRICS.get("selectit")(scale=3).templates()["p2"] == (rating_templates(3)[1], 1, 3)


@pytest.mark.parametrize("params,message", [
    ({"scale": 1}, "scale must be an integer in \\[2, 9\\]"),
    ({"scale": 10}, "scale must be an integer"),
    ({"alpha": -0.1}, "alpha must be a number in \\[0, inf\\]"),
    ({"readout": "mean"}, "readout must be one of 'paper', 'expected'"),
    ({"judges": []}, "judges must be a non-empty list of models"),
    ({"judges": "m,n"}, "judges must be a non-empty list of models"),
    ({"judges": ["m", "m"]}, "judges names a model twice"),
    ({"judges": ["m", "n"], "judge_sizes": [1.0]}, "judge_sizes must be a list of 2 positive numbers"),
    ({"judge_sizes": [0]}, "judge_sizes must be a list of 1 positive numbers"),
])
def test_bad_parameters_are_refused(params, message):
    for cls in (METRICS.get("selectit"), SELECTORS.get("selectit")):
        with pytest.raises(ValueError, match=message):
            cls.from_options(params)


# -- the selector on a given table ---------------------------------------------------------------

def test_selector_ranks_by_score_ties_by_id_and_counts_nan():
    table = pd.DataFrame({"id": ["d", "b", "c", "a", "e"],
                          "selectit": [0.5, 2.0, 2.0, np.nan, 1.0],
                          "selectit_reason": [None, None, None, "prompt_too_long", None]})
    selector = SELECTORS.get("selectit")()
    selection = selector.select(table, Budget.parse("3"), ctx=None)
    assert selection.ids == ["b", "c", "e"]  # b and c tie: by id
    assert selection.report["excluded"] == {"no_selectit:prompt_too_long": 1, "over_budget": 1}
    assert selector.select(table, Budget.parse("3"), ctx=None).ids == selection.ids


# -- on the real model -------------------------------------------------------------------------

def hand_digit_probs(lm, text: str, k: int) -> np.ndarray:
    """One unbatched forward pass of the whole prompt; softmax over the digit logits 1..k."""
    import torch

    ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0, -1].double()
    digits = [lm.tokenizer(str(i), add_special_tokens=False)["input_ids"][0] for i in range(1, k + 1)]
    return torch.softmax(logits[digits], dim=0).numpy()


@pytest.mark.slow
def test_readout_on_the_real_model(ctx, lm):
    """Each prompt's token score from an independent forward pass (paper readout), the
    'expected' readout equal to the `judge` metric's with the same prompt, the columns
    combined as the sentence level says, and the same numbers a second time."""
    metric = METRICS.get("selectit")(scale=4)
    table = metric.compute(RECORDS, ctx)
    assert table["selectit_reason"].isna().all()
    for r, record in enumerate(RECORDS):
        for p, template in enumerate(rating_templates(4)):
            texts = [template.format(query=t.query, output=t.output) for t in record.turns]
            per_turn = [naive_token_score(list(hand_digit_probs(lm, text, 4))) for text in texts]
            assert table.at[r, PROMPT_COLUMNS[p]] == pytest.approx(np.mean(per_turn), abs=1e-4)
    ratings = table[PROMPT_COLUMNS].to_numpy()
    np.testing.assert_allclose(table["selectit_mean"], ratings.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(table["selectit_std"], ratings.std(axis=1), atol=1e-12)
    np.testing.assert_allclose(table["selectit"], ratings.mean(axis=1) / (1 + 0.2 * ratings.std(axis=1)), atol=1e-12)
    pd.testing.assert_frame_equal(metric.compute(RECORDS, ctx), table)  # deterministic

    one = RECORDS[1:2]  # the record with an input
    expected = METRICS.get("selectit")(scale=4, readout="expected").compute(one, ctx)
    for p, template in enumerate(rating_templates(4)):
        judge = METRICS.get("judge")(template=template, low=1, high=4).compute(one, ctx)
        # batched apart (five prompts together there, one here): fp32 noise only
        np.testing.assert_allclose(expected[PROMPT_COLUMNS[p]], judge["judge_score"], atol=1e-5)


@pytest.mark.slow
def test_unratable_records_are_nan_with_a_reason(ctx):
    from cherrybench.scoring import score_metric

    metric = METRICS.get("selectit")(judge_max_length=24)  # shorter than every rating prompt's own text
    table = metric.compute(RECORDS[:2], ctx)
    assert table[list(metric.columns)].isna().all().all()
    assert table["selectit_reason"].tolist() == ["prompt_too_long"] * 2
    blank = Dataset([Record("blank", [Turn("Say something.", "   ")]), RECORDS[0]], None, "alpaca", "json")
    scored = score_metric(blank, METRICS.get("selectit")(judge_max_length=128), ctx, use_cache=False)
    assert scored.loc["blank", "selectit_reason"] == "empty_answer" and np.isnan(scored.loc["blank", "selectit"])
    assert np.isfinite(scored.loc["a", "selectit"]) and scored.loc["a", "selectit_reason"] is None


@pytest.mark.slow
def test_two_judges_weighted_by_size(ctx, lm, tmp_path):
    """Model level with the real SmolLM2 and a second, tiny causal LM built offline (its
    tokenizer): the score is the size-weighted sum of each judge's own score."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(lm.tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048)
    tiny = tmp_path / "tiny"
    LlamaForCausalLM(config).eval().save_pretrained(tiny)
    lm.tokenizer.save_pretrained(tiny)

    records = RECORDS[:2]
    alone = [METRICS.get("selectit")(judge=j, judge_max_length=128).compute(records, ctx) for j in (None, str(tiny))]
    assert not np.allclose(alone[0]["selectit"], alone[1]["selectit"])  # two judges that disagree
    theta = [ctx.lm(None).model.num_parameters(), ctx.lm(str(tiny)).model.num_parameters()]
    both = METRICS.get("selectit")(judges=["smollm2-135m", str(tiny)], judge_max_length=128).compute(records, ctx)
    w = np.array(theta, dtype=float) / sum(theta)
    for column in ["selectit", "selectit_mean", "selectit_std", *PROMPT_COLUMNS]:
        np.testing.assert_allclose(both[column], w[0] * alone[0][column] + w[1] * alone[1][column], rtol=1e-9)
    given = METRICS.get("selectit")(judges=["smollm2-135m", str(tiny)], judge_sizes=[7, 13], judge_max_length=128)
    np.testing.assert_allclose(given.compute(records, ctx)["selectit"],
                               0.35 * alone[0]["selectit"] + 0.65 * alone[1]["selectit"], rtol=1e-9)
    assert given.fingerprints(ctx)["judges"] == [ctx.model_ref(None).fingerprint, ctx.model_ref(str(tiny)).fingerprint]


@pytest.mark.slow
def test_selector_on_30_real_alpaca_records(ctx):
    """The selector picks the top of 30 real Alpaca records by the score, ties by id,
    scored with the paper's five prompts on the embedded SmolLM2."""
    if not REAL_DATA.is_file():
        pytest.skip(f"{REAL_DATA} is not here")
    from cherrybench.records import load_dataset
    from cherrybench.runners.select import run_selection

    data = load_dataset(str(REAL_DATA))
    keep = sorted(np.random.default_rng(0).permutation(len(data))[:30].tolist())
    pool = Dataset([data.records[i] for i in keep], None, data.format, data.container)
    selector = SELECTORS.get("selectit").from_options({"judge_max_length": 96})
    selection, scores = run_selection(pool, selector, Budget.parse("6"), ctx)
    usable = scores[scores["selectit"].notna()].set_index("id")
    assert len(usable) == 30 - sum(r.turns[0].output.strip() == "" for r in pool.records)
    expected = sorted(usable.index, key=lambda i: (-usable.at[i, "selectit"], i))[:6]
    assert selection.ids == expected
    assert selection.report["n_kept"] == 6 and selection.report["excluded"]["over_budget"] == len(usable) - 6
    assert (usable["selectit"] <= usable["selectit_mean"] + 1e-12).all() and (usable["selectit"] >= 0).all()
    assert (usable[PROMPT_COLUMNS] <= 5).all().all() and usable["selectit"].nunique() > 20
    again, _ = run_selection(pool, SELECTORS.get("selectit").from_options({"judge_max_length": 96}), Budget.parse("6"), ctx)
    assert again.ids == selection.ids  # (its scores from the cache)


def test_params_from_the_command_line_reach_selectit_only():
    """`--param judges=[...]` and `scale=` set SelectIT's model level and scale, and no other
    plugin's judge or k; `--judge` stays the one judge."""
    from cherrybench.cli import build_parser
    from cherrybench.runners.options import plugin_options

    args = build_parser().parse_args(["select", "--data", "x.json", "--selector", "selectit", "--budget", "3",
                                      "--out", "s.json", "--judge", "smollm2-135m", "--param",
                                      'judges=["smollm2-135m", "gemma3-270m"]', "--param", "scale=4",
                                      "--param", "judge_sizes=[135, 270]"])
    options = plugin_options(args)
    metric = SELECTORS.get("selectit").from_options(options).requires()[0]
    assert metric.judge_models() == ["smollm2-135m", "gemma3-270m"] and metric.judge_sizes == [135, 270]
    assert metric.templates()["p1"][2] == 4
    assert METRICS.get("deita").from_options(options).judge == "smollm2-135m"
    assert METRICS.get("knn").from_options(options).k == 6
