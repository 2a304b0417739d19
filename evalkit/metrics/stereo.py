"""Stereo image: what the card's metrics (which all score the mono downmix) cannot see. evalkit's own measure.

Per clip, for the generated clip and for its reference (``[2, T]`` as the run hands them over: at the solver's rate, the
model's channels, post-processed), with mid ``M = (L + R) / 2`` and side ``S = (L - R) / 2``:

- ``correlation``: Pearson correlation of L and R over the clip (1 for dual mono, -1 for anti-phase; NaN when a channel
  is constant);
- ``side_to_mid_db``: ``10 log10(E[S²] / E[M²])``, floored and capped at ±``db_limit`` (100 dB) for exact mono (S = 0)
  and exact anti-phase (M = 0);
- ``downmix_loss_db``: ``10 log10(((E[L²] + E[R²]) / 2) / E[M²])``, the level lost when the clip is summed to mono (the
  mono-compatibility figure mastering engineers check): 0 dB for dual mono, 10 log10(2) = 3.01 dB for independent
  equal-power channels, +inf ("total loss") for anti-phase;
- the same three in ``window_s`` windows every ``hop_s``: their spread over time (standard deviation, ``*_std``);
- the same three per frequency band (``bands``: low / mid / high, from a ``n_fft`` STFT: a band's statistics are
  those of the channels band-passed to it, computed from the STFT bins by Parseval), since a stereo image that
  collapses in the bass is normal and one that collapses everywhere is not.
A constant-power pan of one source at angle θ (L = cos θ s, R = sin θ s) gives correlation 1, side-to-mid
``20 log10(|cos θ - sin θ| / (cos θ + sin θ))`` and downmix loss ``10 log10(2 / (1 + sin 2θ))``.

Per-clip columns: ``stereo_<stat>`` (generated), ``stereo_ref_<stat>`` (reference), and ``stereo_correlation_gap``
= |correlation - reference correlation|, whose mean over clips is the headline (lower: closer to the reference's
image). ``summary.json`` also gets, for the main statistics, the mean and a bootstrap interval of generated,
reference and their difference (spec ``extra.paired``). Mono clips are skipped with that reason. The metric sees the
clip's channels whatever ``channel_view`` the card's metrics score.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from evalkit.metrics.base import Clip, ClipResult, Metric, MetricUnavailable, RunContext
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric

STATS = ("correlation", "side_to_mid_db", "downmix_loss_db")


def _stats(l2: float, r2: float, lr: float, ll: float, rr: float, n: float, lim: float) -> dict[str, float]:
    """The three statistics from sums: ``l2 = Σ L²``, ``r2 = Σ R²``, ``lr = Σ L R``, ``ll = Σ L``, ``rr = Σ R``
    (``ll``/``rr`` NaN: band sums, already zero-mean)."""
    m2 = (l2 + r2 + 2 * lr) / 4
    s2 = (l2 + r2 - 2 * lr) / 4
    if math.isnan(ll):
        cov, vl, vr = lr, l2, r2
    else:
        cov, vl, vr = lr - ll * rr / n, l2 - ll * ll / n, r2 - rr * rr / n
    corr = cov / math.sqrt(vl * vr) if vl > 0 and vr > 0 else float("nan")
    tiny = 1e-30 * max(l2 + r2, 1e-300)
    if s2 <= tiny:
        stm = -lim
    elif m2 <= tiny:
        stm = lim
    else:
        stm = max(-lim, min(lim, 10 * math.log10(s2 / m2)))
    loss = float("inf") if m2 <= tiny else 10 * math.log10(((l2 + r2) / 2) / m2)
    return {"correlation": max(-1.0, min(1.0, corr)) if not math.isnan(corr) else corr, "side_to_mid_db": stm,
            "downmix_loss_db": loss}


def stereo_statistics(wav: torch.Tensor, lim: float = 100.0) -> dict[str, float]:
    """The three statistics of a ``[2, T]`` clip (float64 sums)."""
    x = wav.double()
    left, right = x[0], x[1]
    return _stats(float(left @ left), float(right @ right), float(left @ right), float(left.sum()),
                  float(right.sum()), float(x.shape[-1]), lim)


def windowed_spread(wav: torch.Tensor, window: int, hop: int, lim: float) -> dict[str, float]:
    """Standard deviation over ``window``-sample windows (every ``hop``) of each statistic (finite values only)."""
    if wav.shape[-1] < window:
        return {f"{k}_std": float("nan") for k in STATS}
    frames = wav.double().unfold(-1, window, hop)  # [2, W, window]
    per = [stereo_statistics(frames[:, i], lim) for i in range(frames.shape[1])]
    out = {}
    for k in STATS:
        v = np.array([p[k] for p in per])
        v = v[np.isfinite(v)]
        out[f"{k}_std"] = float(v.std()) if v.size > 1 else float("nan")
    return out


def band_statistics(wav: torch.Tensor, sample_rate: int, n_fft: int, bands: Mapping[str, Sequence[float]],
                    lim: float) -> dict[str, float]:
    """Each statistic per band, from a Hann STFT of ``n_fft`` (hop ``n_fft // 2``): sums over the band's bins."""
    x = wav.double()
    spec = torch.stft(x, n_fft, n_fft // 2, window=torch.hann_window(n_fft, dtype=torch.float64),
                      return_complex=True)  # [2, F, T]
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate, dtype=torch.float64)
    out = {}
    for name, (lo, hi) in bands.items():
        sel = (freqs >= lo) & (freqs < hi)
        lb, rb = spec[0, sel], spec[1, sel]
        st = _stats(float(lb.abs().pow(2).sum()), float(rb.abs().pow(2).sum()), float((lb * rb.conj()).real.sum()),
                    float("nan"), float("nan"), 1.0, lim)
        out.update({f"{k}_{name}": v for k, v in st.items()})
    return out


@register_metric("stereo")
class StereoImage(Metric):
    spec = MetricSpec(
        name="stereo", primary="correlation_gap", higher_is_better=False, card_column=None, decimals=3,
        tolerance="0.02", aggregate="mean", value_column="stereo_correlation_gap", needs_reference=True,
        min_clips=1, section="stereo",
        per_clip=("stereo_correlation_gap",) + tuple(f"stereo_{p}{k}" for p in ("", "ref_") for k in STATS),
        description="evalkit's own: the stereo image (L/R correlation, side-to-mid, downmix loss) of generated clips "
                    "against their references; the card's metrics score the mono downmix and cannot see it",
        extra={"scatter": {"x": "stereo_correlation", "y": "stereo_side_to_mid_db", "x_ref": "stereo_ref_correlation",
                           "y_ref": "stereo_ref_side_to_mid_db", "x_label": "L/R correlation",
                           "y_label": "side-to-mid (dB)"},
               "paired": [{"name": k, "generated": f"stereo_{k}", "reference": f"stereo_ref_{k}"}
                          for k in STATS + tuple(f"{s}_{b}" for s in STATS for b in ("low", "mid", "high"))]},
    )

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu",
                 context: RunContext | None = None) -> None:
        super().__init__(recipe, device, context)
        r = self.recipe
        self.sample_rate = int(r["sample_rate"])
        self.window = int(round(float(r["window_s"]) * self.sample_rate))
        self.hop = int(round(float(r["hop_s"]) * self.sample_rate))
        self.n_fft = int(r["n_fft"])
        self.bands = {str(k): tuple(float(x) for x in v) for k, v in dict(r["bands"]).items()}
        self.lim = float(r["db_limit"])
        self.build_input(self.sample_rate)
        for key in ("gap_sum", "corr_sum", "ref_corr_sum", "n_total_loss", "n_ref_total_loss"):
            self.add_state(key, ())

    @classmethod
    def applies_channel_view(cls) -> bool:
        return False

    def clip_statistics(self, wav: torch.Tensor) -> dict[str, float]:
        """Every per-clip statistic of a ``[2, T]`` clip at ``sample_rate``."""
        return {**stereo_statistics(wav, self.lim), **windowed_spread(wav, self.window, self.hop, self.lim),
                **band_statistics(wav, self.sample_rate, self.n_fft, self.bands, self.lim)}

    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Stereo statistics of each generated clip and of its reference.

        Each pair goes through the protocol's input path (the solver's post-processing, every channel to
        ``sample_rate``; never the run's channel view) and its audit, which here measures the clip's own channels: an
        anti-phase clip is not silent to this metric, and a clip with a dead or stuck channel (``dead_channel``) has no
        stereo image, so it is skipped with that flag. A clip that does not have exactly two channels is skipped, as is
        a pair without a two-channel reference. Per clip: ``stereo_<stat>`` and ``stereo_ref_<stat>`` for every
        statistic of the module doc (correlation in [-1, 1]; dB values in [-db_limit, db_limit], the downmix loss +inf
        for a total loss) and ``stereo_correlation_gap``. The mean covers exactly the clips scored (``n_clips``)."""
        out: dict[str, ClipResult] = {}
        for clip, p, skipped in self.prepare(clips):
            if skipped is not None:
                out[clip.id] = skipped
                continue
            why = self._not_stereo(p)
            if why:
                out[clip.id] = self.skip(why, {s: dict(a.flags) for s, a in p.audits.items() if a.names})
                continue
            gen = self.clip_statistics(p.generated.wav.float())
            ref = self.clip_statistics(p.reference.wav.float())
            values = {f"stereo_{k}": v for k, v in gen.items()}
            values.update({f"stereo_ref_{k}": v for k, v in ref.items()})
            gap = abs(gen["correlation"] - ref["correlation"])
            if not math.isfinite(gap):  # a constant channel the audit thresholds let through
                out[clip.id] = self.skip("the L/R correlation is undefined (a constant channel)")
                continue
            values["stereo_correlation_gap"] = gap
            self._accumulate(gen, ref, gap)
            out[clip.id] = self.result(p, values)
        return out

    @staticmethod
    def _not_stereo(p) -> str | None:
        for what, s in (("generated clip", p.generated), ("reference", p.reference)):
            n = int(s.wav.shape[0])
            if n != 2:
                kind = "mono" if n == 1 else f"{n}-channel"
                return (f"{what} is {kind} ({n} channel{'s' if n != 1 else ''}): the stereo image needs exactly 2 "
                        f"channels")
            a = p.audits.get("generated" if s is p.generated else "reference")
            if a is not None and "dead_channel" in a.flags:
                return f"{what}: dead_channel ({a.flags['dead_channel']}): no stereo image to measure"
        return None

    def _accumulate(self, gen: dict[str, float], ref: dict[str, float], gap: float) -> None:
        self.state["n_clips"] += 1
        self.state["n_total_loss"] += float(math.isinf(gen["downmix_loss_db"]))
        self.state["n_ref_total_loss"] += float(math.isinf(ref["downmix_loss_db"]))
        self.state["gap_sum"] += gap
        self.state["corr_sum"] += gen["correlation"]
        self.state["ref_corr_sum"] += ref["correlation"]

    def _compute(self) -> dict[str, float]:
        n = float(self.state["n_clips"])
        return {"correlation_gap": float(self.state["gap_sum"]) / n, "correlation": float(self.state["corr_sum"]) / n,
                "reference_correlation": float(self.state["ref_corr_sum"]) / n, "n_clips": n,
                "n_total_downmix_loss": float(self.state["n_total_loss"]),
                "n_reference_total_downmix_loss": float(self.state["n_ref_total_loss"])}

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.recipe.get("protocol", ""), "checkpoint": None, "checkpoint_sha256": None,
                "random_weights": False, "window_s": self.window / self.sample_rate, "bands": self.bands}
