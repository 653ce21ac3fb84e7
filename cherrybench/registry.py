"""One small registry class for metrics, selectors and embedders.

Built-ins register with the decorator when their package is imported;
third-party packages arrive through an entry-point group; a local file can be
loaded with `load_plugin_file`. All three end up in the same table, validated
when they load rather than when they first run.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path


class UnknownNameError(KeyError):
    """A name that no plugin registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class Registry:
    def __init__(self, kind: str, group: str, validate=None):
        self.kind = kind
        self.group = group
        self._validate = validate
        self._items: dict[str, type] = {}
        self._aliases: dict[str, str] = {}
        self._entry_points_loaded = False

    def register(self, name: str | None = None, aliases: tuple[str, ...] = ()):
        """Class decorator: `@METRICS.register()` uses the class's `name`."""

        def decorator(cls):
            key = name or cls.name
            if self._validate:
                self._validate(cls)
            existing = self._items.get(key)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.kind} {key!r} is registered twice: {existing} and {cls}")
            self._items[key] = cls
            for alias in aliases:
                self._aliases[alias] = key
            return cls

        return decorator

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            try:
                ep.load()  # the module registers itself with the decorator
            except Exception as exc:  # a broken plugin must not hide the others
                raise RuntimeError(f"{self.kind} plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc

    def resolve(self, name: str) -> str:
        self._load_entry_points()
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = sorted(set(self._items) | set(self._aliases))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Registered: {', '.join(known)}")

    def get(self, name: str) -> type:
        return self._items[self.resolve(name)]

    def __contains__(self, name: str) -> bool:
        """Whether `name` (or an alias) is registered, without the did-you-mean error."""
        self._load_entry_points()
        return name in self._items or name in self._aliases

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, target in self._aliases.items() if target == name)


def load_plugin_file(path: str | Path) -> None:
    """Import a local .py file so that its decorators register what it defines.
    This runs the file's code, with the caller's rights: load only files you trust."""
    given = path
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"--plugin {given}: no such file")
    if not path.is_file() or path.suffix != ".py":
        raise ValueError(f"--plugin {given}: not a Python file (expected a .py file that registers "
                         "metrics or selectors)")
    # named by path and content: an edited file loads again as new code (same-named classes replace the old)
    digest = hashlib.sha256(str(path).encode() + b"\0" + path.read_bytes()).hexdigest()[:16]
    module_name = f"cherrybench_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)  # a fixed file can be loaded again
        raise
