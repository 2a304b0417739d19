"""audiocraft's reading and conversion of audio, and what the MusicGen solver does to the audio before any metric
(the first steps of every ``audiocraft`` protocol: ``conf/postprocess/audiocraft.yaml``).

Transcribed from audiocraft (``facebookresearch/audiocraft``, v1.3):

- ``data/audio.py audio_read``: wav/flac/ogg through soundfile, ``float32``, ``[C, T]``;
- ``data/audio_utils.py convert_audio`` (``julius.resample_frac``, then ``convert_audio_channels``),
  ``normalize_loudness`` (``torchaudio.transforms.Loudness``, BS.1770 in float32; skipped below an RMS of 2e-3),
  ``normalize_audio(strategy='loudness')`` and ``_clip_wav`` (clamp to [-1, 1] in place);
- ``solvers/musicgen.py evaluate_audio_generation``: the dataset hands each reference at the solver's rate (32 kHz,
  ``config/solver/musicgen/default.yaml``) with the model's channels; the generation is cropped to the reference
  (``y_pred[..., :audio.shape[-1]]``, a batch of one pair) and ``normalize_audio(**cfg.generate.audio)``
  (``strategy: loudness``, ``loudness_headroom_db: 14``) is applied to it; the metrics get ``sizes`` = the
  reference's length at 32 kHz.

Two rules audiocraft never needed, since its generations come from the model at 32 kHz, its references from its own
dataset, and its metrics assert equal shapes; they are evalkit's, documented in its protocol files, and this
reference follows them so that it can score the files a user has:

- a generated file not at 32 kHz is post-processed at its own rate (the crop is the reference's duration,
  ``round(n_ref * sr / 32000)`` samples; the loudness is measured at that rate) and each metric's own
  ``convert_audio`` converts it from there; a metric that crops by ``sizes`` (FAD, KLD, chroma) first brings it to
  32 kHz, the solver's rate;
- a generation shorter than its reference is zero-padded to the reference's length (``pad: reference``).

Folder-mode runs have no model: the reference keeps its channels (``model_channels=None``). One knob is not
audiocraft's: ``meter_dtype`` (default None: audiocraft's float32 meter) runs the BS.1770 meter in float64, as evalkit
does, so that a test can separate the meter's float32 error from everything else. Nothing here imports evalkit.
"""
from __future__ import annotations

from pathlib import Path

import torch

SOLVER_RATE = 32000  # config/solver/musicgen/default.yaml sample_rate
LOUDNESS_HEADROOM_DB = 14.0  # generate.audio.loudness_headroom_db
ENERGY_FLOOR = 2e-3  # normalize_loudness(energy_floor=2e-3)


def audio_read(path: str | Path) -> tuple[torch.Tensor, int]:
    """``audio_read`` for the formats soundfile reads: ``[C, T]`` float32 and the file's rate."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(wav).t().contiguous(), int(sr)


def convert_audio_channels(wav: torch.Tensor, channels: int = 2) -> torch.Tensor:
    *shape, src_channels, length = wav.shape
    if src_channels == channels:
        pass
    elif channels == 1:
        wav = wav.mean(dim=-2, keepdim=True)
    elif src_channels == 1:
        wav = wav.expand(*shape, channels, length)
    elif src_channels >= channels:
        wav = wav[..., :channels, :]
    else:
        raise ValueError("The audio file has less channels than requested but is not mono.")
    return wav


def convert_audio(wav: torch.Tensor, from_rate: int, to_rate: int, to_channels: int) -> torch.Tensor:
    import julius

    wav = julius.resample_frac(wav, int(from_rate), int(to_rate))
    return convert_audio_channels(wav, to_channels)


def normalize_loudness(wav: torch.Tensor, sample_rate: int, loudness_headroom_db: float = LOUDNESS_HEADROOM_DB,
                       loudness_compressor: bool = False, energy_floor: float = ENERGY_FLOOR,
                       meter_dtype: torch.dtype | None = None) -> torch.Tensor:
    """audiocraft's ``normalize_loudness``. ``meter_dtype`` (not audiocraft's; None = audiocraft, float32): the dtype
    the BS.1770 meter runs in (``torchaudio.transforms.Loudness`` on ``wav.to(meter_dtype)``); the gain is applied to
    the float32 audio either way."""
    import torchaudio

    energy = wav.pow(2).mean().sqrt().item()
    if energy < energy_floor:
        return wav
    transform = torchaudio.transforms.Loudness(sample_rate)
    input_loudness_db = transform(wav if meter_dtype is None else wav.to(meter_dtype)).item()
    delta_loudness = -loudness_headroom_db - input_loudness_db
    gain = 10.0 ** (delta_loudness / 20.0)
    output = gain * wav
    if loudness_compressor:
        output = torch.tanh(output)
    assert output.isfinite().all(), (input_loudness_db, wav.pow(2).mean().sqrt())
    return output


def normalize_audio_loudness(wav: torch.Tensor, sample_rate: int, loudness_headroom_db: float = LOUDNESS_HEADROOM_DB,
                             meter_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``normalize_audio(wav, strategy='loudness', loudness_headroom_db=14, sample_rate=sr)``: the gain, then
    ``_clip_wav`` (``wav.clamp_(-1, 1)``). ``meter_dtype``: see :func:`normalize_loudness`."""
    wav = normalize_loudness(wav, sample_rate, loudness_headroom_db, meter_dtype=meter_dtype)
    wav.clamp_(-1, 1)
    return wav


def solver_postprocess(gen: torch.Tensor, gen_sr: int, ref: torch.Tensor, ref_sr: int,
                       model_channels: int | None = None, meter_dtype: torch.dtype | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair as ``evaluate_audio_generation`` hands it to the metrics: ``(generated at gen_sr, reference at
    32 kHz)``.

    The reference: ``convert_audio(ref, ref_sr, 32000, model_channels)`` (its own channels when None). The generation:
    cropped to the reference's duration at its own rate, loudness-normalised to -14 LUFS and clamped, zero-padded to
    that length when shorter (see the module doc). ``meter_dtype=torch.float64``: the loudness measured in float64
    (torchaudio's float32 filters are off by up to ~7e-4 dB on 20 s of quiet 48 kHz audio; evalkit measures in
    float64), the one thing that separates this recipe from evalkit's."""
    ref = convert_audio(ref, ref_sr, SOLVER_RATE, model_channels or ref.shape[-2])
    n = int(round(ref.shape[-1] * gen_sr / SOLVER_RATE))
    gen = gen[..., :n].clone()
    gen = normalize_audio_loudness(gen, gen_sr, meter_dtype=meter_dtype)
    if gen.shape[-1] < n:
        gen = torch.nn.functional.pad(gen, (0, n - gen.shape[-1]))
    return gen, ref


def at_solver_rate(gen: torch.Tensor, gen_sr: int) -> torch.Tensor:
    """A post-processed generation at the solver's rate, for the metrics that crop by ``sizes`` (the reference's
    length at 32 kHz): ``convert_audio`` to 32 kHz, its channels kept. Each metric then cuts it as its own code does."""
    if gen_sr == SOLVER_RATE:
        return gen
    return convert_audio(gen, gen_sr, SOLVER_RATE, gen.shape[-2])
