"""Stage 3: a clip as the metrics see it: loaded, audited, post-processed the protocol's way, in the run's channel view.

``prepare_clip(prompt, gen_row, reference_path, settings) -> (Clip | None, row)``. ``row`` is what ``clips.parquet``
records about the clip itself: ``duration_s``, ``sample_rate``, ``channels``, ``audit_flags`` and the same with the
``reference_`` prefix, ``skip_reason`` (why no metric scores it) and ``reference_problem`` (why no metric compares it
with its reference: the file and the flag).

1. Both files are read as they are (soundfile) and audited (:mod:`evalkit.stages.audit`): the reference against the
   protocol's duration, the generated clip against its reference's. A flag of the ``audit.skip`` policy keeps the
   clip (generated side) or its reference (reference side) from every metric, with the reason.
2. audiocraft's path (``solvers/musicgen.py: evaluate_audio_generation``, ``data/audio_utils.py``): the reference is
   handed to the solver at its rate and the model's channels (``audio_dataset.py: convert_audio(wav, sr, 32000,
   C)``); the generated clip is cropped to the reference's length, loudness-normalised to ``-loudness_headroom_db``
   LUFS (skipped below ``energy_floor`` RMS), clamped to [-1, 1] and, when shorter than its reference, zero-padded
   to it (audiocraft scores zero-padded batches) - one length rule for every metric (``postprocess=audiocraft``);
   ``postprocess=none`` scores the audio as written.
3. ``channel_view`` (:func:`in_view`, applied by the scorer to the metrics that score it): ``mono`` hands the channels
   over as they are (every protocol takes their mean, the card's way); ``left``, ``right``, ``mid`` ((L+R)/2) and
   ``side`` ((L-R)/2) hand over that one signal, on both sides. The audit measures the view.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from evalkit.audio import AudioError, convert_audio, load_audio, loudness_normalize
from evalkit.data.prompts import Prompt
from evalkit.metrics.base import Clip
from evalkit.spec import RunSpec
from evalkit.stages.audit import Audit, AuditSettings, audit_signal, unreadable


@dataclass(frozen=True)
class PrepareSettings:
    """What the preparation of a clip depends on (from the run's ``postprocess``, ``audit``, ``channel_view`` and
    model)."""

    postprocess: Mapping[str, Any]
    model_channels: int | None
    audit: AuditSettings = AuditSettings()
    channel_view: str = "mono"

    @classmethod
    def from_spec(cls, spec: RunSpec) -> "PrepareSettings":
        ch = spec.model.get("channels")
        return cls(postprocess=spec.postprocess, model_channels=int(ch) if ch else None,
                   audit=AuditSettings.from_config(spec.audit), channel_view=str(spec.channel_view))


def channel_view(wav: torch.Tensor, view: str) -> torch.Tensor:
    """``[C, T]`` -> the signal the metrics score: ``mono`` keeps the channels (the protocols average them), the
    others return ``[1, T]``. A mono clip's left, right and mid are its one channel; its side is zero."""
    if view == "mono":
        return wav
    left, right = wav[:1], wav[1:2] if wav.shape[0] > 1 else wav[:1]
    return {"left": left, "right": right, "mid": (left + right) / 2, "side": (left - right) / 2}[view]


def _scored_signal(wav: torch.Tensor, view: str) -> torch.Tensor:
    """What the audit measures: the view, downmixed as the protocols downmix (mean over channels)."""
    return channel_view(wav, view).mean(dim=0, keepdim=True)


def load_reference(path: Path | None, settings: PrepareSettings) -> tuple[torch.Tensor | None, int | None, Audit | None]:
    """The reference as the solver receives it (its rate converted, the model's channels) and its audit."""
    if path is None:
        return None, None, None
    try:
        ref, rsr = load_audio(path, check_finite=False)
    except AudioError as exc:
        return None, None, unreadable(str(exc))
    audit = audit_signal(ref, rsr, _scored_signal(ref, settings.channel_view), settings.audit,
                         settings.audit.duration_s, "the protocol", settings.channel_view)
    pp = settings.postprocess
    if pp.get("reference_sample_rate") and "non_finite" not in audit.flags:
        ref = convert_audio(ref, rsr, int(pp["reference_sample_rate"]), settings.model_channels or ref.shape[0])
        rsr = int(pp["reference_sample_rate"])
    return ref, rsr, audit


def postprocess(wav: torch.Tensor, sr: int, ref: torch.Tensor | None, rsr: int | None,
                settings: PrepareSettings) -> torch.Tensor:
    """Crop to the reference's length, loudness-normalise, clamp, zero-pad to the reference's length (as the
    ``postprocess`` group says). Raises :class:`AudioError` when the result is unusable."""
    pp = settings.postprocess
    if not pp.get("enabled"):
        return wav
    target = int(round(ref.shape[-1] * sr / rsr)) if (pp.get("match_reference_length") and ref is not None) else None
    if target is not None:
        wav = wav[..., :target]
    if pp.get("strategy") == "loudness":
        try:
            wav = loudness_normalize(wav, sr, float(pp["loudness_headroom_db"]), float(pp["energy_floor"]),
                                     bool(pp["clamp"]))
        except AudioError as exc:
            raise AudioError(f"post-processing (loudness) failed: {exc}") from exc
        if not torch.isfinite(wav).all():
            raise AudioError("post-processing (loudness) produced non-finite samples")
    if target is not None and wav.shape[-1] < target:
        wav = torch.nn.functional.pad(wav, (0, target - wav.shape[-1]))
    return wav


def _record(row: dict[str, Any], prefix: str, audit: Audit | None) -> None:
    row[f"{prefix}duration_s"] = audit.duration_s if audit else None
    row[f"{prefix}sample_rate"] = audit.sample_rate if audit else None
    row[f"{prefix}channels"] = audit.channels if audit else None
    row[f"{prefix}audit_flags"] = audit.names if audit else []


def prepare_clip(prompt: Prompt, gen_row: Mapping[str, Any], reference_path: Path | None,
                 settings: PrepareSettings) -> tuple[Clip | None, dict[str, Any]]:
    """The :class:`Clip` every metric scores, or None with ``row["skip_reason"]`` (see the module doc)."""
    row: dict[str, Any] = {"id": prompt.id, "skip_reason": None, "reference_problem": None}
    ref, rsr, ref_audit = load_reference(reference_path, settings)
    _record(row, "reference_", ref_audit)
    if ref_audit is not None and (ref_audit.blocking(settings.audit) or ref is None):
        flags = ref_audit.blocking(settings.audit) or ref_audit.names
        row["reference_problem"] = f"reference {reference_path}: {ref_audit.reason(flags)}"
        ref, rsr = None, None
    path = gen_row.get("audio_path")
    if not path:
        _record(row, "", None)
        row["skip_reason"] = gen_row.get("generation_skipped") or "no generated audio"
        return None, row
    try:
        wav, sr = load_audio(path, check_finite=False)
    except AudioError as exc:
        gen_audit = unreadable(str(exc))
    else:
        expected = (ref.shape[-1] / rsr, "its reference") if ref is not None else (settings.audit.duration_s, "the protocol")
        gen_audit = audit_signal(wav, sr, _scored_signal(wav, settings.channel_view), settings.audit, *expected,
                                 settings.channel_view)
    _record(row, "", gen_audit)
    blocking = gen_audit.blocking(settings.audit)
    if "unreadable" in gen_audit.flags and "unreadable" not in blocking:
        blocking = ["unreadable"]  # whatever the policy: a file that cannot be read cannot be scored
    if blocking:
        row["skip_reason"] = f"generated {path}: {gen_audit.reason(blocking)}"
        return None, row
    try:
        wav = postprocess(wav, sr, ref, rsr, settings)
    except AudioError as exc:
        row["skip_reason"] = f"generated {path}: {exc}"
        return None, row
    return Clip(prompt.id, prompt.caption, wav, sr, ref, rsr), row


def in_view(clip: Clip, view: str) -> Clip:
    """The clip as the card's metrics score it under ``channel_view`` (the same object for ``mono``)."""
    if view == "mono":
        return clip
    ref = channel_view(clip.reference, view) if clip.reference is not None else None
    return Clip(clip.id, clip.caption, channel_view(clip.audio, view), clip.sample_rate, ref, clip.reference_sr)
