"""Superfiltering.D: lazy-greedy facility location equals the naive greedy, and
a real run (real SmolLM2 IFD, real MiniLM embeddings) picks from the IFD top."""

import numpy as np
import pytest

from cherrybench.diversity import facility_location, normalize
from cherrybench.records import Dataset, Record, Turn
from cherrybench.runners.select import run_selection
from cherrybench.selectors import SELECTORS, Budget


def naive_facility_location(unit, k):
    """Every step: the marginal gain of every candidate from scratch, the best (lowest index on ties)."""
    n = len(unit)
    sim = 1.0 + np.array([[float(np.dot(unit[i], unit[j])) for j in range(n)] for i in range(n)])
    chosen, best = [], np.zeros(n)
    for _ in range(k):
        gains = [-1.0 if j in chosen else float(np.maximum(sim[:, j] - best, 0).sum()) for j in range(n)]
        j = int(np.argmax(gains))
        chosen.append(j)
        best = np.maximum(best, sim[:, j])
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lazy_greedy_matches_naive_greedy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 6))[rng.integers(0, 3, size=50)] + 0.5 * rng.normal(size=(50, 6))
    unit = normalize(x.astype(np.float64))
    assert facility_location(unit, 12) == naive_facility_location(unit, 12)


@pytest.mark.slow
def test_real_run_selects_from_the_ifd_top(ctx):
    pairs = [("Explain why the sky is blue.", "Sunlight scatters off air molecules; blue light scatters most."),
             ("Explain why the sky looks blue.", "Air molecules scatter blue sunlight more than red light."),
             ("Write a limerick about a cat.", "A cat with a hat sat on a mat, and that was the end of that."),
             ("List three prime numbers.", "Two, three and five are prime numbers."),
             ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it."),
             ("Translate 'thank you' to Spanish.", "Gracias is thank you in Spanish."),
             ("Say yes.", "Yes")]
    dataset = Dataset([Record(str(i), [Turn(q, a)]) for i, (q, a) in enumerate(pairs)], None, "alpaca", "json")
    selection, table = run_selection(dataset, SELECTORS.get("superfiltering_d")(candidate_factor=2.0),
                                     Budget.parse("2"), ctx)
    valid = table[table["ifd_ppl"] < 1].sort_values(["ifd_ppl", "id"], ascending=[False, True])
    candidates = valid["id"].head(4).tolist()
    assert len(selection.ids) == 2 and set(selection.ids) <= set(candidates)
    assert selection.report["n_candidates"] == len(candidates)
    assert selection.report["n_kept"] + selection.report["n_excluded"] == len(pairs)
