"""KAD: the Kernel Audio Distance (Chung et al. 2025, arXiv 2502.15602) between generated and reference embeddings.

The statistic is ``kadtk`` 1.1.0's ``calc_kernel_audio_distance(x=reference, y=generated)`` (``kadtk/kad.py``): an
unbiased MMD² with a Gaussian RBF kernel (``iq``, ``imq`` as options), the bandwidth the median pairwise distance of
the **generated** set (``torch.median(torch.pdist(y))``, the lower middle value; or a fixed one), ×100. It is
computed in :mod:`evalkit.statistics.kernel` over blocks of rows (a full MusicCaps run, 105,000 windows per side,
fits in a few hundred MB) from every clip's embeddings, with the median measured by ``torch.pdist``'s own arithmetic
(:class:`TorchPdist`), so the bandwidth is exactly the one kadtk uses.

A protocol (``conf/metrics/kad/<protocol>.yaml``) says everything between the file and the number: its embedding
(any of ``conf/embeddings/``: ``metrics.kad.embedding=<name>``), its input path, its windows and kadtk's constants
(``kernel``, ``bandwidth``, ``eps``, ``precision``, ``scale``) and ``embedding_dtype`` (kadtk stores every embedding
as float16 before computing: ``ModelLoader.get_embedding``). The two shipped:

``audiocraft`` (default): the same VGGish windows as the card's FAD (the solver's post-processing, -1 dBFS peak,
int16, 1 s windows every 0.5 s), float32 embeddings. With ``metrics=[fad,kad]`` the windows are embedded once per clip
side (:mod:`evalkit.embeddings.shared`).

``kadtk``: kadtk's own path for VGGish: each file's channel mean, torchaudio's Kaiser resampler to 16 kHz, a 16-bit
wav written and read back, the whole clip in 0.96 s examples, float16 embeddings.

**Not a sum.** KAD needs every embedding at once: :meth:`KAD.update` returns each clip side's embeddings as arrays
(``kad_gen_emb``, ``kad_ref_emb``, saved to ``embeddings/``), its state only counts; the scoring stage hands the
arrays of every clip back (read from the run folder, every rank's and every attempt's, in clip-id order:
:meth:`~evalkit.metrics.base.Metric.keep_arrays`) before :meth:`compute`, so a sharded or resumed run computes from the
same arrays as one process. Per clip (kadtk ``score_individual``): ``kad`` (that clip's frames against every
reference frame, with that clip's bandwidth) and ``kad_bandwidth``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from evalkit.embeddings import build_embedder
from evalkit.embeddings.shared import embed_shared, embedding_key
from evalkit.errors import InputError
from evalkit.metrics.base import Clip, ClipResult, Metric, MetricUnavailable, RunContext, Windows, window_problem
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric
from evalkit.statistics.kernel import KernelSettings, kad_with_clips

EMBEDDING_DTYPES = ("float32", "float16")
#: the embedding of the default protocols (kadtk's and the card's VGGish); another one is named in the table
DEFAULT_EMBEDDING = "vggish"


class KADError(InputError, ValueError):
    """A KAD setting that cannot work; the message names it and the fix."""


class TorchPdist:
    """Pair distances measured by ``torch.pdist`` itself (kadtk's ``median_pairwise_distance``): every pair of a small
    set at once, or chosen pairs ``(i, j)``: ``pdist`` of the rows ``[y_i0, y_j0, y_i1, y_j1, ...]``, of which the
    distances of rows 2k and 2k+1 are kept (``pdist`` computes each pair by the same kernel on the same two operands,
    whatever else the matrix holds, so each value is the one the whole set's ``pdist`` holds)."""

    CHUNK = 64

    def all(self, y: np.ndarray) -> np.ndarray:
        from evalkit.cpu import cpu_threads

        with cpu_threads(1 if len(y) < 1024 else None):  # a clip's 19 frames: not worth waking the thread pool
            return torch.pdist(torch.from_numpy(np.ascontiguousarray(y, np.float32))).numpy()

    def pairs(self, y: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Small calls: on one intra-op thread (waking a thread pool per call costs more than the work)."""
        from evalkit.cpu import cpu_threads

        out = np.empty(len(i), np.float32)
        with cpu_threads(1):
            for s in range(0, len(i), self.CHUNK):
                a, b = i[s:s + self.CHUNK], j[s:s + self.CHUNK]
                rows = torch.from_numpy(np.ascontiguousarray(y[np.stack([a, b], 1).reshape(-1)], np.float32))
                n, k = 2 * len(a), 2 * np.arange(len(a))
                out[s:s + len(a)] = torch.pdist(rows).numpy()[n * k - k * (k + 1) // 2]  # pair (2k, 2k + 1)
        return out


@register_metric("kad")
class KAD(Metric):
    set_distance = True
    spec = MetricSpec(
        name="kad", primary="kad", higher_is_better=False, card_column=None, decimals=3, tolerance="5%",
        per_clip=("kad", "kad_bandwidth", "kad_windows", "kad_ref_windows"), arrays=("kad_gen_emb", "kad_ref_emb"),
        aggregate="kernel", needs_reference=True, min_clips=1, section="beyond-the-card", label="KAD",
        description="Kernel Audio Distance (kadtk 1.1.0): unbiased MMD² between generated and reference embeddings "
                    "(VGGish by default), Gaussian kernel with the generated set's median pairwise distance as "
                    "bandwidth, ×100; per clip: kadtk's score_individual",
    )

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu",
                 context: RunContext | None = None) -> None:
        super().__init__(recipe, device, context)
        r = self.recipe
        try:
            self.settings = KernelSettings.from_recipe(r)
        except ValueError as exc:
            raise KADError(f"metrics.kad: {exc}") from None
        self.embedding_dtype = str(r.get("embedding_dtype") or "float32")
        if self.embedding_dtype not in EMBEDDING_DTYPES:
            raise KADError(f"metrics.kad.embedding_dtype={self.embedding_dtype!r}: expected float32 or float16 "
                           f"(kadtk stores float16: ModelLoader.get_embedding)")
        self.per_clip_values = bool(r.get("per_clip", True))
        problem = window_problem(r, "metrics.kad")
        if problem:  # before the embedder loads
            raise KADError(problem)
        self.embedder = build_embedder(r, "metrics.kad", self.device)
        self.embedder.network  # noqa: B018  (load now: a broken checkpoint stops the run before any scoring)
        self.win = Windows.from_recipe(r, self.embedder, "metrics.kad", KADError)
        self.build_input(self.embedder.sample_rate, self.embedder.band_hz, self.embedder.channels)
        self.key = embedding_key(self.embedder, self.input.key, self.win.key)
        if self.embedder.name != DEFAULT_EMBEDDING:  # the table names the embedding (as FAD's does)
            self.spec = dataclasses.replace(type(self).spec, label=f"KAD ({self.embedder.name})")
        for side in ("gen", "ref"):
            self.add_state(f"{side}_n", ())
            self.add_state(f"n_{side}_skipped", ())
        self._own: dict[str, dict[str, np.ndarray]] = {a: {} for a in self.spec.arrays}

    # -- the metric --------------------------------------------------------------------------------------------------
    def kept_arrays(self) -> tuple[str, ...]:
        return self.spec.arrays

    def reset(self) -> None:
        super().reset()
        self._own = {a: {} for a in self.spec.arrays}

    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Embed both sides of every pair through the protocol's input path and windows.

        Per clip: ``kad_windows`` / ``kad_ref_windows`` (embeddings per side) and the arrays ``kad_gen_emb`` /
        ``kad_ref_emb`` (float32 ``[frames, dim]``, rounded through float16 with ``embedding_dtype: float16``). A
        pair the audit or a missing reference keeps from the metric is skipped with the reason; a side too short for
        one embedding is skipped on its own. Unpaired (``pairing: unpaired``), each side is judged on its own; a
        reference-only clip (:attr:`~evalkit.metrics.base.Clip.reference_only`) adds its reference. Raises
        :class:`KADError` for non-finite embeddings."""
        results: dict[str, ClipResult] = {}
        items: list[tuple[Clip, str, torch.Tensor]] = []
        for clip, p, skipped in self.prepare(clips):
            if skipped is not None:
                results[clip.id] = skipped
                continue
            res = self.result(p, {**({} if clip.reference_only else {"kad_windows": 0}), "kad_ref_windows": 0})
            sides, failed = self.counted_sides(clip, p)  # unpaired: a side may be missing or fail on its own
            reasons = [why for _, why in failed]
            for side, _ in failed:
                self.state[f"n_{side}_skipped"] += 1
            for side, what, s in sides:
                x = s.wav.reshape(-1) if s.wav.shape[0] == 1 else s.wav.mean(0)
                short = self.win.too_short(x.shape[-1], self.embedder, what)
                if short:
                    reasons.append(short)
                    self.state[f"n_{side}_skipped"] += 1
                    continue
                items.append((clip, side, self.win.cut(x)))
                if side == "gen":
                    self.state["n_clips"] += 1
            if reasons:
                res.skipped = self.skip("; ".join(reasons)).skipped
            results[clip.id] = res
        for (clip, side, _), e in zip(items, embed_shared(self.embedder, self.key, items)):
            e = self._stored(e)
            self.state[f"{side}_n"] += e.shape[0]
            results[clip.id].values["kad_windows" if side == "gen" else "kad_ref_windows"] = int(e.shape[0])
            results[clip.id].arrays[f"kad_{side}_emb"] = e
            self._own[f"kad_{side}_emb"][clip.id] = e
        return results

    def _stored(self, e: np.ndarray) -> np.ndarray:
        """The values KAD computes from: float32, through float16 first with ``embedding_dtype: float16``."""
        if not np.isfinite(e).all():
            raise KADError(f"{self.embedder.name} produced NaN or infinite embeddings")
        e = np.asarray(e, np.float32)
        if self.embedding_dtype == "float16":
            e = e.astype(np.float16).astype(np.float32)
            if not np.isfinite(e).all():
                raise KADError(f"metrics.kad.embedding_dtype=float16: {self.embedder.name} embeddings overflow "
                               f"float16 (|x| > 65504)")
        return e

    def _arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(generated, reference)`` per-clip arrays: those the scoring stage handed over, else this instance's."""
        got = self.kept if self.kept is not None else self._own
        gen, ref = (dict(sorted((got.get(a) or {}).items())) for a in self.spec.arrays)
        n_gen, n_ref = self.count("gen_n"), self.count("ref_n")
        have = (sum(len(a) for a in gen.values()), sum(len(a) for a in ref.values()))
        if len(gen) != self.count("n_clips") or have != (n_gen, n_ref):
            raise MetricUnavailable(
                f"the kept embeddings ({len(gen)} clips, {have[0]} generated and {have[1]} reference frames) are not "
                f"the scored ones ({self.count('n_clips')} clips, {n_gen} and {n_ref} frames): a file of the run "
                f"folder's embeddings/ is missing or from another run; score again with overwrite=true")
        return gen, ref

    def _compute(self) -> dict[str, float]:
        gen, ref = self._arrays()
        try:
            res = kad_with_clips(np.concatenate(list(ref.values())) if ref else np.zeros((0, 1)), list(gen.values()),
                                 self.settings, distances=TorchPdist(), per_clip=self.per_clip_values,
                                 threads=torch.get_num_threads())
        except ValueError as exc:
            raise MetricUnavailable(f"KAD: {exc}") from exc
        if self.per_clip_values:
            self.clip_values = {cid: {"kad": float(v), "kad_bandwidth": float(b)}
                                for cid, v, b in zip(gen, res.clip_values, res.clip_bandwidths)}
            lone = int(np.isnan(res.clip_values).sum())
            if lone:
                self.warnings.append(f"{lone} clip(s) with fewer than 2 embeddings have no per-clip KAD (kadtk's "
                                     f"score_individual needs 2 frames for a bandwidth)")
        if res.bandwidth == 0:
            self.warnings.append("the bandwidth (median pairwise distance of the generated embeddings) is 0: more "
                                 "than half the pairs of generated frames are identical; the kernel is then 0 "
                                 "between any two different frames")
        skipped = {f"n_{s}_skipped": self.count(f"n_{s}_skipped") for s in ("gen", "ref")}
        return {"kad": float(res.value), "bandwidth": res.bandwidth, "gamma": res.gamma, "kernel_xx": res.xx,
                "kernel_yy": res.yy, "kernel_xy": res.xy, "n_gen_windows": res.n, "n_ref_windows": res.m,
                **skipped}

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.recipe.get("protocol", ""), **self.embedder.describe()}


__all__ = ["KAD", "KADError", "TorchPdist"]
