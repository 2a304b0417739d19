"""Audiobox Aesthetics: four scores per generated clip, with no reference - CE (content enjoyment), CU (content
usefulness), PC (production complexity), PQ (production quality), each on the 1-10 scale of the human ratings the
model was trained on (Tjandra et al., 2025, arXiv 2502.05139). evalkit's own table (not on the MusicGen card).

Protocol ``audiobox-aesthetics`` (``conf/metrics/aesthetics/audiobox-aesthetics.yaml``): the package's
``AesPredictor.forward`` (audiobox-aesthetics 0.0.4, ``infer.py``) on each file as read: every channel resampled to
16 kHz by ``torchaudio.functional.resample`` with its defaults, then the mean over channels, no normalisation; the
embedder (:mod:`evalkit.embeddings.aesthetics`) scores the 10 s chunks and takes their length-weighted mean.

Per clip: ``aesthetics_ce``, ``aesthetics_cu``, ``aesthetics_pc``, ``aesthetics_pq``. The numbers: the mean of each
over the scored clips. The headline is PQ (production quality: the axis about the signal - clean, undistorted,
well-mixed - which is what generated audio most often lacks, while CE/CU judge the content and PC its complexity,
which a good generation need not maximise); the other three are reported beside it (``spec.also``), each with its
own bootstrap interval over clips.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from evalkit.embeddings import build_embedder
from evalkit.metrics.base import Clip, ClipResult, Metric, RunContext
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric

#: compute() keys, per-clip columns and labels, in the embedder's order (CE, CU, PC, PQ)
AXES = (("ce", "CE (content enjoyment)"), ("cu", "CU (content usefulness)"), ("pc", "PC (production complexity)"),
        ("pq", "PQ (production quality)"))


@register_metric("aesthetics")
class Aesthetics(Metric):
    spec = MetricSpec(
        name="aesthetics", primary="pq", higher_is_better=True, card_column=None, decimals=2, tolerance="0.1",
        per_clip=tuple(f"aesthetics_{k}" for k, _ in AXES), aggregate="mean", value_column="aesthetics_pq",
        needs_reference=False, min_clips=1, section="aesthetics", label=AXES[3][1],
        also=tuple({"key": k, "name": f"aesthetics_{k}", "value_column": f"aesthetics_{k}", "label": label}
                   for k, label in AXES[:3]),
        description="Audiobox Aesthetics (audiobox-aesthetics 0.0.4: WavLM Base+ with four heads), mean over clips "
                    "of each clip's length-weighted mean over 10 s chunks; headline PQ (production quality), CE, CU "
                    "and PC beside it; 1-10 scale, higher is better, no reference",
    )

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu",
                 context: RunContext | None = None) -> None:
        super().__init__(recipe, device, context)
        self.embedder = build_embedder(self.recipe, f"metrics.{self.spec.name}", self.device)
        self.embedder.network  # noqa: B018  (load now: a broken checkpoint stops the run before any scoring)
        self.build_input(self.embedder.sample_rate, self.embedder.band_hz)
        self.add_state("score_sum", (len(AXES),))

    @classmethod
    def applies_channel_view(cls) -> bool:
        """The package scores the file as read (the mean of its channels), never a channel view."""
        return False

    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Score every generated clip (its input path: torchaudio's resampler to 16 kHz per channel, then the mean
        over channels; the audit included). Per clip: ``aesthetics_<axis>`` (float, the package's scale). A clip
        the audit keeps from the metric, or with no samples, is skipped with the reason."""
        out: dict[str, ClipResult] = {}
        ready = []
        for clip, p, skipped in self.prepare(clips):
            if skipped is not None:
                out[clip.id] = skipped
            elif p.generated.wav.shape[-1] == 0:
                out[clip.id] = self.skip("generated audio has no samples")
            else:
                ready.append((clip, p))
        if not ready:
            return out
        scores = self.embedder.embed([p.generated.wav.reshape(-1) for _, p in ready])
        for (clip, p), s in zip(ready, scores):
            row = np.asarray(s, np.float64).reshape(-1)
            if not np.isfinite(row).all():
                raise ValueError(f"{self.embedder.name} produced non-finite scores for {clip.id}")
            self.state["score_sum"] = self.state["score_sum"] + row
            self.state["n_clips"] = self.state["n_clips"] + 1
            out[clip.id] = self.result(p, {f"aesthetics_{k}": float(v) for (k, _), v in zip(AXES, row)})
        return out

    def _compute(self) -> dict[str, float]:
        means = self.state["score_sum"] / float(self.state["n_clips"])
        return {k: float(v) for (k, _), v in zip(AXES, means)}

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.recipe.get("protocol", ""), **self.embedder.describe()}
