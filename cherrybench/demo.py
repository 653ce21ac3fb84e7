"""`make demo`: a whole comparison on the embedded defaults (ShareGPT sample,
SmolLM2-135M-Instruct, all-MiniLM-L6-v2): ifd, longest, random (and deita when
registered) against the full pool, two seeds each, fine-tuned and evaluated the
same way, logged to MLflow in ./mlflow.db. It ends with the leaderboard (paired
intervals and the verdict sentence) and the MLflow command. Sized to finish in
about 6 minutes on a 2-core CPU; every setting is a flag of `cherrybench compare`
(flags given here override them), `-v` shows every library's logs."""

from __future__ import annotations

import os
import sys
import time

from cherrybench.cli import main as cli_main
from cherrybench.selectors import SELECTORS

# two seeds at a small size rather than one at a larger: the leaderboard's intervals then
# include training-seed variation. 32 pool records cut at 128 tokens, 8 kept per selector,
# 12 held out (paired per record), 3 answers of 16 tokens generated per model for the judges.
# Batches of 2: at 128 tokens some long records keep no answer token and are not trained on
# (deita's and longest's 8 picks leave 4), and 4 examples in one batch of 4 would train the
# same model whatever the seed (the seed only orders the data).
DEMO_ARGS = ["--pool-size", "32", "--eval-size", "12", "--budget", "0.25", "--max-length", "128",
             "--gen-size", "3", "--max-new-tokens", "16", "--epochs", "1", "--train-batch-size", "2",
             "--seeds", "2", "--experiment", "demo"]


def busy_cores(window: float = 1.0) -> float | None:
    """Cores other processes keep busy now: sampled from /proc/stat over `window` seconds
    (the load average lags by a minute), else the 1-minute load average, else None."""
    def sample():
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle0, total0 = sample()
        time.sleep(window)
        idle1, total1 = sample()
        return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def pick_threads() -> None:
    """One torch thread when other work already keeps half the cores or more busy: threads
    that cannot each have a core wait on each other (a training step ran 2x slower with 2
    threads than with 1 under a load of 3.5 on 2 cores). OMP_NUM_THREADS, when set, decides."""
    cores = os.cpu_count() or 1
    if "OMP_NUM_THREADS" in os.environ or cores < 2:
        return
    busy = busy_cores()
    if busy is not None and busy >= cores / 2:
        os.environ["OMP_NUM_THREADS"] = "1"
        print(f"demo: other work keeps {busy:.1f} of {cores} cores busy: torch uses 1 thread "
              "(set OMP_NUM_THREADS to choose)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    pick_threads()
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = list(DEMO_ARGS)
    if any(a == "--seed" or a.startswith("--seed=") for a in argv):  # the user's seeds replace --seeds 2
        at = defaults.index("--seeds")
        del defaults[at: at + 2]
    selectors = ["ifd", "longest", "random"] + [s for s in ("deita",) if s in SELECTORS.names()]
    return cli_main(["compare", "--selectors", ",".join(selectors), *defaults, *argv])


if __name__ == "__main__":
    raise SystemExit(main())
