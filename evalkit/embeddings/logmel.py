"""torchlibrosa's log-mel front end (``Spectrogram`` + ``LogmelFilterBank``) in plain torch, bit for bit.

Two of evalkit's embedding models start with it: LAION-CLAP's HTSAT (:mod:`evalkit.embeddings.clap`: 48 kHz, n_fft
1024, hop 480, 64 mels, 50-14000 Hz) and PANNs' Cnn14 (:mod:`evalkit.embeddings.panns`: 32 kHz, n_fft 1024, hop 320,
64 mels, 50-14000 Hz). Both build it as torchlibrosa 0.1.0 does (``torchlibrosa/stft.py``):

- ``Spectrogram(n_fft, hop_length, win_length=n_fft, window="hann", center=True, pad_mode="reflect", power=2)``: the
  STFT as two strided ``Conv1d`` whose kernels are the float64 DFT matrix ``exp(-2 pi i / n)^(x y)`` times a periodic
  Hann window (``librosa.filters.get_window("hann", n, fftbins=True)``), cast to float32; power = real² + imag²;
- ``LogmelFilterBank(sr, n_fft, n_mels, fmin, fmax, ref=1.0, amin=1e-10, top_db=None)``: ``librosa.filters.mel``
  (Slaney scale and area normalisation, librosa's defaults), then ``10 log10(max(mel, amin)) - 10 log10(max(amin,
  ref))``.

Both stores are *parameters* in torchlibrosa (frozen), so a released checkpoint carries its own copies and the
reference model computes with those: :func:`front_end_from_state` takes them (after checking them against the ones
computed here), as ``load_state_dict`` does in the reference.
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.embeddings.weights import CheckpointError

log = logging.getLogger(__name__)


def stft_kernels(n_fft: int = 1024, win_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """torchlibrosa ``STFT``'s Conv1d kernels ``(real, imag)``, each ``[n_fft // 2 + 1, 1, n_fft]`` float32, built the
    same way (float64 ``omega ** (x * y)`` DFT matrix times a periodic Hann window, then cast), so the spectrogram
    matches torchlibrosa's to the last bit."""
    import librosa

    win_length = win_length or n_fft
    window = librosa.util.pad_center(librosa.filters.get_window("hann", win_length, fftbins=True), size=n_fft)
    x, y = np.meshgrid(np.arange(n_fft), np.arange(n_fft))
    w = np.power(np.exp(-2 * np.pi * 1j / n_fft), x * y)[:, : n_fft // 2 + 1] * window[:, None]
    return (torch.tensor(np.real(w).T, dtype=torch.float32)[:, None, :],
            torch.tensor(np.imag(w).T, dtype=torch.float32)[:, None, :])


def mel_filters(sample_rate: int = 48000, n_fft: int = 1024, n_mels: int = 64, fmin: float = 50.0,
                fmax: float = 14000.0) -> torch.Tensor:
    """torchlibrosa ``LogmelFilterBank.melW``: ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax).T`` with
    librosa's defaults, i.e. the Slaney mel scale (``htk=False``) and Slaney area normalisation (``norm="slaney"``),
    float32, ``[n_fft // 2 + 1, n_mels]``."""
    import librosa

    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False,
                             norm="slaney", dtype=np.float32)
    return torch.tensor(fb.T, dtype=torch.float32)


class TorchlibrosaLogMel(torch.nn.Module):
    """``forward(waves [B, N]) -> [B, 1, T, n_mels]`` log-mel (dB), ``T = N // hop_length + 1``: torchlibrosa's
    ``Spectrogram`` then ``LogmelFilterBank`` with ``top_db=None`` (see the module doc), the same operations in the
    same order, float32. The STFT kernels and the filter bank are non-persistent buffers (``conv_real``,
    ``conv_imag``, ``melW``): they move with ``.to()``; a checkpoint's copies replace them via
    :func:`front_end_from_state`. Raises ValueError for input that is not ``[batch, samples]`` (and torch's own
    error for input shorter than ``n_fft // 2``, which reflect padding cannot pad)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float, fmax: float,
                 ref: float = 1.0, amin: float = 1e-10) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = int(sample_rate), int(n_fft), int(hop_length)
        self.n_mels, self.fmin, self.fmax = int(n_mels), float(fmin), float(fmax)
        self.ref, self.amin = float(ref), float(amin)
        real, imag = stft_kernels(self.n_fft)
        self.register_buffer("conv_real", real, persistent=False)
        self.register_buffer("conv_imag", imag, persistent=False)
        self.register_buffer("melW", mel_filters(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax),
                             persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects [batch, samples], got {tuple(waves.shape)}")
        x = F.pad(waves[:, None, :], pad=(self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real = F.conv1d(x, self.conv_real, stride=self.hop_length)[:, None, :, :].transpose(2, 3)
        imag = F.conv1d(x, self.conv_imag, stride=self.hop_length)[:, None, :, :].transpose(2, 3)
        power = real ** 2 + imag ** 2                      # [B, 1, T, n_fft // 2 + 1]
        mel = torch.matmul(power, self.melW)              # [B, 1, T, n_mels]
        log_mel = 10.0 * torch.log10(torch.clamp(mel, min=self.amin, max=np.inf))
        log_mel -= 10.0 * np.log10(np.maximum(self.amin, self.ref))
        return log_mel


def front_end_from_state(front: TorchlibrosaLogMel, state: Mapping[str, torch.Tensor], keys: Mapping[str, str],
                         setting: str, what: str, error: type[Exception] = CheckpointError) -> dict[str, float]:
    """Put a checkpoint's own front-end tensors into ``front``, as the reference's ``load_state_dict`` does.
    ``keys``: ``{checkpoint key: buffer}`` (buffers ``conv_real``, ``conv_imag``, ``melW``); keys ``state`` lacks are
    left alone. Each tensor is compared with the one computed here first: a shape mismatch or a difference above 1e-3
    of its largest value means another STFT/mel setting than ``what`` (the front end's name, for the message) and
    raises ``error`` naming ``setting`` and the key. Returns ``{checkpoint key: max abs difference}``."""
    diffs: dict[str, float] = {}
    for key, attr in keys.items():
        if key not in state:
            continue
        mine = getattr(front, attr)
        theirs = state[key].detach().to(torch.float32).clone()  # not a view of a memory-mapped file
        if tuple(theirs.shape) != tuple(mine.shape):
            raise error(f"{setting}: {key} has shape {tuple(theirs.shape)}, the {what} front end "
                        f"{tuple(mine.shape)}: the checkpoint was trained with another STFT/mel setting")
        diff = float((theirs - mine).abs().max())
        if not diff <= 1e-3 * float(mine.abs().max()):
            raise error(f"{setting}: {key} differs from the {what} front end computed here by {diff:.3g} (largest "
                        f"value {float(mine.abs().max()):.3g}): the checkpoint was trained with another STFT/mel "
                        f"setting")
        if diff > 0:
            log.info("%s: %s differs from the recomputed one by %.3g; using the checkpoint's, as the reference does",
                     setting, key, diff)
        setattr(front, attr, theirs)  # a registered buffer: stays non-persistent, moves with .to()
        diffs[key] = diff
    return diffs
