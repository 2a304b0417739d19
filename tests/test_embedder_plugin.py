"""A new embedding model is one module + one conf: an embedder that exists only in this test gets FAD, FAD∞,
bootstrap intervals and per-clip arrays through the command line's path, with no other file touched.

The toy: frames of 512 samples every 256 at 16 kHz, the log magnitude of 16 linear bands, a seeded random
``Linear(16, 8)``: an 8-dimensional embedding per frame. Its conf is a mapping registered with the class (a plugin's
conf file would do the same); nothing in ``evalkit/`` or ``conf/`` names it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from evalkit import evaluate
from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder

TOY_CONF = {"sample_rate": 16000, "dim": 8, "band_hz": 8000.0, "frame": 512, "hop": 256, "bands": 16,
            "checkpoint_file": None, "checkpoint_url": None, "checkpoint_sha256": None}


class ToyBackbone(Backbone):
    name = "toy"

    def __init__(self, bands: int, dim: int, seed: int) -> None:
        super().__init__("full", seed)
        self.bands, self.dim = bands, dim

    def build(self) -> torch.nn.Module:
        return torch.nn.Linear(self.bands, self.dim)

    def load_weights(self, module, state, setting) -> None:
        module.load_state_dict(state)


def toy_features(x: torch.Tensor, frame: int, hop: int, bands: int) -> torch.Tensor:
    """``[T]`` -> ``[frames, bands]`` log band magnitudes."""
    spec = torch.fft.rfft(x.double().unfold(-1, frame, hop) * torch.hann_window(frame, dtype=torch.float64)).abs()
    edges = np.linspace(0, spec.shape[-1], bands + 1).astype(int)
    return torch.log(torch.stack([spec[:, a:b].mean(-1) for a, b in zip(edges[:-1], edges[1:])], -1) + 1e-6).float()


@register_embedder("toy-bands", conf=TOY_CONF)
class ToyEmbedder(Embedder):
    def backbone(self) -> Backbone:
        return ToyBackbone(int(self.config["bands"]), self.dim, self.weights.seed)

    @classmethod
    def model_sizes(cls):
        return ("full", "tiny")

    def embed(self, items):
        c = self.config
        with torch.no_grad():
            return [self.network(toy_features(x.reshape(-1), c["frame"], c["hop"], c["bands"])).numpy()
                    for x in items]


def _clips(folder, seeds, sr, channels, seconds, gain):
    folder.mkdir(parents=True)
    for s in seeds:
        rng = np.random.default_rng(s)
        t = np.arange(int(sr * seconds)) / sr
        x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) for _ in range(3))
        x = gain * (x + 0.05 * rng.standard_normal(t.size))
        sf.write(str(folder / f"c{s % 100:02d}.wav"), np.stack([x] * channels, 1).astype(np.float32), sr)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    _clips(tmp / "gen", range(100, 106), 44100, 2, 3.0, 0.5)
    _clips(tmp / "ref", range(0, 6), 48000, 1, 2.5, 0.8)
    out = tmp / "run"
    summary = evaluate(["model=folder", f"model.dir={tmp / 'gen'}", f"reference.dir={tmp / 'ref'}", "metrics=[fad]",
                        "metrics/fad=frechet-audio-distance", "metrics.fad.embedding=toy-bands",
                        "backbone_weights=random", f"cache.dir={tmp / 'cache'}", "progress=false"], out_dir=out)
    return tmp, out, summary


def test_fad_on_an_embedder_that_lives_in_a_test(toy_run):
    """The number is the Fréchet distance of the toy's own embeddings of the files (mono mean, resampy to 16 kHz, as
    the frechet-audio-distance protocol's input path says), recomputed here from the audio."""
    from scipy import linalg

    from evalkit.audio import load_audio, resample_with

    tmp, out, summary = toy_run
    entry = summary["metrics"]["fad"]
    assert entry["embedding"] == "toy-bands" and entry["random_weights"] is True
    assert entry["recipe"]["embedder"]["bands"] == 16  # the conf it was registered with, recorded
    torch.manual_seed(0)
    net = torch.nn.Linear(16, 8)  # the same seeded weights: Backbone.load draws them from the seed
    side = {}
    for name in ("gen", "ref"):
        embs = []
        for f in sorted((tmp / name).glob("*.wav")):
            wav, sr = load_audio(f)
            x = resample_with(wav.mean(0, keepdim=True), sr, 16000, "resampy")[0]
            with torch.no_grad():
                embs.append(net(toy_features(x, 512, 256, 16)).numpy().astype(np.float64))
        side[name] = np.concatenate(embs)
    mu1, mu2 = side["gen"].mean(0), side["ref"].mean(0)
    s1, s2 = np.cov(side["gen"], rowvar=False), np.cov(side["ref"], rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    want = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert entry["value"] == pytest.approx(want, rel=1e-5)
    assert entry["values"]["n_gen_windows"] == side["gen"].shape[0] == 6 * (1 + (48000 - 512) // 256)


def test_per_clip_arrays_intervals_and_fad_infinity_from_the_run_folder(toy_run):
    from evalkit.report import bootstrap as bs
    from evalkit.report.rundir import load_run

    tmp, out, summary = toy_run
    run = load_run(out)
    gen = run.clip_arrays("fad_gen_emb")
    assert sorted(gen) == [f"c{i:02d}" for i in range(6)]
    assert all(a.shape == (186, 8) for a in gen.values())
    iv = bs.metric_interval(run, "fad", n_boot=200)
    assert iv.value == pytest.approx(summary["metrics"]["fad"]["value"], rel=1e-9)
    assert iv.low < iv.value < iv.high
    inf = bs.run_fad_inf(run, "fad", steps=6, min_n=100)
    assert np.isfinite(inf.score) and len(inf.points) == 6
    assert bs.frechet_metrics(run) == ["fad"]
    stats = json.loads((out / "summary.json").read_text())["metrics"]["fad"]
    assert stats["spec"]["aggregate"] == "frechet"
