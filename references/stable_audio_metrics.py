"""Stability-AI/stable-audio-metrics (MIT, HEAD fd55536c): its loops, transcribed. It is not a package: its
``src/passt_kld.py``, ``src/openl3_fd.py`` and ``src/clap_score.py`` are scripts around ``hear21passt``, ``openl3``,
``laion_clap``, ``librosa``, ``soxr`` and ``pyloudnorm``. Each function follows its source line by line (named in
its docstring), with the model it calls passed in. Used by the parity tests (``tests/test_kld_passt.py``,
``tests/test_protocol_cli.py``, ``tests/test_openl3.py``, ``tests/test_clap_fusion.py``) and by the reference side of
``benchmarks/suite_parts/sam.py``.

KL_passt (``src/passt_kld.py``: ``return_probabilities`` and ``passt_kld``):

- ``librosa.load(path, sr=32000, mono=True)``: soundfile, the mean over channels, ``librosa.resample`` with
  librosa's default ``res_type='soxr_hq'`` (:func:`load`; :func:`probabilities_from_array` spells it out for audio
  already in memory: ``to_mono`` then ``resample``, what ``load`` does after reading);
- ``pyln.normalize.peak(audio, -1.0)``: ``audio * (10 ** (-1 / 20) / max|audio|)`` in numpy (pyloudnorm 0.1.1 is not
  installed here; :func:`peak` is its two lines);
- windows of 10 s starting every 5 s, ``range(0, max(step, n - step), step)``; a window shorter than 10 s is
  zero-padded to 10 s when longer than 15 % of 10 s (48,000 samples), else goes in as it is;
- the logits of every window (``hear21passt.base.get_basic_model(mode="logits")``, batch 1, float32), their mean,
  then ``F.softmax``;
- ``passt_kld``: per id ``F.kl_div((ref_p + 1e-6).log(), eval_p, reduction='sum')`` = KL(eval ‖ ref), summed into a
  float32 tensor, divided by the count.

The PaSST model is the caller's (``references.audiocraft_kld.passt_wrapper("base", net)``).

FD_openl3 (``src/openl3_fd.py``): ``extract_embeddings`` (the batched path every example uses),
``calculate_embd_statistics``, ``calculate_frechet_distance``. ``openl3`` 0.4.2 (TensorFlow) cannot be installed here
(its ``setup.py`` downloads the weights), so the model is torchopenl3 1.0.1's ``PytorchOpenl3`` through
``torchopenl3.get_audio_embedding`` (its framing and resampy resampling are openl3's; its network ports openl3
0.3.1), called with float32 tensors so that resampy runs on float32 samples as openl3 0.4.2 does on soxr's float32
output.

CLAP score (``src/clap_score.py``): ``clap_score``'s loop, with laion_clap's own ``get_audio_features`` and
``CLAP.get_audio_embedding`` (``CLAP_Module.get_audio_embedding_from_data(use_tensor=True)`` is those two calls);
``np.random.seed(seed)`` before each clip makes laion's fusion chunks of a clip longer than 10 s reproducible
(stable-audio-metrics never seeds).

Nothing here imports evalkit (laion_clap's own modules are found through ``references.laion_clap_model``).
"""
from __future__ import annotations

import glob
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


pyln_peak = peak  # the name the openl3_fd and clap_score scripts call it by (``pyln.normalize.peak``)


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


def torchopenl3_model(widths: Sequence[int] | None = None):
    """torchopenl3 1.0.1's ``PytorchOpenl3('music', 'mel256', 512)`` in eval mode; ``widths`` (four, a shrunken test
    model's: ``evalkit.embeddings.openl3.MODEL_SIZES["tiny"]``): its conv and batch-norm layers replaced by narrower
    ones, its own forward unchanged."""
    from torch import nn
    from torchopenl3.models import PytorchOpenl3

    m = PytorchOpenl3("music", "mel256", 512)
    if widths is not None:
        c1, c2, c3, c4 = widths
        for i, (cin, cout) in enumerate([(1, c1), (c1, c1), (c1, c2), (c2, c2), (c2, c3), (c3, c3), (c3, c4)], 1):
            setattr(m, f"conv2d_{i}", nn.Conv2d(cin, cout, (3, 3)))
            setattr(m, f"batch_normalization_{i + 1}", nn.BatchNorm2d(cout, eps=0.001, momentum=0.99))
        m.audio_embedding_layer = nn.Conv2d(c4, c4, (3, 3))
    return m.eval()


def openl3_extract_embeddings(directory_glob: str, model, channels: int = 2, samplingrate: int = 44100,
                              hop_size: float = 0.5, batch_size: int = 4) -> list[np.ndarray]:
    """``src/openl3_fd.py: extract_embeddings`` with ``openl3.get_audio_embedding`` -> torchopenl3's (see the module
    doc). Returns the list of frame embeddings, as the original."""
    import librosa
    import soxr
    import torch
    import torchopenl3

    wav_files = glob.glob(directory_glob)
    if len(wav_files) == 0:
        raise ValueError("No files with this extension in this path!")

    def embed(batch, srs):
        embs, _ = torchopenl3.get_audio_embedding([torch.from_numpy(np.ascontiguousarray(a)) for a in batch], srs,
                                                  model=model, verbose=False, hop_size=hop_size, center=True,
                                                  batch_size=batch_size, sampler="resampy")
        return [e.detach().cpu().numpy() for e in embs]

    first = True
    for i in range(0, len(wav_files), batch_size):
        batch_files = wav_files[i:i + batch_size]
        batch_audio_l, batch_audio_r, batch_sr = [], [], []
        for file in batch_files:
            audio, sr = librosa.load(file, sr=None, mono=False)
            audio = audio.T
            audio = pyln_peak(audio, -1.0)
            audio = soxr.resample(audio, sr, samplingrate)
            if channels == 1:
                batch_audio_l.append(audio)
            elif channels == 2:
                if audio.ndim == 1:
                    batch_audio_l.append(audio)
                    batch_audio_r.append(audio)
                elif audio.ndim == 2:
                    batch_audio_l.append(audio[:, 0])
                    batch_audio_r.append(audio[:, 1])
            batch_sr.append(samplingrate)
        emb = embed(batch_audio_l, batch_sr)
        if channels == 1:
            emb = np.concatenate(emb, axis=0)
        elif channels == 2:
            emb_r = embed(batch_audio_r, batch_sr)
            emb = [np.concatenate([l, r], axis=1) for l, r in zip(emb, emb_r)]
            emb = np.concatenate(emb, axis=0)
        if first:
            embeddings = emb
            first = False
        else:
            embeddings = np.concatenate([embeddings, emb], axis=0)
    return [e for e in embeddings]


def calculate_embd_statistics(embd_lst):
    """``src/openl3_fd.py: calculate_embd_statistics``."""
    if isinstance(embd_lst, list):
        embd_lst = np.array(embd_lst)
    mu = np.mean(embd_lst, axis=0)
    sigma = np.cov(embd_lst, rowvar=False)
    return mu, sigma


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """``src/openl3_fd.py: calculate_frechet_distance`` (pytorch-fid's: scipy ``sqrtm``, ``eps`` on the diagonals when
    the product is singular, an imaginary part above 1e-3 on the diagonal is an error)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape, "Training and test mean vectors have different lengths"
    assert sigma1.shape == sigma2.shape, "Training and test covariances have different dimensions"
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError("Imaginary component {}".format(m))
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


def openl3_fd(eval_path: str, ref_path: str, model, ext: str = ".wav", batching: int = 4) -> float:
    """``src/openl3_fd.py: openl3_fd(channels=2, samplingrate=44100, content_type='music', openl3_hop_size=0.5,
    eval_path, ref_path=..., batching=4)``: the examples' call, without the statistics file it writes."""
    ref = openl3_extract_embeddings(os.path.join(ref_path, "*" + ext), model, batch_size=batching)
    mu_ref, sigma_ref = calculate_embd_statistics(ref)
    ev = openl3_extract_embeddings(os.path.join(eval_path, "*" + ext), model, batch_size=batching)
    mu_eval, sigma_eval = calculate_embd_statistics(ev)
    return float(calculate_frechet_distance(mu_eval, sigma_eval, mu_ref, sigma_ref))


def laion_data():
    """laion_clap's ``training.data`` (``get_audio_features``, ``get_mel``), imported the way laion_clap's own
    ``__init__`` makes it importable (``references/laion_clap_model.py: clap_modules`` puts its folder on ``sys.path``)."""
    import importlib

    from references.laion_clap_model import clap_modules

    clap_modules()
    return importlib.import_module("training.data")


def clap_audio_embedding(model, model_cfg: dict, audio: "np.ndarray", seed: int | None = 0):
    """``CLAP_Module(enable_fusion=...).get_audio_embedding_from_data(x=audio[1, T], use_tensor=True)``: laion's
    ``get_audio_features(temp_dict, waveform, 480000, data_truncating='fusion' | 'rand_trunc',
    data_filling='repeatpad', audio_cfg)`` then ``model.get_audio_embedding([temp_dict])``, with numpy's global
    generator seeded with ``seed`` first (None: left as it is, as stable-audio-metrics does)."""
    import torch

    data = laion_data()
    if seed is not None:
        np.random.seed(seed)
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32)).float()
    inputs = []
    for waveform in x:
        d = data.get_audio_features({}, waveform, 480000,
                                    data_truncating="fusion" if model_cfg["enable_fusion"] else "rand_trunc",
                                    data_filling="repeatpad", audio_cfg=model_cfg["audio_cfg"])
        inputs.append(d)
    return model.get_audio_embedding(inputs)


def clap_score(id2text: dict, audio_path: str, model, model_cfg: dict, text_embed, ext: str = ".wav",
               seed: int | None = 0) -> float:
    """``src/clap_score.py: clap_score`` after the model is loaded: text embeddings in batches of 64
    (``text_embed(list of captions) -> [n, 512]``: laion's ``get_text_embedding`` on RoBERTa tokens), then per id:
    ``librosa.load(sr=48000, mono=True)``, peak -1 dB, int16 round trip, the audio embedding, cosine (eps 1e-8); the
    mean over ids."""
    import librosa
    import torch

    def int16_to_float32(x):
        return (x / 32767.0).astype(np.float32)

    def float32_to_int16(x):
        x = np.clip(x, a_min=-1., a_max=1.)
        return (x * 32767.).astype(np.int16)

    batch_size = 64
    text_emb = {}
    ids = list(id2text.keys())
    for i in range(0, len(ids), batch_size):
        batch_ids = ids[i:i + batch_size]
        with torch.no_grad():
            embeddings = text_embed([id2text[k] for k in batch_ids])
        for k, emb in zip(batch_ids, embeddings):
            text_emb[k] = emb
    score, count = 0, 0
    for k in ids:
        file_path = os.path.join(audio_path, str(k) + ext)
        with torch.no_grad():
            audio, _ = librosa.load(file_path, sr=48000, mono=True)
            audio = pyln_peak(audio, -1.0)
            audio = audio.reshape(1, -1)
            audio = int16_to_float32(float32_to_int16(audio))
            audio_embeddings = clap_audio_embedding(model, model_cfg, audio, seed)
        cosine_sim = torch.nn.functional.cosine_similarity(audio_embeddings, text_emb[k].unsqueeze(0), dim=1,
                                                           eps=1e-8)[0]
        score += cosine_sim
        count += 1
    return float(score / count) if count > 0 else 0.0
