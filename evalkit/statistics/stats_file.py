"""Reference statistics files: the one writer and the one reader, for the run (``reference.stats=``) and the report.

An evalkit file (``kind`` :data:`KIND`, ``.npz``) holds a Fréchet metric's reference side: ``mu`` ``[dim]``,
``sigma`` ``[dim, dim]`` (float64, covariance with n-1), ``n`` (embeddings), the float64 sums ``ref_n``, ``ref_sum``,
``ref_sum_outer`` they came from (so statistics of several files merge exactly), and ``identity_json``: what decides
the embeddings (the metric and protocol, the embedding with its checkpoint and constants, the input path, the
windows). A run refuses a file whose identity differs from its own (:func:`check_identity`), naming what differs.

The reader also takes, for the report: files of the first layout (``kind`` ``evalkit.fad.reference_stats/1``,
evalkit before protocols owned their input paths: read, but refused by a run, whose identity has another layout),
bare ``mu`` + ``sigma`` (or ``cov``) files, and sums under any ``<prefix>n/sum/sum_outer``.

Peers' shipped statistics are read as they are (``kind`` ``fadtk``): fadtk 1.1.0's ``fadtk/stats/fma_pop.npz``
(inside its wheel; ``<model>.mu`` ``[d]`` and ``<model>.cov`` ``[d, d]``, float64, for each of its models), named
``fadtk:fma_pop`` (found in the installed fadtk without importing it) or by its path; the embedding chooses the
arrays (fadtk's ``FrechetAudioDistance.load_stats``: ``data[f"{ml.name}.mu"]``). Such a file carries no identity: the
metric decides whether its run makes the embeddings the peer made them with (``FAD.peer_differences``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evalkit.errors import InputError
from evalkit.statistics.frechet import GaussianStats

KIND = "evalkit.reference_stats/2"
LEGACY_KIND = "evalkit.fad.reference_stats/1"
#: peers whose statistics files evalkit reads: ``<tool>:<name>`` -> ``<installed package>/<folder>/<name>.npz``
PEERS: dict[str, tuple[str, str]] = {"fadtk": ("fadtk", "stats")}
PEER_KINDS = tuple(PEERS)
_PEER_KEY = re.compile(r"\A(.+)\.(mu|cov)\Z")


class StatsFileError(InputError, ValueError):
    """A statistics file that cannot be read or does not belong to this run; the message names it and the fix."""


@dataclass
class StatsFile:
    """A reference side read from a file: ``mu``, ``sigma``, ``n``; ``sums`` when the file has them; ``identity``
    (None for files without one); ``kind`` (``KIND``, ``LEGACY_KIND``, a peer's name (``"fadtk"``), ``"mu-sigma"``
    or ``"sums"``); ``model``: the peer's name of the embedding whose arrays were read."""

    path: Path
    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    sums: GaussianStats | None
    identity: dict[str, Any] | None
    kind: str
    model: str | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])


def write_reference_stats(path: str | Path, stats: GaussianStats, identity: Mapping[str, Any]) -> Path:
    """Write ``stats`` (the reference side's sums) with ``identity`` as an evalkit statistics file, atomically."""
    from evalkit.io import write_npz

    mu, sigma = stats.mean_cov("reference embeddings")
    return write_npz(path, kind=np.asarray(KIND), mu=mu, sigma=sigma, n=np.asarray(stats.n, np.int64),
                     ref_n=np.asarray(stats.n, np.int64), ref_sum=stats.sum, ref_sum_outer=stats.sum_outer,
                     identity_json=np.asarray(json.dumps(identity, sort_keys=True, default=str)))


def resolve_stats_path(spec: str | Path, setting: str = "reference.stats") -> Path:
    """The file ``spec`` names: ``<tool>:<name>`` (:data:`PEERS`: ``fadtk:fma_pop`` is ``fadtk/stats/fma_pop.npz`` of
    the installed fadtk, located without importing it), else a path. Raises :class:`StatsFileError` when the tool is
    not installed or has no such file, naming where the file can come from."""
    text = str(spec)
    tool, sep, name = text.partition(":")
    if not sep or tool not in PEERS or "/" in tool:
        return Path(text).expanduser()
    import importlib.util

    package, folder = PEERS[tool]
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise StatsFileError(
            f"{setting}={text}: {package} is not installed, so its shipped statistics cannot be found. Install it "
            f"(`pip install --no-deps {package}`: the file ships inside its wheel as {package}/{folder}/{name}.npz) or "
            f"pass that file's path")
    path = Path(list(found.submodule_search_locations)[0]) / folder / f"{name}.npz"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.npz"))
        raise StatsFileError(f"{setting}={text}: the installed {package} has no {folder}/{name}.npz (it has: "
                             f"{', '.join(known) or 'none'})")
    return path


def read_stats_file(path: str | Path, setting: str = "reference.stats", embedding: str | None = None) -> StatsFile:
    """Read any layout of the module doc (``path`` may be ``<tool>:<name>``, :func:`resolve_stats_path`). For a
    peer's file holding several embeddings, ``embedding`` (its name, e.g. ``clap-laion-music``) chooses the arrays.
    Raises :class:`StatsFileError` (naming ``setting`` and the file) when the file is missing, not an npz, holds no
    reference statistics, or (a peer's file) none for ``embedding``."""
    p = resolve_stats_path(path, setting)
    where = f"{setting}={path}"
    if not p.is_file():
        raise StatsFileError(f"{where}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            peer = _peer_model(keys, embedding, where)
            if peer is not None:
                return StatsFile(p, np.asarray(z[f"{peer}.mu"], np.float64), np.asarray(z[f"{peer}.cov"], np.float64),
                                 None, None, None, "fadtk", model=peer)  # the one peer layout known: fadtk's
            data = {k: z[k] for k in keys}
    except StatsFileError:
        raise
    except Exception as exc:
        raise StatsFileError(f"{where}: not a readable .npz ({type(exc).__name__}: {exc})") from exc
    kind = str(data["kind"]) if "kind" in data else ""
    if kind in (KIND, LEGACY_KIND):
        sums = GaussianStats.from_state(data, "ref_") if "ref_sum_outer" in data else None
        if kind == KIND:
            identity = json.loads(str(data["identity_json"]))
        else:
            identity = {"protocol": str(data["protocol"]), "checkpoint": str(data["checkpoint"]),
                        "checkpoint_sha256": str(data["checkpoint_sha256"]),
                        "random_weights": bool(data["random_weights"]), "random_seed": int(data["random_seed"]),
                        "embedding": json.loads(str(data["embedding_json"]))}
        return StatsFile(p, np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64),
                         int(data["n"]), sums, identity, kind)
    found = _guess(data, p.stem)
    if found is None:
        raise StatsFileError(f"{where}: holds no reference statistics (expected an evalkit statistics file, or mu "
                             f"with sigma/cov)")
    return StatsFile(p, *found, identity=None, kind="mu-sigma" if found[3] is None else "sums")


def peer_models(keys) -> list[str]:
    """The models of a peer's statistics file (fadtk's layout: every key ``<model>.mu`` or ``<model>.cov``, both
    for each model), or [] for another layout."""
    parts = [_PEER_KEY.match(k) for k in keys]
    if not parts or not all(parts):
        return []
    models = sorted({m[1] for m in parts})
    return models if all(f"{m}.mu" in keys and f"{m}.cov" in keys for m in models) else []


def _peer_model(keys, embedding: str | None, where: str) -> str | None:
    """The model whose arrays to read from a peer's file (None: not a peer's layout)."""
    models = peer_models(keys)
    if not models:
        return None
    if embedding is None:
        if len(models) == 1:
            return models[0]
        raise StatsFileError(f"{where}: holds the statistics of {len(models)} embeddings ({', '.join(models)}); "
                             f"the metric's embedding chooses one")
    if embedding not in models:
        raise StatsFileError(f"{where}: has no statistics for the {embedding} embedding (it has: {', '.join(models)}):"
                             f" score the reference audio itself (reference.dir=...), or use an embedding it has")
    return embedding


def _guess(data: Mapping[str, np.ndarray], stem: str):
    """``(mu, sigma, n, sums)`` of a file without a kind: reference sums under a ``<prefix>n/sum/sum_outer`` (a
    prefix naming the generated side is skipped), else ``mu`` with ``sigma``/``cov``."""
    best = None
    for key in data:
        if key.endswith("sum_outer"):
            prefix = key[: -len("sum_outer")]
            if f"{prefix}n" in data and f"{prefix}sum" in data and not any(w in prefix.lower() for w in ("gen", "eval")):
                rank = int(any(w in (prefix + stem).lower() for w in ("ref", "background", "bg")))
                if best is None or rank > best[0]:
                    best = (rank, GaussianStats.from_state(dict(data), prefix))
    if best is not None:
        st = best[1]
        mu, sigma = st.mean_cov("reference embeddings")
        return mu, sigma, st.n, st
    mu_key = next((k for k in data if k == "mu" or k.endswith((".mu", "_mu"))), None)
    if mu_key is not None:
        base = mu_key[:-2]
        sig = next((base + s for s in ("sigma", "cov") if base + s in data), None)
        if sig is not None:
            return np.asarray(data[mu_key], np.float64), np.asarray(data[sig], np.float64), None, None
    return None


def check_identity(found: StatsFile, mine: Mapping[str, Any], setting: str = "reference.stats") -> None:
    """Refuse ``found`` unless it was written for embeddings made exactly as this run makes them (``mine``: the
    metric's :meth:`~evalkit.metrics.fad.FAD.stats_identity`). Names each difference and the fix."""
    where = f"{setting}={found.path}"
    if found.kind == LEGACY_KIND:
        raise StatsFileError(
            f"{where}: written by an evalkit from before protocols owned their input paths (kind {LEGACY_KIND}); its "
            f"identity cannot be checked against this run's. Write it again with this evalkit: score the reference "
            f"folder once (reference.dir=...), the run leaves stats/<metric>_reference.npz")
    if found.identity is None:
        raise StatsFileError(f"{where}: not an evalkit statistics file (no identity): evalkit cannot tell how its "
                             f"embeddings were made, so a distance against it could be any protocol's")
    theirs = found.identity
    diff = _diff(theirs, dict(mine))
    if diff:
        shown = ", ".join(f"{k}: {a!r} (file) vs {b!r} (this run)" for k, a, b in diff[:6])
        raise StatsFileError(f"{where}: its embeddings were made differently: {shown}"
                             + (f" and {len(diff) - 6} more" if len(diff) > 6 else ""))


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]
