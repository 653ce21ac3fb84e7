"""`cherrybench leaderboard --resamples N`: a whole number of at least 100 (MIN_RESAMPLES),
refused before any work (no tracking store opened, nothing written) with a one-line error
naming the flag and exit status 2; 0 used to end in a TypeError traceback and -3 in numpy's
"negative dimensions are not allowed". No model is loaded."""

from __future__ import annotations

import pytest

from cherrybench.cli import main
from cherrybench.runners.leaderboard import MIN_RESAMPLES


@pytest.mark.parametrize("value", ["0", "-3", str(MIN_RESAMPLES - 1)])
def test_too_few_resamples_are_refused_before_any_work(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    code = main(["leaderboard", "--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--out-dir", str(tmp_path / "boards"), "--resamples", value])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"cherrybench: error: --resamples must be an integer >= {MIN_RESAMPLES}, got {int(value)}\n"
    assert list(tmp_path.iterdir()) == []  # no store opened, no leaderboard folder


def test_the_minimum_is_accepted(tmp_path, monkeypatch, capsys):
    """At the minimum the command goes on to the store (here: an experiment it has no runs of)."""
    monkeypatch.chdir(tmp_path)
    main(["leaderboard", "--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
          "--out-dir", str(tmp_path / "boards"), "--resamples", str(MIN_RESAMPLES)])
    assert "--resamples" not in capsys.readouterr().err
