"""OpenL3 (Cramer et al., ICASSP 2019; Arandjelović & Zisserman's L3-Net audio tower): mel256 / music / 512-d, the
embedding of stable-audio-metrics' FD_openl3 (``Stability-AI/stable-audio-metrics: src/openl3_fd.py``), in PyTorch.

Network and front end: the layout of ``torchopenl3`` 1.0.1 (``torchopenl3/models.py: PytorchOpenl3``; PyPI,
Apache-2.0), so that its released state dict (``torchopenl3_mel256_music_512.pth.tar``) loads as is and a random
state dict drawn for one loads into the other. ``tests/test_openl3.py`` checks embeddings against torchopenl3's own
class and ``get_audio_embedding`` on identical random weights (reference environment).

- front end (kapre 0.1.4's ``Melspectrogram`` as torchopenl3 writes it, :class:`MelFrontEnd`): a 1 s frame of 48,000
  samples zero-padded by 982 on both sides (Keras ``padding="same"`` for 48,000 samples, stride 242), an STFT of
  2,048 points every 242 samples as two strided convolutions with a periodic Hann window (199 frames), the power
  spectrum times a 256-band HTK mel matrix (``librosa.filters.mel(sr=48000, n_fft=2048, n_mels=256, fmin=0,
  fmax=24000, htk=True, norm=1)``), its square root (``power_melgram=1``), ``10 log10(max(x, 1e-10))`` minus the
  frame's maximum, floored at -80 dB;
- network: batch norm, four blocks of two 3x3 convolutions (64, 128, 256, 512 channels; batch norm eps 1e-3, ReLU;
  2x2 max-pools between blocks), the last convolution (``audio_embedding_layer``) max-pooled over its whole
  (32, 24) map: 512 values per frame;
- framing (``torchopenl3/utils.py: preprocess_audio_batch``, = ``openl3/core.py: _preprocess_audio_batch``): with
  ``center``, 24,000 zeros in front; zero-padded at the end to whole hops; frames of 48,000 samples every
  ``hop_s * 48000``: ``1 + ceil((n + 24000 - 48000) / hop)`` frames for n > 24,000 samples, 1 below.

Stereo (stable-audio-metrics ``extract_embeddings``, the batched path of its examples): every channel of a
``[C, T]`` input is framed and embedded on its own and a frame's vector is the channels' vectors side by side
(``concat([L512, R512])``: 1,024-d for ``channels: 2``); the input path gives the embedder ``channels`` channels (a
mono file as L = R, as stable-audio-metrics does).

What this is not: stable-audio-metrics pins ``openl3`` 0.4.2 (TensorFlow, kapre 0.3.7, weights ``*-v0_4_0.h5``),
whose front end is kapre 0.3's ``get_melspectrogram_layer(pad_end=True)``: no padding in front, Slaney mel bands
with Slaney area normalisation, openl3's own kapre-0.1.4 decibel scaling. torchopenl3 ports openl3 0.3.1 (kapre
0.1.4, its README: MAE ~1e-6 against it), and ``openl3==0.4.2`` cannot be installed offline (its ``setup.py``
downloads the weights at build time), so the parity evalkit proves is with torchopenl3's port. FD_openl3 numbers
from these weights are therefore comparable with each other, not digit for digit with numbers published from
openl3 0.4.2 (the gap is unmeasured: README, stable-audio-metrics section).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder
from evalkit.embeddings.weights import CheckpointError, load_strict

#: Layouts of the same class: ``full`` is OpenL3; ``tiny`` shrinks the channels (random weights only: tests, demo).
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {"full": (64, 128, 256, 512), "tiny": (4, 8, 8, 16)}
#: ``AUDIO_POOLING_SIZES['mel256'][512]`` of openl3 and torchopenl3: the last map pooled whole
POOL_512 = (32, 24)


class OpenL3Error(CheckpointError):
    pass


def stft_kernels(n_dft: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """kapre 0.1.4's DFT kernels as torchopenl3 builds them (``CustomSTFT.get_stft_kernels``): ``cos`` / ``-sin`` of
    ``k * 2 pi / n * t`` in float64 times a float32 periodic Hann window, cast to float32, laid out ``[n // 2 + 1, 1,
    n]`` for ``conv1d``."""
    import librosa

    nb = n_dft // 2 + 1
    t = np.arange(n_dft)
    w = np.arange(nb) * 2 * np.pi / float(n_dft)
    window = librosa.filters.get_window("hann", n_dft, fftbins=True).astype(np.float32).reshape(1, -1)
    real = np.multiply(np.cos(w.reshape(-1, 1) * t.reshape(1, -1)), window)
    imag = np.multiply(-np.sin(w.reshape(-1, 1) * t.reshape(1, -1)), window)
    return (torch.tensor(real.astype(np.float32))[:, None, :], torch.tensor(imag.astype(np.float32))[:, None, :])


def mel_basis(sample_rate: int = 48000, n_dft: int = 2048, n_mels: int = 256) -> torch.Tensor:
    """``librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax=sr // 2, htk=True, norm=1)`` (torchopenl3's
    ``CustomMelSTFT``; ``norm=1``: each band scaled to unit sum), float32 ``[n_mels, n_dft // 2 + 1]``. A released
    checkpoint carries its own copy (``speclayer.mel_basis``), which is then used."""
    import warnings

    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Empty filters detected": the lowest HTK bands are narrower than a bin
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_dft, n_mels=n_mels, fmin=0, fmax=sample_rate // 2, htk=True,
                                 norm=1)
    return torch.tensor(fb)


class MelFrontEnd(nn.Module):
    """torchopenl3's ``CustomMelSTFT`` (kapre 0.1.4 ``Melspectrogram``) for 1 s frames at 48 kHz: ``[B, 1, 48000]``
    -> ``[B, 1, n_mels, 199]`` decibels relative to each frame's maximum (see the module doc). Buffer names are
    torchopenl3's (``speclayer.*`` in its state dict)."""

    def __init__(self, sample_rate: int = 48000, n_dft: int = 2048, n_hop: int = 242, n_mels: int = 256,
                 amin: float = 1e-10, dynamic_range: float = 80.0) -> None:
        super().__init__()
        self.n_dft, self.n_hop, self.sr = int(n_dft), int(n_hop), int(sample_rate)
        self.amin, self.dynamic_range = float(amin), float(dynamic_range)
        real, imag = stft_kernels(self.n_dft)
        self.register_buffer("dft_real_kernels", real)
        self.register_buffer("dft_imag_kernels", imag)
        self.register_buffer("mel_basis", mel_basis(self.sr, self.n_dft, n_mels))
        # kapre 0.1.4 / Keras "same" padding, computed for an input of `sample_rate` samples (torchopenl3 custom_pad)
        rem = self.sr % self.n_hop
        along = max(self.n_dft - (self.n_hop if rem == 0 else rem), 0)
        self.pad = (along // 2, along - along // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pad)
        real = F.conv1d(x, self.dft_real_kernels, stride=self.n_hop)
        imag = F.conv1d(x, self.dft_imag_kernels, stride=self.n_hop)
        power = real.pow(2) + imag.pow(2)                       # [B, n_dft // 2 + 1, frames]
        mel = torch.sqrt(torch.matmul(self.mel_basis, power))  # power_melgram=1.0: sqrt of the mel-weighted power
        db = 10 * torch.log(torch.clamp(mel, min=self.amin)) / np.log(10).astype(np.float32)
        db = db - torch.amax(db, dim=(1, 2), keepdim=True)
        return torch.clamp(db, min=-self.dynamic_range).unsqueeze(1)


class OpenL3(nn.Module):
    """OpenL3's audio tower (mel256, 512-d) in torchopenl3's state-dict layout: ``speclayer.*`` (the front end),
    ``batch_normalization_{1..8}``, ``conv2d_{1..7}``, ``audio_embedding_layer``. ``forward([B, 1, 48000] float32)``
    -> ``[B, channels[-1]]``. ``channels``: the four blocks' widths (:data:`MODEL_SIZES`)."""

    def __init__(self, channels: Sequence[int] = MODEL_SIZES["full"], n_mels: int = 256) -> None:
        super().__init__()
        self.speclayer = MelFrontEnd(n_mels=n_mels)
        c1, c2, c3, c4 = (int(c) for c in channels)
        widths = [(1, c1), (c1, c1), (c1, c2), (c2, c2), (c2, c3), (c3, c3), (c3, c4)]
        self.batch_normalization_1 = nn.BatchNorm2d(1, eps=0.001, momentum=0.99)
        for i, (cin, cout) in enumerate(widths, 1):
            setattr(self, f"conv2d_{i}", nn.Conv2d(cin, cout, kernel_size=3))
            setattr(self, f"batch_normalization_{i + 1}", nn.BatchNorm2d(cout, eps=0.001, momentum=0.99))
        self.audio_embedding_layer = nn.Conv2d(c4, c4, kernel_size=3)
        self.dim = c4

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.batch_normalization_1(self.speclayer(frames))
        for i in range(1, 8):
            conv, bn = getattr(self, f"conv2d_{i}"), getattr(self, f"batch_normalization_{i + 1}")
            x = F.relu(bn(conv(F.pad(x, (1, 1, 1, 1)))))
            if i in (2, 4, 6):
                x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = self.audio_embedding_layer(F.pad(x, (1, 1, 1, 1)))
        x = F.max_pool2d(x, kernel_size=POOL_512, stride=POOL_512)  # [B, C, 1, 1] for a 256 x 199 input
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)   # torchopenl3: swapaxes(1, 2).swapaxes(2, 3)


class OpenL3Backbone(Backbone):
    """OpenL3 (mel256, 512) in torchopenl3's layout, any :data:`MODEL_SIZES`."""

    name = "openl3"

    def __init__(self, size: str = "full", seed: int = 0) -> None:
        if size not in MODEL_SIZES:
            raise OpenL3Error(f"model_size={size!r}: expected one of {sorted(MODEL_SIZES)}")
        super().__init__(size, seed)

    def build(self) -> OpenL3:
        return OpenL3(MODEL_SIZES[self.size])

    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        load_strict(module, state, setting=setting, error=OpenL3Error,
                    hint=f"Expected torchopenl3's torchopenl3_mel256_music_512.pth.tar (PytorchOpenl3('music', "
                         f"'mel256', 512).state_dict()) of size {self.size!r}.")


# ----------------------------------------------------------------------------------------------------------------
# Framing (torchopenl3/utils.py preprocess_audio_batch = openl3/core.py _preprocess_audio_batch)
# ----------------------------------------------------------------------------------------------------------------
def n_frames(n_samples: int, hop: int, frame: int = 48000, center: bool = True) -> int:
    """Frames openl3 cuts from ``n_samples`` at 48 kHz: ``1 + ceil((n + frame // 2 - frame) / hop)`` (centred), at
    least 1."""
    n = int(n_samples) + (frame // 2 if center else 0)
    return 1 if n <= frame else 1 + math.ceil((n - frame) / hop)


def frames(x: torch.Tensor, hop: int, frame: int = 48000, center: bool = True) -> torch.Tensor:
    """``[..., T]`` at 48 kHz -> ``[..., n_frames, frame]``: ``frame // 2`` zeros in front (``center``), zeros at the
    end up to whole hops, frames every ``hop`` samples (openl3's framing)."""
    if center:
        x = F.pad(x, (frame // 2, 0))
    n = x.shape[-1]
    pad = frame - n if n < frame else math.ceil((n - frame) / hop) * hop - (n - frame)
    if pad > 0:
        x = F.pad(x, (0, pad))
    return x.unfold(-1, frame, hop)


@register_embedder("openl3-mel256-music")
class OpenL3Embedder(Embedder):
    """OpenL3 as stable-audio-metrics runs it (``conf/embeddings/openl3-mel256-music.yaml``): an input ``[C, T]`` (or
    ``[T]`` for ``channels: 1``) at 48 kHz, every channel framed on its own (:func:`frames`), every frame embedded
    (``batch_size`` frames per forward pass, all inputs' frames together), the channels' vectors side by side:
    ``[n_frames, 512 * C]`` float32 per input (``[n, 32 * C]`` for ``model_size: tiny``)."""

    def __init__(self, config, weights, device="cpu", name=None) -> None:
        super().__init__(config, weights, device, name)
        c = self.config
        if (str(c["input_repr"]), int(c["embedding_size"])) != ("mel256", 512):
            raise OpenL3Error(f"{weights.setting}.embedder: input_repr={c['input_repr']}, embedding_size="
                              f"{c['embedding_size']}: only mel256 with 512-d embeddings (stable-audio-metrics') is "
                              f"built")
        if self.sample_rate != 48000:
            raise OpenL3Error(f"{weights.setting}.embedder.sample_rate={self.sample_rate}: OpenL3 takes 48 kHz")
        self.content_type = str(c["content_type"])
        self.hop = int(round(float(c["hop_s"]) * self.sample_rate))
        self.center = bool(c["center"])
        self.frame = self.sample_rate  # 1 s windows
        self.per_channel = MODEL_SIZES[weights.model_size][-1]
        if int(c["dim"]) != 512 * self.channels:
            raise OpenL3Error(f"{weights.setting}.embedder.dim={c['dim']}: {self.channels} channel(s) of 512 give "
                              f"{512 * self.channels}")
        self.dim = self.per_channel * self.channels  # the tiny model's vectors are shorter
        self.batch_size = weights.batch_size or 32

    def backbone(self) -> OpenL3Backbone:
        return OpenL3Backbone(self.weights.model_size, self.weights.seed)

    @property
    def min_samples(self) -> int:
        return 1

    def _channels(self, item: torch.Tensor) -> torch.Tensor:
        x = item.reshape(1, -1) if item.dim() == 1 else item
        if x.dim() != 2 or x.shape[0] != self.channels:
            raise ValueError(f"the {self.name} embedding takes [{self.channels}, T] at 48 kHz, got "
                              f"{tuple(item.shape)}: its protocol's input path converts with `channels: embedder`")
        return x

    @torch.inference_mode()
    def embed(self, items):
        """See :class:`OpenL3Embedder`. The frames of all inputs and channels go through the network together, in
        passes of ``batch_size`` frames (results do not depend on the batching but for float rounding)."""
        framed = [frames(self._channels(x).to(torch.float32), self.hop, self.frame, self.center) for x in items]
        flat = torch.cat([f.reshape(-1, self.frame) for f in framed]) if framed else torch.zeros(0, self.frame)
        net = self.network
        out = []
        for i in range(0, flat.shape[0], self.batch_size):
            out.append(net(flat[i:i + self.batch_size, None, :].to(self.device)).float().cpu())
        emb = torch.cat(out) if out else torch.zeros(0, self.per_channel)
        result, start = [], 0
        for f in framed:
            c, n = f.shape[0], f.shape[1]
            e = emb[start:start + c * n].reshape(c, n, -1)  # [channel, frame, 512]
            result.append(np.ascontiguousarray(e.permute(1, 0, 2).reshape(n, -1).numpy(), dtype=np.float32))
            start += c * n
        return result

    def identity(self):
        return {**super().identity(), "model": f"OpenL3 mel256/{self.content_type}/512 (torchopenl3 layout)"}
