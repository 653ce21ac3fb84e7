"""Scores computed in bf16 (a language model on CUDA) differ slightly from fp32 ones (on a CPU),
so the precision is part of a score's cache key; fp32, the reference, keeps the keys it had."""

from __future__ import annotations

from cherrybench.context import Context
from cherrybench.fingerprint import hash_json
from cherrybench.metrics.base import SCORING_CORE_VERSION, Metric, plugin_sources
from cherrybench.ray_engine import RayEngine


class RunsAnLM(Metric):
    name = "runs_an_lm"
    columns = {"runs_an_lm": "higher"}
    needs = ("lm",)

    def __init__(self, k: int = 1):
        self.k = k


class RunsAnEmbedder(RunsAnLM):
    name = "runs_an_embedder"
    columns = {"runs_an_embedder": "higher"}
    needs = ("embedder",)


def by_hand(metric, **extra) -> str:
    """The key's documented payload, written out: no precision entry unless given."""
    return hash_json({"metric": metric.name, "version": metric.version, "core": SCORING_CORE_VERSION,
                      "params": {"k": 1}, "models": {}, **extra, "plugin_source": plugin_sources(type(metric))})


def test_fp32_keys_are_unchanged_and_bf16_keys_differ():
    metric = RunsAnLM()
    cpu = metric.cache_key(Context(device="cpu"))
    cuda = metric.cache_key(Context(device="cuda:1"))
    assert cpu == by_hand(metric)
    assert cuda == by_hand(metric, precision="bfloat16") != cpu


def test_a_metric_without_a_language_model_keys_alike_on_every_device():
    metric = RunsAnEmbedder()  # sentence embedders run in fp32 on either device
    assert metric.cache_key(Context(device="cpu")) == metric.cache_key(Context(device="cuda")) == by_hand(metric)


def test_on_ray_the_key_follows_the_workers_device():
    metric = RunsAnLM()
    engine = RayEngine(workers=1)  # nothing connects while the device is given
    assert engine.takes(metric)
    assert Context(device="cuda", engine=engine).precision(metric) == "bfloat16"
    assert Context(device="cpu", engine=engine).precision(metric) == "float32"
    assert metric.cache_key(Context(device="cpu", engine=engine)) == by_hand(metric)


def test_embeddings_of_a_language_model_are_keyed_by_precision_too():
    from cherrybench.embedders import LMPoolingEmbedder, SentenceTransformerEmbedder, _precision

    assert _precision(LMPoolingEmbedder(), Context(device="cuda")) == "bfloat16"
    assert _precision(LMPoolingEmbedder(), Context(device="cpu")) == "float32"
    assert _precision(SentenceTransformerEmbedder(), Context(device="cuda")) == "float32"


def test_answers_and_eval_losses_are_keyed_by_precision_too():
    from cherrybench.evaluate import _precision, answers_key
    from cherrybench.fingerprint import hash_json

    fp32 = answers_key("weights", 48, "alpaca", 256, "float32")
    assert fp32 == hash_json({"artifact": "greedy_answers", "version": 1, "model": "weights", "max_new_tokens": 48,
                              "prompt": "alpaca", "max_length": 256})  # the key it always had
    assert answers_key("weights", 48, "alpaca", 256, "bfloat16") != fp32
    assert _precision(Context(device="cuda")) == "bfloat16" and _precision(Context(device="cpu")) == "float32"
