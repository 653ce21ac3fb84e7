"""How far a comparison has come, one line per trial: a comparison of 50 trials runs for
hours, and each trial's own bars (score, fine-tune, evaluate) do not say how many are left.
The estimate is the pace of the trials this process ran (wall clock, so trials running side
by side on Ray count as they overlap), never of the ones skipped as finished earlier."""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 05 min`: as precise as a person reading a log needs."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class TrialProgress:
    def __init__(self, total: int, clock=time.monotonic, out=None):
        self.total = total
        self.clock = clock
        self.out = out
        self.started = clock()
        self.skipped = 0  # finished in an earlier run: no time spent here
        self.ran = 0  # finished (or failed, or empty) in this run

    def skip(self) -> None:
        self.skipped += 1

    def finish(self, name: str, outcome: str = "finished") -> str:
        """Count a trial this process ended and print where the comparison stands."""
        self.ran += 1
        done = self.skipped + self.ran
        elapsed = self.clock() - self.started
        left = self.total - done
        line = f"[{name}] {outcome}: {done} of {self.total} trials"
        if self.skipped:
            line += f" ({self.skipped} finished earlier)"
        line += f", {duration(elapsed)} in this run"
        if left:
            line += f", about {duration(elapsed / self.ran * left)} left at this pace"
        print(line, file=self.out or sys.stderr)
        return line
