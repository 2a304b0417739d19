"""Stability-AI/stable-audio-metrics ``src/passt_kld.py``: ``return_probabilities`` and ``passt_kld``, transcribed.

- ``librosa.load(path, sr=32000, mono=True)``: soundfile, the mean over channels, ``librosa.resample`` with
  librosa's default ``res_type='soxr_hq'`` (:func:`load`; :func:`probabilities_from_array` spells it out for audio
  already in memory: ``to_mono`` then ``resample``, what ``load`` does after reading);
- ``pyln.normalize.peak(audio, -1.0)``: ``audio * (10 ** (-1 / 20) / max|audio|)`` in numpy (pyloudnorm is not
  installed here; :func:`peak` is its two lines);
- windows of 10 s starting every 5 s, ``range(0, max(step, n - step), step)``; a window shorter than 10 s is
  zero-padded to 10 s when longer than 15 % of 10 s (48,000 samples), else goes in as it is;
- the logits of every window (``hear21passt.base.get_basic_model(mode="logits")``, batch 1, float32), their mean,
  then ``F.softmax``;
- ``passt_kld``: per id ``F.kl_div((ref_p + 1e-6).log(), eval_p, reduction='sum')`` = KL(eval ‖ ref), summed into a
  float32 tensor, divided by the count.

The model is the caller's (``references.audiocraft_kld.passt_wrapper("base", net)``). Nothing here imports evalkit.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

SAMPLING_RATE = 32000


def load(audio_path: str | Path) -> np.ndarray:
    import librosa

    audio, _ = librosa.load(str(audio_path), sr=SAMPLING_RATE, mono=True)
    return audio


def peak(data: np.ndarray, target: float = -1.0) -> np.ndarray:
    """``pyloudnorm.normalize.peak``: ``gain = np.power(10.0, target / 20.0) / np.max(np.abs(data))``, then
    ``gain * data``."""
    current_peak = np.max(np.abs(data))
    gain = np.power(10.0, target / 20.0) / current_peak
    return gain * data


def probabilities(model, audio: np.ndarray, window_size: float = 10, overlap: float = 5,
                  collect: str = "mean") -> torch.Tensor:
    """``return_probabilities`` after the load and the peak normalisation: ``[527]`` probabilities."""
    step_size = int((window_size - overlap) * SAMPLING_RATE)
    probs = []
    for i in range(0, max(step_size, len(audio) - step_size), step_size):
        window = audio[i:i + int(window_size * SAMPLING_RATE)]
        if len(window) < int(window_size * SAMPLING_RATE):
            if len(window) > int(window_size * SAMPLING_RATE * 0.15):
                tmp = np.zeros(int(window_size * SAMPLING_RATE))
                tmp[:len(window)] = window
                window = tmp
        audio_wave = torch.from_numpy(window.astype(np.float32)).unsqueeze(0)
        with torch.no_grad():
            logits = model(audio_wave)
            probs.append(torch.squeeze(logits))
    stacked = torch.stack(probs)
    if collect == "mean":
        stacked = torch.mean(stacked, dim=0)
    elif collect == "max":
        stacked, _ = torch.max(stacked, dim=0)
    return F.softmax(stacked, dim=0).squeeze().cpu()


def return_probabilities(model, audio_path: str | Path, window_size: float = 10, overlap: float = 5,
                         collect: str = "mean") -> torch.Tensor:
    return probabilities(model, peak(load(audio_path), -1.0), window_size, overlap, collect)


def probabilities_from_array(model, audio: np.ndarray, sr: int) -> torch.Tensor:
    """:func:`return_probabilities` of audio in memory (``[C, T]`` or ``[T]`` float32 at ``sr``), with
    ``librosa.load``'s mono mix and resampling spelled out."""
    import librosa

    audio = librosa.to_mono(audio)
    if sr != SAMPLING_RATE:
        audio = librosa.resample(audio, orig_sr=sr, target_sr=SAMPLING_RATE, res_type="soxr_hq")
    return probabilities(model, peak(audio, -1.0))


def passt_kld(model, ids: Sequence[str], eval_path: str | Path, eval_files_extension: str | Sequence[str] = ".wav",
              ref_path: str | Path | None = None, ref_files_extension: str | Sequence[str] = ".wav",
              collect: str = "mean") -> tuple[float, dict[str, tuple[float, torch.Tensor, torch.Tensor]]]:
    """``passt_kld(ids, eval_path, eval_files_extension, ref_path, ref_files_extension, collect=collect)``: the mean
    over ``ids`` of KL(eval ‖ ref). An extension may be given per id (a sequence), for folders of mixed formats.
    Returns ``(the value, {id: (kl, eval_p, ref_p)})``."""
    def ext(e, k):
        return e if isinstance(e, str) else e[k]

    ref_p = {i: return_probabilities(model, os.path.join(ref_path, str(i) + ext(ref_files_extension, k)),
                                     collect=collect) for k, i in enumerate(ids)}
    passt_kl = 0
    count = 0
    per_id = {}
    for k, i in enumerate(ids):
        eval_p = return_probabilities(model, os.path.join(eval_path, str(i) + ext(eval_files_extension, k)),
                                      collect=collect)
        kl = F.kl_div((ref_p[i] + 1e-6).log(), eval_p, reduction="sum", log_target=False)
        passt_kl += kl
        count += 1
        per_id[i] = (float(kl), eval_p, ref_p[i])
    return float(passt_kl / count) if count > 0 else 0.0, per_id
