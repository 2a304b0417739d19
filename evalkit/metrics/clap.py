"""CLAP text consistency: cosine similarity of LAION-CLAP audio and text embeddings, averaged over (clip, caption)
pairs. The MusicGen model card's "Text Consistency" column.

Protocol ``audiocraft`` (``audiocraft/metrics/clap_consistency.py: CLAPTextConsistencyMetric``, constants in
``conf/metrics/clap/audiocraft.yaml``): ``convert_audio(..., 48000, 1)`` (julius resample, then channel mean), no
int16 quantisation, HTSAT-base non-fusion CLAP with ``music_audioset_epoch_15_esc_90.14.pt``, RoBERTa tokens
padded/truncated to 77, ``cosine_similarity(eps=1e-8)`` per pair, mean over pairs.

Where evalkit is deliberately different from running audiocraft's code:
- audio longer than 480,000 samples (10 s at 48 kHz) is cropped at a fixed place (``crop: start`` by default),
  where laion_clap picks a random offset, so the same input always gives the same score. MusicCaps clips are 10 s,
  i.e. exactly 480,000 samples, where laion_clap has no randomness and both agree.
- each clip is scored at its own length; audiocraft zero-pads a batch to its longest item (``sizes`` unused), so
  a shorter clip's score there depends on its batch neighbours. Identical when all clips have the same length.
- every clip is paired with its own ``Clip.caption`` (by id), never by file order (frechet-audio-distance's
  ``CLAPScore`` pairs ``os.listdir`` order with the caption list).

Note for the run (``audiocraft/solvers/musicgen.py: evaluate_audio_generation``): audiocraft generates every clip
of a batch for the batch's longest reference, crops to that batch length (not to each clip's ``sizes``),
loudness-normalises, and hands that to all metrics; FAD/KLD/chroma then crop to ``sizes`` themselves, CLAP does
not. So for a reference shorter than its batch's longest (rare in MusicCaps: nearly all clips are 10 s) audiocraft's
CLAP saw the longer generation. This metric scores whatever audio the run gives it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from evalkit.embeddings import build_embedder
from evalkit.metrics.base import Clip, ClipResult, Metric, RunContext
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric

SETTING = "metrics.clap"


@register_metric("clap")
class ClapScore(Metric):
    spec = MetricSpec(
        name="clap", primary="clap", higher_is_better=True, card_column="Text Consistency", decimals=3,
        tolerance="2%", per_clip=("clap",), aggregate="mean", value_column="clap", needs_reference=False,
        needs_captions=True, min_clips=1,
        description="cosine similarity of LAION-CLAP audio and caption embeddings, mean over clips",
    )

    def __init__(self, recipe, device: str | torch.device = "cpu", context: RunContext | None = None) -> None:
        super().__init__(recipe, device, context)
        self.add_state("cosine_sum", ())
        self.eps = float(self.recipe["cosine_eps"])
        self.embedder = build_embedder(self.recipe, f"metrics.{self.name}", self.device)
        self.embedder.network  # noqa: B018  (load now: a broken checkpoint stops the run before any scoring)
        self.build_input(self.embedder.sample_rate, self.embedder.band_hz)

    @property
    def checkpoint(self):
        return self.embedder.checkpoint

    def cosine(self, audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(audio_emb, text_emb, dim=1, eps=self.eps)

    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Cosine similarity of each clip's audio embedding with its own caption's (``clip.caption``; pairs by id).

        Each clip goes through the protocol's input path (audiocraft: the solver's post-processing, julius to 48 kHz,
        channel mean; the audit included), then the embedding's 10 s rule (repeat-padded, cut at the start). Per clip:
        ``clap`` (cosine, in [-1, 1]). A clip with an empty caption or a flagged or failed audio is skipped with the
        reason. Raises ``ValueError`` when a clip id appears twice in one batch (two captions for one audio)."""
        out: dict[str, ClipResult] = {}
        seen: set[str] = set()
        for clip in clips:
            if clip.id in seen:
                raise ValueError(f"clip id {clip.id!r} appears twice in one batch")
            seen.add(clip.id)
        ready = []
        for clip, p, skipped in self.prepare(clips):
            if skipped is not None:
                out[clip.id] = skipped
            elif not isinstance(clip.caption, str) or not clip.caption.strip():
                out[clip.id] = self.skip("empty caption")
            else:
                ready.append((clip, p))
        if not ready:
            return out
        audio = self.embedder.embed([p.generated.wav[0] for _, p in ready])
        text = self.embedder.embed_text([c.caption for c, _ in ready])
        cos = self.cosine(torch.from_numpy(np.concatenate(audio)), text.detach().cpu()).detach().cpu()
        bs = self.embedder.batch_size
        for start in range(0, len(ready), bs):  # summed per batch of the forward pass, as before
            chunk = cos[start:start + bs]
            self.state["cosine_sum"] = self.state["cosine_sum"] + chunk.double().sum().numpy()
        self.state["n_clips"] = self.state["n_clips"] + float(len(ready))
        for (clip, p), value in zip(ready, cos.tolist()):
            out[clip.id] = self.result(p, {"clap": float(value)})
        return out

    def _compute(self) -> dict[str, float]:
        n = float(self.state["n_clips"])
        return {"clap": float(np.float64(self.state["cosine_sum"]) / n)}

    def describe(self) -> dict[str, Any]:
        e = self.embedder
        out = {"protocol": self.recipe.get("protocol", ""), **e.describe(), "tokenizer": e.tokenizer_source,
               "model": e.backbone().describe()["model"], "crop": e.crop, "fill": e.fill,
               "quantize_int16": any("quantize_int16" in step for step in self.input.describe())}
        if getattr(e, "fusion", False):
            out["fusion"] = {"seed": e.fusion_seed, "resize_antialias": e.fusion_antialias}
        return out
