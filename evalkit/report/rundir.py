"""Reading a finished run folder (read-only): ``summary.json``, ``clips.parquet``, ``embeddings/*.npz``, ``stats/*.npz``.

The report never writes into a run folder and never imports the run pipeline or a metric backbone: it needs only
numpy, pandas and (for plots) matplotlib, so a CI job can report on a run made elsewhere.

Per-clip embeddings (``embeddings/**/*.npz``). A metric's per-clip arrays are returned under ``_``-prefixed columns
(FAD: ``_fad_gen_emb``, ``_fad_ref_emb``, each ``[windows, dim]``). :func:`load_clip_arrays` accepts every layout a
run can reasonably write, in any number of npz files (shards, resumed chunks):

- key ``"<clip id>/<column>"`` (the run's layout, e.g. ``"-0Gj8-vB1q4/_fad_gen_emb"``), or ``"<column>/<clip id>"``;
- key ``"<column>"`` alone in a per-clip file ``embeddings/<clip id>.npz``;
- the column with or without its leading ``_`` (``fad_gen_emb`` matches ``_fad_gen_emb``).
A clip id seen twice with different arrays is an error (two runs mixed in one folder); identical repeats are fine.

Reference statistics (``stats/*.npz``, e.g. ``stats/fad_reference.npz`` with ``ref_n``/``ref_sum``/``ref_sum_outer``
and ``mu``/``sigma``; or, when the run was scored against a statistics file, the file ``config.yaml`` names as
``reference.stats``): :func:`load_reference_stats` reads :class:`GaussianStats` states (``<prefix>n``,
``<prefix>sum``, ``<prefix>sum_outer``, as ``GaussianStats.state(prefix)`` writes them; prefixes naming the
generated side are ignored) or a ``mu``/``sigma`` (or ``cov``) pair.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

#: The model card's column for each evalkit metric (summary.json also names it per metric as ``card_column``).
CARD_COLUMNS: dict[str, str] = {
    "fad": "Frechet Audio Distance",
    "kld": "KLD",
    "clap": "Text Consistency",
    "chroma": "Chroma Cosine Similarity",
}
#: Direction of each metric, used only when a summary does not say (summary.json has ``higher_is_better``).
HIGHER_IS_BETTER: dict[str, bool] = {"fad": False, "kld": False, "clap": True, "chroma": True}


class RunFolderError(ValueError):
    """A path is not a run folder, or a run folder is incomplete or inconsistent."""


def _summary_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if (p / "summary.json").is_file():
        return p / "summary.json"
    if p.is_dir():
        raise RunFolderError(f"{p}: no summary.json here - is this a finished evalkit run folder?")
    raise RunFolderError(f"{p}: no such run folder or summary.json")


@dataclass
class Run:
    """One run folder, read lazily. ``path`` is the folder (for a bare summary.json: its parent)."""

    path: Path
    summary: dict[str, Any]
    summary_file: Path = field(repr=False, default=None)  # type: ignore[assignment]

    # -- identity --------------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        model = self.summary.get("model") or {}
        if isinstance(model, str):
            return model
        return str(model.get("name") or self.path.name)

    @property
    def hub_id(self) -> str | None:
        model = self.summary.get("model") or {}
        return None if isinstance(model, str) else model.get("hub_id")

    @property
    def model_random(self) -> bool:
        model = self.summary.get("model") or {}
        return bool(not isinstance(model, str) and model.get("random_weights"))

    @property
    def random_metrics(self) -> list[str]:
        """Metrics whose backbone had random weights."""
        return [m for m, e in self.metrics.items() if isinstance(e, dict) and e.get("random_weights")]

    @property
    def random_weights(self) -> bool:
        """True when any number of this run comes from random weights (the model's or a metric backbone's)."""
        return bool(self.summary.get("random_weights")) or self.model_random or bool(self.random_metrics)

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return dict(self.summary.get("metrics") or {})

    def value(self, metric: str) -> float:
        """The headline value of ``metric`` (NaN when the run lacks it)."""
        entry = self.metrics.get(metric)
        if not isinstance(entry, dict):
            return float("nan")
        v = entry.get("value")
        if v is None:
            values = entry.get("values") or {}
            v = values.get(entry.get("primary") or metric)
        try:
            return float(v) if v is not None else float("nan")
        except (TypeError, ValueError):
            return float("nan")

    def higher_is_better(self, metric: str) -> bool:
        entry = self.metrics.get(metric) or {}
        if "higher_is_better" in entry:
            return bool(entry["higher_is_better"])
        if metric in HIGHER_IS_BETTER:
            return HIGHER_IS_BETTER[metric]
        raise RunFolderError(f"{self.summary_file}: metric {metric!r} does not say whether higher is better")

    # -- per-clip data ---------------------------------------------------------------------------------------------
    @cached_property
    def clips(self) -> pd.DataFrame:
        """``clips.parquet`` (an empty frame with an ``id`` column when the folder has none)."""
        p = self.path / "clips.parquet"
        if not p.is_file():
            return pd.DataFrame({"id": pd.Series([], dtype=str)})
        return pd.read_parquet(p)

    def clip_arrays(self, column: str) -> dict[str, np.ndarray]:
        return load_clip_arrays(self.path / "embeddings", column)

    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.yaml`` as plain data ({} when absent)."""
        p = self.path / "config.yaml"
        if not p.is_file():
            return {}
        import yaml

        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def reference_stats(self, dim: int | None = None):
        """FAD reference statistics: ``stats/*.npz`` of the run, else the file ``config.yaml`` names as
        ``reference.stats`` (a run scored against precomputed statistics exports none of its own)."""
        found = load_reference_stats(self.path / "stats", dim=dim)
        if found is None:
            named = (self.config.get("reference") or {}).get("stats")
            if named and Path(str(named)).expanduser().is_file():
                found = load_reference_stats(Path(str(named)).expanduser(), dim=dim)
        return found


def load_run(path: str | os.PathLike) -> Run:
    """Read one run folder (or its ``summary.json``)."""
    sp = _summary_path(path)
    try:
        summary = json.loads(sp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{sp}: not valid JSON ({exc})") from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics", {}), dict):
        raise RunFolderError(f"{sp}: not an evalkit summary (expected an object with a 'metrics' object)")
    return Run(path=sp.parent, summary=summary, summary_file=sp)


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders named by ``paths``: a run folder, a summary.json, or a folder searched recursively for runs.

    Order: as given; runs found inside one folder are sorted by path. Duplicates are dropped.
    """
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() or (p / "summary.json").is_file():
            found.append(_summary_path(p).parent)
        elif p.is_dir():
            inner = sorted(s.parent for s in p.rglob("summary.json"))
            if not inner:
                raise RunFolderError(f"{p}: no run folders (no summary.json) under this folder")
            found.extend(inner)
        else:
            raise RunFolderError(f"{p}: no such run folder or summary.json")
    out: list[Path] = []
    for f in found:
        if f.resolve() not in {o.resolve() for o in out}:
            out.append(f)
    return out


# -- per-clip arrays ------------------------------------------------------------------------------------------------
def _match_key(key: str, column: str, stem: str) -> str | None:
    """The clip id that ``key`` holds ``column`` for, or None."""
    names = {column, column.lstrip("_"), "_" + column.lstrip("_")}
    parts = key.split("/")
    if len(parts) == 1:
        return stem if key in names else None
    if parts[-1] in names:
        return "/".join(parts[:-1])
    if parts[0] in names:
        return "/".join(parts[1:])
    return None


def load_clip_arrays(folder: str | os.PathLike, column: str) -> dict[str, np.ndarray]:
    """``{clip id: array}`` for ``column`` from every ``*.npz`` under ``folder`` (see the module doc for layouts)."""
    folder = Path(folder)
    out: dict[str, np.ndarray] = {}
    if not folder.is_dir():
        return out
    for f in sorted(folder.rglob("*.npz")):
        if f.name.startswith("."):  # an unfinished atomic write (".<name>.tmp-<pid>.npz")
            continue
        with np.load(f, allow_pickle=False) as z:
            for key in z.files:
                cid = _match_key(key, column, f.stem)
                if cid is None:
                    continue
                arr = z[key]
                if cid in out and not (out[cid].shape == arr.shape and np.array_equal(out[cid], arr)):
                    raise RunFolderError(f"{f}: clip {cid!r} has a second, different {column} array")
                out[cid] = arr
    return out


def load_reference_stats(folder: str | os.PathLike, dim: int | None = None):
    """The reference side's :class:`GaussianStats` (or a ``(mu, sigma)`` pair) from ``folder/*.npz`` (or one npz
    file); None if absent.

    Looks for ``<prefix>n``/``<prefix>sum``/``<prefix>sum_outer`` (preferring prefixes that mention ``ref`` or
    ``background``), then ``mu`` + ``sigma``/``cov``. ``dim`` (if given) must match.
    """
    from evalkit.metrics.frechet import GaussianStats

    folder = Path(folder)
    if folder.is_file():
        files = [folder]
    elif folder.is_dir():
        files = sorted(folder.rglob("*.npz"))
    else:
        return None
    candidates: list[tuple[int, Any]] = []
    for f in files:
        if f.name.startswith("."):
            continue
        with np.load(f, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        for key in data:
            if key.endswith("sum_outer"):
                prefix = key[: -len("sum_outer")]
                if f"{prefix}n" in data and f"{prefix}sum" in data:
                    st = GaussianStats.from_state(data, prefix)
                    name = (prefix + f.stem).lower()
                    if any(w in prefix.lower() for w in ("gen", "eval")):
                        continue  # the generated side, not the reference
                    candidates.append((int(any(w in name for w in ("ref", "background", "bg"))), st))
        mu_key = next((k for k in data if k == "mu" or k.endswith(".mu") or k.endswith("_mu")), None)
        if mu_key is not None:
            base = mu_key[: -2]
            sig_key = next((base + s for s in ("sigma", "cov") if base + s in data), None)
            if sig_key is not None:
                candidates.append((0, (np.asarray(data[mu_key], np.float64), np.asarray(data[sig_key], np.float64))))
    if dim is not None:
        candidates = [c for c in candidates if _dim_of(c[1]) == dim]
    if not candidates:
        return None
    candidates.sort(key=lambda c: -c[0])
    return candidates[0][1]


def _dim_of(stats) -> int:
    return int(stats.dim) if hasattr(stats, "dim") else int(np.asarray(stats[0]).shape[0])
