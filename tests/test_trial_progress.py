"""The per-trial progress line of a comparison: counts and the time left, hand-worked."""

from __future__ import annotations

import io

from cherrybench.runners.trial_progress import TrialProgress, duration


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (0, 44.6, 89, 90, 600, 5369, 5400, 11100)] == \
        ["0 s", "45 s", "89 s", "2 min", "10 min", "89 min", "1 h 30 min", "3 h 05 min"]


def test_the_estimate_is_the_pace_of_this_run_not_of_the_skipped_trials():
    now = [100.0]
    out = io.StringIO()
    progress = TrialProgress(10, clock=lambda: now[0], out=out)
    progress.skip()
    progress.skip()  # 2 of 10 finished earlier: they cost this run nothing
    now[0] += 600
    line = progress.finish("ifd-0.05-seed0")
    # 3 of 10 done; one trial in 600 s here, 7 left: 4200 s
    assert line == "[ifd-0.05-seed0] finished: 3 of 10 trials (2 finished earlier), 10 min in this run, " \
                   "about 70 min left at this pace"
    now[0] += 1200
    line = progress.finish("deita-0.05-seed0", "FAILED")
    # 2 trials in 1800 s, 6 left: 5400 s
    assert line.endswith(": 4 of 10 trials (2 finished earlier), 30 min in this run, about 1 h 30 min left at this pace")
    assert line.startswith("[deita-0.05-seed0] FAILED")
    assert out.getvalue().splitlines() == [
        "[ifd-0.05-seed0] finished: 3 of 10 trials (2 finished earlier), 10 min in this run, about 70 min left at this pace",
        line]


def test_the_last_trial_says_nothing_is_left():
    progress = TrialProgress(1, clock=iter([0.0, 30.0]).__next__, out=io.StringIO())
    assert progress.finish("full-seed0") == "[full-seed0] finished: 1 of 1 trials, 30 s in this run"
