"""Contracts every registered metric and selector keeps, checked over the
registries themselves, so a new plugin (built in or from an entry point) is
covered the moment it registers:

- building one with its default parameters does no work: in a fresh
  interpreter it imports no ML library and writes no file;
- its parameters round-trip (constructor, `from_options`, `repr`) and are plain
  JSON values (they are the cache key and the MLflow params);
- a metric outputs exactly its declared columns, one row per record, float
  scores, a reason that is None or a string (and is given wherever a score is
  NaN), and the same numbers whatever the chunk size or batch size;
- a selector returns the same ids for the same parameters, ids of the table
  only, no duplicates, never more than the budget.

Metrics that need a model or a tokenizer (any `needs`) run on the real
embedded SmolLM2 / MiniLM and are marked slow. Selectors are run first on a
context that refuses to load anything; the ones that load a model are checked
by the slow `test_selector_contract_with_models` instead.

Where a plugin's defaults cannot run offline on a handful of records,
`EXAMPLES` gives parameters that can; a plugin whose defaults run needs no entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from cherrybench.context import Context
from cherrybench.fingerprint import hash_json
from cherrybench.metrics import METRICS
from cherrybench.records import Dataset, Record, Turn
from cherrybench.scoring import score_metric
from cherrybench.selectors import SELECTORS, Budget

# resources the quick loop may load: none (even a tokenizer resolves the model, which converts
# the embedded GGUF on a fresh checkout and imports transformers)
QUICK_NEEDS: set[str] = set()


def learned_rule(tmp_path) -> str:
    """An InstructMining rule over indicators that need no model (the published rules need a reward model)."""
    from cherrybench.regress.rules import Rule

    specs = {"output_length": {"metric": "length", "params": {"model": None}, "columns": ["response_length"]},
             "mtld": {"metric": "mtld", "params": {"threshold": 0.72}, "columns": ["mtld"]}}
    return str(Rule(0.7, {"output_length": 0.01, "mtld": -0.005}, specs).save(tmp_path / "rule.json"))


# parameters for running a plugin offline on a few records where its defaults cannot
EXAMPLES = {
    ("metric", "instructmining"): lambda tmp_path: {"rule": learned_rule(tmp_path)},
    ("metric", "knn"): lambda tmp_path: {"k": 2},  # the default k=6 needs a pool of 7 or more
    # generation metrics: shorter answers keep the batching checks and cost a fraction of the time
    ("metric", "instag"): lambda tmp_path: {"max_new_tokens": 64},
    ("metric", "instruction_node"): lambda tmp_path: {"max_new_tokens": 24},
    ("selector", "instructmining"): lambda tmp_path: {"rule": learned_rule(tmp_path)},
    ("selector", "threshold"): lambda tmp_path: {"minimum": 1.0},  # needs a minimum or a maximum
    # one short warm-up epoch and a small projection: the contract, not LESS's cost (tests/test_less.py runs it)
    ("selector", "less"): lambda tmp_path: {"epochs": 1, "warmup_fraction": 0.5, "dim": 64, "max_length": 64},
}
# selectors too costly to run here, with the test that runs them for real
TOO_COSTLY = {"mods": "fine-tunes SmolLM2 on the seed set and generates answers; tests/test_mods.py runs it"}


def example(kind: str, name: str, tmp_path) -> dict:
    make = EXAMPLES.get((kind, name))
    return make(tmp_path) if make else {}


def needs_model(name: str) -> bool:
    return not set(METRICS.get(name).needs) <= QUICK_NEEDS


def metric_params():
    """Every registered metric; those that need a model are slow."""
    return [pytest.param(name, marks=pytest.mark.slow) if needs_model(name) else name for name in METRICS.names()]


def plugins():
    return [("metric", n) for n in METRICS.names()] + [("selector", n) for n in SELECTORS.names()]


REGISTRY = {"metric": METRICS, "selector": SELECTORS}

RECORDS = [
    Record("colours", [Turn("Name three primary colours.", "Red, blue and yellow.")]),
    Record("french", [Turn("Translate to French.", "Bonjour, comment allez-vous ?", input="Good morning!")]),
    Record("chat", [Turn("Hi, who are you?", "I am a helpful assistant."), Turn("Count to three.", "One, two.")]),
    Record("haiku", [Turn("Write a haiku about rain.", "Soft rain on the roof\npuddles gather in the street\nthe day "
                                                        "holds its breath")]),
    Record("capital", [Turn("What is the capital of Peru?", "Lima is the capital of Peru.")]),
    Record("fruit", [Turn("List two fruits and one vegetable.", "Apple and pear are fruits; a carrot is a "
                                                                "vegetable.")]),
]


# -- model guards ------------------------------------------------------------------

class NeedsModel(Exception):
    """Raised by NoModelContext where a plugin asks for a model or a tokenizer."""


class NoModelContext(Context):
    """A context that refuses every resource (models, tokenizers, embedders) and records what was asked."""

    def __init__(self, **kwargs):
        super().__init__(device="cpu", progress=False, **kwargs)
        self.asked: list[tuple[str, str]] = []

    def get(self, kind, spec, factory):
        self.asked.append((kind, str(spec)))
        raise NeedsModel(f"asked the context for {kind} {spec}")

    def model_ref(self, spec=None):
        self.asked.append(("model", str(spec or self.model)))
        raise NeedsModel(f"asked the context to resolve model {spec or self.model or 'smollm2'}")


# -- construction does no work -------------------------------------------------

CONSTRUCT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    HEAVY = ("torch", "transformers", "sentence_transformers", "sklearn", "peft", "accelerate", "mlflow")
    from cherrybench.metrics import METRICS
    from cherrybench.selectors import SELECTORS

    roots = [Path(p) for p in sys.argv[1:]]

    def files():
        return {str(p) for root in roots for p in root.rglob("*")}

    def construct(kind, name):
        registry = METRICS if kind == "metric" else SELECTORS
        obj = registry.get(name)()
        obj.get_params()
        repr(obj)
        if kind == "metric":
            obj.output_columns
        else:
            for metric in obj.requires():  # the metrics it will score, built the same way
                metric.get_params()
                metric.output_columns

    out = {}
    plugins = [("metric", n) for n in METRICS.names()] + [("selector", n) for n in SELECTORS.names()]
    for kind, name in plugins:  # each in a forked child: one plugin's imports do not hide another's
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            before_files, before_modules = files(), set(sys.modules)
            try:
                construct(kind, name)
                error = None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            result = {"error": error,
                      "imported": sorted({m.split(".")[0] for m in set(sys.modules) - before_modules} & set(HEAVY)),
                      "files": sorted(files() - before_files)}
            os.write(write, json.dumps(result).encode())
            os._exit(0)
        os.close(write)
        data = b""
        while chunk := os.read(read, 1 << 16):
            data += chunk
        os.close(read)
        os.waitpid(pid, 0)
        out[f"{kind}:{name}"] = json.loads(data)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def construction(tmp_path_factory):
    """What building each plugin with its defaults did, in a fresh interpreter whose
    HOME, cache and working directory are empty directories."""
    root = tmp_path_factory.mktemp("construct")
    home, cache, cwd = root / "home", root / "cache", root / "cwd"
    for path in (home, cache, cwd):
        path.mkdir()
    env = dict(os.environ, HOME=str(home), CHERRYBENCH_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-c", CONSTRUCT, str(home), str(cache), str(cwd)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind,name", plugins())
def test_construction_does_no_work(construction, kind, name):
    if f"{kind}:{name}" not in construction:
        pytest.skip(f"{kind} {name!r} is not registered in a fresh interpreter (loaded from a plugin file)")
    done = construction[f"{kind}:{name}"]
    assert done["error"] is None, f"{kind} {name!r} cannot be built with its default parameters: {done['error']}"
    assert done["imported"] == [], f"building {kind} {name!r} imported {done['imported']}: load models lazily"
    assert done["files"] == [], f"building {kind} {name!r} wrote {done['files']}"


# -- parameters --------------------------------------------------------------------

@pytest.mark.parametrize("kind,name", plugins())
def test_params_round_trip(kind, name, tmp_path):
    cls = REGISTRY[kind].get(name)
    assert repr(cls()) == repr(cls()) and cls().get_params() == cls(**cls().get_params()).get_params()
    obj = cls.from_options(example(kind, name, tmp_path))  # parameters that pass its checks
    params = obj.get_params()
    assert list(params) == cls.param_names()
    assert cls(**params).get_params() == params
    assert repr(cls(**params)) == repr(obj)
    assert cls.from_options(params).get_params() == params
    assert cls.from_options({**params, "option_of_another_plugin": 1}).get_params() == params
    hash_json(params, where=f"{kind} {name!r} parameters")  # plain JSON: a cache key and MLflow params


# -- metric outputs ----------------------------------------------------------------

def build_metric(name: str, tmp_path):
    return METRICS.get(name).from_options(example("metric", name, tmp_path))


def few_records(name: str) -> list[Record]:
    """Three short records (one with an input, one multi-turn) for a model, six otherwise."""
    return RECORDS[:3] if needs_model(name) else RECORDS


def check_frame(metric, frame: pd.DataFrame, n: int, who: str) -> None:
    assert list(frame.columns) == metric.output_columns, who
    assert len(frame) == n, who
    for column in metric.columns:
        assert pd.api.types.is_float_dtype(frame[column]), (who, column, frame[column].dtype)
    reasons = frame[metric.reason_column].tolist()
    assert all(r is None or isinstance(r, str) for r in reasons), (who, reasons)
    scores = frame[list(metric.columns)].astype(float)
    for row, reason in zip(scores.itertuples(index=False), reasons):
        if any(np.isnan(v) for v in row):
            assert isinstance(reason, str) and reason, f"{who}: a NaN score without a reason: {row}"


@pytest.fixture()
def quick_ctx():
    return NoModelContext()


@pytest.mark.parametrize("name", metric_params())
def test_metric_outputs_match_declared_columns(name, request, tmp_path):
    metric = build_metric(name, tmp_path)
    ctx = request.getfixturevalue("ctx" if needs_model(name) else "quick_ctx")
    records = few_records(name)
    derived = bool(getattr(metric, "inputs", list)())  # a derived metric gets its inputs from the scoring core
    try:
        if not derived:
            check_frame(metric, metric.compute(records, ctx), len(records), f"{name}.compute")
        if derived or not needs_model(name):
            table = score_metric(Dataset(records, None, "alpaca", "json"), metric, ctx, use_cache=False)
            check_frame(metric, table.reset_index(drop=True), len(records), f"{name} scored")
            assert list(table.index) == [r.id for r in records]
    except NeedsModel as exc:
        pytest.fail(f"metric {name!r} declares needs={type(metric).needs} but loads a model: {exc}")


# -- batch and chunk size ------------------------------------------------------------

@pytest.fixture(scope="module")
def contexts():
    """Two contexts on the same model, one packing every sequence alone, one packing all together."""
    return {size: Context(device="cpu", progress=False, batch_tokens=size) for size in (16, 1 << 14)}


@pytest.mark.parametrize("name", metric_params())
def test_results_do_not_depend_on_chunk_or_batch_size(name, contexts, tmp_path):
    dataset = Dataset(few_records(name), None, "alpaca", "json")
    if not needs_model(name):  # and check it asks for nothing
        contexts = {size: NoModelContext(batch_tokens=size) for size in contexts}
    small, large = contexts[16], contexts[1 << 14]

    def run(ctx, chunk_size=None):
        metric = build_metric(name, tmp_path)
        if chunk_size is not None:
            metric.chunk_size = chunk_size  # pool-level metrics score the whole pool at once anyway
        return score_metric(dataset, metric, ctx, use_cache=False)

    base = run(large)
    pd.testing.assert_frame_equal(run(large, chunk_size=2), base, check_exact=False, rtol=1e-4)
    pd.testing.assert_frame_equal(run(small), base, check_exact=False, rtol=1e-4)
    assert base[list(METRICS.get(name).columns)].notna().any().any(), f"{name}: every score is NaN; nothing compared"


# -- selectors -------------------------------------------------------------------------

def score_table(selector, n: int = 12) -> pd.DataFrame:
    """A table with every column the selector's metrics output: varied scores in 0.1..5.9
    (one tie, one unscorable row with its reason), a string in every other column."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"id": [f"r{i:02d}" for i in range(n)]})
    for metric in selector.requires():
        for column in metric.output_columns:
            if column in table.columns:
                continue
            if column in type(metric).columns:
                values = rng.permutation(np.linspace(0.1, 5.9, n))
                values[1] = values[2]  # a tie: broken the same way every time
                values[3] = np.nan
                table[column] = values
            elif column == metric.reason_column:
                table[column] = [("prompt_too_long" if i == 3 else None) for i in range(n)]
            else:
                table[column] = "given"
    return table


def table_records(table: pd.DataFrame) -> Dataset:
    return Dataset([Record(i, [Turn(RECORDS[k % len(RECORDS)].turns[0].instruction + f" ({k})",
                                    RECORDS[k % len(RECORDS)].turns[0].output)])
                    for k, i in enumerate(table["id"])], None, "alpaca", "json")


def check_selection(cls, selector, table, ctx, name):
    ids = set(table["id"])
    for budget in ("5", "0.25"):
        first = selector.select(table.copy(), Budget.parse(budget), ctx)
        again = cls(**selector.get_params()).select(table.copy(), Budget.parse(budget), ctx)
        assert first.ids == again.ids, f"{name}: two runs with the same parameters and seed differ"
        assert set(first.ids) <= ids, f"{name}: ids not in the table: {set(first.ids) - ids}"
        assert len(first.ids) == len(set(first.ids)), f"{name}: duplicate ids {first.ids}"
        assert len(first.ids) <= Budget.parse(budget).resolve(len(table)), (name, budget, first.ids)
        json.dumps(first.report, default=str)


def build_selector(name, tmp_path):
    return SELECTORS.get(name).from_options(example("selector", name, tmp_path))


@pytest.mark.parametrize("name", SELECTORS.names())
def test_selector_contract(name, tmp_path):
    cls = SELECTORS.get(name)
    selector = build_selector(name, tmp_path)
    table = score_table(selector)
    ctx = NoModelContext()
    ctx.dataset = table_records(table)
    try:
        check_selection(cls, selector, table, ctx, name)
    except NeedsModel as exc:
        pytest.skip(f"selector {name!r} loads a model ({exc}): test_selector_contract_with_models runs it")


@pytest.mark.slow
@pytest.mark.parametrize("name", SELECTORS.names())
def test_selector_contract_with_models(name, ctx, tmp_path, monkeypatch):
    if name in TOO_COSTLY:
        pytest.skip(f"selector {name!r}: {TOO_COSTLY[name]}")
    cls = SELECTORS.get(name)
    selector = build_selector(name, tmp_path)
    table = score_table(selector)
    probe = NoModelContext()
    probe.dataset = table_records(table)
    try:
        selector.select(table.copy(), Budget.parse("5"), probe)
    except NeedsModel:
        pass
    else:
        pytest.skip(f"selector {name!r} loads no model: test_selector_contract runs it")
    monkeypatch.setattr(ctx, "dataset", probe.dataset, raising=False)
    check_selection(cls, selector, table, ctx, name)
