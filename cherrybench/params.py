"""Explicit keyword parameters, read from `__init__`'s signature (the
scikit-learn convention): the same dict gives the repr, MLflow params and the
cache key, so none of the three can drift from the others.

`check_params` is where a plugin refuses values that cannot work; `from_options`
calls it, so a bad value fails when the plugin is built, before any scoring."""

from __future__ import annotations

import inspect
import math
from typing import ClassVar


class Parameterized:
    kind: ClassVar[str] = "plugin"  # "metric" or "selector": names the owner in error messages

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @classmethod
    def from_options(cls, options: dict):
        """Build with the options this class accepts (the others belong to other
        plugins), and check the values now rather than when it first runs."""
        names = set(cls.param_names())
        obj = cls(**{k: v for k, v in options.items() if k in names})
        obj.check_params()
        return obj

    def check_params(self) -> None:
        """Raise ValueError (see `check_number`, `check_choice`) for a parameter
        value that cannot work. Override in a subclass; the default accepts all."""

    @property
    def who(self) -> str:
        return f"{self.kind} {getattr(self, 'name', type(self).__name__)!r}"

    def check_number(self, param: str, low: float | None = None, high: float | None = None, *,
                     low_open: bool = False, high_open: bool = False, integer: bool = False,
                     optional: bool = False) -> None:
        """The parameter is a finite number (an integer if `integer`) within [low, high]
        (open at an end where `low_open`/`high_open`), or None if `optional`."""
        value = getattr(self, param)
        if value is None and optional:
            return
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        what = "an integer" if integer else "a number"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer:
            ok = float(value).is_integer()
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise ValueError(f"{self.who}: parameter {param} must be {what} in {span}, got {value!r}")

    def check_choice(self, param: str, choices) -> None:
        value = getattr(self, param)
        if value not in tuple(choices):
            raise ValueError(f"{self.who}: parameter {param} must be one of {', '.join(map(repr, choices))}, "
                             f"got {value!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
