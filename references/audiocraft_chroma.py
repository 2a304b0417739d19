"""audiocraft's chroma cosine similarity: ``modules/chroma.py ChromaExtractor.forward`` +
``metrics/chroma_cosinesim.py ChromaCosineSimilarityMetric.update``, line by line, from the libraries audiocraft
calls (``torchaudio.transforms.Spectrogram``, ``librosa.filters.chroma``), with the constants of
``config/solver/musicgen/default.yaml metrics.chroma_cosine.chroma_base`` (32 kHz, 12 bins, ``radix2_exp`` 14,
argmax). Nothing here imports evalkit.
"""
from __future__ import annotations

import torch

from references.audiocraft_solver import convert_audio

SR = 32000
N_FFT, HOP = 2**14, 2**12  # winlen = 2 ** radix2_exp, nfft = winlen, winhop = winlen // 4


class ChromaCosineSimilarity:
    """``extract``: ``ChromaExtractor.forward`` (argmax one-hot); ``score``: ``update`` on one batch, returning per item
    ``(sum of frame cosines, frames)`` (the metric's ``cosine_sum`` and ``weight`` increments)."""

    def __init__(self, sample_rate: int = SR, n_fft: int = N_FFT, hop: int = HOP, n_chroma: int = 12,
                 eps: float = 1e-8):
        import librosa
        import torchaudio

        self.sample_rate, self.n_fft, self.hop, self.eps = sample_rate, n_fft, hop, eps
        self.fbanks = torch.from_numpy(librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0, n_chroma=n_chroma))
        self.spec = torchaudio.transforms.Spectrogram(n_fft=n_fft, win_length=n_fft, hop_length=hop, power=2,
                                                      center=True, pad=0, normalized=True)

    def extract(self, wav):  # wav [B, 1, T]
        T = wav.shape[-1]
        if T < self.n_fft:
            pad = self.n_fft - T
            r = 0 if pad % 2 == 0 else 1
            wav = torch.nn.functional.pad(wav, (pad // 2, pad // 2 + r), "constant", 0)
        spec = self.spec(wav).squeeze(1)
        raw = torch.einsum("cf,...ft->...ct", self.fbanks, spec)
        norm = torch.nn.functional.normalize(raw, p=torch.inf, dim=-2, eps=1e-6).permute(0, 2, 1).contiguous()
        idx = norm.argmax(-1, keepdim=True)
        norm[:] = 0
        norm.scatter_(dim=-1, index=idx, value=1)
        return norm

    def score(self, preds, targets, sizes, sample_rate):  # [B, C, T] each, sizes [B]
        preds = convert_audio(preds, sample_rate, self.sample_rate, 1)
        targets = convert_audio(targets, sample_rate, self.sample_rate, 1)
        gt, gen = self.extract(targets), self.extract(preds)
        lens = (sizes / self.hop).ceil().int()
        out = []
        for i in range(len(gt)):
            t = int(lens[i])
            cos = torch.nn.functional.cosine_similarity(gt[i, :t], gen[i, :t], dim=1, eps=self.eps)
            out.append((float(cos.sum()), t))
        return out
