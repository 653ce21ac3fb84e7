"""The InstructMining indicators: each is one or more score columns of a
registered metric (summed), so indicators are scored, cached and resumed like
any other metric. The rule file stores each indicator's metric and parameters,
so a rule is applied with exactly the settings it was fitted with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Indicator:
    name: str
    metric: str  # registered metric name
    columns: tuple[str, ...]  # summed into the indicator
    unit: str  # what the number is, for the docs and the rule file
    params: dict = field(default_factory=dict)  # fixed metric parameters (e.g. k=6)


INDICATORS: dict[str, Indicator] = {i.name: i for i in [
    Indicator("input_length", "length", ("instruction_length", "input_length"),
              "tokens of instruction + input, scoring tokenizer, summed over turns"),
    Indicator("output_length", "length", ("response_length",), "tokens of the response, scoring tokenizer"),
    Indicator("reward", "reward", ("reward",),
              "reward-model logits[0] of (Q, A); the judge's Deita quality 1..6 without --reward-model"),
    Indicator("ppl", "ifd", ("ppl",), "response perplexity exp(CE(A)) under the scoring model"),
    Indicator("mtld", "mtld", ("mtld",), "MTLD lexical diversity of the response (words per factor)"),
    Indicator("knn6", "knn", ("knn_distance",), "mean Euclidean distance to the 6 nearest neighbours in the pool, "
              "all-MiniLM-L6-v2 unit vectors of instruction+input+response", {"k": 6}),
    Indicator("naturalness", "dialogue_judge", ("naturalness",), "LM-judge stand-in for UniEval naturalness, 0..1"),
    Indicator("coherence", "dialogue_judge", ("coherence",), "LM-judge stand-in for UniEval coherence, 0..1"),
    Indicator("understandability", "dialogue_judge", ("understandability",),
              "LM-judge stand-in for UniEval understandability, 0..1"),
]}


def parse_indicators(text: str | None) -> list[str]:
    """Comma-separated indicator names (default: all), checked against the table."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()] or list(INDICATORS)
    unknown = [n for n in names if n not in INDICATORS]
    if unknown:
        raise ValueError(f"unknown indicators {unknown}; choose from {', '.join(INDICATORS)}")
    return names


def spec_for(name: str, options: dict) -> dict:
    """The rule-file entry of an indicator: its metric, the metric's full
    parameters (from `options` where the metric accepts them), columns and unit."""
    from cherrybench.metrics import METRICS

    indicator = INDICATORS[name]
    options = {k: v for k, v in options.items() if v is not None}
    metric = METRICS.get(indicator.metric).from_options({**options, **indicator.params})
    return {"metric": indicator.metric, "params": metric.get_params(), "columns": list(indicator.columns),
            "unit": indicator.unit}


def build_metrics(specs: dict[str, dict], overrides: dict | None = None) -> list:
    """One metric instance per distinct (metric, params) among the specs;
    `overrides` (non-None values) replace parameters the metric accepts."""
    from cherrybench.metrics import METRICS

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    seen, metrics = set(), []
    for spec in specs.values():
        cls = METRICS.get(spec["metric"])
        accepted = set(cls.param_names())
        params = {**spec.get("params", {}), **{k: v for k, v in overrides.items() if k in accepted}}
        metric = cls(**{k: v for k, v in params.items() if k in accepted})
        key = (cls.name, repr(metric.get_params()))
        if key not in seen:
            seen.add(key)
            metrics.append(metric)
    return metrics


def indicator_values(table: pd.DataFrame, specs: dict[str, dict]) -> tuple[pd.DataFrame, pd.Series]:
    """Per-record indicator values from a score table, and for each record the
    first reason one of them is missing (None when all are present)."""
    values, why = indicator_table(table, specs)
    reasons = pd.Series([None] * len(table), index=table.index, dtype=object)
    for name in reversed(list(specs)):  # the first indicator (in spec order) that is missing names the reason
        missing = why[name].notna()
        reasons[missing] = [f"no_{name}:{w}" for w in why[name][missing]]
    return values, reasons


def indicator_table(table: pd.DataFrame, specs: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-record indicator values from a score table, and beside each missing value
    why (the metric's `<metric>_reason`, else 'nan'); None where the value is present."""
    values = pd.DataFrame(index=table.index)
    why = pd.DataFrame(index=table.index)
    for name, spec in specs.items():
        missing = [c for c in spec["columns"] if c not in table.columns]
        if missing:
            raise ValueError(f"indicator {name!r}: score columns {missing} are not in the table")
        column = table[spec["columns"]].astype(float).sum(axis=1, min_count=len(spec["columns"]))
        values[name] = column
        bad = ~np.isfinite(column.to_numpy())
        reason_col = f"{spec['metric']}_reason"
        given = table[reason_col] if reason_col in table.columns else pd.Series(None, index=table.index, dtype=object)
        why[name] = pd.Series([(g if isinstance(g, str) else "nan") if b else None for g, b in zip(given, bad)],
                              index=table.index, dtype=object)
    return values, why


def count_reasons(reasons) -> str:
    """'2 truncated, 1 nan': how many records gave each reason, most frequent first (ties by name)."""
    counts = pd.Series([r for r in reasons if r is not None], dtype=object).value_counts()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {why}" for why, n in ordered)
