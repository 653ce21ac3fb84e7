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


def knn_key_by_hand(knn, embedder_fingerprint: str, **extra) -> str:
    """knn's key payload as it always was (no precision entry), plus `extra`."""
    params = {k: v for k, v in knn.get_params().items() if k not in knn.volatile}
    return hash_json({"metric": "knn", "version": knn.version, "core": SCORING_CORE_VERSION, "params": params,
                      "models": {"embedder": embedder_fingerprint}, **extra, "pool": "pool"})


def test_knn_over_a_language_model_is_keyed_by_the_precision_it_embeds_in(tmp_path):
    """Pooled hidden states of an LM come out in bf16 on CUDA: knn distances over them must
    not be reused for an fp32 run (the embedding cache already keys on it); fp32 keeps its key."""
    from cherrybench.embedders import resolve_embedder
    from cherrybench.metrics.knn import KNN

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # fingerprinted, never loaded
    knn = KNN(embedder=f"lm:mean:{tmp_path}")
    fingerprint = resolve_embedder(knn.embedder).fingerprint(Context(device="cpu"))
    cpu = knn.cache_key(Context(device="cpu"), "pool")
    cuda = knn.cache_key(Context(device="cuda"), "pool")
    assert cpu == knn_key_by_hand(knn, fingerprint)
    assert cuda == knn_key_by_hand(knn, fingerprint, embedder_precision="bfloat16") != cpu
    assert knn.provenance_key(Context(device="cuda"), "pool") != knn.provenance_key(Context(device="cpu"), "pool")
    engine = RayEngine(workers=1)  # on Ray, the workers' device decides (nothing connects while it is given)
    assert knn.cache_key(Context(device="cpu", engine=engine), "pool") == cpu
    assert knn.cache_key(Context(device="cuda", engine=engine), "pool") == cuda


def test_knn_over_minilm_keys_alike_on_every_device():
    from cherrybench.embedders import SentenceTransformerEmbedder
    from cherrybench.metrics.knn import KNN

    knn = KNN()
    fingerprint = SentenceTransformerEmbedder().fingerprint(None)
    assert knn.cache_key(Context(device="cpu"), "pool") == knn.cache_key(Context(device="cuda"), "pool") \
        == knn_key_by_hand(knn, fingerprint)


def test_regress_subset_results_are_keyed_by_precision_too(tmp_path):
    """A subset's eval loss measured in bf16 is not the fp32 one (as `cached_eval_losses` keys it);
    fp32, the reference, keeps the payload it always had. Both results are stored by hand, so
    nothing trains: each context must get its own."""
    from cherrybench.finetune import TrainConfig, finetune_key
    from cherrybench.records import Record, Turn
    from cherrybench.runners.regress import SUBSET_RESULT_VERSION, run_subset
    from cherrybench.store import ArtifactStore

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # the base model: fingerprinted, never loaded
    train = TrainConfig(model=str(tmp_path), max_length=64)
    records, evals = [Record("a", [Turn("Q?", "A.")])], [Record("e", [Turn("E?", "F.")])]
    cpu, cuda = Context(device="cpu", progress=False), Context(device="cuda", progress=False)
    fp32 = {"artifact": "regress_subset", "version": SUBSET_RESULT_VERSION,
            "finetune": finetune_key(records, train, ctx=cpu), "eval": [evals[0].content_hash],
            "prompt": "alpaca", "max_length": 64}
    store = ArtifactStore("regress")
    store.put_json(fp32, {"eval_loss": 1.0, "train_loss": 2.0, "train_seconds": 0.0, "eval_seconds": 0.0})
    store.put_json(dict(fp32, precision="bfloat16"),
                   {"eval_loss": 1.5, "train_loss": 2.0, "train_seconds": 0.0, "eval_seconds": 0.0})
    assert run_subset(0, records, evals, train, "k", cpu, keep_model=True)["eval_loss"] == 1.0
    assert run_subset(0, records, evals, train, "k", cuda, keep_model=True)["eval_loss"] == 1.5
