"""The selector registry. Every module in this package registers its selectors
when imported; third-party selectors arrive through the
`cherrybench.selectors` entry-point group or `--plugin file.py`."""

import importlib
import pkgutil

from cherrybench.selectors.base import SELECTORS, Budget, RankingSelector, Selection, Selector, register_selector

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SELECTORS", "Budget", "RankingSelector", "Selection", "Selector", "register_selector"]
