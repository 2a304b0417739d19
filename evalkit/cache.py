"""Where a run's content-keyed caches live: ``<cache.dir or $EVALKIT_CACHE>/<kind>`` (``generations``, ``scores``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping


def cache_dir() -> Path:
    """``$EVALKIT_CACHE``, default ``~/.cache/evalkit``: downloaded weights and the run caches."""
    return Path(os.environ.get("EVALKIT_CACHE", Path.home() / ".cache" / "evalkit")).expanduser()


def cache_root(cache: Mapping[str, Any], kind: str) -> Path | None:
    """``<cache.dir or $EVALKIT_CACHE>/<kind>`` when ``cache.<kind>`` is on (``cache``: the run's ``cache`` node),
    else None."""
    if not cache.get(kind, False):
        return None
    return Path(cache.get("dir") or cache_dir()) / kind
