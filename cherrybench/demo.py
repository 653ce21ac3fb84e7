"""`make demo`: a whole comparison on the embedded defaults (ShareGPT sample,
SmolLM2-135M-Instruct, all-MiniLM-L6-v2): ifd, longest, random (and deita when
registered) against the full pool, fine-tuned and evaluated the same way,
logged to MLflow in ./mlflow.db. Sized to finish in about 15 minutes on a
2-core CPU from a cold cache; every setting is a flag of `cherrybench compare`."""

from __future__ import annotations

import sys

from cherrybench.cli import main as cli_main
from cherrybench.selectors import SELECTORS

# sized from measured CPU rates (forward about 130 GFLOP/s on 2 free cores, benchmarks/README.md):
# the full-pool fine-tune (80 x 192 tokens) and deita's judge passes dominate; about 12 minutes in all
DEMO_ARGS = ["--pool-size", "80", "--eval-size", "16", "--budget", "0.1", "--max-length", "192",
             "--gen-size", "6", "--max-new-tokens", "32", "--epochs", "1", "--experiment", "demo"]


def main(argv: list[str] | None = None) -> int:
    selectors = ["ifd", "longest", "random"] + [s for s in ("deita",) if s in SELECTORS.names()]
    return cli_main(["compare", "--selectors", ",".join(selectors), *DEMO_ARGS, *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
