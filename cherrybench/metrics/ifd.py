"""CAS, DAS, IFD, IFD-PPL and response perplexity from one pair of forward
passes (SPEC: Cherry LLM and Superfiltering), with truncation that keeps both
passes on the same answer tokens, and multi-turn records token-weighted."""

from __future__ import annotations

import math
import numpy as np

from cherrybench.metrics import register_metric
from cherrybench.metrics.base import Metric
from cherrybench.prompts import PROMPT_FORMATS, tokenize_record


@register_metric(aliases=("cas", "das", "ifd_ppl", "ppl"))
class IFD(Metric):
    """Instruction-following difficulty: CE(A | prompt(Q)) / CE(A)."""

    name = "ifd"
    columns = {"cas": "none", "das": "none", "ifd": "higher", "ifd_ppl": "higher", "ppl": "none"}
    needs = ("lm",)
    version = 1

    def __init__(self, model: str | None = None, prompt: str = "alpaca", max_length: int = 512):
        self.model = model
        self.prompt = prompt
        self.max_length = max_length

    def fingerprints(self, ctx) -> dict:
        return {"lm": ctx.model_ref(self.model).fingerprint}

    def check_params(self) -> None:
        self.check_choice("prompt", PROMPT_FORMATS)
        self.check_number("max_length", 2, integer=True)

    def compute(self, records, ctx):
        self.check_params()  # also run by from_options, before any scoring
        lm = ctx.lm(self.model)
        if lm.max_positions and self.max_length > lm.max_positions:
            raise ValueError(f"--max-length {self.max_length} exceeds the model's {lm.max_positions} positions")
        tokenized = [tokenize_record(r, lm, self.prompt, self.max_length) for r in records]
        # conditioned pass: one sequence per record; direct pass: one per scored turn
        sequences, targets, direct_owner = [], [], []
        for tok in tokenized:
            sequences.append(tok.sequence)
            targets.append([p for t in tok.turns for p in range(t.start + 1, t.start + len(t.answer))])
        for r, tok in enumerate(tokenized):
            for k, turn in enumerate(tok.turns):
                sequences.append(turn.answer)
                targets.append(list(range(1, len(turn.answer))))
                direct_owner.append((r, k))
        losses = lm.token_losses(sequences, targets)
        direct = {owner: losses[len(tokenized) + j] for j, owner in enumerate(direct_owner)}
        rows = []
        for r, tok in enumerate(tokenized):
            if tok.reason:
                rows.append(self.nan_row(tok.reason))
                continue
            cond = losses[r]
            offset, stats = 0, []
            for k, turn in enumerate(tok.turns):
                n = len(turn.answer) - 1
                cas_t = float(cond[offset: offset + n].mean())
                das_t = float(direct[(r, k)].mean())
                offset += n
                stats.append((n, cas_t, das_t))
            rows.append(self._aggregate(stats))
        return self.frame(rows)

    def _aggregate(self, stats: list[tuple[int, float, float]]) -> dict:
        weights = np.array([s[0] for s in stats], dtype=np.float64)
        cas_t = np.array([s[1] for s in stats])
        das_t = np.array([s[2] for s in stats])
        if np.any(das_t <= 0):
            return self.nan_row("zero_direct_loss")
        cas = float(np.average(cas_t, weights=weights))
        das = float(np.average(das_t, weights=weights))
        return {"cas": cas, "das": das, "ifd": float(np.average(cas_t / das_t, weights=weights)),
                "ifd_ppl": math.exp(cas - das), "ppl": math.exp(das), self.reason_column: None}

    def warnings(self, table):
        valid = table["ifd"].dropna()
        if self.prompt == "chat" and len(valid) and (valid > 1).mean() > 0.5:
            return [f"{(valid > 1).mean():.0%} of records score IFD > 1 with the chat prompt: "
                    "with a chat template on a base model this is the known pitfall; try --prompt alpaca or plain"]
        return []


@register_metric()
class InstructionPPL(Metric):
    """exp(CE(Q)): how surprising the question itself is (no template, no context)."""

    name = "instruction_ppl"
    columns = {"instruction_ppl": "none"}
    needs = ("lm",)

    def __init__(self, model: str | None = None, max_length: int = 512):
        self.model = model
        self.max_length = max_length

    def fingerprints(self, ctx) -> dict:
        return {"lm": ctx.model_ref(self.model).fingerprint}

    def compute(self, records, ctx):
        lm = ctx.lm(self.model)
        sequences, targets, owner = [], [], []
        for r, record in enumerate(records):
            for turn in record.turns:
                ids = lm.encode(turn.query)[: self.max_length]
                if len(ids) >= 2:
                    sequences.append(ids)
                    targets.append(list(range(1, len(ids))))
                    owner.append(r)
        losses = lm.token_losses(sequences, targets)
        per_record: dict[int, list[np.ndarray]] = {}
        for r, loss in zip(owner, losses):
            per_record.setdefault(r, []).append(loss)
        rows = []
        for r in range(len(records)):
            if r not in per_record:
                rows.append(self.nan_row("instruction_too_short"))
            else:
                rows.append({"instruction_ppl": math.exp(float(np.concatenate(per_record[r]).mean())),
                             self.reason_column: None})
        return self.frame(rows)
