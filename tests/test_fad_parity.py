"""Parity with the installed ``frechet_audio_distance`` 0.3.4 package (protocol ``frechet-audio-distance``).

The package fetches torchvggish's code from torch hub at run time. Offline, the test serves it a torch hub repo dir
written here (``hubconf.py`` -> ``references/google_fad.py TorchVGGish``, torchvggish's layout and front end transcribed
from its published source) holding evalkit's random weights, by pointing ``torch.hub.load('harritaylor/torchvggish',
'vggish')`` at that dir. Everything after that is the package's own code: ``load_audio_task`` (soundfile, channel
mean, resampy), its ``get_embeddings`` per-file loop (``model.forward(audio, sr)``), the ReLU it drops, its
``np.mean``/``np.cov`` statistics and ``calculate_frechet_distance`` (scipy ``sqrtm``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.audio import load_audio
from evalkit.metrics.base import Clip
from evalkit.spec import metric_recipe
from tests.conftest import needs_reference

pytestmark = needs_reference("frechet_audio_distance")


from references import google_fad as ref  # the numpy transcription of Google's and torchvggish's recipes


def _recipe(model_size: str) -> dict:
    """The protocol's recipe composed as a run composes it (random weights, seed 0); the metric class alone, so
    ``postprocess=none`` (this protocol has no solver steps anyway: the command line is tests/test_protocol_cli.py)."""
    return metric_recipe("fad", ["metrics.fad.protocol=frechet-audio-distance", f"backbone_size={model_size}",
                                 "backbone_weights=random", "postprocess=none"])


def package_fad(tmp_path: Path, monkeypatch, model):
    """``FrechetAudioDistance(model_name="vggish", sample_rate=16000, use_pca=False, use_activation=False)`` whose
    torch hub load gets a local fake torchvggish repo with ``model``'s weights."""
    from frechet_audio_distance import FrechetAudioDistance

    hub_root = tmp_path / "torch_hub"
    repo = hub_root / "harritaylor_torchvggish_master"  # where torch hub would cache the real repo
    channels = tuple(model.features[i].out_channels for i in (0, 3, 6, 11))
    ref.write_fake_hub(repo, {k: v.clone() for k, v in model.state_dict().items()}, channels, model.embeddings[0].out_features)
    original_load = torch.hub.load
    calls = []

    def offline_load(repo_or_dir, model, *args, **kwargs):
        calls.append((repo_or_dir, model))
        assert (repo_or_dir, model) == ("harritaylor/torchvggish", "vggish")
        return original_load(str(repo), model, source="local")

    monkeypatch.setattr(torch.hub, "load", offline_load)
    monkeypatch.setattr(torch.hub, "_hub_dir", getattr(torch.hub, "_hub_dir", None))  # the package calls set_dir
    fad = FrechetAudioDistance(ckpt_dir=str(hub_root), model_name="vggish", sample_rate=16000, use_pca=False,
                               use_activation=False, verbose=False, audio_load_worker=2)
    assert calls == [("harritaylor/torchvggish", "vggish")]
    assert fad.model.postprocess is False and len(fad.model.embeddings) == 5  # its own mutations: no PCA, no ReLU
    return fad


def _write_set(folder: Path, seeds, seconds: float, sr: int = 16000, noise: float = 0.02) -> None:
    import soundfile as sf

    folder.mkdir(parents=True)
    for s in seeds:
        rng = np.random.default_rng(s)
        n = int(seconds * sr)
        t = np.arange(n) / sr
        f = rng.uniform(100, 3000, size=4)
        x = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * fi * t * (1 + 0.05 * np.sin(t * rng.uniform(0.2, 2)))) for fi in f)
        x = x + noise * rng.uniform(0.5, 1.5) * rng.standard_normal(n)
        env = 0.6 + 0.4 * np.sin(2 * np.pi * t * rng.uniform(0.1, 1.0))
        sf.write(str(folder / f"clip{s:03d}.wav"), (x * env).astype(np.float32), sr, subtype="PCM_16")


def test_package_protocol_fad_and_embeddings_match(tmp_path, monkeypatch):
    """Tiny random VGGish, 5 + 5 clips of 28 s at 16 kHz (29 examples each: 145 per side): the package's score() vs
    evalkit, embeddings and FAD to 1e-5 relative."""
    from evalkit.metrics.fad import FAD

    bg, ev = tmp_path / "background", tmp_path / "eval"
    _write_set(bg, range(0, 5), 28.0)
    _write_set(ev, range(100, 105), 28.0, noise=0.2)  # noisier: a clearly different set
    m = FAD(_recipe("tiny"))
    pkg = package_fad(tmp_path, monkeypatch, m.embedder.network)
    score = pkg.score(str(bg), str(ev), background_embds_path=str(tmp_path / "emb/bg.npy"),
                      eval_embds_path=str(tmp_path / "emb/ev.npy"))
    assert score != -1  # the package returns -1 after printing any exception
    pkg_bg, pkg_ev = np.load(tmp_path / "emb/bg.npy"), np.load(tmp_path / "emb/ev.npy")
    assert pkg_bg.shape == pkg_ev.shape == (145, 128)

    bg_files, ev_files = os.listdir(bg), os.listdir(ev)  # the package's order
    clips = []
    for g, r in zip(ev_files, bg_files):
        gw, gsr = load_audio(ev / g)
        rw, rsr = load_audio(bg / r)
        clips.append(Clip(g, "", gw, gsr, rw, rsr))
    rows = m.update(clips)
    ours_ev = np.concatenate([rows[g].arrays["fad_gen_emb"] for g in ev_files])
    ours_bg = np.concatenate([rows[g].arrays["fad_ref_emb"] for g in ev_files])
    for ours, theirs in ((ours_ev, pkg_ev), (ours_bg, pkg_bg)):
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()
    out = m.compute()
    assert (out["n_gen_windows"], out["n_ref_windows"]) == (145, 145)
    assert out["fad"] == pytest.approx(float(score), rel=1e-5)
    # the two sets differ: this is not a 0 == 0 comparison
    assert out["fad"] > 0.1 * np.trace(np.cov(pkg_bg, rowvar=False)), (out["fad"], np.trace(np.cov(pkg_bg, rowvar=False)))


def test_package_resampy_downmix_and_full_vggish_match(tmp_path, monkeypatch, music_dir):
    """Full-size random VGGish: a 32 kHz stereo flac (shared music) and a 44.1 kHz mono wav through the package's
    load_audio_task (soundfile, np.mean, resampy) and get_embeddings loop vs evalkit, to 1e-5 relative."""
    import soundfile as sf

    from evalkit.metrics.fad import FAD

    music = sorted(music_dir.glob("*[0-9].flac"))[0]
    other = tmp_path / "tone44k.wav"
    t = np.arange(int(44100 * 3.3)) / 44100
    sf.write(str(other), (0.3 * np.sin(2 * np.pi * 523.25 * t) + 0.02 * np.sin(2 * np.pi * 3100 * t)).astype(np.float32), 44100, subtype="PCM_16")
    m = FAD(_recipe("full"))
    pkg = package_fad(tmp_path, monkeypatch, m.embedder.network)
    from frechet_audio_distance.utils import load_audio_task

    theirs = [pkg.get_embeddings([load_audio_task(str(p), 16000, 1, "float32")], sr=16000) for p in (music, other)]
    gw, gsr = load_audio(music)
    rw, rsr = load_audio(other)
    assert (gsr, gw.shape[0], rsr) == (32000, 2, 44100)
    rows = m.update([Clip("x", "", gw, gsr, rw, rsr)])["x"]
    assert (rows.values["fad_windows"], rows.values["fad_ref_windows"]) == (10, 3)  # non-overlapping 0.96 s examples, no crop
    for ours, th in ((rows.arrays["fad_gen_emb"], theirs[0]), (rows.arrays["fad_ref_emb"], theirs[1])):
        assert ours.shape == th.shape
        assert np.abs(ours - th).max() <= 1e-5 * np.abs(th).max()
