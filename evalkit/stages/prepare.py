"""Stage 3: a clip as the metrics see it: loaded, resampled, post-processed the protocol's way.

``prepare_clip(prompt, gen_row, reference_path, settings) -> (Clip | None, row)``. ``row`` holds what
``clips.parquet`` records about the clip itself (``skip_reason`` when no metric can score it, ``reference_error``
when its reference file is unusable).

audiocraft's path (``solvers/musicgen.py: evaluate_audio_generation``, ``data/audio_utils.py``): the reference is
handed to the solver at its rate and the model's channels (``audio_dataset.py: convert_audio(wav, sr, 32000, C)``);
the generated clip is cropped to the reference's length, loudness-normalised to ``-loudness_headroom_db`` LUFS
(skipped below ``energy_floor`` RMS) and clamped to [-1, 1] (``postprocess=audiocraft``); ``postprocess=none``
scores the audio as written.
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


@dataclass(frozen=True)
class PrepareSettings:
    """What the preparation of a clip depends on (from the run's ``postprocess`` group and model)."""

    postprocess: Mapping[str, Any]
    model_channels: int | None

    @classmethod
    def from_spec(cls, spec: RunSpec) -> "PrepareSettings":
        ch = spec.model.get("channels")
        return cls(postprocess=spec.postprocess, model_channels=int(ch) if ch else None)


def load_reference(path: Path | None, settings: PrepareSettings) -> tuple[torch.Tensor | None, int | None, str | None]:
    """The reference as the solver receives it: ``([C, T], rate, None)``, or ``(None, None, reason)``."""
    if path is None:
        return None, None, None
    try:
        ref, rsr = load_audio(path)
    except AudioError as exc:
        return None, None, str(exc)
    pp = settings.postprocess
    if pp.get("reference_sample_rate"):
        channels = settings.model_channels or ref.shape[0]
        ref = convert_audio(ref, rsr, int(pp["reference_sample_rate"]), channels)
        rsr = int(pp["reference_sample_rate"])
    return ref, rsr, None


def postprocess(wav: torch.Tensor, sr: int, ref: torch.Tensor | None, rsr: int | None,
                settings: PrepareSettings) -> torch.Tensor:
    """Crop to the reference's length, loudness-normalise, clamp (as the ``postprocess`` group says).
    Raises :class:`AudioError` when the result is unusable."""
    pp = settings.postprocess
    if not pp.get("enabled"):
        return wav
    if pp.get("crop_to_reference") and ref is not None:
        wav = wav[..., :int(round(ref.shape[-1] * sr / rsr))]
    if pp.get("strategy") == "loudness":
        try:
            wav = loudness_normalize(wav, sr, float(pp["loudness_headroom_db"]), float(pp["energy_floor"]),
                                     bool(pp["clamp"]))
        except AudioError as exc:
            raise AudioError(f"post-processing (loudness) failed: {exc}") from exc
        if not torch.isfinite(wav).all():
            raise AudioError("post-processing (loudness) produced non-finite samples")
    return wav


def prepare_clip(prompt: Prompt, gen_row: Mapping[str, Any], reference_path: Path | None,
                 settings: PrepareSettings) -> tuple[Clip | None, dict[str, Any]]:
    """The :class:`Clip` every metric scores, or None with ``row["skip_reason"]``."""
    row: dict[str, Any] = {"id": prompt.id, "skip_reason": None}
    path = gen_row.get("audio_path")
    if not path:
        row["skip_reason"] = gen_row.get("generation_skipped") or "no generated audio"
        return None, row
    try:
        wav, sr = load_audio(path)
    except AudioError as exc:
        row["skip_reason"] = f"generated audio unusable: {exc}"
        return None, row
    ref, rsr, ref_error = load_reference(reference_path, settings)
    if ref_error:
        row["reference_error"] = ref_error
    try:
        wav = postprocess(wav, sr, ref, rsr, settings)
    except AudioError as exc:
        row["skip_reason"] = str(exc)
        return None, row
    return Clip(prompt.id, prompt.caption, wav, sr, ref, rsr), row
