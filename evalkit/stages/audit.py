"""The clip audit: every generated and reference clip is checked once, after loading and before any metric.

Flags (:data:`FLAGS`), each with the reason written per clip:

- ``unreadable``  the file is missing, empty, truncated or not audio;
- ``non_finite``  NaN or infinite samples (a known failure of fp16 generation);
- ``silent``      the scored signal (the protocol's mono downmix, or the run's ``channel_view``) has an RMS below
                  ``silent_below_dbfs``: all channels silent, or channels that cancel in the downmix (anti-phase);
- ``constant``    a stuck signal: its AC part (the standard deviation) is below ``constant_below_dbfs`` while its DC
                  offset is not (a DC offset; a full-scale constant, as NaN written to int16 gives);
- ``clipped``     samples beyond ±1 (float files);
- ``short`` / ``long``  the duration differs from the one it is compared with by more than
                  ``duration_tolerance_s``: a generated clip against its reference (or, without a reference, against
                  the protocol's ``duration_s``), a reference against the protocol's ``duration_s``.

The policy (``audit.skip``, default ``[non_finite, silent, constant, unreadable]``) says which flags keep a clip from
every metric; the others are scored as the protocol does and listed. The same policy covers both sides, every metric,
generation and folder mode. Silent all-zero audio would otherwise score chroma 1.0 (all-zero frames map to the note
C) and be scored by KLD and CLAP as if it were music.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

FLAGS = ("non_finite", "silent", "constant", "clipped", "short", "long", "unreadable")


@dataclass(frozen=True)
class AuditSettings:
    """``audit`` in the config (``conf/config.yaml``)."""

    skip: tuple[str, ...] = ("non_finite", "silent", "constant", "unreadable")
    silent_below_dbfs: float = -70.0
    constant_below_dbfs: float = -70.0
    duration_s: float | None = 10.0
    duration_tolerance_s: float = 0.05

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> "AuditSettings":
        skip = tuple(node.get("skip") or ())
        unknown = sorted(set(skip) - set(FLAGS))
        if unknown:
            raise ValueError(f"audit.skip={list(skip)}: unknown flags {unknown}; known: {list(FLAGS)}")
        def num(key, default):
            v = node.get(key, default)
            try:
                return None if v is None else float(v)
            except (TypeError, ValueError):
                raise ValueError(f"audit.{key}={v}: not a number") from None

        return cls(skip=skip, silent_below_dbfs=num("silent_below_dbfs", -70.0),
                   constant_below_dbfs=num("constant_below_dbfs", -70.0), duration_s=num("duration_s", None),
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
        """The flags that keep this clip from every metric."""
        return [f for f in self.names if f in settings.skip]

    def reason(self, flags) -> str:
        return "; ".join(f"{f} ({self.flags[f]})" for f in flags)


def dbfs(x: float) -> str:
    return "-inf dBFS" if x <= 0 else f"{20 * math.log10(x):.1f} dBFS"


def audit_signal(wav: torch.Tensor, sample_rate: int, view: torch.Tensor, settings: AuditSettings,
                 expected_s: float | None, expected_what: str, view_name: str = "mono") -> Audit:
    """Audit a loaded clip. ``wav``: ``[C, T]`` as read; ``view``: ``[C', T]``, the signal the metrics score (the
    mono downmix for the card's protocol); ``expected_s``: the duration it should have (``expected_what`` says whose:
    "its reference", "the protocol"). Returns every flag that applies."""
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
    _level_flags(a, wav, view, settings, view_name)
    _duration_flags(a, settings, expected_s, expected_what)
    return a


def _level_flags(a: Audit, wav: torch.Tensor, view: torch.Tensor, settings: AuditSettings, view_name: str) -> None:
    """``silent`` (RMS of the scored signal) and ``constant`` (its largest per-channel standard deviation), from
    float64 sums over the float32 samples (no float64 copy of the clip)."""
    n = view.shape[-1]
    sq = torch.linalg.vector_norm(view, dim=-1, dtype=torch.float64).pow(2) if view.numel() else None  # per channel
    rms = math.sqrt(float(sq.sum()) / view.numel()) if sq is not None else 0.0
    silent = 10 ** (settings.silent_below_dbfs / 20)
    if rms < silent:
        channel_rms = wav.double().pow(2).mean(-1).sqrt()
        levels = ", ".join(dbfs(float(r)) for r in channel_rms)
        if float(channel_rms.max()) < silent:
            a.flag("silent", f"RMS {dbfs(rms)} < {settings.silent_below_dbfs:g} dBFS")
        elif view_name != "mono":
            why = "its channels are equal (dual mono, or a mono file)" if view_name == "side" else "that channel is silent"
            a.flag("silent", f"the file is not silent (channels {levels}) but its {view_name} signal is "
                             f"(RMS {dbfs(rms)}): {why}; channel_view={view_name} has nothing to score here")
        else:
            a.flag("silent", f"the mono mix has RMS {dbfs(rms)} although the channels have {levels}: they cancel "
                             f"(anti-phase)")
        return
    if n <= 1:
        std, mean = 0.0, float(view.double().mean())
    else:
        means = view.sum(-1, dtype=torch.float64) / n
        std = float((sq / n - means.pow(2)).clamp_min(0).sqrt().max())
        mean = float(means.mean())
    if std < 10 ** (settings.constant_below_dbfs / 20):
        a.flag("constant", f"stuck at {mean:.4g} (AC {dbfs(std)}, DC {dbfs(abs(mean))})")


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
