"""MoDS on real models: a tiny real reward classifier, MiniLM k-center seed set,
a real SmolLM2 fine-tune on the seed set and greedy answers; the final set is
seed U necessity, and a rerun reuses the trained model and answers."""

import numpy as np
import pandas as pd
import pytest

from cherrybench.diversity import kcenter_greedy
from cherrybench.embedders import embed
from cherrybench.finetune import TrainConfig
from cherrybench.paths import cache_dir
from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners.select import run_selection
from cherrybench.selectors import SELECTORS, Budget

pytestmark = pytest.mark.slow  # every test here loads a real model

PAIRS = [("What is 2+2?", "4"), ("Name a colour.", "Blue."), ("Write a haiku about rain.", "Rain taps the roof"),
         ("Translate 'hello' to French.", "Bonjour."), ("What is the capital of France?", "Paris."),
         ("Explain gravity briefly.", "Masses attract each other."), ("List three fruits.", "Apple, pear, fig."),
         ("Say goodbye.", "Goodbye!")]
DATASET = Dataset([Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate(PAIRS)], None, "alpaca", "json")


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, make_reward_model):
    return make_reward_model(tmp_path_factory.mktemp("mods-reward"), seed=1, layers=1)


def test_mods_real_run(ctx, reward_dir):
    from cherrybench.metrics.reward import Reward
    from cherrybench.scoring import score_metric

    rewards = score_metric(DATASET, Reward(reward_model=str(reward_dir)), ctx)["reward"]
    cut = float(np.sort(rewards.to_numpy())[1])  # all but the two lowest are high quality
    params = dict(reward_model=str(reward_dir), quality_threshold=cut, necessity_threshold=float(rewards.max()),
                  seed_fraction=0.5, max_new_tokens=6, seed=0)
    ctx.train = TrainConfig(max_length=64, epochs=1.0, learning_rate=1e-4)  # the run's settings reach MoDS
    assert SELECTORS.get("mods")(**params).train_config(ctx) == TrainConfig(max_length=64, epochs=1.0,
                                                                            learning_rate=1e-4, seed=0)
    selection, table = run_selection(DATASET, SELECTORS.get("mods")(**params), Budget.parse("4"), ctx)
    report = selection.report
    high = [r for r in DATASET.records if rewards[r.id] > cut]
    assert report["n_high_quality"] == len(high) == 6
    seed = [high[i].id for i in kcenter_greedy(embed(high, None, "instruction", ctx), 2, seed=0)]
    assert selection.ids[:2] == seed
    assert len(selection.ids) == len(set(selection.ids)) <= 4
    assert set(selection.ids) <= {r.id for r in high}
    assert report["n_seed"] + report["n_necessity"] == len(selection.ids)
    assert report["n_kept"] + report["n_excluded"] == len(PAIRS)
    runs = list((cache_dir() / "finetuned").iterdir())  # the seed model, in the content-keyed store
    assert len(runs) == 1
    answer_shards = list((cache_dir() / "answers").rglob("part-*.parquet"))
    assert sum(len(pd.read_parquet(p)) for p in answer_shards) == 4  # the high-quality records outside the seed set
    again, _ = run_selection(DATASET, SELECTORS.get("mods")(**params), Budget.parse("4"), ctx)
    assert again.ids == selection.ids and len(list((cache_dir() / "finetuned").iterdir())) == 1
    assert list((cache_dir() / "answers").rglob("part-*.parquet")) == answer_shards  # answers reused
    ctx.train = None
