"""KLD: KL divergence between PaSST's AudioSet label distributions of generated and reference audio.

The whole recipe, per protocol (constants in ``conf/metrics/kld/<protocol>.yaml``, each naming its source):

``audiocraft`` (MusicGen model card; ``audiocraft/metrics/kld.py`` after commit 2454f80 / PR 213)
  1. Both clips -> ``convert_audio(wav, sr, 32000, 1)`` (julius, then channel mean); the generated clip is cropped to
     the reference length (``sizes``). Should the generated clip be the shorter one, both are cropped to it.
  2. ``torch.split`` into chunks of 640,000 samples (20 s) without padding; chunks of <= 4,800 samples (0.15 s)
     are dropped. A 10 s clip is one chunk; a 25 s clip two rows (20 s + 5 s).
  3. 20 s PaSST (``hear21passt.base20sec``) logits per chunk, ``softmax`` over the 527 classes: one row per chunk.
  4. Per row ``kl_pq = sum p_ref (log p_ref - log(p_gen + 1e-6))`` (``F.kl_div((q + eps).log(), p)``) and
     ``kl_qp`` the other way. ``kld = kld_pq`` = mean over all rows of all clips, ``kld_qp`` likewise,
     ``kld_both = kld_pq + kld_qp``.
  ``pad_chunks=true`` restores the code before 2454f80: every kept chunk zero-padded to 640,000 samples and the
  softmax outputs averaged over a clip's chunks (one row per clip). The card's KLD moved 1.28 -> 1.42 (small) when
  padding was removed.

``stable-audio-metrics`` (``Stability-AI/stable-audio-metrics: src/passt_kld.py``)
  1. Each clip on its own (no cropping): mean over channels, then ``librosa.resample(res_type="soxr_hq")`` to 32 kHz
     (``librosa.load(sr=32000, mono=True)``), then peak normalisation to -1 dBFS.
  2. 10 s windows, 5 s hop, starts ``range(0, max(step, n - step), step)``; a short window is zero-padded to 10 s
     when longer than 15 % of it (48,000 samples); otherwise (only a whole clip under 1.5 s) it goes in unpadded.
  3. 10 s PaSST (``hear21passt.base``) logits per window, averaged over windows, then softmax: one row per clip.
  4. ``kld = kld_qp = KL(generated ‖ reference) = sum p_gen (log p_gen - log(p_ref + 1e-6))``, mean over clips.

The eps makes KL(p ‖ p) slightly negative, not 0: ``-sum_i p_i log(1 + eps / p_i)``, which lies in
``(-527 eps, 0)``; for the uniform distribution it is ``-log(1 + 527e-6) = -5.2686e-4``.

Numerics: probabilities are float32 as in both references; each row's KL is summed in float64 (audiocraft: float32;
the two differ by ~1e-7 relative). State: float64 sums (``kld_pq_sum``, ``kld_qp_sum``, ``n_rows``, ``n_clips``), so
sharded or resumed runs merge by addition. Inputs of equal length are batched across clips for the forward pass
(batching changes nothing but float rounding: the network treats every input on its own).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from evalkit.embeddings import build_embedder
from evalkit.errors import InputError
from evalkit.metrics.base import Clip, ClipResult, Metric, RunContext
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric

class KLDError(InputError, ValueError):
    """A KLD setting or file that cannot work; the message names it and the fix."""


DIRECTIONS = {
    "reference_generated": "KL(reference ‖ generated): per row sum p_ref·(log p_ref − log(p_gen + eps))",
    "generated_reference": "KL(generated ‖ reference): per row sum p_gen·(log p_gen − log(p_ref + eps))",
}


# ---------------------------------------------------------------------------------------------------------------
# The math, on its own (closed-form tests live in tests/test_kld_math.py)
# ---------------------------------------------------------------------------------------------------------------
def kl_rows(p: torch.Tensor | np.ndarray, q: torch.Tensor | np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``sum_k p_k (log p_k - log(q_k + eps))`` per row, in float64: audiocraft's ``kl_divergence(q, p)``
    (``F.kl_div((q + eps).log(), p, reduction="none").sum(-1)``; terms with ``p_k = 0`` count 0)."""
    p = torch.as_tensor(p).double()
    q = torch.as_tensor(q).double()
    if p.shape != q.shape:
        raise ValueError(f"kl_rows: shapes differ: {tuple(p.shape)} vs {tuple(q.shape)}")
    return (torch.xlogy(p, p) - p * torch.log(q + eps)).sum(-1).numpy()


def split_chunks(wav: torch.Tensor, chunk: int, min_keep: int, pad: bool) -> list[torch.Tensor]:
    """audiocraft ``_process_audio``: ``torch.split(wav, chunk)``, keep chunks longer than ``min_keep`` samples;
    ``pad=True`` (before 2454f80) zero-pads each kept chunk to ``chunk`` samples. ``wav``: ``[T]``."""
    out = []
    for s in torch.split(wav, chunk, dim=-1):
        if s.shape[-1] > min_keep:
            out.append(torch.nn.functional.pad(s, (0, chunk - s.shape[-1])) if pad else s)
    return out


def sliding_windows(wav: torch.Tensor, window: int, hop: int, pad_min_fraction: float) -> list[torch.Tensor]:
    """stable-audio-metrics ``return_probabilities``: starts ``range(0, max(hop, n - hop), hop)``; a window shorter
    than ``window`` is zero-padded to it when longer than ``int(window * pad_min_fraction)`` samples, else kept as
    it is. ``wav``: ``[T]``."""
    n = wav.shape[-1]
    min_pad = int(window * pad_min_fraction)
    out = []
    for start in range(0, max(hop, n - hop), hop):
        w = wav[..., start:start + window]
        if w.shape[-1] < window and w.shape[-1] > min_pad:
            w = torch.nn.functional.pad(w, (0, window - w.shape[-1]))
        out.append(w)
    return out


def collect_rows(logits: torch.Tensor, collect: str) -> torch.Tensor:
    """A clip's segment logits ``[S, C]`` -> probability rows: ``rows`` (softmax per segment, audiocraft),
    ``mean_probs`` (softmax then mean over segments, audiocraft before 2454f80), ``mean_logits`` (mean of logits
    then softmax, stable-audio-metrics)."""
    if collect == "rows":
        return torch.softmax(logits, dim=-1)
    if collect == "mean_probs":
        return torch.softmax(logits, dim=-1).mean(dim=0, keepdim=True)
    if collect == "mean_logits":
        return torch.softmax(logits.mean(dim=0, keepdim=True), dim=-1)
    raise ValueError(f"metrics.kld.collect={collect!r}: expected rows, mean_probs or mean_logits")


# ---------------------------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------------------------
@register_metric("kld")
class KLD(Metric):
    spec = MetricSpec(
        name="kld", primary="kld", higher_is_better=False, card_column="KLD", decimals=2, tolerance="2%",
        per_clip=("kld", "kld_pq", "kld_qp", "kld_both", "kld_rows"), arrays=("kld_gen_probs", "kld_ref_probs"),
        aggregate="mean", value_column="kld", weight="kld_rows", needs_reference=True, min_clips=1,
        description="KL divergence between PaSST's AudioSet label distributions of reference and generated audio "
                    "(mean over PaSST rows: one per 10 s clip)",
    )

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu",
                 context: RunContext | None = None) -> None:
        super().__init__(recipe, device, context)
        r = self.recipe
        self.eps = float(r["kl_eps"])
        self.direction = r["direction"]
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metrics.{self.name}.direction={self.direction!r}: expected one of {sorted(DIRECTIONS)}")
        self.segmenting = r["segmenting"]
        self.collect = r["collect"]
        if r.get("probabilities", "softmax") != "softmax":
            raise ValueError(f"metrics.{self.name}.probabilities={r.get('probabilities')!r}: both protocols take the "
                             f"softmax of PaSST's logits; nothing else is implemented")
        if self.segmenting == "split":
            self.pad_chunks = bool(r.get("pad_chunks") or False)
            if self.pad_chunks:
                self.collect = "mean_probs"  # the pre-2454f80 code averaged the padded chunks' probabilities
        elif self.segmenting == "sliding":
            if r.get("pad_chunks") is not None:
                raise ValueError(f"metrics.{self.name}.pad_chunks applies to the split-chunk protocol (audiocraft), "
                                 f"not to {r.get('protocol')!r}")
            self.pad_chunks = False
        else:
            raise ValueError(f"metrics.{self.name}.segmenting={self.segmenting!r}: expected split or sliding")
        self.embedder = build_embedder(r, f"metrics.{self.name}", self.device)
        self.sample_rate = self.embedder.sample_rate
        self.min_model_samples = self.embedder.min_samples
        self.reference_probabilities_path = str(r["reference_probabilities"]) if r.get("reference_probabilities") \
            else None
        self._ref_probs = self._read_reference_probabilities() if self.reference_probabilities_path else None
        self.build_input(self.sample_rate, self.embedder.band_hz)
        for key in ("kld_pq_sum", "kld_qp_sum", "n_rows"):
            self.add_state(key, ())

    @property
    def checkpoint(self):
        return self.embedder.checkpoint

    @classmethod
    def needs_reference_audio(cls, recipe: Mapping[str, Any]) -> bool:
        """No reference audio when the reference side comes from a probabilities file (``reference_probabilities``)."""
        return not recipe.get("reference_probabilities")

    def _read_reference_probabilities(self) -> dict[str, torch.Tensor]:
        """``reference_probabilities`` (stable-audio-metrics' ``load/passt_kld/*__reference_probabilities.pkl``:
        ``{id: FloatTensor[527]}``, ids ``str`` or ``int``), read with the restricted unpickler
        (:func:`evalkit.safe_pickle.load_tensor_pickle`: tensors, arrays and plain containers only) -> ``{str(id):
        [1, 527] float32}``. Needs a protocol with one probability row per clip; every row must be a finite
        probability distribution over ``dim`` classes (sum 1 within 1e-3); else :class:`KLDError`."""
        from evalkit.safe_pickle import load_tensor_pickle

        setting = f"metrics.{self.name}.reference_probabilities"
        path = self.reference_probabilities_path
        if self.segmenting != "sliding" and not (self.segmenting == "split" and self.pad_chunks):
            raise KLDError(f"{setting}={path}: a probabilities file holds one row per clip, and protocol "
                           f"{self.recipe.get('protocol')!r} has one row per {self.recipe.get('chunk_samples')}-sample "
                           f"chunk: use it with metrics.{self.name}.protocol=stable-audio-metrics")
        table = load_tensor_pickle(path, setting)
        if not isinstance(table, dict) or not table:
            raise KLDError(f"{setting}={path}: expected {{id: probabilities[{self.embedder.dim}]}}, got "
                           f"{type(table).__name__}{' (empty)' if isinstance(table, dict) else ''}")
        out: dict[str, torch.Tensor] = {}
        for k, v in table.items():
            row = torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(1, -1)
            if row.shape[1] != self.embedder.dim or not torch.isfinite(row).all() or (row < 0).any() or \
                    abs(float(row.double().sum()) - 1.0) > 1e-3:
                raise KLDError(f"{setting}={path}: the entry for {k!r} is not a probability distribution over "
                               f"{self.embedder.dim} classes (shape {tuple(np.shape(v))}, sum "
                               f"{float(row.double().sum()):.4g})")
            out[str(k)] = row
        return out

    # -- audio -> model inputs -----------------------------------------------------------------------------------------
    def _segments(self, wav: torch.Tensor, what: str) -> list[torch.Tensor] | str:
        """A side's PaSST inputs (``[T]`` each) by the protocol's segmenting, or why it has none."""
        r = self.recipe
        if self.segmenting == "split":
            segs = split_chunks(wav, int(r["chunk_samples"]), int(r["min_chunk_samples"]), self.pad_chunks)
            if not segs:
                return (f"{what}: {wav.shape[-1]} samples at {self.sample_rate} Hz, shorter than one kept chunk "
                        f"(more than {int(r['min_chunk_samples'])} samples)")
        else:
            segs = sliding_windows(wav, int(r["window_samples"]), int(r["hop_samples"]),
                                   float(r["pad_min_fraction"]))
        short = [s.shape[-1] for s in segs if s.shape[-1] < self.min_model_samples]
        if short:
            return (f"{what}: a {short[0]}-sample window is shorter than PaSST's smallest input "
                    f"({self.min_model_samples} samples at {self.sample_rate} Hz)")
        return segs

    def _reference_side(self, clip: Clip, p) -> list[torch.Tensor] | torch.Tensor | str:
        """The reference's PaSST inputs, or its probability row from ``reference_probabilities`` (``[1, dim]``), or
        why there is none."""
        if self._ref_probs is None:
            return self._segments(p.reference.wav[0], "reference audio")
        row = self._ref_probs.get(str(clip.id))
        if row is None:
            return (f"no reference probabilities for id {clip.id!r} in {self.reference_probabilities_path} "
                    f"({len(self._ref_probs)} ids)")
        return row

    def probabilities(self, clips_segments: Sequence[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Probability rows ``[rows, 527]`` for each clip's list of segments (one batched pass for all)."""
        flat = [s for segs in clips_segments for s in segs]
        lg = self.embedder.embed(flat)
        out, pos = [], 0
        for segs in clips_segments:
            out.append(collect_rows(torch.from_numpy(np.concatenate(lg[pos:pos + len(segs)])), self.collect))
            pos += len(segs)
        return out

    # -- Metric interface -------------------------------------------------------------------------------------------
    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Add each (generated, reference) pair's KL divergences to the sums.

        Each pair goes through the protocol's input path (audiocraft: the solver's post-processing, julius to 32 kHz,
        channel mean, both cut to the shorter; stable-audio-metrics: channel mean, soxr_hq, -1 dBFS peak; the audit
        included), then into PaSST inputs by the protocol's segmenting. Per clip: ``kld`` (the protocol's direction),
        ``kld_pq`` = KL(reference ‖ generated), ``kld_qp`` = KL(generated ‖ reference), ``kld_both`` (nats, mean over
        the clip's PaSST rows) and ``kld_rows``; with ``save_probs`` the arrays ``kld_gen_probs`` / ``kld_ref_probs``
        (float32 ``[rows, 527]``). A pair that cannot be scored (no reference, a flagged or failed side, too short for
        one PaSST input) is skipped with the reason."""
        results: dict[str, ClipResult] = {}
        ready: list[tuple[Clip, Any, list[torch.Tensor], list[torch.Tensor]]] = []
        for clip, p, skipped in self.prepare(clips):
            if skipped is not None:
                results[clip.id] = skipped
                continue
            gen = self._segments(p.generated.wav[0], "generated audio")
            ref = self._reference_side(clip, p)
            why = next((x for x in (gen, ref) if isinstance(x, str)), None)
            if why:
                results[clip.id] = self.skip(why)
                continue
            ready.append((clip, p, gen, ref))
        if not ready:
            return results
        if self._ref_probs is None:
            probs = self.probabilities([segs for _, _, g, r in ready for segs in (g, r)])
        else:  # the reference rows are given: PaSST runs on the generated side only
            probs = [x for gen, (_, _, _, r) in zip(self.probabilities([g for _, _, g, _ in ready]), ready)
                     for x in (gen, r)]
        for k, (clip, prep, _, _) in enumerate(ready):
            p_gen, p_ref = probs[2 * k], probs[2 * k + 1]
            if p_gen.shape != p_ref.shape:  # cannot happen with cropping; stable-audio-metrics has one row each
                results[clip.id] = self.skip(f"row counts differ: {p_gen.shape[0]} vs {p_ref.shape[0]}")
                continue
            if not (torch.isfinite(p_gen).all() and torch.isfinite(p_ref).all()):
                results[clip.id] = self.skip("PaSST gave non-finite probabilities")
                continue
            pq = kl_rows(p_ref, p_gen, self.eps)  # KL(reference ‖ generated)
            qp = kl_rows(p_gen, p_ref, self.eps)  # KL(generated ‖ reference)
            rows = pq.shape[0]
            self.state["kld_pq_sum"] = self.state["kld_pq_sum"] + pq.sum()
            self.state["kld_qp_sum"] = self.state["kld_qp_sum"] + qp.sum()
            self.state["n_rows"] = self.state["n_rows"] + rows
            self.state["n_clips"] = self.state["n_clips"] + 1
            v_pq, v_qp = float(pq.mean()), float(qp.mean())
            res = self.result(prep, {
                "kld": v_pq if self.direction == "reference_generated" else v_qp,
                "kld_pq": v_pq,
                "kld_qp": v_qp,
                "kld_both": v_pq + v_qp,
                "kld_rows": int(rows),
            })
            if self.recipe.get("save_probs"):
                res.arrays["kld_gen_probs"] = p_gen.numpy().astype(np.float32)
                res.arrays["kld_ref_probs"] = p_ref.numpy().astype(np.float32)
            results[clip.id] = res
        return results

    def _compute(self) -> dict[str, float]:
        """Means over rows (chunks; one per clip for 10 s clips and for stable-audio-metrics)."""
        n = float(self.state["n_rows"])
        pq = float(self.state["kld_pq_sum"]) / n
        qp = float(self.state["kld_qp_sum"]) / n
        return {
            "kld": pq if self.direction == "reference_generated" else qp,
            "kld_pq": pq,
            "kld_qp": qp,
            "kld_both": pq + qp,
            "n_rows": n,
            "n_clips": float(self.state["n_clips"]),
        }

    def describe(self) -> dict[str, Any]:
        r = self.recipe
        out = {
            "protocol": r.get("protocol", ""),
            "backbone": f"{r['embedding']} ({r['embedder']['arch']}, input_tdim={r['embedder']['input_tdim']})",
            "direction": DIRECTIONS[self.direction] + f", eps={self.eps:g}",
            "rows": {
                "split": f"{'zero-padded ' if self.pad_chunks else ''}chunks of {r.get('chunk_samples')} samples "
                         f"(> {r.get('min_chunk_samples')} kept), " + (
                             "probabilities averaged per clip" if self.collect == "mean_probs" else "one row each"),
                "sliding": f"windows of {r.get('window_samples')} samples, hop {r.get('hop_samples')}, "
                           f"logits averaged per clip",
            }[self.segmenting],
            "pad_chunks": self.pad_chunks,
        }
        out.update(self.embedder.describe())
        if self.reference_probabilities_path:
            from evalkit.io import sha256_file

            out["reference_probabilities"] = {"file": self.reference_probabilities_path,
                                              "sha256": sha256_file(self.reference_probabilities_path),
                                              "ids": len(self._ref_probs or {})}
        return out
