"""`make demo`: score a default ShareGPT sample and select from it with a few
selectors, printing each report. (The comparison runner replaces this with a
full fine-tune-and-evaluate comparison.)"""

from __future__ import annotations

import json

from cherrybench.context import Context
from cherrybench.default_data import load_sharegpt_sample
from cherrybench.runners.select import run_selection
from cherrybench.selectors import SELECTORS, Budget


def main() -> int:
    dataset, report = load_sharegpt_sample(200, seed=0)
    print(f"default data: {json.dumps(report.as_dict())}")
    ctx = Context()
    for name in ("ifd", "longest", "random"):
        selection, _ = run_selection(dataset, SELECTORS.get(name)(), Budget.parse("0.1"), ctx)
        print(json.dumps(selection.report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
