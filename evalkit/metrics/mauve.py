"""MAUVE between generated and reference clips on any embedding: one vector per clip (the embedder's frames pooled
over time), then ``mauve-text`` 0.4.0's statistic (:mod:`evalkit.statistics.mauve`: PCA to 0.9 explained variance,
faiss k-means into ``round(n / 10)`` buckets, the divergence curve's area). evalkit's own table.

Protocol ``mauve-text`` (``conf/metrics/mauve/mauve-text.yaml``) follows MAD's recipe (mad-metric 0.0.6,
``mad_metric/compute_mad.py``; Huang et al., arXiv 2503.16669) with the embedding left open: each file as read,
the mean over channels, resampled to the embedder's rate with soxr_hq (``librosa.load(path, sr=...)``), the whole
clip to the embedder, its frames pooled by ``pool`` (``max`` over time: MAD's ``aggregation='max'``; ``mean``;
``none``: every frame is a vector of its own), then ``mauve.compute_mauve(p_features=generated,
q_features=reference)`` with the package's defaults. Also reported: ``mad = -ln(MAUVE)``, MAD's formula.

**This is not MAD.** MAD is MAUVE on MERT-v1-330M's layer-24 features at 24 kHz; MERT's model code is published
only on the Hugging Face hub (``trust_remote_code``) and no package ships it, so evalkit cannot build it and test it
against its reference here: MAD itself is blocked. ``mauve_mad`` is the same formula on the chosen embedding
(``metrics.mauve.embedding``, VGGish by default), labelled as such.

No bootstrap interval (``aggregate: none``): MAUVE is not a sum over clips, and recomputing it per draw re-runs PCA
and 5 faiss k-means restarts of 500 iterations: 1.5 s at 500 clips per side, 21 s at 5,000 on 2 busy CPU cores
(benchmarks/README.md), i.e. 25 min to 6 h for the report's 1000 draws.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from evalkit.embeddings import build_embedder
from evalkit.embeddings.shared import embed_shared, embedding_key
from evalkit.errors import InputError
from evalkit.metrics.base import Clip, ClipResult, Metric, MetricUnavailable, RunContext
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric
from evalkit.statistics.mauve import MauveError, MauveSettings, mauve, require_faiss

#: how a clip's frames become MAUVE's vectors: one per clip (max or mean over time) or every frame
POOLS = {"max": lambda e: e.max(axis=0, keepdims=True), "mean": lambda e: e.mean(axis=0, keepdims=True),
         "none": lambda e: e}


class MauveSettingError(InputError, ValueError):
    """A MAUVE setting that cannot work; the message names it."""


@register_metric("mauve")
class Mauve(Metric):
    set_distance = True
    spec = MetricSpec(
        name="mauve", primary="mauve", higher_is_better=True, card_column=None, decimals=3, tolerance="0.05",
        per_clip=("mauve_frames", "mauve_ref_frames"), arrays=("mauve_gen_emb", "mauve_ref_emb"), aggregate="none",
        needs_reference=True, min_clips=1, section="mauve", label="MAUVE",
        also=({"key": "mad", "name": "mauve_mad", "label": "-ln MAUVE (MAD's formula; not MERT)",
               "higher_is_better": False, "tolerance": "0.1"},),
        description="MAUVE (mauve-text 0.4.0 compute_mauve defaults) of the generated clips' pooled embeddings "
                    "against the references' (VGGish by default), and -ln MAUVE (MAD's formula on that embedding, "
                    "not MAD: MERT-v1-330M is blocked). No interval: each bootstrap draw would re-run PCA and faiss "
                    "k-means (1.5 s at 500 clips, 21 s at 5,000 on 2 busy CPU cores: 25 min to 6 h for 1000 draws)",
    )
    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu",
                 context: RunContext | None = None) -> None:
        super().__init__(recipe, device, context)
        r, name = self.recipe, self.spec.name
        if str(r["pool"]) not in POOLS:
            raise MauveSettingError(f"metrics.{name}.pool={r['pool']!r}: expected one of {', '.join(POOLS)}")
        self.pool = str(r["pool"])
        self.settings = MauveSettings.from_recipe(r)
        require_faiss()  # before any scoring: the statistic cannot be computed without it
        self.embedder = build_embedder(r, f"metrics.{name}", self.device)
        self.embedder.network  # noqa: B018  (load now: a broken checkpoint stops the run before any scoring)
        self.min_samples = int(getattr(self.embedder, "min_samples", 1))
        self.build_input(self.embedder.sample_rate, self.embedder.band_hz)
        #: whole clips, no windows (KAD's convention for that: [window, hop, window_pad] = [None, None, False]), so a
        #: KAD or FAD on the same embedder and input path reads the same vectors (evalkit/embeddings/shared.py)
        self.key = embedding_key(self.embedder, self.input.key, [None, None, False])
        for side in ("gen", "ref"):
            self.add_state(f"{side}_vectors", ())

    def kept_arrays(self) -> tuple[str, ...]:
        """Every clip's pooled vectors, handed over by the scoring stage (:meth:`Metric.keep_arrays`) from the run
        folder in clip-id order: MAUVE's k-means needs them all at once."""
        return self.spec.arrays

    @classmethod
    def applies_channel_view(cls) -> bool:
        """MAD reads each file as ``librosa.load`` does (the mean over channels), never a channel view."""
        return False

    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Embed both sides of every pair (whole clips, one batched pass), pool each side's frames (``pool``) and
        keep the vectors as the arrays ``mauve_gen_emb`` / ``mauve_ref_emb`` (float32 ``[vectors, dim]``); per clip
        ``mauve_frames`` / ``mauve_ref_frames`` (the embedder's frames pooled). Paired: a pair the audit keeps from
        the metric, or with a side too short for one embedding, is skipped with the reason. Unpaired, and for a
        reference-only clip (:attr:`~evalkit.metrics.base.Clip.reference_only`), each side counts on its own."""
        results: dict[str, ClipResult] = {}
        items: list[tuple[Clip, str, torch.Tensor]] = []
        for clip, p, skipped in self.prepare(clips):
            if skipped is not None:
                results[clip.id] = skipped
                continue
            sides, failed = self.counted_sides(clip, p)  # unpaired: a side may be missing or fail on its own
            paired = self.requires_pairs and not clip.reference_only
            looked = ([("gen", "generated", p.generated), ("ref", "reference", p.reference)] if paired else sides)
            short = {side: f"{what} audio too short for one {self.embedder.name} embedding: {s.wav.shape[-1]} samples "
                           f"at {self.embedder.sample_rate} Hz, needs {self.min_samples}"
                     for side, what, s in looked if s.wav.shape[-1] < self.min_samples}
            if short and paired:  # the pair
                results[clip.id] = self.skip("; ".join(short.values()))
                continue
            reasons = [why for _, why in failed] + list(short.values())
            res = results[clip.id] = self.result(p, {})
            if reasons:
                res.skipped = self.skip("; ".join(reasons)).skipped
            items += [(clip, side, s.wav.reshape(-1)) for side, _, s in sides if side not in short]
        if not items:
            return results
        for (clip, side, _), e in zip(items, embed_shared(self.embedder, self.key, items)):
            cid, e = clip.id, np.asarray(e, np.float32)
            if not e.shape[0] or not np.isfinite(e).all():
                raise MauveError(f"{self.embedder.name} gave {e.shape[0]} frames or non-finite values for {cid}")
            vectors = POOLS[self.pool](e)
            results[cid].values["mauve_frames" if side == "gen" else "mauve_ref_frames"] = int(e.shape[0])
            results[cid].arrays[f"mauve_{side}_emb"] = np.ascontiguousarray(vectors, np.float32)
            self.state[f"{side}_vectors"] = self.state[f"{side}_vectors"] + vectors.shape[0]
            self.state["n_clips"] = self.state["n_clips"] + (side == "gen")
        return results

    def _compute(self) -> dict[str, float]:
        p, q = ((self.kept or {}).get(c) or {} for c in self.kept_arrays())
        have = [sum(len(v) for v in d.values()) for d in (p, q)]
        if len(p) != self.count("n_clips") or have != [self.count("gen_vectors"), self.count("ref_vectors")]:
            raise MetricUnavailable(f"{have[0]} generated and {have[1]} reference vectors kept for "
                                    f"{self.count('n_clips')} scored clips ({self.count('gen_vectors')} and "
                                    f"{self.count('ref_vectors')} scored): the run folder's embeddings/ lacks some "
                                    f"(keep_arrays)")
        gen, ref = np.concatenate([p[k] for k in sorted(p)]), np.concatenate([q[k] for k in sorted(q)])
        try:
            out = mauve(gen, ref, self.settings)
        except MauveError as exc:
            raise MetricUnavailable(str(exc)) from exc
        return {"mauve": out.mauve, "mad": out.mad, "mauve_star": out.mauve_star,
                "frontier_integral": out.frontier_integral, "frontier_integral_star": out.frontier_integral_star,
                "num_buckets": out.num_buckets, "n_gen_vectors": len(gen), "n_ref_vectors": len(ref)}

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.recipe.get("protocol", ""), **self.embedder.describe(), "pool": self.pool}
