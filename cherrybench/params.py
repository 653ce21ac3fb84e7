"""Explicit keyword parameters, read from `__init__`'s signature (the
scikit-learn convention): the same dict gives the repr, MLflow params and the
cache key, so none of the three can drift from the others.

`check_params` is where a plugin refuses values that cannot work; `from_options`
calls it, so a bad value fails when the plugin is built, before any scoring."""

from __future__ import annotations

import inspect
import math
from typing import ClassVar


_KINDS = {"str": str, "bool": bool, "int": int, "float": float, "list": list}


def _declared_kind(parameter: inspect.Parameter):
    """str, bool, int, float or list: what the parameter takes, from its default, else from
    an annotation that names one of them (`bool | None`, `Optional[int]`); None: unknown."""
    default = parameter.default
    if default is not inspect.Parameter.empty and default is not None:
        for kind in (bool, int, float, str):  # bool first: True is an int too
            if isinstance(default, kind):
                return kind
        return list if isinstance(default, (list, tuple)) else None
    annotation = parameter.annotation
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", str(annotation))
    names = [n.strip() for n in annotation.replace("Optional[", "").rstrip("]").split("|")]
    names = [n for n in names if n and n != "None"]
    return _KINDS.get(names[0]) if len(names) == 1 else None


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
        given = {k: cls._typed(k, v) for k, v in options.items() if k in names}
        obj = cls(**given)
        obj.check_params()  # its own checks first: they also say the range a value must lie in
        for name, value in given.items():
            cls._typed(name, value, check=True)
        return obj

    @classmethod
    def _typed(cls, name: str, value, check: bool = False):
        """A value of the kind its parameter declares (its default's type, or for a default
        of None a plain `bool | None`-style annotation), so that a wrong one fails here,
        named, not as a TypeError deep in a run: text for a string (a number typed on the
        command line, `--param column=5`, becomes the text "5"; 1.50 becomes "1.5", as JSON reads it), true or false for a flag,
        a number for a number (a whole one for an integer; 3.0 is read as 3), a list for a
        list. None, and any parameter of another kind, is left to check_params. Without
        `check`, only converts (the plugin's own check_params runs next, with its ranges)."""
        kind = _declared_kind(inspect.signature(cls.__init__).parameters[name])
        if kind is None or value is None:
            return value
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is str and number:
            return str(value)
        if kind is int and number and float(value).is_integer():
            return int(value)  # numpy's seeding, range() and indexing take ints only
        ok = {str: isinstance(value, str), bool: isinstance(value, bool), int: False, float: number,
              list: isinstance(value, (list, tuple))}[kind]
        if not ok and check:
            what = {str: "text", bool: "true or false", int: "an integer", float: "a number", list: "a list"}[kind]
            owner = f"{cls.kind} {getattr(cls, 'name', cls.__name__)!r}"
            raise ValueError(f"{owner}: parameter {name} must be {what}, got {value!r}")
        return value

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
