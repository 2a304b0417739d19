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


def get_metric(name: str) -> type:
    import importlib

    from evalkit.metrics import METRIC_MODULES

    if name not in METRICS and name in METRIC_MODULES:
        importlib.import_module(f"evalkit.metrics.{name}")  # registers it
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    return METRICS[name]


def get_generator(name: str) -> type:
    import evalkit.generate  # noqa: F401

    if name not in GENERATORS:
        raise KeyError(f"unknown generator {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name]
