"""Metrics: one file per recipe, found by name through :mod:`evalkit.registry`."""
from evalkit.metrics.base import Clip, Metric, resolve_recipe  # noqa: F401

# Each import registers its metric; a missing optional backbone must not break the others.
for _mod in ("fad", "kld", "clap", "chroma"):
    try:
        __import__(f"evalkit.metrics.{_mod}")
    except ModuleNotFoundError as _exc:  # pragma: no cover - only while a metric file is absent
        if _exc.name != f"evalkit.metrics.{_mod}":
            raise
