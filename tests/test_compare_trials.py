"""Which trials a comparison runs, in which order, and which pairwise-baseline
answers each shares: checked by hand on small cases (no model involved)."""

import pytest

from cherrybench.runners.compare import trials
from cherrybench.runners.comparison import Comparison, parse_budgets


def plan(names, seeds, budgets, full_seeds=None):
    comparison = Comparison(pool=None, evals=[], train=None, budgets=budgets)
    return [(t.name, answers) for t, answers in trials(names, seeds, comparison, full_seeds)]  # the dicts themselves


def test_budget_lists_keep_the_typed_order_once_each():
    assert parse_budgets("0.05, 0.1,0.05,100") == ["0.05", "0.1", "100"]
    with pytest.raises(ValueError, match="--budget"):
        parse_budgets(" , ")


def test_full_runs_once_per_seed_and_its_answers_serve_every_budget():
    run = plan(["full", "ifd", "random"], [0, 1], ["0.05", "0.1"])
    assert [name for name, _ in run] == [
        "full-seed0", "ifd-0.05-seed0", "random-0.05-seed0", "ifd-0.1-seed0", "random-0.1-seed0",
        "full-seed1", "ifd-0.05-seed1", "random-0.05-seed1", "ifd-0.1-seed1", "random-0.1-seed1"]
    assert all(answers is run[0][1] for _, answers in run[:5])  # one dict per seed, shared by its budgets
    assert all(answers is run[5][1] for _, answers in run[5:]) and run[0][1] is not run[5][1]


def test_a_selector_as_pairwise_baseline_gets_fresh_answers_per_budget():
    run = plan(["random", "ifd"], [0], ["5", "10"])  # random first: the pairwise baseline
    assert [name for name, _ in run] == ["random-5-seed0", "ifd-5-seed0", "random-10-seed0", "ifd-10-seed0"]
    assert run[0][1] is run[1][1] and run[2][1] is run[3][1] and run[0][1] is not run[2][1]


def test_full_seeds_trains_full_for_the_first_seeds_only():
    run = plan(["random", "full", "ifd"], [3, 4, 5], ["0.05"], full_seeds=1)
    assert [name for name, _ in run] == ["full-seed3", "random-0.05-seed3", "ifd-0.05-seed3",
                                         "random-0.05-seed4", "ifd-0.05-seed4", "random-0.05-seed5", "ifd-0.05-seed5"]
    assert [name for name, _ in plan(["full", "ifd"], [0, 1], ["5"], full_seeds=2)] == [
        "full-seed0", "ifd-5-seed0", "full-seed1", "ifd-5-seed1"]
