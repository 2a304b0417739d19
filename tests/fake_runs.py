"""Fabricated run folders with known numbers, in the run-folder format of notes/common.md (for report/compare tests).

``make_run(folder, ...)`` writes ``summary.json`` (each metric with its ``spec`` block, taken from the real metric
classes so the fakes cannot drift from them), ``clips.parquet``, ``embeddings/fad.npz`` (keys
``"<id>/fad_gen_emb"``, ``"<id>/fad_ref_emb"``: the arrays the FAD spec names), ``config.yaml`` and
``manifest.json``. Per-clip values and embeddings are drawn from known distributions (seeded); the summary's headline
values are computed from them the way the specs say (``aggregate: mean`` - the mean of ``value_column`` weighted by
``weight``; ``frechet`` - the Fréchet distance of all generated windows against all reference windows) unless given.
Invented metrics (``specs={"loudness_gap": MetricSpec(...)}``), errors, skipped metrics, the older summary format
and failed or running folders can be fabricated too.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from evalkit.statistics.frechet import GaussianStats, frechet_distance
from evalkit.metrics.spec import MetricSpec

HUB = {
    "small": "facebook/musicgen-small",
    "medium": "facebook/musicgen-medium",
    "large": "facebook/musicgen-large",
    "melody": "facebook/musicgen-melody",
    "tiny-stereo": None,
    "stereo-medium": "facebook/musicgen-stereo-medium",
}


@lru_cache(maxsize=1)
def metric_specs() -> dict[str, dict[str, Any]]:
    """``{name: spec dict}`` of the four real metrics, from their classes (``<Metric>.spec.as_dict()``)."""
    from evalkit.metrics.chroma import ChromaCosineSimilarity
    from evalkit.metrics.clap import ClapScore
    from evalkit.metrics.fad import FAD
    from evalkit.metrics.kld import KLD

    return {c.spec.name: c.spec.as_dict() for c in (FAD, KLD, ClapScore, ChromaCosineSimilarity)}


def card_columns() -> dict[str, str]:
    """``{metric: card column}`` of the real metrics (from their specs)."""
    return {m: s["card_column"] for m, s in metric_specs().items()}


def fake_per_clip(n_clips: int, seed: int = 0, kld=(1.4, 0.3), clap=(0.27, 0.05), chroma=(0.44, 0.1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"clip{i:04d}" for i in range(n_clips)]
    return pd.DataFrame(
        {
            "id": ids,
            "caption": [f"a test caption {i}" for i in range(n_clips)],
            "audio_path": [f"audio/{i}.flac" for i in ids],
            "reference_path": [f"/refs/{i}.wav" for i in ids],
            "seed": np.arange(n_clips),
            "kld": rng.normal(*kld, n_clips),
            "kld_qp": rng.normal(kld[0], kld[1], n_clips),
            "clap": rng.normal(*clap, n_clips),
            "chroma": np.clip(rng.normal(*chroma, n_clips), 0, 1),
            "chroma_frames": rng.integers(60, 80, n_clips),
        }
    )


def fake_embeddings(ids, dim: int = 8, windows: int = 3, shift: float = 0.5, seed: int = 0):
    """Generated windows ~ N(shift·1, I), reference windows ~ N(0, I) (population FAD = dim·shift²)."""
    rng = np.random.default_rng(seed + 1000)
    gen = {i: rng.normal(shift, 1.0, (windows, dim)) for i in ids}
    ref = {i: rng.normal(0.0, 1.0, (windows, dim)) for i in ids}
    return gen, ref


def fad_of(gen: dict, ref: dict) -> float:
    dim = next(iter(gen.values())).shape[1]
    g, r = GaussianStats(dim), GaussianStats(dim)
    for k in sorted(gen):
        g.update(gen[k])
    for k in sorted(ref):
        r.update(ref[k])
    return frechet_distance(*g.mean_cov(), *r.mean_cov())


def _mean_value(clips: pd.DataFrame, spec: Mapping[str, Any]) -> float | None:
    col = spec.get("value_column") or spec["primary"]
    if col not in clips:
        return None
    w = clips[spec["weight"]] if spec.get("weight") and spec["weight"] in clips else np.ones(len(clips))
    return float((clips[col] * w).sum() / w.sum())


def _write_arrays(folder: Path, specs: Mapping[str, Mapping], metrics, embeddings, legacy: bool, values: dict,
                  errors: dict) -> None:
    """``embeddings/<metric>.npz`` of each Fréchet metric (generated side, reference side) and its headline value."""
    gen, ref = embeddings
    for m in metrics:
        spec = specs[m]
        if spec.get("aggregate") != "frechet" or not spec.get("arrays"):
            continue
        pre = "_" if legacy else ""
        arrays = {f"{i}/{pre}{spec['arrays'][0]}": gen[i] for i in gen}
        if len(spec["arrays"]) > 1:
            arrays.update({f"{i}/{pre}{spec['arrays'][1]}": ref[i] for i in ref})
        (folder / "embeddings").mkdir(exist_ok=True)
        np.savez(folder / "embeddings" / f"{m}.npz", **arrays)
        if m not in values:
            try:
                values[m] = fad_of(gen, ref)
            except ValueError as exc:  # fewer windows than dimensions: the run could not compute it either
                values[m] = None
                errors.setdefault(m, f"FrechetError: {exc}")


def _entry(m: str, spec: Mapping[str, Any], value, *, n: int, protocol, sha, random_weights: bool, error,
           legacy: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "value": None if error else value, "protocol": protocol, "n_clips": n, "n_skipped": 0,
        "checkpoint": "random" if random_weights else f"{m}.ckpt", "checkpoint_sha256": sha,
        "random_weights": random_weights,
    }
    if error:
        entry["error"] = error
    else:
        entry["values"] = {spec["primary"]: value}
    if legacy:  # the format before MetricSpec: the facts at the top level, no spec block
        entry.update(primary=spec["primary"], higher_is_better=spec["higher_is_better"],
                     card_column=spec["card_column"])
    else:
        entry["spec"] = dict(spec)
    return entry


def make_run(
    folder,
    model: str = "small",
    *,
    n_clips: int = 40,
    seed: int = 0,
    metrics=("fad", "kld", "clap", "chroma"),
    values: dict[str, float] | None = None,
    random_weights: bool = False,
    protocol: str | dict[str, str] = "audiocraft",
    checkpoint_sha256: str | dict[str, str] = "0" * 64,
    clips: pd.DataFrame | None = None,
    embeddings: tuple[dict, dict] | None | bool = True,
    dim: int = 8,
    shift: float = 0.5,
    hub_id: Any = "default",
    extra_summary: dict | None = None,
    specs: Mapping[str, MetricSpec | Mapping[str, Any]] | None = None,
    errors: Mapping[str, str] | None = None,
    skipped: Mapping[str, str] | None = None,
    legacy: bool = False,
    skipped_with_spec: bool = False,
) -> Path:
    """A finished run folder. ``specs`` adds or replaces metric specs (invented metrics); ``errors`` marks metrics
    asked for and not computed (``{"fad": "MetricUnavailable: ..."}``); ``skipped`` adds metrics not applicable to
    the run (``{"chroma": "melody.source=none"}``, no spec, as the run writes them today; with its spec when
    ``skipped_with_spec``); ``legacy`` writes the summary format of an evalkit before MetricSpec (no spec blocks;
    per-clip arrays keyed ``"<id>/_fad_gen_emb"``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    all_specs = dict(metric_specs())
    all_specs.update({k: (v.as_dict() if isinstance(v, MetricSpec) else dict(v)) for k, v in (specs or {}).items()})
    clips = fake_per_clip(n_clips, seed) if clips is None else clips
    ids = list(clips["id"])
    values, errors = dict(values or {}), dict(errors or {})
    if embeddings is True:
        embeddings = fake_embeddings(ids, dim=dim, shift=shift, seed=seed)
    if embeddings:
        _write_arrays(folder, all_specs, metrics, embeddings, legacy, values, errors)
    for m in metrics:
        if all_specs[m].get("aggregate") == "mean":
            values.setdefault(m, _mean_value(clips, all_specs[m]))
    keep = [c for c in clips.columns if c in ("id", "caption", "audio_path", "reference_path", "seed", "skip_reason",
                                              "audit_flags", "reference_audit_flags")
            or any(c == m or c.startswith(m + "_") for m in metrics)]
    clips[keep].to_parquet(folder / "clips.parquet", index=False)

    def per(x, m):
        return x[m] if isinstance(x, dict) else x

    entries = {m: _entry(m, all_specs[m], values.get(m), n=len(ids), protocol=per(protocol, m),
                         sha=per(checkpoint_sha256, m), random_weights=random_weights, error=errors.get(m),
                         legacy=legacy) for m in metrics}
    entries.update({m: {"value": None, "skipped": why, **({"spec": dict(all_specs[m])} if skipped_with_spec else {})}
                    for m, why in (skipped or {}).items()})
    summary = {
        "evalkit_version": "0.1.0",
        "run_dir": str(folder),
        "model": {"name": model, "hub_id": HUB.get(model) if hub_id == "default" else hub_id,
                  "random_weights": random_weights},
        "random_weights": random_weights,
        "n_clips": len(ids),
        "n_missing_reference": 0,
        "metrics": entries,
    }
    summary.update(extra_summary or {})
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "config.yaml").write_text(f"model:\n  name: {model}\nseed: {seed}\n")
    (folder / "manifest.json").write_text(json.dumps({"status": "finished", "error": None, "seed": seed,
                                                      "fabricated": True}))
    return folder


def make_unfinished_run(folder, status: str = "failed", error: str | None = "RuntimeError: CUDA out of memory",
                        model: str = "medium") -> Path:
    """A run folder without summary.json: ``config.yaml`` and ``manifest.json`` with ``status`` (failed|running)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(f"model:\n  name: {model}\n")
    (folder / "manifest.json").write_text(json.dumps({"status": status, "error": error,
                                                      "start": "2026-11-30T10:00:00+00:00"}))
    return folder
