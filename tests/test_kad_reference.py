"""Parity with kadtk 1.1.0's own code (``pytest -m reference``; kadtk installed with ``--no-deps``, see the README).

On identical embeddings: ``kadtk.kad.calc_kernel_audio_distance`` (every kernel, the median bandwidth and a fixed one,
float16-stored embeddings as kadtk keeps them) and ``median_pairwise_distance`` (bit for bit, through evalkit's blocked
selection). Through the command line: a folder-mode run with the ``kadtk`` protocol (files at 44.1/48/16 kHz, stereo
and mono, other loudness) against kadtk's ``VGGishModel`` (served evalkit's random VGGish weights through a fake torch
hub, as tests/test_fad_parity.py does) on kadtk's audio path written out (its torchaudio load/save need torchcodec),
then ``calc_kernel_audio_distance`` as ``KernelAudioDistance.score`` calls it, and per file as ``score_individual``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.metrics.kad import TorchPdist
from evalkit.statistics import kernel as K
from tests.conftest import needs_reference

pytestmark = needs_reference("kadtk")


def sets(m, n, d, seed=0):
    """float16-rounded embeddings, as kadtk stores them (ModelLoader.get_embedding)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, d)) * 1.5).astype(np.float16).astype(np.float32)
    y = (rng.standard_normal((n, d)) * 1.6 + 0.05).astype(np.float16).astype(np.float32)
    return x, y


@pytest.mark.parametrize("kernel", K.KERNELS)
@pytest.mark.parametrize("bandwidth", [None, 12.0])
def test_kad_equals_kadtks_calc_kernel_audio_distance(kernel, bandwidth):
    """kadtk sums its float32 kernel matrices in float32: its own error against a float64 evaluation is up to ~2e-5
    here (×100 units); evalkit sums in float64 and lands within 2e-7 of it."""
    from kadtk.kad import calc_kernel_audio_distance

    x, y = sets(3000, 2500, 128)
    theirs = calc_kernel_audio_distance(torch.from_numpy(x), torch.from_numpy(y), (None, None), "cpu",
                                        bandwidth=bandwidth, kernel=kernel).item()
    ours = K.kad(x, y, K.KernelSettings(kernel=kernel, bandwidth=bandwidth), distances=TorchPdist())
    exact = K.kad(x, y, K.KernelSettings(kernel=kernel, bandwidth=ours.bandwidth, precision="float64")).value
    assert ours.value == pytest.approx(theirs, abs=5e-5)
    assert abs(ours.value - exact) <= 2e-7
    assert abs(theirs - ours.value) > 1e-9  # kadtk's float32 sums really differ: this is not the same code run twice


def test_median_is_kadtks_bit_for_bit_through_the_blocked_selection(monkeypatch):
    from kadtk.kad import median_pairwise_distance

    monkeypatch.setattr(K, "SMALL_PAIRS", 1000)
    monkeypatch.setattr(K, "SAMPLE_PAIRS", 1 << 16)
    for n, d, seed in ((3000, 128, 1), (2001, 2048, 2), (2500, 6, 3)):
        _, y = sets(10, n, d, seed)
        assert K.median_pairwise_distance(y, TorchPdist(), block=700) == median_pairwise_distance(y)


def test_per_clip_is_kadtks_score_individual():
    """score_individual: calc_kernel_audio_distance(baseline, that file's frames) with its own bandwidth."""
    from kadtk.kad import calc_kernel_audio_distance

    x, y = sets(1500, 200, 128, seed=4)
    clips = [y[i:i + 20] for i in range(0, 200, 20)]
    res = K.kad_with_clips(x, clips, K.KernelSettings(), distances=TorchPdist())
    for c, v in zip(clips, res.clip_values):
        theirs = calc_kernel_audio_distance(torch.from_numpy(x), torch.from_numpy(c), (None, None), "cpu").item()
        assert v == pytest.approx(theirs, abs=5e-5)


# -- through the command line -----------------------------------------------------------------------------------------
def write(folder: Path, name: str, sr: int, channels: int, seconds: float, gain: float, seed: int) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(4))
    x = gain * (x + 0.05 * rng.standard_normal(t.size)) * (0.7 + 0.3 * np.sin(2 * np.pi * 0.7 * t))
    chans = [x] if channels == 1 else [x, 0.6 * x + 0.1 * rng.standard_normal(t.size)]
    sf.write(str(folder / f"{name}.wav"), np.clip(np.stack(chans, 1), -1, 1), sr, subtype="PCM_16")


def kadtk_model(tmp_path: Path, monkeypatch, network):
    """kadtk's VGGishModel, its torch hub load served a local torchvggish repo holding ``network``'s weights."""
    from kadtk.model_loader import VGGishModel

    from tests import test_fad_reference as ref

    repo = tmp_path / "torch_hub" / "harritaylor_torchvggish_master"
    channels = tuple(network.features[i].out_channels for i in (0, 3, 6, 11))
    ref.write_fake_hub(repo, {k: v.clone() for k, v in network.state_dict().items()}, channels,
                       network.embeddings[0].out_features)
    original = torch.hub.load
    monkeypatch.setattr(torch.hub, "load", lambda r, m, *a, **k: original(str(repo), m, source="local"))
    ml = VGGishModel()
    ml.load_model()
    assert ml.model.postprocess is False and len(ml.model.embeddings) == 5  # kadtk's own mutations
    return ml


def kadtk_load_audio(path: Path, sr_out: int = 16000) -> np.ndarray:
    """kadtk/emb_loader.py EmbeddingLoader.load_audio + ModelLoader.load_wav, in memory: torchaudio.load (float32,
    as soundfile's float32 read of 16-bit PCM), torch.mean(x, 0), its Resample, torchaudio.save PCM_S16 (FFmpeg:
    round(x·32768), saturated), soundfile.read(dtype='int16') / 32768.0."""
    import soundfile as sf
    import torchaudio

    data, fs = sf.read(str(path), dtype="float32", always_2d=True)
    x = torch.mean(torch.from_numpy(data.T.copy()), 0).unsqueeze(0)
    y = torchaudio.transforms.Resample(fs, sr_out, lowpass_filter_width=64, rolloff=0.9475937167399596,
                                       resampling_method="sinc_interp_kaiser", beta=14.769656459379492)(x)
    return torch.round(y * 32768).clamp(-32768, 32767).to(torch.int16)[0].numpy() / 32768.0


@pytest.mark.parametrize("size", ["tiny", "full"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_command_line_kadtk_protocol_matches_kadtk(tmp_path, monkeypatch, precision, size):
    """The audio (kadtk's path) and the float16 embeddings come out identical (but for a float16 rounding or two);
    in float64 (kadtk's ``precision=torch.float64``) kadtk's statistic on evalkit's saved embeddings is evalkit's
    number to 1e-12, and kadtk end to end (its own float16 embeddings) agrees to ~6e-6 relative. In float32 both
    tools form squared distances as ``‖a‖² + ‖b‖² − 2a·b``: with random VGGish weights the norms² are hundreds of
    times the squared distances (tiny: ~0.2 vs ~4e-4), so each tool's float32 rounding moves the KAD by up to ~5e-4
    relative (evalkit's lands nearer the float64 value); released VGGish embeddings are far better conditioned."""
    import pandas as pd
    from kadtk.kad import calc_kernel_audio_distance

    from evalkit import evaluate
    from evalkit.embeddings import build_embedder
    from evalkit.spec import recipe_from_files

    gen, ref = tmp_path / "eval", tmp_path / "baseline"
    for i in range(6):
        write(gen, f"c{i}", (44100, 48000, 16000)[i % 3], 2 - i % 2, 3.0 + 0.3 * i, (0.3, 0.9, 0.05)[i % 3], 100 + i)
        write(ref, f"c{i}", (48000, 44100, 32000)[i % 3], 1 + i % 2, 3.5, (0.8, 0.2, 0.5)[i % 3], i)
    summary = evaluate(["model=folder", f"model.dir={gen}", f"reference.dir={ref}", "metrics=[kad]", "metrics/kad=kadtk",
                        f"metrics.kad.precision={precision}", "backbone_weights=random", f"backbone_size={size}",
                        "progress=false", "cache.scores=false"], out_dir=tmp_path / "run")
    entry = summary["metrics"]["kad"]
    recipe = recipe_from_files("kad", "kadtk", model_size=size, backbone_weights="random", checkpoint="random")
    ml = kadtk_model(tmp_path, monkeypatch, build_embedder(recipe, "metrics.kad").network)
    emb = {side: {f.stem: ml.get_embedding(kadtk_load_audio(f)) for f in sorted(d.glob("*.wav"))}
           for side, d in (("eval", gen), ("baseline", ref))}
    assert all(e.dtype == np.float16 for e in emb["eval"].values())  # kadtk keeps float16
    from evalkit.report.rundir import load_run

    run = load_run(tmp_path / "run")
    saved = {side: run.clip_arrays(f"kad_{side}_emb") for side in ("gen", "ref")}
    for cid, e in emb["eval"].items():
        assert np.abs(saved["gen"][cid] - e.astype(np.float32)).max() <= 4e-6  # a float16 ulp at ~0.09, at most
    bg = torch.tensor(np.concatenate(list(emb["baseline"].values())))
    ev = torch.tensor(np.concatenate(list(emb["eval"].values())))
    dtype = getattr(torch, precision)
    theirs = calc_kernel_audio_distance(bg, ev, (None, None), "cpu", precision=dtype).item()  # .score()
    assert entry["values"]["n_gen_windows"] == len(ev) and entry["values"]["n_ref_windows"] == len(bg)
    # kadtk's statistic on the embeddings evalkit saved: the same number (float64), or float32's spread
    on_saved = calc_kernel_audio_distance(*(torch.tensor(np.concatenate([saved[s][k] for k in sorted(saved[s])]))
                                            for s in ("ref", "gen")), (None, None), "cpu", precision=dtype).item()
    rel = 1e-12 if precision == "float64" else 1e-3
    assert entry["value"] == pytest.approx(on_saved, rel=rel)
    # kadtk end to end (its own embeddings: a few float16 roundings differ: ~3e-6 (tiny), ~6e-6 (full) relative)
    rel = 1e-5 if precision == "float64" else 1e-3
    assert entry["value"] == pytest.approx(theirs, rel=rel)
    clips = pd.read_parquet(tmp_path / "run" / "clips.parquet").set_index("id")
    for cid, e in emb["eval"].items():  # score_individual
        one = calc_kernel_audio_distance(bg, torch.tensor(e), (None, None), "cpu", precision=dtype).item()
        assert clips.loc[cid, "kad"] == pytest.approx(one, rel=10 * rel)
