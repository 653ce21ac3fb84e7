"""Shared, lazily loaded resources (LMs, tokenizers, embedders, judges) for one run.

Metrics ask the context for what they need; each resource is loaded once per
run and reused by every metric that names the same model.
"""

from __future__ import annotations

from typing import Callable

from cherrybench.models import ModelRef, resolve_model


class Context:
    def __init__(self, model: str | None = None, device: str | None = None, batch_tokens: int | None = None,
                 trust_remote_code: bool = False, progress: bool = True, seed: int = 0, settings: dict | None = None,
                 train=None, engine=None):
        self.model = model  # the default scoring model; a metric's own `model` param overrides it
        self.device = device
        self.batch_tokens = batch_tokens
        self.trust_remote_code = trust_remote_code
        self.progress = progress
        self.seed = seed
        self.settings = dict(settings or {})  # other resource settings: embedder, judge, reward_model, ...
        self.train = train  # the run's TrainConfig: selectors that fine-tune (MoDS) train with it
        self.engine = engine  # another executor for uncached chunks (cherrybench.ray_engine); None: this process
        self._resources: dict[tuple[str, str], object] = {}
        self._refs: dict[str, ModelRef] = {}

    def get(self, kind: str, spec, factory: Callable[[], object]):
        """Memoize one resource per (kind, spec): `spec` is everything `factory` reads that this
        context does not fix (a path, and any per-caller setting such as a device)."""
        key = (kind, str(spec))
        if key not in self._resources:
            self._resources[key] = factory()
        return self._resources[key]

    def precision(self, plugin=None) -> str:
        """The float type language-model work runs in (`float32` on CPU, `bfloat16` on CUDA): on
        this process's device, or on the Ray workers' where the engine runs `plugin` there.
        Scores computed in another precision differ slightly, so it is part of their cache key."""
        from cherrybench.models import pick_device, precision_name

        if self.engine is not None and plugin is not None and self.engine.takes(plugin):
            return self.engine.precision(self.device)
        return precision_name(pick_device(self.device))

    def model_ref(self, spec: str | None = None) -> ModelRef:
        spec = spec or self.model
        key = str(spec)
        if key not in self._refs:
            self._refs[key] = resolve_model(spec)
        return self._refs[key]

    def lm(self, spec: str | None = None):
        from cherrybench.lm import LanguageModel

        ref = self.model_ref(spec)
        return self.get("lm", str(ref.directory), lambda: LanguageModel(
            ref, device=self.device, batch_tokens=self.batch_tokens, trust_remote_code=self.trust_remote_code))

    def unload_lm(self, spec: str | None = None) -> None:
        """Free a model no later step needs (a comparison loads one per selector)."""
        self._resources.pop(("lm", str(self.model_ref(spec).directory)), None)

    def tokenizer(self, spec: str | None = None):
        """The model's tokenizer alone (length metrics do not need the weights)."""
        ref = self.model_ref(spec)
        loaded = self._resources.get(("lm", str(ref.directory)))
        if loaded is not None:
            return loaded.tokenizer
        from transformers import AutoTokenizer

        return self.get("tokenizer", str(ref.directory), lambda: AutoTokenizer.from_pretrained(
            ref.directory, trust_remote_code=self.trust_remote_code))
