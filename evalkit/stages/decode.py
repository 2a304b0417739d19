"""Stage 3: each prompt's files decoded once and audited as files: a :class:`~evalkit.metrics.base.Clip` or the
reason no metric can score it.

``decode_clip(prompt, gen_row, reference_path, settings) -> (Clip | None, row)``. ``row`` is what ``clips.parquet``
records about the clip itself: ``duration_s``, ``sample_rate``, ``channels``, ``audit_flags`` and the same with the
``reference_`` prefix, ``skip_reason`` (why no metric scores it) and ``reference_problem`` (why no metric compares
it with its reference: the file and the flag).

Both files are read as they are (soundfile, float32 ``[C, T]`` at their own rates) and audited as files
(:func:`evalkit.audit.audit_file`): the reference against the protocol's duration, the generated clip against its
reference's. A file flag of the ``audit.skip`` policy (``unreadable``, ``non_finite``) keeps the clip (generated side)
or its reference (reference side) from every metric, with the reason. Everything else - each protocol's own input
path (the solver's post-processing for the audiocraft protocols, resampling, channels, normalisation) and the audit of
what each metric scores - happens per metric (:mod:`evalkit.input_path`), on the one decoded copy.

A prompt whose generated clip cannot be scored but which owns its reference (``Prompt.owns_reference``) gives a
reference-only clip when the scoring stage asks (``reference_only=True``: a protocol of the run reads a folder of
references, ``references: distinct``): the reference set of such a protocol does not depend on the generated side.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from evalkit.audio import AudioError, load_audio
from evalkit.audit import Audit, AuditSettings, audit_file, unreadable
from evalkit.data.prompts import Prompt
from evalkit.metrics.base import Clip
from evalkit.spec import RunSpec


@dataclass(frozen=True)
class DecodeSettings:
    """What decoding a clip depends on (the run's ``audit`` and the generating model's channels)."""

    model_channels: int | None = None
    audit: AuditSettings = AuditSettings()

    @classmethod
    def from_spec(cls, spec: RunSpec) -> "DecodeSettings":
        ch = spec.model.get("channels")
        return cls(model_channels=int(ch) if ch else None, audit=AuditSettings.from_config(spec.audit))


def load_reference(path: Path | None, settings: DecodeSettings) -> tuple[Any, int | None, Audit | None]:
    """The reference as read and its file audit (against the protocol's duration)."""
    if path is None:
        return None, None, None
    try:
        ref, rsr = load_audio(path, check_finite=False)
    except AudioError as exc:
        return None, None, unreadable(str(exc))
    return ref, rsr, audit_file(ref, rsr, settings.audit, settings.audit.duration_s, "the protocol")


def _record(row: dict[str, Any], prefix: str, audit: Audit | None) -> None:
    row[f"{prefix}duration_s"] = audit.duration_s if audit else None
    row[f"{prefix}sample_rate"] = audit.sample_rate if audit else None
    row[f"{prefix}channels"] = audit.channels if audit else None
    row[f"{prefix}audit_flags"] = audit.names if audit else []


def decode_clip(prompt: Prompt, gen_row: Mapping[str, Any], reference_path: Path | None,
                settings: DecodeSettings, reference_only: bool = False) -> tuple[Clip | None, dict[str, Any]]:
    """The :class:`Clip` the metrics score, or None with ``row["skip_reason"]`` (see the module doc). With
    ``reference_only`` (the prompt owns a reference that a protocol reading a folder of references counts), a clip
    whose generated side cannot be scored is still returned, without audio, for its usable reference
    (:attr:`Clip.reference_only`); ``row["skip_reason"]`` says why it has no generated audio."""
    row: dict[str, Any] = {"id": prompt.id, "skip_reason": None, "reference_problem": None,
                           "audio_path": gen_row.get("audio_path"),
                           "reference_path": str(reference_path) if reference_path else None}
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
        return _reference_only(prompt, ref, rsr, reference_path, settings) if reference_only else None, row
    try:
        wav, sr = load_audio(path, check_finite=False)
    except AudioError as exc:
        gen_audit = unreadable(str(exc))
    else:
        expected = (ref.shape[-1] / rsr, "its reference") if ref is not None else (settings.audit.duration_s,
                                                                                   "the protocol")
        gen_audit = audit_file(wav, sr, settings.audit, *expected)
    _record(row, "", gen_audit)
    blocking = gen_audit.blocking(settings.audit)
    if "unreadable" in gen_audit.flags and "unreadable" not in blocking:
        blocking = ["unreadable"]  # whatever the policy: a file that cannot be read cannot be scored
    if blocking:
        row["skip_reason"] = f"generated {path}: {gen_audit.reason(blocking)}"
        return _reference_only(prompt, ref, rsr, reference_path, settings) if reference_only else None, row
    return Clip(prompt.id, prompt.caption, wav, sr, ref, rsr, model_channels=settings.model_channels, path=str(path),
                reference_path=str(reference_path) if reference_path else None,
                reference_counted=prompt.owns_reference), row


def _reference_only(prompt: Prompt, ref, rsr: int | None, reference_path: Path | None,
                    settings: DecodeSettings) -> Clip | None:
    if ref is None:
        return None
    return Clip(prompt.id, prompt.caption, None, None, ref, rsr, model_channels=settings.model_channels,
                reference_path=str(reference_path), reference_counted=True)
