"""FAD metric: the audiocraft (Google TF FAD) recipe against an independent numpy/scipy pipeline, closed-form
properties (self-distance 0, monotone in added noise), window counts, skips, reference statistics files, batching.

Random-weight VGGish throughout (no weights offline); ``model_size=tiny`` (same class, narrow layers) where the test
is about the recipe around the network, the full VGGish where the layout matters. The metric class alone, as
audiocraft's metric class computes on the audio it is given: recipes composed with ``postprocess=none`` (the solver's
post-processing in front of it is tested through the command line, ``tests/test_protocol_cli.py``)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.metrics.base import Clip
from evalkit.spec import metric_recipe

REPO = Path(__file__).resolve().parents[1]


from references import google_fad as ref  # the numpy transcription of Google's and torchvggish's recipes


@pytest.fixture(scope="module")
def fad_recipes():
    """conf/metrics/fad.yaml with each protocol's file, resolved as a run resolves them (the metric alone)."""
    return {p: metric_recipe("fad", [f"metrics.fad.protocol={p}", "postprocess=none"])
            for p in ("audiocraft", "frechet-audio-distance")}


@pytest.fixture(scope="module")
def make(fad_recipes):
    from evalkit.metrics.fad import FAD

    def _make(protocol="audiocraft", model_size="tiny", context=None, **over):
        recipe = dict(fad_recipes[protocol], model_size=model_size, backbone_weights="random", reference_stats=None)
        recipe.update(over)
        return FAD(recipe, context=context)

    return _make


_BANK: dict = {}


def _chord_bank(sr: int, bright: float) -> np.ndarray:
    """24 one-second chords of 3 harmonic tones (5 partials each), synthesised once per rate and brightness."""
    key = (sr, bright)
    if key not in _BANK:
        rng = np.random.default_rng(12345)
        t = np.arange(sr) / sr
        bank = np.zeros((24, sr))
        for i in range(24):
            for f0 in 110 * 2 ** (rng.integers(0, 36, size=3) / 12):
                for h in range(1, 6):
                    if f0 * h < sr / 2:
                        bank[i] += rng.uniform(0.05, 0.2) * bright**h / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6))
        _BANK[key] = bank
    return _BANK[key]


def music_like(seed: int, seconds: float = 10.0, sr: int = 32000, channels: int = 1, bright: float = 1.0) -> torch.Tensor:
    """A sequence of one-second chords (drawn by ``seed``) with random gains, plus a little noise: deterministic."""
    rng = np.random.default_rng(seed)
    bank = _chord_bank(sr, bright)
    n = int(round(seconds * sr))
    segs = [bank[j] * g for j, g in zip(rng.integers(0, len(bank), size=int(math.ceil(seconds))), rng.uniform(0.3, 1.0, size=int(math.ceil(seconds))))]
    x = np.concatenate(segs)[:n] + 0.01 * rng.standard_normal(n)
    x = x / np.abs(x).max() * 0.5
    return torch.from_numpy(np.tile(x, (channels, 1))).float()


@pytest.fixture(scope="module")
def clips7():
    """7 pairs of 10 s clips at 32 kHz: 7 x 19 = 133 windows per side (>= 128 for a covariance)."""
    return [Clip(f"c{i}", "", music_like(i), 32000, music_like(100 + i, bright=0.6), 32000) for i in range(7)]


@pytest.fixture(scope="module")
def self_pair(make, clips7, tmp_path_factory):
    """The generated clips scored against themselves; their statistics exported (reused as a reference file)."""
    m = make()
    m.update([Clip(c.id, "", c.audio, 32000, c.audio.clone(), 32000) for c in clips7])
    path = m.export_reference_stats(tmp_path_factory.mktemp("fad") / "self.npz")
    return m, path


@pytest.fixture(scope="module")
def pair(make, clips7, tmp_path_factory):
    """Generated vs (different) reference clips, with the reference statistics exported."""
    m = make()
    rows = m.update(clips7)
    path = m.export_reference_stats(tmp_path_factory.mktemp("fad") / "stats" / "fad_reference.npz")
    return m, rows, path


# ----------------------------------------------------------------------------------------------------------------
def test_registry_config_and_describe(make, fad_recipes):
    from evalkit.metrics.fad import FAD
    from evalkit.registry import get_metric

    assert get_metric("fad") is FAD
    assert (FAD.spec.name, FAD.spec.primary, FAD.spec.higher_is_better, FAD.spec.card_column) == (
        "fad", "fad", False, "Frechet Audio Distance")
    ac = fad_recipes["audiocraft"]
    v = ac["embedder"]
    assert (ac["window_s"], ac["hop_s"], v["stft_window"], v["stft_hop"], v["fft_length"]) == (1.0, 0.5, 400, 160, 512)
    assert ac["input"]["both"][-3:] == [{"peak": -1.0}, {"write_int16": "audiocraft"}, {"max_normalize": 0.1}]
    assert (v["mel_bins"], v["mel_min_hz"], v["mel_max_hz"], v["log_offset"], v["example_frames"]) == (64, 125.0, 7500.0, 0.01, 96)
    assert (v["use_activation"], v["use_pca"], ac["fd_eps"], ac["input"]["both"][0]["resample"]["rate"]) == (False, False, 1e-7, 32000)
    assert v["checkpoint_url"].endswith("/v0.1/vggish-10086976.pth") and v["checkpoint_sha256"] == "10086976"
    pk = fad_recipes["frechet-audio-distance"]
    assert (pk["input"]["both"][1]["resample"]["with"], pk["window_s"], pk["fd_eps"]) == ("resampy", None, 1e-6)
    assert not any(name in step for step in pk["input"]["both"] for name in ("peak", "write_int16", "max_normalize"))
    m = make()
    d = m.describe()
    assert d["protocol"] == "audiocraft" and d["random_weights"] is True and d["checkpoint_sha256"] is None
    assert d["checkpoint"] == "random:vggish-10086976.pth" and m.uses_reference_audio is True
    assert (m.win.window, m.win.hop, m.embedder.sample_rate) == (16000, 8000, 16000)


def test_audiocraft_recipe_matches_google_numpy_pipeline(make, music_dir, tmp_path):
    """Full VGGish (random weights): evalkit's audiocraft protocol vs audiocraft's writer (julius, peak, i16_pcm) ->
    an int16 wav file -> Google's reader (scipy, raw int16, / max(0.1, amax)) -> numpy log-mel windows -> torchvggish's
    layout with the same weights, pre-activation."""
    import soundfile as sf

    from evalkit.audio import load_audio

    files = sorted(music_dir.glob("*[0-9].flac"))[:2]
    gen, sr = load_audio(files[0])  # 10 s, 32 kHz, stereo
    refw, rsr = load_audio(files[1])
    refw = refw[..., : 3 * 32000 + 1234]  # a shorter reference: the generated clip is cropped to it
    m = make(model_size="full")
    rows = m.update([Clip("a", "", gen, sr, refw, rsr)])["a"]
    assert rows.values["fad_windows"] == rows.values["fad_ref_windows"] == 1 + (3 * 16000 + 617 - 16000) // 8000 == 5

    vgg = ref.TorchVGGishVGG()
    vgg.load_state_dict(m.embedder.network.state_dict(), strict=True)  # torchvggish's keys: features.*, embeddings.0/2/4
    vgg.embeddings = torch.nn.Sequential(*list(vgg.embeddings.children())[:-1])  # FAD: no final ReLU
    prepared = m.input.apply(Clip("a", "", gen, sr, refw, rsr))
    for side, wav, crop in (("gen", gen, refw.shape[-1]), ("ref", refw, None)):
        pcm = ref.audiocraft_write_int16(wav, 32000, crop)
        path = tmp_path / f"{side}.wav"
        sf.write(str(path), pcm, 16000, subtype="PCM_16")
        samples = ref.google_read_wav(path)
        # the samples evalkit feeds its front end (the input path's end) are Google's, bit for bit
        ours = (prepared.generated if side == "gen" else prepared.reference).wav[0].numpy()
        np.testing.assert_array_equal(ours, samples / np.maximum(0.1, np.amax(samples)))
        examples = ref.google_examples(samples)
        with torch.no_grad():
            expected = vgg(torch.from_numpy(examples).float()[:, None]).numpy()
        got = rows.arrays[f"fad_{side}_emb"]
        assert got.dtype == np.float32 and got.shape == expected.shape == (5, 128)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
        assert (expected < 0).any()  # pre-activation: negative values survive


def test_fad_of_a_set_against_itself_is_zero(self_pair, pair):
    out = self_pair[0].compute()
    assert out["n_gen_windows"] == out["n_ref_windows"] == 7 * 19
    assert abs(out["fad"]) < 1e-6
    assert pair[0].compute()["fad"] > 1e3 * max(abs(out["fad"]), 1e-12)  # two different sets are not at 0


def test_fad_grows_with_white_noise(make, clips7, self_pair):
    """Random weights: FAD(clean + noise at a growing level, clean) grows strictly from 0."""
    base, stats = self_pair
    g = torch.Generator().manual_seed(0)
    fads = [base.compute()["fad"]]
    for lvl in (0.01, 0.1, 0.3):
        m = make(reference_stats=str(stats))
        m.embedder = base.embedder
        m.update([Clip(c.id, "", (c.audio + lvl * torch.randn(c.audio.shape, generator=g)) / (1 + lvl), 32000)
                  for c in clips7])
        fads.append(m.compute()["fad"])
    assert abs(fads[0]) < 1e-6
    assert all(b > a for a, b in zip(fads, fads[1:])), fads


def test_too_few_windows_is_a_clear_error(make):
    m = make()
    m.update([Clip("x", "", music_like(1, seconds=5), 32000, music_like(2, seconds=10), 32000)])
    from evalkit.metrics.base import MetricUnavailable

    with pytest.raises(MetricUnavailable, match=r"generated embeddings \(vggish\): 9 embeddings for dimension 128"):
        m.compute()


def test_window_counts_crop_and_per_clip_embeddings(make):
    m = make()
    rows = m.update([
        Clip("ten", "", music_like(1), 32000, music_like(2), 32000),
        Clip("long", "", music_like(3, seconds=5), 32000, music_like(4, seconds=4.5), 32000),  # cropped to 4.5 s
        Clip("rate", "", music_like(5, seconds=3, sr=48000, channels=2), 48000, music_like(6, seconds=3, sr=44100), 44100),
    ])
    assert (rows["ten"].values["fad_windows"], rows["ten"].values["fad_ref_windows"]) == (19, 19)
    assert (rows["long"].values["fad_windows"], rows["long"].values["fad_ref_windows"]) == (8, 8)  # 5 s alone would give 9
    assert (rows["rate"].values["fad_windows"], rows["rate"].values["fad_ref_windows"]) == (5, 5)
    for r in rows.values():
        assert r.arrays["fad_gen_emb"].dtype == np.float32 and r.arrays["fad_gen_emb"].shape == (r.values["fad_windows"], 128)
        assert r.skipped is None
    assert int(m.state["gen_n"]) == 32 and int(m.state["ref_n"]) == 32
    # the package protocol: non-overlapping 0.96 s examples over the whole clip, no crop
    p = make("frechet-audio-distance")
    rows = p.update([Clip("long", "", music_like(3, seconds=12, sr=16000), 16000, music_like(4, seconds=10.5, sr=16000), 16000)])
    assert (rows["long"].values["fad_windows"], rows["long"].values["fad_ref_windows"]) == (12, 10)  # 1198 frames -> 12; 1048 -> 10


def test_short_and_silent_clips_are_skipped_with_reasons(make):
    m = make()
    ok = music_like(1)
    rows = m.update([
        Clip("short", "", music_like(2, seconds=0.9), 32000, ok, 32000),
        Clip("silent", "", torch.zeros(1, 320000), 32000, ok, 32000),
        Clip("noref", "", ok, 32000, None, None),
        Clip("good", "", ok, 32000, ok, 32000),
    ])
    assert "too short for one vggish window: 14400 samples at 16000 Hz, needs 16000" in rows["short"].skipped
    assert rows["silent"].skipped == "generated: silent (RMS -inf dBFS < -70 dBFS)"  # the audit, before the peak step
    assert rows["silent"].flags == {"generated": {"silent": "RMS -inf dBFS < -70 dBFS"}}
    assert "no reference audio" in rows["noref"].skipped
    assert rows["good"].skipped is None
    assert rows["short"].values["fad_windows"] == 0 and rows["short"].values["fad_ref_windows"] == 19  # the reference still counts
    # the silent and reference-less pairs are skipped whole; the short clip's side alone
    assert int(m.state["n_skipped"]) == 3 and int(m.state["n_gen_skipped"]) == 1 and int(m.state["n_ref_skipped"]) == 0
    assert int(m.state["gen_n"]) == 19 and int(m.state["ref_n"]) == 2 * 19
    # the package protocol has no peak normalisation: silence, let through by the audit policy, is embedded; its
    # shortest clip is 400 + 95 * 160 samples
    from evalkit.metrics.spec import RunContext

    p = make("frechet-audio-distance", context=RunContext(audit={"skip": []}))
    rows = p.update([Clip("silent", "", torch.zeros(1, 16000), 16000, torch.zeros(1, 15599), 16000)])
    assert rows["silent"].values["fad_windows"] == 1 and "needs 15600" in rows["silent"].skipped
    assert np.isfinite(rows["silent"].arrays["fad_gen_emb"]).all()


def test_reference_statistics_file_roundtrip_and_refusals(make, clips7, pair, tmp_path):
    from evalkit.io import read_npz
    from evalkit.metrics.fad import FADError

    a, a_rows, path = pair
    expected = a.compute()["fad"]
    z = read_npz(path)
    assert int(z["n"]) == 133 and z["mu"].shape == (128,) and z["sigma"].shape == (128, 128)
    ident = __import__("json").loads(str(z["identity_json"]))
    assert (ident["protocol"], ident["embedding"]["random_weights"], ident["windows"]) == ("audiocraft", True, [16000, 8000])
    np.testing.assert_allclose(z["mu"], np.concatenate([r.arrays["fad_ref_emb"] for r in a_rows.values()]).mean(0), rtol=1e-5, atol=1e-7)

    b = make(reference_stats=str(path))
    assert b.uses_reference_audio is False
    rows = b.update([Clip(c.id, "", c.audio, 32000, c.reference, 32000) for c in clips7[:4]]
                    + [Clip(c.id, "", c.audio, 32000, None, None) for c in clips7[4:]])
    assert all(r.skipped is None and "fad_ref_emb" not in r.arrays for r in rows.values())
    out = b.compute()
    assert out["fad"] == pytest.approx(expected, rel=1e-9) and out["n_ref_windows"] == 133
    with pytest.raises(FADError, match="nothing new to export"):
        b.export_reference_stats(tmp_path / "again.npz")

    from evalkit.statistics.stats_file import StatsFileError

    with pytest.raises(StatsFileError, match=r"protocol: 'audiocraft' \(file\) vs 'frechet-audio-distance'"):
        make("frechet-audio-distance", reference_stats=str(path))
    with pytest.raises(StatsFileError, match=r"embedding.random_seed: 0 \(file\) vs 1"):
        make(reference_stats=str(path), random_seed=1)
    with pytest.raises(StatsFileError, match=r"windows: \[16000, 8000\] \(file\) vs \[16000, 4000\]"):
        make(reference_stats=str(path), hop_s=0.25)
    with pytest.raises(StatsFileError, match="embedding.model_size"):
        make(model_size="full", reference_stats=str(path))
    with pytest.raises(StatsFileError, match="no such file"):
        make(reference_stats=str(tmp_path / "absent.npz"))


def test_batching_and_merging_do_not_change_the_numbers(make):
    clips = [Clip(f"b{i}", "", music_like(20 + i, seconds=3), 32000, music_like(30 + i, seconds=3), 32000) for i in range(3)]
    one = make(batch_size=4)
    rows_all = one.update(clips)
    parts = [make(batch_size=128), make(batch_size=128)]
    rows = {**parts[0].update(clips[:1]), **parts[1].update(clips[1:])}
    for cid, r in rows.items():
        for k in ("fad_gen_emb", "fad_ref_emb"):
            np.testing.assert_allclose(r.arrays[k], rows_all[cid].arrays[k], rtol=1e-5, atol=1e-6)
    merged = parts[0].merge(parts[1])
    for k, v in one.state.items():
        np.testing.assert_allclose(merged.state[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert int(merged.state["gen_n"]) == 3 * 5


def test_checkpoint_file_loads_into_evalkit_vggish(make, tmp_path, clips7):
    from evalkit.embeddings.vggish import VGGishError, build_vggish
    from evalkit.embeddings.weights import CheckpointError

    rnd = make()
    path = tmp_path / "tiny-vggish.pth"
    torch.save({**rnd.embedder.network.state_dict(), "pproc.pca_means": torch.zeros(128, 1)}, path)  # torchvggish extras ignored
    m = make(checkpoint=str(path), checkpoint_sha256=None)
    d = m.describe()
    assert d["random_weights"] is False and d["checkpoint"] == "tiny-vggish.pth" and len(d["checkpoint_sha256"]) == 64
    x = torch.randn(3, 96, 64)
    np.testing.assert_array_equal(m.embedder.network.embed(x).numpy(), rnd.embedder.network.embed(x).numpy())
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(VGGishError, match="not a VGGish state dict"):
        build_vggish(tmp_path / "bad.pth", model_size="tiny")
    with pytest.raises(CheckpointError, match="metrics.fad.checkpoint"):
        make(checkpoint=str(tmp_path / "bad.pth"), checkpoint_sha256=None)
    with pytest.raises(Exception, match="does not start with 10086976"):
        make(checkpoint=str(path))  # the released file's sha256 prefix is checked


@pytest.mark.parametrize("setting, message", [
    ({"window_s": 0.96, "hop_s": -1}, r"metrics\.fad\.hop_s=-1: a window or hop is a number of seconds > 0"),
    ({"window_s": 0.96, "hop_s": 0}, r"metrics\.fad\.hop_s=0: a window or hop is a number of seconds > 0"),
    ({"window_s": "abc", "hop_s": 0.5}, r"metrics\.fad\.window_s='abc'"),
    ({"window_s": 0.96, "hop_s": None}, r"window_s and hop_s are set together"),
])
def test_a_bad_window_is_refused_before_any_work(setting, message):
    """``metrics.fad.hop_s=-1`` ran 16 s of work into a traceback (``step is -16000``); ``hop_s=0`` was read as unset
    and blamed on the pair. Both metrics with windows (FAD, KAD) refuse them naming the setting."""
    from evalkit.metrics.fad import FADError, statistic_settings
    from evalkit.metrics.base import window_problem

    with pytest.raises(FADError, match=message):
        statistic_settings(setting, "fad")
    assert window_problem(setting, "metrics.kad").startswith("metrics.kad.")
    assert window_problem({"window_s": 0.96, "hop_s": 0.5}, "metrics.fad") is None
    assert window_problem({}, "metrics.fad") is None
