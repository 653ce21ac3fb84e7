"""Token and character lengths of instruction, input and response (sums over turns)."""

from __future__ import annotations

from cherrybench.metrics import register_metric
from cherrybench.metrics.base import Metric

PARTS = ("instruction", "input", "response")


@register_metric(aliases=tuple(f"{p}_length" for p in PARTS) + tuple(f"{p}_length_chars" for p in PARTS))
class Length(Metric):
    """Lengths in tokens of the scoring tokenizer, and in characters."""

    name = "length"
    columns = {**{f"{p}_length": "higher" for p in PARTS}, **{f"{p}_length_chars": "higher" for p in PARTS}}
    needs = ("tokenizer",)
    chunk_size = 2048

    def __init__(self, model: str | None = None):
        self.model = model

    def fingerprints(self, ctx) -> dict:
        return {"tokenizer": ctx.model_ref(self.model).fingerprint}

    def compute(self, records, ctx):
        tokenizer = ctx.tokenizer(self.model)

        def count(texts):
            texts = [t for t in texts if t]
            if not texts:
                return 0
            return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])

        rows = []
        for record in records:
            texts = {"instruction": [t.instruction for t in record.turns], "input": [t.input for t in record.turns],
                     "response": [t.output for t in record.turns]}
            row = {f"{p}_length": count(texts[p]) for p in PARTS}
            row.update({f"{p}_length_chars": sum(len(t) for t in texts[p]) for p in PARTS})
            row[self.reason_column] = None
            rows.append(row)
        return self.frame(rows)
