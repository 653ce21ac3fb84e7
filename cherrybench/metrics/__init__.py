"""The metric registry. Every module in this package registers its metrics
when imported; third-party metrics arrive through the `cherrybench.metrics`
entry-point group or `--plugin file.py`."""

import importlib
import pkgutil

from cherrybench.metrics.base import Metric, validate_metric
from cherrybench.registry import Registry

METRICS = Registry("metric", "cherrybench.metrics", validate=validate_metric)
register_metric = METRICS.register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METRICS", "Metric", "register_metric"]
