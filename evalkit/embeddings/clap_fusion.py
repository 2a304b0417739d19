"""LAION-CLAP's feature-fusion input (``laion_clap`` 1.1.4-1.1.7 ``training/data.py: get_audio_features`` with
``data_truncating="fusion"``, ``data_filling="repeatpad"``, and ``get_mel``): what ``CLAP_Module(enable_fusion=True)
.get_audio_embedding_from_data`` hands the fusion HTSAT (``630k-audioset-fusion-best.pt``, stable-audio-metrics'
CLAP score). :func:`fusion_input` turns one mono 48 kHz waveform into ``(mel_fusion [4, 1001, 64], longer)``:

- the mel (:class:`FusionMel`): ``torchaudio.transforms.MelSpectrogram(sample_rate=48000, n_fft=1024,
  win_length=1024, hop_length=480, center=True, pad_mode="reflect", power=2.0, norm=None, onesided=True, n_mels=64,
  f_min=50, f_max=14000)`` (HTK mel scale, no area normalisation: not the non-fusion HTSAT's torchlibrosa front end),
  then ``AmplitudeToDB(top_db=None)``, as ``[frames, 64]``;
- at most 480,000 samples (10 s; every MusicCaps clip): shorter audio is tiled ``int(480000 / n)`` times and
  zero-padded to 480,000 (``repeatpad``); the mel of that, four times; ``longer = False``. Nothing random;
- longer: the whole clip's mel (``n // 480 + 1`` frames); if that is exactly 1,001 frames (480,000 < n < 480,480),
  four copies and ``longer = False``; else three 1,001-frame chunks whose starts are drawn with ``np.random.choice``
  from the front, middle and back thirds of the possible starts, after the whole mel resized to 1,001 x 64
  (``torchvision.transforms.Resize``, bilinear); ``longer = True``. laion then draws ``np.random.randint`` for a
  waveform crop the fusion model never reads; it is drawn here too, so that the sequence of draws is laion's.

Randomness: laion draws from numpy's global generator, which stable-audio-metrics never seeds, so its score of a
clip longer than 10 s changes from run to run and with the order of the files. evalkit draws from a generator seeded
with the embedding's ``fusion_seed`` for every clip (``numpy.random.RandomState(fusion_seed)``: the legacy global
generator's algorithm, so ``np.random.seed(fusion_seed)`` before laion's call gives the same chunks): the same
clip always gives the same score, in any order, batch or shard.

Resize: ``torchvision.transforms.Resize`` antialiases tensors by default since torchvision 0.17; stable-audio-metrics
pins torchvision 0.16.0, where it did not. ``fusion_resize_antialias`` says which (the protocol: false).
"""
from __future__ import annotations

import numpy as np
import torch

#: laion's ``get_audio_features(max_len=480000)`` and ``audio_cfg`` (``HTSAT-tiny.json``): 10 s at 48 kHz
MAX_LEN = 480000
HOP = 480


class FusionMel(torch.nn.Module):
    """laion's ``get_mel`` for a batch: ``[B, T]`` float32 at 48 kHz -> ``[B, T // 480 + 1, 64]`` log-mel (dB)."""

    def __init__(self, sample_rate: int = 48000, n_fft: int = 1024, hop: int = HOP, n_mels: int = 64,
                 fmin: float = 50.0, fmax: float = 14000.0) -> None:
        super().__init__()
        import torchaudio

        # laion also passes onesided=True, which torchaudio >= 2.x ignores (always one-sided) and warns about
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop, center=True, pad_mode="reflect",
            power=2.0, norm=None, n_mels=n_mels, f_min=fmin, f_max=fmax)
        self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=None)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.to_db(self.mel(waves)).transpose(-1, -2)


def repeat_pad(wav: torch.Tensor, max_len: int = MAX_LEN) -> torch.Tensor:
    """laion's ``repeatpad``: tile ``int(max_len / n)`` times, zero-pad to ``max_len`` (``n <= max_len``)."""
    n = wav.shape[-1]
    if n == 0:
        raise ValueError("empty audio")
    if n < max_len:
        wav = wav.repeat(int(max_len / n))
        wav = torch.nn.functional.pad(wav, (0, max_len - wav.shape[-1]), mode="constant", value=0)
    return wav


def fusion_chunks(mel: torch.Tensor, rng: np.random.RandomState, antialias: bool,
                  max_len: int = MAX_LEN, hop: int = HOP) -> tuple[torch.Tensor, bool]:
    """A long clip's ``mel`` ``[frames, 64]`` -> ``(mel_fusion [4, chunk, 64], longer)`` with laion's draws from
    ``rng`` (see the module doc)."""
    from torchvision.transforms.functional import resize

    chunk = max_len // hop + 1
    total = mel.shape[0]
    if chunk == total:  # laion: "the audio length is larger than max_len but smaller than max_len + hop_size"
        return torch.stack([mel, mel, mel, mel], dim=0), False
    ranges = np.array_split(list(range(0, total - chunk + 1)), 3)
    if len(ranges[1]) == 0:
        ranges[1] = [0]
    if len(ranges[2]) == 0:
        ranges[2] = [0]
    starts = [rng.choice(r) for r in ranges]
    parts = [mel[s:s + chunk, :] for s in starts]
    shrunk = resize(mel[None], [chunk, mel.shape[1]], antialias=bool(antialias))[0]
    return torch.stack([shrunk, *parts], dim=0), True


def fusion_input(wav: torch.Tensor, mel: FusionMel, seed: int, antialias: bool, max_len: int = MAX_LEN
                 ) -> tuple[torch.Tensor, bool]:
    """One mono waveform ``[T]`` (48 kHz) -> ``(mel_fusion [4, 1001, 64], longer)``: laion's fusion input (module
    doc), its random draws from ``numpy.random.RandomState(seed)``."""
    wav = wav.reshape(-1).to(torch.float32)
    n = wav.shape[0]
    if n > max_len:
        rng = np.random.RandomState(int(seed))
        out, longer = fusion_chunks(mel(wav[None])[0], rng, antialias, max_len)
        rng.randint(0, n - max_len + 1)  # laion's waveform crop ("for compatibility"): drawn, not used
        return out, longer
    m = mel(repeat_pad(wav, max_len)[None])[0]
    return torch.stack([m, m, m, m], dim=0), False
