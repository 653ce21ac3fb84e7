"""RDS+: position-weighted pooling against a hand-worked example, task scores and
round-robin selection against a naive reference, target-file errors, and the
selector on real records with the embedded SmolLM2."""

import json

import numpy as np
import pytest
import torch

from cherrybench.lm import pool, position_weights
from cherrybench.selectors import SELECTORS, Budget
from cherrybench.selectors.rds import round_robin, task_scores


def test_position_weights_by_hand():
    np.testing.assert_allclose(position_weights(1), [1.0])
    np.testing.assert_allclose(position_weights(3), [1 / 6, 2 / 6, 3 / 6], rtol=1e-6)
    np.testing.assert_allclose(position_weights(4), [0.1, 0.2, 0.3, 0.4], rtol=1e-6)


def test_weighted_pooling_by_hand():
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    # 1/6 * (1, 0) + 2/6 * (0, 1) + 3/6 * (3, 3) = (10/6, 11/6)
    np.testing.assert_allclose(pool(hidden, "weighted").numpy(), [10 / 6, 11 / 6], rtol=1e-6)
    np.testing.assert_allclose(pool(hidden, "mean").numpy(), [4 / 3, 4 / 3], rtol=1e-6)
    np.testing.assert_allclose(pool(hidden, "last").numpy(), [3.0, 3.0])


def naive_rds(pool_vectors, targets, tasks, ids, k):
    """The definition, spelled out: cosine by loops, max over each task's targets,
    tasks in sorted order taking turns, each its best record not yet taken (ties by id)."""
    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    score = {t: [max(cos(p, targets[j]) for j in range(len(targets)) if tasks[j] == t) for p in pool_vectors]
             for t in sorted(set(tasks))}
    picked = []
    while len(picked) < min(k, len(ids)):
        for t in sorted(score):
            if len(picked) == min(k, len(ids)):
                break
            free = [i for i in range(len(ids)) if i not in picked]
            picked.append(min(free, key=lambda i: (-score[t][i], ids[i])))
    return picked, score


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 5, 17, 40])
def test_selection_matches_naive_reference(seed, k):
    rng = np.random.default_rng(seed)
    pool_vectors = rng.normal(size=(30, 6))
    pool_vectors[7] = 2.5 * pool_vectors[3]  # same direction: a tie in every task, broken by id
    targets = rng.normal(size=(5, 6))
    tasks = ["math", "code", "math", "chat", "code"]
    ids = [f"r{(i * 7) % 30:02d}" for i in range(30)]  # ids not in row order
    expected, score = naive_rds(pool_vectors, targets, tasks, ids, k)
    got_scores = task_scores(pool_vectors, targets, tasks)
    for task in score:
        np.testing.assert_allclose(got_scores[task], score[task], atol=1e-12)
    assert round_robin(got_scores, ids, k) == expected


def test_round_robin_by_hand():
    # task a prefers x > y > z; task b prefers x > z > y: a takes x, b then takes z, a takes y
    scores = {"a": np.array([0.9, 0.5, 0.1]), "b": np.array([0.8, 0.1, 0.7])}
    assert round_robin(scores, ["x", "y", "z"], 3) == [0, 2, 1]
    assert round_robin(scores, ["x", "y", "z"], 2) == [0, 2]
    assert round_robin(scores, ["x", "y", "z"], 9) == [0, 2, 1]  # never more than the pool
    assert round_robin(scores, ["x", "y", "z"], 0) == []


def test_target_errors(tmp_path):
    cls = SELECTORS.get("rds")
    with pytest.raises(ValueError, match="target .*missing.json.* is not a file"):
        cls.from_options({"target": str(tmp_path / "missing.json")})
    target = tmp_path / "target.json"
    target.write_text(json.dumps([{"instruction": "Add 2 and 3.", "output": "5", "task": "math"},
                                  {"instruction": "Say hi.", "output": "Hi!"}]))
    selector = cls.from_options({"target": str(target)})
    with pytest.raises(ValueError, match=r"target record '1' has no 'task' field"):
        selector.load_targets()
    target.write_text(json.dumps([{"instruction": "Add 2 and 3.", "output": "5"}]))
    records, tasks = cls.from_options({"target": str(target)}).load_targets()
    assert [r.id for r in records] == ["0"] and tasks == ["target"]


@pytest.mark.slow
def test_rds_on_real_records(ctx, lm, tmp_path):
    from alpaca30 import alpaca30

    from cherrybench.embedders import record_text
    from cherrybench.records import Dataset
    from cherrybench.runners.select import run_selection

    data = alpaca30()
    dataset = Dataset(data.records[:10], None, data.format, data.container)
    target = tmp_path / "target.json"
    rows = [{"instruction": "What is 12 plus 30?", "input": "", "output": "42", "task": "math"},
            {"instruction": "Write a short poem about the sea.", "input": "", "output": "Waves fold into foam.",
             "task": "writing"}]
    target.write_text(json.dumps(rows))

    def weighted(texts):
        """Independent embedding: one unbatched forward per text, hidden states from the LM head model."""
        out = []
        for text in texts:
            ids = lm.encode(text)[:64]
            with torch.no_grad():
                hidden = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True,
                                  logits_to_keep=1).hidden_states[-1][0]
            w = torch.arange(1, len(ids) + 1, dtype=torch.float32)
            out.append(((w / w.sum())[:, None] * hidden).sum(0).numpy())
        return np.stack(out)

    pool_vectors = weighted([record_text(r, "conversation") for r in dataset.records])
    ids = [r.id for r in dataset.records]
    selector = SELECTORS.get("rds").from_options({"target": str(target), "max_length": 64})
    selection, _ = run_selection(dataset, selector, Budget.parse("4"), ctx)
    target_vectors = weighted([f"{r['instruction']}\n{r['output']}" for r in rows])
    expected, _ = naive_rds(pool_vectors, target_vectors, ["math", "writing"], ids, 4)
    assert selection.ids == [ids[i] for i in expected]
    assert selection.report["tasks"] == {"math": 1, "writing": 1}
    assert selection.report["n_kept"] == 4 and selection.report["excluded"] == {"over_budget": 6}

    centroid = SELECTORS.get("rds").from_options({"max_length": 64})
    selection, _ = run_selection(dataset, centroid, Budget.parse("3"), ctx)
    unit = pool_vectors / np.linalg.norm(pool_vectors, axis=1, keepdims=True)
    expected, _ = naive_rds(pool_vectors, unit.mean(0, keepdims=True), ["c"], ids, 3)
    assert selection.ids == [ids[i] for i in expected]
    assert selection.report["target"] == "pool_centroid"


def test_target_flag_reaches_rds_only(tmp_path):
    from cherrybench.cli import build_parser
    from cherrybench.runners.options import plugin_options
    from cherrybench.selectors import SELECTORS

    target = tmp_path / "evals.jsonl"
    target.write_text('{"instruction": "Name a colour.", "output": "Red."}\n')
    args = build_parser().parse_args(["select", "--data", "x.json", "--selector", "rds", "--budget", "3",
                                      "--out", "s.json", "--target", str(target)])
    options = plugin_options(args)
    assert SELECTORS.get("rds").from_options(options).target == str(target)
    assert not hasattr(SELECTORS.get("longest").from_options(options), "target")
