"""OpenL3 (evalkit/embeddings/openl3.py) and FD_openl3 (conf/metrics/fad/stable-audio-metrics.yaml, the ``fd_openl3``
metric): openl3's framing in closed form; the network and front end against torchopenl3 1.0.1's own class on
identical random weights; the whole protocol, from the command line as a user types it, against stable-audio-metrics'
``openl3_fd`` loop (references/stable_audio_metrics.py) on files a user has (44.1 / 48 / 32 kHz, stereo, mono, three
channels, quiet, shorter than a frame).

The reference network is torchopenl3's ``PytorchOpenl3`` (openl3 0.4.2, what stable-audio-metrics pins, is TensorFlow
and cannot be installed here: README). Random weights are drawn for every parameter *and* every batch-norm statistic,
so that no layer is near the identity."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from evalkit.embeddings.openl3 import MODEL_SIZES, OpenL3, OpenL3Backbone, frames, n_frames
from tests.conftest import REPO, reference_test

HOP = 24000  # 0.5 s at 48 kHz
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def openl3_num_windows(n: int, frame: int = 48000, hop: int = HOP) -> int:
    """openl3/core.py (and torchopenl3/core.py) ``_get_num_windows(audio_len, frame_len, hop_len, center=True)``."""
    n += int(frame / 2.0)
    return 1 if n <= frame else 1 + int(np.ceil((n - frame) / float(hop)))


@pytest.mark.parametrize("n", [1, 23999, 24000, 24001, 47999, 48000, 72001, 441000, 480000])
def test_framing_is_openls(n):
    x = torch.arange(1, n + 1, dtype=torch.float32)
    f = frames(x, HOP)
    assert f.shape == (n_frames(n, HOP), 48000) and n_frames(n, HOP) == openl3_num_windows(n)
    assert torch.all(f[0, :24000] == 0) and torch.equal(f[0, 24000:24000 + min(n, 24000)], x[:24000])
    if n >= 24001:  # the second frame starts at the first sample
        assert torch.equal(f[1, :min(n, 48000)], x[:48000])
    assert f.reshape(-1).count_nonzero() >= n  # every sample is in some frame; the end is zero-padded


def random_state(module: torch.nn.Module, seed: int) -> dict:
    """Every parameter and batch-norm statistic of ``module`` redrawn from ``seed`` (the STFT and mel buffers kept)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if k.startswith("speclayer.") or k.endswith("num_batches_tracked"):
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", ".bias")):
            out[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.startswith("batch_normalization") and k.endswith(".weight"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:  # convolutions: He-like scale so that activations neither vanish nor explode
            fan_in = int(np.prod(v.shape[1:]))
            out[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
    return out


def test_stereo_is_left_then_right_and_mono_duplicates():
    """A frame's vector is [embedding of L | embedding of R]; a mono input given as L = R repeats its half."""
    from evalkit.embeddings import build_embedder
    from evalkit.spec import metric_recipe

    recipe = metric_recipe("fd_openl3", ["backbone_weights=random", "backbone_size=tiny"])
    emb = build_embedder(recipe, "metrics.fd_openl3")
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 60000, generator=g) * 0.1
    st, = emb.embed([torch.stack([left, right])])
    lo, = emb.embed([torch.stack([left, left])])
    d = MODEL_SIZES["tiny"][-1]
    assert st.shape == (n_frames(60000, HOP), 2 * d) and emb.dim == 2 * d
    np.testing.assert_array_equal(st[:, :d], lo[:, :d])
    np.testing.assert_array_equal(lo[:, :d], lo[:, d:])
    assert not np.allclose(st[:, :d], st[:, d:])
    with pytest.raises(ValueError, match=r"takes \[2, T\]"):
        emb.embed([left])


# ---------------------------------------------------------------------------------------------------------------
# torchopenl3's own class on identical weights
# ---------------------------------------------------------------------------------------------------------------
def torchopenl3_model(size: str = "full"):
    """``PytorchOpenl3('music', 'mel256', 512)``; ``tiny``: its conv and batch-norm layers replaced by narrower ones
    (:data:`evalkit.embeddings.openl3.MODEL_SIZES`), its own forward unchanged."""
    from references.stable_audio_metrics import torchopenl3_model as build

    return build(MODEL_SIZES["tiny"] if size == "tiny" else None)


@reference_test("torchopenl3")
def test_front_end_and_layout_are_torchopenl3s():
    ref = torchopenl3_model()
    mine = OpenL3()
    assert list(mine.state_dict()) == list(ref.state_dict())
    for k in ("dft_real_kernels", "dft_imag_kernels", "mel_basis"):
        assert torch.equal(getattr(mine.speclayer, k), getattr(ref.speclayer, k)), k
    x = torch.randn(3, 1, 48000, generator=torch.Generator().manual_seed(1)) * 0.2
    with torch.no_grad():
        theirs = ref.speclayer(x).squeeze(-1).unsqueeze(1)
        ours = mine.speclayer(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)  # dB; the same ops (sqrt/pow rounding aside)


@reference_test("torchopenl3")
@pytest.mark.parametrize("size", ["full", "tiny"])
def test_network_matches_torchopenl3_on_identical_weights(size, tmp_path):
    ref = torchopenl3_model(size)
    ref.load_state_dict(random_state(ref, seed=3))
    path = tmp_path / "w.pt"
    torch.save(ref.state_dict(), path)  # as a released .pth.tar is read: a plain state dict
    from evalkit.embeddings.weights import Checkpoint

    mine = OpenL3Backbone(size).load(Checkpoint("w.pt", path, None, False), setting="test")
    x = torch.randn(5, 1, 48000, generator=torch.Generator().manual_seed(2)) * 0.3
    x[4] *= 1e-3  # a quiet frame: the per-frame dB normalisation
    with torch.no_grad():
        a, b = mine(x), ref(x)
    assert a.shape == b.shape == (5, MODEL_SIZES[size][-1])
    print(f"openl3 {size}: max |diff| {float((a - b).abs().max()):.3g} of max |emb| {float(b.abs().max()):.3g}")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


# ---------------------------------------------------------------------------------------------------------------
# The protocol from the command line, against stable-audio-metrics' loop
# ---------------------------------------------------------------------------------------------------------------
def _tone(rng, n, sr, channels, gain):
    t = np.arange(n) / sr
    x = [sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(60, 6000) * t + rng.uniform(0, 6))
             for _ in range(4)) + 0.05 * rng.standard_normal(n) for _ in range(channels)]
    return (gain * np.stack(x, 1)).astype(np.float32)


def write_sets(root, n_gen: int = 4, n_ref: int = 4):
    """Files a user has: generated at 44.1 kHz stereo, 48 kHz mono, 32 kHz stereo, one 0.6 s clip; references at
    48 kHz stereo, 32 kHz mono, 44.1 kHz three-channel (stable-audio-metrics: the first two, the peak over all
    three), a quiet one (-40 dB). Names are ids shared by both sets (reference.dir)."""
    rng = np.random.default_rng(0)
    gen, ref = root / "gen", root / "ref"
    gen.mkdir()
    ref.mkdir()
    gen_kinds = [(44100, 2, 4.0, 0.7), (48000, 1, 3.5, 0.5), (44100, 2, 0.6, 0.9), (32000, 2, 4.2, 0.3)]
    ref_kinds = [(48000, 2, 4.0, 0.8), (32000, 1, 3.7, 0.5), (44100, 3, 3.0, 0.6), (48000, 2, 4.5, 0.01)]
    for i in range(max(n_gen, n_ref)):
        if i < n_gen:
            sr, ch, sec, gain = gen_kinds[i % len(gen_kinds)]
            sf.write(gen / f"c{i:02d}.wav", _tone(rng, int(sr * sec), sr, ch, gain), sr, subtype="FLOAT")
        if i < n_ref:
            sr, ch, sec, gain = ref_kinds[i % len(ref_kinds)]
            sf.write(ref / f"c{i:02d}.wav", _tone(rng, int(sr * sec), sr, ch, gain), sr, subtype="FLOAT")
    return gen, ref


def run_weights(size: str, seed: int = 0) -> dict:
    """The random weights a run with ``backbone_weights=random`` builds (``metrics.<m>.random_seed``)."""
    from evalkit.embeddings.weights import Checkpoint

    return OpenL3Backbone(size, seed).load(Checkpoint("random", None, None, True), setting="test").state_dict()


def cli(*args, timeout=1200):
    return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@reference_test("torchopenl3")
def test_fd_openl3_from_the_command_line_equals_stable_audio_metrics(tmp_path):
    """``metrics=[kld,fd_openl3]`` (tiny random weights, evalkit's seed 0): FD_openl3 equals stable-audio-metrics'
    ``openl3_fd(channels=2, samplingrate=44100, hop 0.5, batching=4)`` with torchopenl3 carrying the same weights;
    every clip counts on its own side (a generated clip without a reference too: the sets are unpaired), beside the
    card's KLD (paired: those clips skipped) in the same run."""
    from references import stable_audio_metrics as sam

    gen, ref = write_sets(tmp_path, n_gen=10, n_ref=8)  # c08, c09: no reference
    out = tmp_path / "run"
    p = cli("model=folder", f"model.dir={gen}", f"reference.dir={ref}", "metrics=[kld,fd_openl3]",
            "backbone_weights=random", "backbone_size=tiny", f"hydra.run.dir={out}", "progress=false",
            f"cache.dir={tmp_path / 'cache'}")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    m = summary["metrics"]["fd_openl3"]
    assert m["spec"]["section"] == "stable-audio-metrics" and m["spec"]["card_column"] is None
    model = torchopenl3_model("tiny")
    model.load_state_dict(run_weights("tiny"))
    ev = sam.openl3_extract_embeddings(str(gen / "*.wav"), model)
    rf = sam.openl3_extract_embeddings(str(ref / "*.wav"), model)
    mu_e, sigma_e = sam.calculate_embd_statistics(ev)
    mu_r, sigma_r = sam.calculate_embd_statistics(rf)
    expected = float(sam.calculate_frechet_distance(mu_e, sigma_e, mu_r, sigma_r))
    assert expected > 0.005 * (np.trace(sigma_e) + np.trace(sigma_r))  # far from 0: the comparison below means something
    print(f"fd_openl3 CLI {m['value']!r} vs stable-audio-metrics {expected!r}: rel {abs(m['value'] / expected - 1):.3g}")
    assert m["value"] == pytest.approx(expected, rel=1e-5)
    assert (m["values"]["n_gen_windows"], m["values"]["n_ref_windows"]) == (len(ev), len(rf))
    import pandas as pd

    df = pd.read_parquet(out / "clips.parquet").set_index("id")
    assert df.loc["c09", "fd_openl3_windows"] > 0 and df.loc["c09", "kld_skipped"] == "no reference clip"
    assert df.loc["c02", "fd_openl3_windows"] == n_frames(int(0.6 * 48000), HOP)  # 0.6 s: one frame
    assert summary["metrics"]["kld"]["n_clips"] == 8  # the card's KLD beside it: the 8 pairs only
    assert "fd_openl3" in p.stdout and "stable-audio-metrics" in p.stdout  # its own table is printed
