"""A linear InstructMining rule: predicted log(eval loss) = intercept +
sum_i coefficient_i * indicator_i, stored as JSON with the metric specs of its
indicators and the statistics of its fit. Two published rules ship built in.

Rule file (JSON):
    {"format": "cherrybench.instructmining.rule/1", "name": ..., "target": "log_eval_loss",
     "intercept": b0, "coefficients": {indicator: b_i},
     "indicators": {indicator: {"metric", "params", "columns", "unit", "requires"?}},
     "fit": {n_subsets, r2, adj_r2, cv_r2, std_errors, p_values, conf_int, ...}, "notes": ...}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cherrybench.fingerprint import hash_json

FORMAT = "cherrybench.instructmining.rule/1"


@dataclass
class Rule:
    intercept: float
    coefficients: dict[str, float]
    indicators: dict[str, dict]
    fit: dict = field(default_factory=dict)
    name: str = ""
    notes: str = ""
    target: str = "log_eval_loss"

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @property
    def fingerprint(self) -> str:
        return hash_json({k: v for k, v in self.to_dict().items() if k in ("intercept", "coefficients", "indicators")})

    def save(self, path) -> Path:
        from cherrybench.store import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, default=float) + "\n")

    @classmethod
    def from_dict(cls, data: dict, where: str = "rule") -> "Rule":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{where}: not an InstructMining rule file (expected \"format\": \"{FORMAT}\")")
        for key in ("intercept", "coefficients", "indicators"):
            if key not in data:
                raise ValueError(f"{where}: missing field {key!r}")
        unknown = set(data["coefficients"]) - set(data["indicators"])
        if unknown:
            raise ValueError(f"{where}: coefficients {sorted(unknown)} have no entry in 'indicators'")
        for name, spec in data["indicators"].items():
            for key in ("metric", "columns"):
                if key not in spec:
                    raise ValueError(f"{where}: indicators.{name}: missing field {key!r}")
        return cls(intercept=float(data["intercept"]),
                   coefficients={k: float(v) for k, v in data["coefficients"].items()},
                   indicators={k: v for k, v in data["indicators"].items() if k in data["coefficients"]},
                   fit=data.get("fit", {}), name=data.get("name", ""), notes=data.get("notes", ""),
                   target=data.get("target", "log_eval_loss"))

    def predict(self, values: pd.DataFrame) -> pd.Series:
        """Predicted log eval loss for rows of indicator values (NaN where one is missing)."""
        out = pd.Series(self.intercept, index=values.index, dtype=np.float64)
        for name, coef in self.coefficients.items():
            out = out + coef * values[name].astype(float)
        return out

    def missing(self, overrides: dict | None = None) -> list[str]:
        """Indicators that cannot be computed here, each with why."""
        from cherrybench.metrics import METRICS
        from cherrybench.registry import UnknownNameError

        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        out = []
        for name, spec in self.indicators.items():
            try:
                METRICS.get(spec["metric"])
            except UnknownNameError:
                out.append(f"{name} (metric {spec['metric']!r} is not registered)")
                continue
            params = {**spec.get("params", {}), **overrides}
            for need in spec.get("requires", []):
                if params.get(need) is None:
                    flag = "--" + need.replace("_", "-")
                    out.append(f"{name} ({spec.get('why', 'needs ' + flag)})")
        return out


def _builtin_spec(name: str, options: dict | None = None, **extra) -> dict:
    from cherrybench.regress.indicators import spec_for

    return {**spec_for(name, options or {}), **extra}


REWARD_WHY = ("the paper's Rew is a reward-model score; give --reward-model DIR, a local sequence-classification "
              "reward model such as OpenAssistant/reward-model-deberta-v3-large-v2")
PAPER_NOTES = {
    "paper-v1": "Cao et al. 2023, first version: log L = 1.0694 - 0.1498 Rew + 8.257e-5 Len - 0.9350 Knn6. "
                "Fitted on LLaMA-7B fine-tunes; Len here is response tokens of the scoring tokenizer (the paper "
                "used LLaMA's), Knn6 uses all-MiniLM-L6-v2 unit vectors (the paper: SentenceBERT).",
    "paper-v2": "Cao et al. 2023, later version: log L = 0.0274 - 0.0078 Rew + 0.4421 Und - 0.3212 Nat - 0.1520 Coh. "
                "Und/Nat/Coh were UniEval dialogue scores (0..1); UniEval is not available offline and an LM "
                "judge answers its questions instead (dialogue_judge, mapped to 0..1), so this rule applies "
                "only approximately.",
    "paper-v1-offline": "paper-v1 over the indicators computable without a reward model: "
                        "log L = 1.0694 + 8.257e-5 Len - 0.9350 Knn6. The Rew term (-0.1498 Rew) is omitted, "
                        "not replaced: no reward model is available offline, so records are ranked by length "
                        "and embedding-neighbour distance alone (Len and Knn6 as in paper-v1).",
}
PAPER_RULES = {
    "paper-v1": (1.0694, {"reward": -0.1498, "output_length": 8.257e-5, "knn6": -0.9350}),
    "paper-v1-offline": (1.0694, {"output_length": 8.257e-5, "knn6": -0.9350}),
    "paper-v2": (0.0274, {"reward": -0.0078, "understandability": 0.4421, "naturalness": -0.3212,
                          "coherence": -0.1520}),
}


def builtin_rule(name: str, options: dict | None = None) -> Rule:
    intercept, coefficients = PAPER_RULES[name]
    indicators = {}
    for indicator in coefficients:
        extra = {"requires": ["reward_model"], "why": REWARD_WHY} if indicator == "reward" else {}
        indicators[indicator] = _builtin_spec(indicator, options, **extra)
    return Rule(intercept, dict(coefficients), indicators, name=name, notes=PAPER_NOTES[name],
                fit={"source": "published"})


def load_rule(spec: str, options: dict | None = None) -> Rule:
    """A built-in rule by name (`paper-v1`, `paper-v1-offline`, `paper-v2`) or a rule JSON file."""
    if spec in PAPER_RULES:
        return builtin_rule(spec, options)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"rule {spec!r}: not a built-in ({', '.join(PAPER_RULES)}) and no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: malformed rule JSON ({exc.msg})") from None
    return Rule.from_dict(data, where=str(path))
