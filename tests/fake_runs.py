"""Fabricated run folders with known numbers, in the run-folder format of notes/common.md (for report/compare tests).

``make_run(folder, ...)`` writes ``summary.json``, ``clips.parquet``, ``embeddings/fad.npz`` (keys
``"<id>/_fad_gen_emb"``, ``"<id>/_fad_ref_emb"``), ``config.yaml`` and ``manifest.json``. Per-clip values and
embeddings are drawn from known distributions (seeded); the summary's headline values are computed from them the way
the metrics do (mean of per-clip values, frame-weighted for chroma; FAD of all generated windows against all
reference windows) unless given explicitly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.metrics.frechet import GaussianStats, frechet_distance

HUB = {
    "small": "facebook/musicgen-small",
    "medium": "facebook/musicgen-medium",
    "large": "facebook/musicgen-large",
    "melody": "facebook/musicgen-melody",
    "tiny-stereo": None,
    "stereo-medium": "facebook/musicgen-stereo-medium",
}
CARD = {"fad": "Frechet Audio Distance", "kld": "KLD", "clap": "Text Consistency", "chroma": "Chroma Cosine Similarity"}
HIB = {"fad": False, "kld": False, "clap": True, "chroma": True}


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
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = fake_per_clip(n_clips, seed) if clips is None else clips
    ids = list(clips["id"])
    values = dict(values or {})
    if embeddings is True:
        embeddings = fake_embeddings(ids, dim=dim, shift=shift, seed=seed)
    if embeddings:
        gen, ref = embeddings
        arrays = {f"{i}/_fad_gen_emb": gen[i] for i in gen}
        arrays.update({f"{i}/_fad_ref_emb": ref[i] for i in ref})
        (folder / "embeddings").mkdir(exist_ok=True)
        np.savez(folder / "embeddings" / "fad.npz", **arrays)
        if "fad" not in values:
            try:
                values["fad"] = fad_of(gen, ref)
            except ValueError:  # fewer windows than dimensions: the run could not compute FAD either
                values["fad"] = None
    for m in ("kld", "clap"):
        if m in clips:
            values.setdefault(m, float(clips[m].mean()))
    if "chroma" in clips:
        w = clips["chroma_frames"] if "chroma_frames" in clips else np.ones(len(clips))
        values.setdefault("chroma", float((clips["chroma"] * w).sum() / w.sum()))
    keep = [c for c in clips.columns if c in ("id", "caption", "audio_path", "reference_path", "seed")
            or any(c == m or c.startswith(m + "_") for m in metrics)]
    clips[keep].to_parquet(folder / "clips.parquet", index=False)

    def per(x, m):
        return x[m] if isinstance(x, dict) else x

    summary = {
        "evalkit_version": "0.1.0",
        "run_dir": str(folder),
        "model": {"name": model, "hub_id": HUB.get(model) if hub_id == "default" else hub_id,
                  "random_weights": random_weights},
        "random_weights": random_weights,
        "n_clips": len(ids),
        "n_missing_reference": 0,
        "metrics": {
            m: {
                "value": values.get(m),
                "primary": m,
                "protocol": per(protocol, m),
                "higher_is_better": HIB[m],
                "card_column": CARD[m],
                "n_clips": len(ids),
                "n_skipped": 0,
                "checkpoint": "random" if random_weights else f"{m}.ckpt",
                "checkpoint_sha256": per(checkpoint_sha256, m),
                "random_weights": random_weights,
                "values": {m: values.get(m)},
            }
            for m in metrics
        },
    }
    summary.update(extra_summary or {})
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "config.yaml").write_text(f"model:\n  name: {model}\nseed: {seed}\n")
    (folder / "manifest.json").write_text(json.dumps({"seed": seed, "fabricated": True}))
    return folder
