"""Explicit keyword parameters, read from `__init__`'s signature (the
scikit-learn convention): the same dict gives the repr, MLflow params and the
cache key, so none of the three can drift from the others."""

from __future__ import annotations

import inspect


class Parameterized:
    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @classmethod
    def from_options(cls, options: dict):
        """Build with the options this class accepts; the others belong to other plugins."""
        names = set(cls.param_names())
        return cls(**{k: v for k, v in options.items() if k in names})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
