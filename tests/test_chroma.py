"""Chroma cosine similarity (audiocraft protocol): front-end parity, closed-form chords, edge cases, state.

Parity references: ``torchaudio.transforms.Spectrogram`` (what audiocraft's ChromaExtractor calls), librosa's
chroma (``filters.chroma`` + ``feature.chroma_stft``), and a line-by-line transcription of audiocraft's
``ChromaExtractor.forward`` + ``ChromaCosineSimilarityMetric.update`` built from those two libraries
(``references/audiocraft_chroma.py``).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evalkit.audio import convert_audio
from evalkit.metrics.base import Clip
from evalkit.metrics.spec import RunContext
from evalkit.spec import metric_recipe
from evalkit.metrics.chroma import ChromaCosineSimilarity, ChromaFrontEnd, chroma_filterbank, power_spectrogram
from evalkit.registry import get_metric
from references.audiocraft_chroma import ChromaCosineSimilarity as AudiocraftChroma

from pathlib import Path

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SR = 32000
N_FFT, HOP = 2**14, 2**12
DF = SR / N_FFT  # 1.953125 Hz per FFT bin


#: an audit policy that skips nothing (the metric's own handling of silence and 1-sample clips, audiocraft's)
LENIENT = RunContext(audit={"skip": []})


def _recipe(**overrides) -> dict:
    # the metric alone, as audiocraft's metric class computes on the audio it is given (postprocess=none)
    return metric_recipe("chroma", [f"metrics.chroma.{k}={v}" for k, v in overrides.items()] + ["postprocess=none"])


RECIPE = _recipe()


def _tones(freqs, amps, seconds=10.0, sr=SR, channels=1) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    x = sum(a * torch.cos(2 * math.pi * f * t + 0.3 * i) for i, (f, a) in enumerate(zip(freqs, amps)))
    return x.float().unsqueeze(0).expand(channels, -1).contiguous()


# bin-centred C4, E4, G4 (FFT bins 134, 169, 201: within 3 cents of equal temperament)
K_C, K_E, K_G = 134, 169, 201
TRIAD = (K_C * DF, K_E * DF, K_G * DF)


# ----------------------------------------------------------------------------------------------------------------
# Config and registry
# ----------------------------------------------------------------------------------------------------------------
def test_config_and_class_attributes():
    assert RECIPE["n_fft"] == RECIPE["win_length"] == 2**14 and RECIPE["hop_length"] == 2**12
    assert RECIPE["sample_rate"] == 32000 and RECIPE["n_chroma"] == 12 and RECIPE["argmax"] is True
    assert RECIPE["norm"] == math.inf and RECIPE["norm_eps"] == 1e-6 and RECIPE["cosine_eps"] == 1e-8
    assert _recipe(argmax="false")["argmax"] is False
    cls = get_metric("chroma")
    assert cls is ChromaCosineSimilarity
    s = cls.spec
    assert (s.name, s.primary, s.higher_is_better, s.needs_reference, s.card_column) == (
        "chroma", "chroma", True, True, "Chroma Cosine Similarity")
    d = cls(RECIPE).describe()
    assert d["protocol"] == "audiocraft" and d["checkpoint"] is None and d["random_weights"] is False


# ----------------------------------------------------------------------------------------------------------------
# Front end parity
# ----------------------------------------------------------------------------------------------------------------
def test_power_spectrogram_matches_torchaudio():
    torchaudio = pytest.importorskip("torchaudio")
    ref = torchaudio.transforms.Spectrogram(
        n_fft=N_FFT, win_length=N_FFT, hop_length=HOP, power=2, center=True, pad=0, normalized=True)
    g = torch.Generator().manual_seed(0)
    for n in (320000, 50001, N_FFT + 1):
        x = torch.randn(3, 1, n, generator=g) * 0.3
        ours = power_spectrogram(x, N_FFT, N_FFT, HOP, center=True, pad_mode="reflect", normalized=True, power=2)
        theirs = ref(x)
        assert ours.shape == theirs.shape == (3, 1, N_FFT // 2 + 1, n // HOP + 1)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6 * float(theirs.max()))


def test_normalized_window_definition():
    # torchaudio "window" normalisation divides the complex STFT by sqrt(sum(w**2)); periodic Hann: sum(w**2) = 3N/8,
    # so a bin-centred unit cosine has |X[k]|**2 = (N/4)**2 / (3N/8) = N/6 at its bin in every interior frame.
    x = _tones([K_C * DF], [1.0], seconds=2.0)
    p = power_spectrogram(x.double(), N_FFT, N_FFT, HOP)[0]
    interior = p[:, 2 : (x.shape[-1] - N_FFT // 2) // HOP + 1]
    np.testing.assert_allclose(interior[K_C].numpy(), N_FFT / 6, rtol=1e-6)  # the tone is float32
    np.testing.assert_allclose(interior[K_C + 1].numpy(), N_FFT / 24, rtol=1e-6)  # |W(±1)| = N/8


def test_filterbank_is_librosas_and_pinned():
    import librosa

    fb = chroma_filterbank(SR, N_FFT, 12, 0.0)
    assert fb.dtype == torch.float32 and fb.shape == (12, N_FFT // 2 + 1)
    np.testing.assert_array_equal(fb.numpy(), librosa.filters.chroma(sr=SR, n_fft=N_FFT, tuning=0, n_chroma=12))
    # golden values (librosa 0.11.0): a librosa release that moves the filter bank is caught here
    assert float(fb.double().sum()) == pytest.approx(4159.9424, abs=2e-3)
    np.testing.assert_allclose(fb[[0, 4, 7], [K_C, K_E, K_G]].numpy(), [0.66990, 0.76450, 0.82870], atol=1e-4)
    assert int(fb[:, K_C].argmax()) == 0 and int(fb[:, K_E].argmax()) == 4 and int(fb[:, K_G].argmax()) == 7


def test_front_end_matches_librosa_chroma_on_same_power_spectrogram():
    import librosa

    fe = ChromaFrontEnd(RECIPE)
    g = torch.Generator().manual_seed(1)
    x = _tones(TRIAD, [0.5, 0.4, 0.3], seconds=4.0) + 0.05 * torch.randn(1, 4 * SR, generator=g)
    ours = fe.normalized_chroma(x)[0].numpy()  # [12, frames]
    # the same power spectrogram, through librosa's chroma (filter bank, einsum, L-inf normalisation)
    S = power_spectrogram(x, N_FFT, N_FFT, HOP)[0].numpy()
    theirs = librosa.feature.chroma_stft(S=S, sr=SR, n_fft=N_FFT, tuning=0, n_chroma=12, norm=np.inf)
    assert ours.shape == theirs.shape == (12, 4 * SR // HOP + 1)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # and librosa's own STFT (periodic 'hann' from scipy, reflect padding) in float64, normalised like torchaudio
    w = librosa.filters.get_window("hann", N_FFT, fftbins=True)
    S64 = np.abs(librosa.stft(x[0].double().numpy(), n_fft=N_FFT, hop_length=HOP, window="hann", center=True,
                              pad_mode="reflect")) ** 2 / np.sum(w**2)
    theirs64 = librosa.feature.chroma_stft(S=S64, sr=SR, n_fft=N_FFT, tuning=0, n_chroma=12, norm=np.inf)
    np.testing.assert_allclose(ours, theirs64, atol=1e-6)


def test_metric_matches_audiocraft_transcription():
    pytest.importorskip("torchaudio")
    ref_impl = AudiocraftChroma()
    g = torch.Generator().manual_seed(2)
    # noisy chords that change every 0.5 s; stereo generated audio at 48 kHz, mono references at 48 kHz
    notes = [(K_C, K_E, K_G), (K_E, K_G, 2 * K_C), (K_G - 17, K_C + 48, K_E + 21)]

    def chord_seq(seed, n):
        rng = np.random.default_rng(seed)
        parts = []
        for i in range(n // 24000 + 1):
            ks = notes[rng.integers(len(notes))]
            parts.append(_tones([k * DF for k in ks], rng.uniform(0.1, 0.5, 3), seconds=0.5, sr=48000)[0])
        return torch.cat(parts)[:n]

    n = 48000 * 3
    gens = torch.stack([torch.stack([chord_seq(s, n), chord_seq(s + 10, n)]) for s in range(3)])
    refs = torch.stack([chord_seq(s + 20, n)[None] for s in range(3)]) + 0.01 * torch.randn(3, 1, n, generator=g)
    # audiocraft's update needs equal shapes: give it the references duplicated to 2 channels (mean = itself)
    expected = ref_impl.score(gens, refs.expand(-1, 2, -1), torch.tensor([n] * 3) * 2 // 3, 48000)
    m = ChromaCosineSimilarity(RECIPE)
    got = m.update([Clip(f"c{i}", "", gens[i], 48000, refs[i], 48000) for i in range(3)])
    for i, (s, t) in enumerate(expected):
        assert got[f"c{i}"].values["chroma_frames"] == t == math.ceil(n * 2 / 3 / HOP)
        assert got[f"c{i}"].values["chroma"] == pytest.approx(s / t, abs=1e-7)
    assert m.compute()["chroma"] == pytest.approx(sum(s for s, _ in expected) / sum(t for _, t in expected), abs=1e-12)
    # the values are not trivial: some frames agree, some do not
    assert 0.0 < m.compute()["chroma"] < 1.0


def test_short_clip_padding_matches_audiocraft():
    pytest.importorskip("torchaudio")
    ref_impl = AudiocraftChroma()
    g = torch.Generator().manual_seed(3)
    for n in (9601, 4096, 1):  # shorter than n_fft: zero-padded around to n_fft, ceil(n/4096) frames compared
        gen = _tones([K_E * DF], [0.5], seconds=1.0)[:, :n] + 0.1 * torch.randn(1, n, generator=g)
        ref = _tones([K_G * DF], [0.5], seconds=1.0)[:, :n] + 0.1 * torch.randn(1, n, generator=g)
        [(s, t)] = ref_impl.score(gen[None], ref[None], torch.tensor([n]), SR)
        # a 1-sample clip is `constant` to the audit; the policy that lets it through shows the padding rule
        out = ChromaCosineSimilarity(RECIPE, context=LENIENT).update([Clip("a", "", gen, SR, ref, SR)])["a"]
        assert out.values["chroma_frames"] == t == math.ceil(n / HOP)
        assert out.values["chroma"] == pytest.approx(s / t, abs=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# Closed form: a C-major triad
# ----------------------------------------------------------------------------------------------------------------
def _predicted_chroma(amps) -> np.ndarray:
    """Closed form for bin-centred tones under a periodic Hann window: tone a·cos at bin k puts (a·N/4)²/S at k and
    (a·N/8)²/S at k±1 (S = Σw²) and nothing elsewhere; chroma = filter bank · that, then / max."""
    fb = chroma_filterbank(SR, N_FFT).double().numpy()
    raw = np.zeros(12)
    for k, a in zip((K_C, K_E, K_G), amps):
        raw += a**2 * (fb[:, k] + (fb[:, k - 1] + fb[:, k + 1]) / 4)
    return raw / raw.max()


@pytest.mark.parametrize(
    "amps, expected_bin",
    [
        ((1.0, 1.0, 1.0), 7),  # equal amplitudes: G, because librosa's octave weighting (centre 5 octaves above A0) favours the higher tone
        ((1.0, 0.8, 0.8), 0),  # C loud enough to beat G's larger filter weight: C
        ((0.8, 1.0, 0.8), 4),  # E
        ((0.9, 0.9, 0.8), 4),  # E beats C at equal amplitude (0.7645 vs 0.6699 weight) and G at 0.8
    ],
)
def test_c_major_triad_one_hot_on_expected_bin(amps, expected_bin):
    fe = ChromaFrontEnd(RECIPE)
    x = _tones(TRIAD, [0.3 * a for a in amps], seconds=10.0)
    pred = _predicted_chroma(amps)
    assert int(pred.argmax()) == expected_bin
    chroma = fe.normalized_chroma(x)[0].double().numpy()  # [12, 79]
    interior = chroma[:, 2 : (x.shape[-1] - N_FFT // 2) // HOP + 1]  # frames whose window lies inside the clip
    np.testing.assert_allclose(interior, np.repeat(pred[:, None], interior.shape[1], 1), atol=2e-5)
    one_hot = fe(x)[0]
    assert one_hot.shape == (79, 12)
    assert torch.equal(one_hot.sum(-1), torch.ones(79))
    assert set(one_hot.argmax(-1).tolist()) == {expected_bin}  # every frame, the reflect-padded edges included


def test_clip_against_itself_is_one_and_disjoint_triads_zero():
    c_dom, g_dom = _tones(TRIAD, [0.3, 0.24, 0.24]), _tones(TRIAD, [0.3, 0.3, 0.3], channels=2)
    m = ChromaCosineSimilarity(RECIPE)
    out = m.update([
        Clip("self", "", c_dom, SR, c_dom.clone(), SR),
        Clip("c_vs_g", "", g_dom, SR, c_dom, SR),
        Clip("48k", "", c_dom, SR, convert_audio(c_dom, SR, 48000, 1), 48000),  # resampled reference
    ])
    assert out["self"].values == {"chroma": 1.0, "chroma_frames": 79}
    assert out["c_vs_g"].values == {"chroma": 0.0, "chroma_frames": 79}
    assert out["48k"].values["chroma"] == 1.0
    assert m.compute() == {"chroma": 2 / 3, "n_frames": 237.0, "n_clips": 3.0}


def test_continuous_chroma_option():
    # argmax=false: cosine of the L-inf normalised chroma vectors, = closed form on interior frames
    m = ChromaCosineSimilarity(_recipe(argmax="false"))
    a, b = (1.0, 0.8, 0.8), (0.8, 1.0, 0.8)
    out = m.update([Clip("x", "", _tones(TRIAD, [0.3 * v for v in a]), SR, _tones(TRIAD, [0.3 * v for v in b]), SR)])
    pa, pb = _predicted_chroma(a), _predicted_chroma(b)
    expected = pa @ pb / np.linalg.norm(pa) / np.linalg.norm(pb)
    assert 0.5 < expected < 0.97  # 0.934: the chords share their notes, only the balance differs
    assert out["x"].values["chroma"] == pytest.approx(expected, abs=0.02)  # edge frames (reflect padding) differ a little


# ----------------------------------------------------------------------------------------------------------------
# Edge cases, lengths, batching, state
# ----------------------------------------------------------------------------------------------------------------
def test_silence_is_finite_and_counts_as_c():
    silent = torch.zeros(1, 3 * SR)
    fe = ChromaFrontEnd(RECIPE)
    norm = fe.normalized_chroma(silent)
    assert torch.isfinite(norm).all() and float(norm.abs().max()) == 0.0  # eps: 0 / 1e-6, no NaN
    c_dom, g_dom = _tones(TRIAD, [0.3, 0.24, 0.24], seconds=3.0), _tones(TRIAD, [0.3, 0.3, 0.3], seconds=3.0)
    m = ChromaCosineSimilarity(RECIPE, context=LENIENT)  # silence is `silent` to the audit, skipped by default
    out = m.update([Clip("ss", "", silent, SR, silent, SR), Clip("sc", "", silent, SR, c_dom, SR),
                    Clip("sg", "", g_dom, SR, silent, SR)])
    # audiocraft behaviour: an all-zero chroma frame's argmax is bin 0 (C)
    assert [out[k].values["chroma"] for k in ("ss", "sc", "sg")] == [1.0, 1.0, 0.0]
    assert math.isfinite(m.compute()["chroma"])


def test_frames_follow_reference_length_and_generated_is_cropped_or_padded():
    g = torch.Generator().manual_seed(4)
    ref = _tones(TRIAD, [0.3, 0.24, 0.24], seconds=5.0)
    gen_long = torch.cat([ref, _tones(TRIAD, [0.3, 0.3, 0.3], seconds=3.0)], -1)  # G-dominant tail is cropped away
    gen_short = ref[:, : 4 * SR]  # zero-padded to 5 s: the silent last second is "C", which matches here
    gen_noise = 0.2 * torch.randn(1, 5 * SR, generator=g)
    m = ChromaCosineSimilarity(RECIPE)
    out = m.update([Clip("long", "", gen_long, SR, ref, SR), Clip("short", "", gen_short, SR, ref, SR),
                    Clip("padded", "", torch.nn.functional.pad(gen_short, (0, SR)), SR, ref, SR),
                    Clip("noise", "", gen_noise, SR, ref, SR)])
    assert out["long"].values == {"chroma": 1.0, "chroma_frames": math.ceil(5 * SR / HOP)}
    assert out["short"] == out["padded"]
    # 39 of 40 frames: one frame straddling the abrupt cut at 4 s has its splatter dominate (measured)
    assert out["short"].values["chroma"] >= 38 / 40
    assert out["noise"].values["chroma"] < 0.5


def test_batched_equals_per_clip_and_merge_adds():
    g = torch.Generator().manual_seed(5)
    clips = []
    for i, secs in enumerate((2.0, 3.0, 2.0, 0.4, 3.0)):
        n = int(secs * SR)
        ref = _tones(TRIAD, [0.3, 0.2 + 0.05 * i, 0.25], seconds=secs) + 0.2 * torch.randn(1, n, generator=g)
        gen = _tones(TRIAD, [0.25, 0.3, 0.1 * i], seconds=secs, channels=2) + 0.2 * torch.randn(2, n, generator=g)
        clips.append(Clip(f"c{i}", "", gen, SR, ref, SR))
    clips.append(Clip("noref", "", clips[0].audio, SR))
    whole = ChromaCosineSimilarity({**RECIPE, "batch_size": 2})
    got = whole.update(clips)
    assert got["noref"].skipped == "no reference audio"
    parts = [ChromaCosineSimilarity(RECIPE) for _ in range(3)]
    singles = {}
    for p, chunk in zip(parts, (clips[:1], clips[1:4], clips[4:])):
        singles.update(p.update(chunk))
    assert singles == got
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.state_dict().keys() == whole.state_dict().keys()
    for k, v in whole.state_dict().items():
        assert v.dtype == np.float64
        np.testing.assert_array_equal(merged.state[k], v)
    frames = [got[f"c{i}"].values["chroma_frames"] for i in range(5)]
    assert frames == [16, 24, 16, 4, 24]
    weighted = sum(got[f"c{i}"].values["chroma"] * f for i, f in enumerate(frames)) / sum(frames)
    assert whole.compute()["chroma"] == pytest.approx(weighted, abs=1e-12)
    assert whole.state["n_skipped"] == 1


def test_non_finite_audio_is_skipped_with_reason():
    bad = torch.zeros(1, SR)
    bad[0, 5] = float("nan")
    good = _tones(TRIAD, [0.3, 0.24, 0.24], seconds=1.0)
    m = ChromaCosineSimilarity(RECIPE)
    out = m.update([Clip("g", "", bad, SR, good, SR), Clip("r", "", good, SR, bad, SR),
                    Clip("e", "", good, SR, torch.zeros(1, 0), SR), Clip("ok", "", good, SR, good, SR)])
    assert out["g"].skipped == "generated: non_finite (1 of 32000 samples are NaN or infinite)"
    assert out["r"].skipped == "reference: non_finite (1 of 32000 samples are NaN or infinite)"
    # an empty reference: the generated clip is cropped to it, so both sides have nothing to score
    assert out["e"].skipped == "generated: silent (no samples); reference: silent (no samples)"
    assert m.state["n_skipped"] == 3 and m.compute() == {"chroma": 1.0, "n_frames": 8.0, "n_clips": 1.0}


def test_compute_without_frames_raises():
    m = ChromaCosineSimilarity(RECIPE)
    m.update([Clip("x", "", torch.zeros(1, SR), SR)])
    with pytest.raises(ValueError, match="no clip was scored"):
        m.compute()
