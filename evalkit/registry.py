"""Name -> class registries, filled where each class is defined (lm-evaluation-harness style)."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")

METRICS: dict[str, type] = {}
GENERATORS: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        if name in table and table[name] is not cls:
            raise KeyError(f"{kind} {name!r} registered twice")
        table[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def register_metric(name: str):
    return _register(METRICS, "metric", name)


def register_generator(name: str):
    return _register(GENERATORS, "generator", name)


def _modules(package) -> list[str]:
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__))


def metric_names() -> list[str]:
    """Every metric evalkit ships: the modules of ``evalkit/metrics/`` that register one (found on disk, so a new
    metric is its module and its conf files, nothing else)."""
    import evalkit.metrics as pkg

    skip = {"base", "spec"}  # the contract, not metrics
    return [m for m in _modules(pkg) if m not in skip]


def get_metric(name: str) -> type:
    """The metric class registered as ``name``, importing ``evalkit.metrics.<name>`` on first use."""
    import importlib

    if name not in METRICS and name in metric_names():
        importlib.import_module(f"evalkit.metrics.{name}")  # registers it
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {metric_names()}")
    return METRICS[name]


def get_generator(name: str) -> type:
    """The generator class registered as ``name``, importing the modules of ``evalkit/generate/`` on first use."""
    import importlib

    import evalkit.generate as pkg

    if name not in GENERATORS:
        for module in _modules(pkg):
            importlib.import_module(f"evalkit.generate.{module}")
    if name not in GENERATORS:
        raise KeyError(f"unknown generator {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name]
