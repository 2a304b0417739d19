"""``evalkit.metrics.frechet`` (GaussianStats, frechet_distance) without importing the ``evalkit.metrics`` package.

``evalkit/metrics/__init__.py`` imports every metric module (and through them torch and the backbone libraries) to
fill the registry. A report or a CI regression check must not pay for that, nor need those packages, so when
``evalkit.metrics`` is not imported yet this module executes ``evalkit/metrics/frechet.py`` (pure numpy) from its
file under a private module name. When it is imported already, the real module is used. Either way the code is the
one file ``evalkit/metrics/frechet.py``: the Fréchet math exists once.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PRIVATE = "evalkit.report._frechet_impl"


def _load():
    if "evalkit.metrics" in sys.modules:
        from evalkit.metrics import frechet

        return frechet
    mod = sys.modules.get(_PRIVATE)
    if mod is not None:
        return mod
    path = Path(__file__).resolve().parent.parent / "metrics" / "frechet.py"
    spec = importlib.util.spec_from_file_location(_PRIVATE, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_PRIVATE] = mod  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(_PRIVATE, None)
        raise
    return mod


_frechet = _load()
GaussianStats = _frechet.GaussianStats
frechet_distance = _frechet.frechet_distance
FrechetError = _frechet.FrechetError

__all__ = ["GaussianStats", "frechet_distance", "FrechetError"]
