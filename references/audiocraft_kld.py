"""audiocraft's KLD (``audiocraft/metrics/kld.py``: ``PasstKLDivergenceMetric`` + ``KLDivergenceMetric`` +
``kl_divergence``), before and after commit 2454f80 (PR 213: chunks no longer zero-padded to 20 s), and
hear21passt's ``get_basic_model(mode="logits")`` wrapper around a given PaSST network (the mel front end is the
package's own ``AugmentMelSTFT``).

Nothing here imports evalkit: the network (its weights) is the caller's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from references.audiocraft_solver import convert_audio

MAX_INPUT_FRAMES = int(20 * 32000)  # pretrained_length 20 (config/solver/musicgen/default.yaml) * 32 kHz
MIN_INPUT_FRAMES = int(0.15 * 32000)  # _get_label_distribution: chunks of <= 4,800 samples are dropped


def passt_wrapper(module: str, net: torch.nn.Module):
    """``hear21passt.<module>.get_basic_model(mode="logits")`` (``base20sec``: audiocraft's; ``base``:
    stable-audio-metrics') with its ``get_model_passt`` swapped for one returning ``net``. Returns ``(wrapper in eval
    mode, the keyword arguments the package passed to get_model_passt)``."""
    import importlib

    mod = importlib.import_module(f"hear21passt.{module}")
    seen: dict = {}

    def fake_get_model(**kw):
        seen.update(kw)
        return net

    original = mod.get_model_passt
    mod.get_model_passt = fake_get_model
    try:
        wrapper = mod.get_basic_model(mode="logits")
    finally:
        mod.get_model_passt = original
    return wrapper.eval(), seen


def audiocraft_label_distribution(wrapper, wav, sample_rate, wav_len, pad):
    """``PasstKLDivergenceMetric._get_label_distribution`` for one item ``[C, T]``: ``[rows, 527]`` probabilities (None
    when no chunk is kept). ``pad=False``: after 2454f80 (one row per kept 20 s chunk); ``pad=True``: v1.0.0 (kept
    chunks zero-padded to 20 s, softmax averaged: one row)."""
    wav = wav.unsqueeze(0)[..., :wav_len]
    wav = convert_audio(wav, sample_rate, 32000, 1).squeeze(0)
    segments = torch.split(wav, MAX_INPUT_FRAMES, dim=-1)
    rows = []
    with torch.no_grad():
        if pad:
            valid = [F.pad(s, (0, MAX_INPUT_FRAMES - s.shape[-1])) for s in segments if s.size(-1) > MIN_INPUT_FRAMES]
            if valid:
                x = torch.stack(valid, dim=0).mean(dim=1)
                rows.append(torch.softmax(wrapper(x), dim=-1).mean(dim=0))
        else:
            for s in segments:
                if s.size(-1) > MIN_INPUT_FRAMES:
                    rows.append(torch.softmax(wrapper(s[None].mean(dim=1)), dim=-1).mean(dim=0))
    return torch.stack(rows) if rows else None


def audiocraft_kld(wrapper, pairs, pad=False):
    """``KLDivergenceMetric.update`` + ``compute`` over ``(pred, target, sample_rate)`` pairs (``[C, T]`` each; the
    crop is the target's length, ``sizes``). Returns ``({kld, kld_pq, kld_qp, kld_both}, per clip
    [(kld_pq, kld_qp, p_pred, p_target)])``; the headline ``kld`` is ``kld_pq`` = KL(target ‖ pred)."""
    pq = qp = 0.0
    weight = 0
    per_clip = []
    for pred, target, sr in pairs:
        n = target.shape[-1]
        p_pred = audiocraft_label_distribution(wrapper, pred, sr, n, pad)
        p_tgt = audiocraft_label_distribution(wrapper, target, sr, n, pad)
        a = F.kl_div((p_pred + 1e-6).log(), p_tgt, reduction="none").sum(-1)
        b = F.kl_div((p_tgt + 1e-6).log(), p_pred, reduction="none").sum(-1)
        pq += a.sum().item()
        qp += b.sum().item()
        weight += a.shape[0]
        per_clip.append((a.mean().item(), b.mean().item(), p_pred, p_tgt))
    return {"kld": pq / weight, "kld_pq": pq / weight, "kld_qp": qp / weight,
            "kld_both": pq / weight + qp / weight}, per_clip
