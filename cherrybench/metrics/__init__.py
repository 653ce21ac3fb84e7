"""The metric registry. Every module in this package registers its metrics
when imported; third-party metrics arrive through the `cherrybench.metrics`
entry-point group or `--plugin file.py`."""

import importlib
import pkgutil

from cherrybench.metrics.base import METRICS, Metric, build_metrics, register_metric

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METRICS", "Metric", "build_metrics", "register_metric"]
