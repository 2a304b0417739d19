"""The clip audit: every generated and reference clip is checked as a file once, and again on what each metric scores.

Two points, one set of flags (:data:`FLAGS`), each with the reason written per clip:

**The file** (:func:`audit_file`, once, after decoding): ``unreadable`` (missing, empty, cut off, not audio),
``non_finite`` (NaN or infinite samples, a known failure of fp16 generation), ``clipped`` (samples beyond ±1 in a
float file), ``dc_offset`` (a channel's mean beyond ``dc_offset_dbfs``), ``dead_channel`` (one channel silent or
stuck while another is not), ``short`` / ``long`` (the duration differs from the one it is compared with by more
than ``duration_tolerance_s``: a generated clip against its reference, or without one the protocol's
``duration_s``; a reference against ``duration_s``).

**What each metric scores** (:func:`audit_scored`, at the audit point of the metric's input path
(:mod:`evalkit.input_path`): after the solver's post-processing, the channel view, the resampling and the downmix,
before the final gain): ``silent`` (RMS below ``silent_below_dbfs``: all channels silent, or channels that cancel
in the downmix), ``constant`` (the AC part below ``constant_below_dbfs`` while the DC is not: stuck, a DC offset that
loudness normalisation and the clamp turned into a constant, NaN written to int16), ``clamped`` (the path's clamp
step changed more than ``clamped_share`` of the samples), ``dead_channel`` (for a metric that scores the clip's own
channels), ``low_sample_rate`` (the file's Nyquist frequency is below the band the metric's front end analyses: a
clip sampled at 8 kHz has nothing above 4 kHz where VGGish looks up to 7.5 kHz).

The policy (``audit.skip``, default ``[non_finite, silent, constant, unreadable, clamped]``) says which flags keep a
clip from a metric: a flagged file from every metric, a flag at a metric's audit point from that metric, each skip
with its reason; the other flags are scored as the protocol does and listed. The same policy covers both sides,
every metric, generation and folder mode. Silent all-zero audio would otherwise score chroma 1.0 (all-zero frames
map to the note C) and be scored by KLD and CLAP as if it were music.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

#: every flag, in the order clips.parquet and summary.json list them
FLAGS = ("non_finite", "silent", "constant", "clipped", "short", "long", "unreadable", "clamped", "dc_offset",
         "dead_channel", "low_sample_rate")
DEFAULT_SKIP = ("non_finite", "silent", "constant", "unreadable", "clamped")


@dataclass(frozen=True)
class AuditSettings:
    """``audit`` in the config (``conf/config.yaml``)."""

    skip: tuple[str, ...] = DEFAULT_SKIP
    silent_below_dbfs: float = -70.0
    constant_below_dbfs: float = -70.0
    clamped_share: float = 0.01
    dc_offset_dbfs: float = -30.0
    duration_s: float | None = 10.0
    duration_tolerance_s: float = 0.05

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> "AuditSettings":
        """From the config's ``audit`` node; a missing key takes its default (``skip`` too: ``[]`` skips nothing)."""
        skip = tuple(node.get("skip") or ()) if "skip" in node else DEFAULT_SKIP
        unknown = sorted(set(skip) - set(FLAGS))
        if unknown:
            raise ValueError(f"audit.skip={list(skip)}: unknown flags {unknown}; known: {list(FLAGS)}")

        def num(key, default):
            v = node.get(key, default)
            try:
                return None if v is None else float(v)
            except (TypeError, ValueError):
                raise ValueError(f"audit.{key}={v}: not a number") from None

        share = num("clamped_share", 0.01)
        if not 0 <= share <= 1:
            raise ValueError(f"audit.clamped_share={share}: a share of samples, in [0, 1]")
        return cls(skip=skip, silent_below_dbfs=num("silent_below_dbfs", -70.0),
                   constant_below_dbfs=num("constant_below_dbfs", -70.0), clamped_share=share,
                   dc_offset_dbfs=num("dc_offset_dbfs", -30.0), duration_s=num("duration_s", None),
                   duration_tolerance_s=num("duration_tolerance_s", 0.05))


@dataclass
class Audit:
    """The flags of one clip (in :data:`FLAGS` order) with a reason each, its duration and format."""

    flags: dict[str, str] = field(default_factory=dict)
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None

    def flag(self, name: str, reason: str) -> None:
        self.flags[name] = reason

    @property
    def names(self) -> list[str]:
        return [f for f in FLAGS if f in self.flags]

    def blocking(self, settings: AuditSettings) -> list[str]:
        """The flags that keep this clip from the metrics it was audited for."""
        return [f for f in self.names if f in settings.skip]

    def reason(self, flags) -> str:
        return "; ".join(f"{f} ({self.flags[f]})" for f in flags)


def dbfs(x: float) -> str:
    return "-inf dBFS" if x <= 0 else f"{20 * math.log10(x):.1f} dBFS"


def _level(db: float) -> float:
    return 10 ** (db / 20)


def audit_file(wav, sample_rate: int, settings: AuditSettings, expected_s: float | None,
               expected_what: str) -> Audit:
    """The file-level flags of a decoded clip. ``wav``: ``[C, T]`` as read; ``expected_s``: the duration it should
    have (``expected_what`` says whose: "its reference", "the protocol")."""
    import torch

    a = Audit(duration_s=wav.shape[-1] / float(sample_rate), sample_rate=int(sample_rate), channels=int(wav.shape[0]))
    # one pass for finiteness and peak (min/max propagate NaN and reach inf); the rest only when something is off
    lo, hi = (float(v) for v in torch.aminmax(wav)) if wav.numel() else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(wav)).sum())
        a.flag("non_finite", f"{bad} of {wav.numel()} samples are NaN or infinite")
        return a
    peak = max(-lo, hi)
    if peak > 1.0:
        n = int((wav.abs() > 1.0).sum())
        a.flag("clipped", f"{n} samples beyond ±1 (peak {peak:.3g})")
    n = wav.shape[-1]
    if n:
        sq = torch.linalg.vector_norm(wav, dim=-1, dtype=torch.float64).pow(2)  # per channel, float64 sums
        means = wav.sum(-1, dtype=torch.float64) / n
        worst = int(means.abs().argmax())
        if abs(float(means[worst])) > _level(settings.dc_offset_dbfs):
            a.flag("dc_offset", f"channel {worst + 1} has a DC offset of {float(means[worst]):.4g} "
                                f"({dbfs(abs(float(means[worst])))} > {settings.dc_offset_dbfs:g} dBFS)")
        _dead_channels(a, sq, means, n, settings)
    _duration_flags(a, settings, expected_s, expected_what)
    return a


def _dead_channels(a: Audit, sq, means, n: int, settings: AuditSettings) -> None:
    """``dead_channel``: one channel silent (RMS) or stuck (AC part) below the thresholds while another is not."""
    if sq.shape[0] < 2:
        return
    rms = (sq / n).sqrt()
    std = (sq / n - means.pow(2)).clamp_min(0).sqrt()
    dead = [(i, "silent", float(rms[i])) if float(rms[i]) < _level(settings.silent_below_dbfs) else
            (i, "stuck", float(std[i])) for i in range(sq.shape[0])
            if float(std[i]) < _level(settings.constant_below_dbfs)]
    alive = [i for i in range(sq.shape[0]) if float(std[i]) >= _level(settings.constant_below_dbfs)]
    if dead and alive:
        a.flag("dead_channel", "; ".join(
            f"channel {i + 1} of {sq.shape[0]} is {how} ({'RMS' if how == 'silent' else 'AC'} {dbfs(v)})"
            for i, how, v in dead) + f" while channel {alive[0] + 1} is at {dbfs(float(rms[alive[0]]))}")


def audit_scored(signal, sample_rate: int, settings: AuditSettings, *, raw=None, view_name: str = "mono",
                 clamped_share: float | None = None, file_sr: int | None = None,
                 band_hz: float | None = None) -> Audit:
    """The flags of what a metric scores: ``signal`` ``[C, T]`` at ``sample_rate``, at the audit point of its input
    path. ``raw``: the file's ``[C, T]`` as read (to explain a silent mix: anti-phase channels, an empty view);
    ``clamped_share``: the share of samples the path's clamp step changed; ``file_sr``/``band_hz``: the file's
    rate and the band the metric analyses (``low_sample_rate``)."""
    import torch

    a = Audit(duration_s=signal.shape[-1] / float(sample_rate), sample_rate=int(file_sr or sample_rate),
              channels=int(signal.shape[0]))
    if signal.numel() and not bool(torch.isfinite(signal).all()):
        a.flag("non_finite", f"{int((~torch.isfinite(signal)).sum())} of {signal.numel()} samples are NaN or infinite")
        return a
    if file_sr and band_hz and file_sr / 2 < band_hz * (1 - 1e-9):
        a.flag("low_sample_rate", f"sampled at {file_sr} Hz: nothing above {file_sr / 2:g} Hz, where the metric "
                                  f"analyses up to {band_hz:g} Hz")
    if clamped_share is not None and clamped_share > settings.clamped_share:
        a.flag("clamped", f"the input path's clamp set {100 * clamped_share:.1f} % of the samples to ±1 "
                          f"(> {100 * settings.clamped_share:g} %): loudness normalisation pushed it beyond full "
                          f"scale (a DC offset, or a very quiet clip with loud peaks)")
    _level_flags(a, signal, settings, raw, view_name)
    return a


def _level_flags(a: Audit, view, settings: AuditSettings, raw, view_name: str) -> None:
    """``silent`` (RMS of the scored signal), ``constant`` (its largest per-channel standard deviation) and
    ``dead_channel`` (per channel), from float64 sums over the samples (no float64 copy of the clip)."""
    import torch

    n = view.shape[-1]
    if view.numel() == 0:
        a.flag("silent", "no samples")
        return
    sq = torch.linalg.vector_norm(view, dim=-1, dtype=torch.float64).pow(2)  # per channel
    rms = math.sqrt(float(sq.sum()) / view.numel()) if sq is not None else 0.0
    silent = _level(settings.silent_below_dbfs)
    if rms < silent:
        a.flag("silent", _silent_reason(rms, raw, settings, view_name))
        return
    if n <= 1:
        std, mean = 0.0, float(view.double().mean())
    else:
        means = view.sum(-1, dtype=torch.float64) / n
        std = float((sq / n - means.pow(2)).clamp_min(0).sqrt().max())
        mean = float(means.mean())
        _dead_channels(a, sq, means, n, settings)
    if std < _level(settings.constant_below_dbfs):
        a.flag("constant", f"stuck at {mean:.4g} (AC {dbfs(std)}, DC {dbfs(abs(mean))})")


def _silent_reason(rms: float, raw, settings: AuditSettings, view_name: str) -> str:
    if raw is None or raw.numel() == 0:
        return f"RMS {dbfs(rms)} < {settings.silent_below_dbfs:g} dBFS"
    channel_rms = raw.double().pow(2).mean(-1).sqrt()
    levels = ", ".join(dbfs(float(r)) for r in channel_rms)
    if float(channel_rms.max()) < _level(settings.silent_below_dbfs):
        return f"RMS {dbfs(rms)} < {settings.silent_below_dbfs:g} dBFS"
    if view_name != "mono":
        why = "its channels are equal (dual mono, or a mono file)" if view_name == "side" else "that channel is silent"
        return (f"the file is not silent (channels {levels}) but its {view_name} signal is (RMS {dbfs(rms)}): {why}; "
                f"channel_view={view_name} has nothing to score here")
    return f"the mono mix has RMS {dbfs(rms)} although the channels have {levels}: they cancel (anti-phase)"


def _duration_flags(a: Audit, settings: AuditSettings, expected_s: float | None, expected_what: str) -> None:
    if expected_s is None or a.duration_s is None:
        return
    gap = a.duration_s - expected_s
    if gap < -settings.duration_tolerance_s:
        a.flag("short", f"{a.duration_s:.3f} s, {expected_what} {expected_s:.3f} s")
    elif gap > settings.duration_tolerance_s:
        a.flag("long", f"{a.duration_s:.3f} s, {expected_what} {expected_s:.3f} s")


def unreadable(reason: str) -> Audit:
    a = Audit()
    a.flag("unreadable", reason)
    return a
