"""The numpy/scipy transcription of the two VGGish FAD recipes (``references/google_fad.py``) checked against closed
forms, and evalkit's batched torch front end checked against it.

``test_fad_parity.py`` and ``test_protocol_cli.py`` serve that transcription to ``frechet_audio_distance`` as the torch
hub ``harritaylor/torchvggish`` repo (a fake hubconf.py in a tmp dir), and ``benchmarks/suite_parts/fad.py`` does the
same.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from references.google_fad import (  # noqa: F401  (the transcription's names, as these tests read them)
    FMAX,
    FMIN,
    N_MELS,
    SR,
    google_examples,
    google_read_wav,
    np_examples,
    np_frame,
    np_hann_periodic,
    np_hz_to_mel,
    np_log_mel,
    np_mel_weights,
)

# ================================================================================================================
# Tests: the reference against closed forms, evalkit's front end against the reference
# ================================================================================================================
from evalkit.embeddings.vggish import LogMel, hertz_to_mel, mel_matrix, n_frames, periodic_hann


def test_periodic_hann_closed_form():
    w = periodic_hann(400).numpy()
    assert w.shape == (400,)
    assert w[0] == 0.0 and w[200] == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(w[1:], w[1:][::-1], atol=1e-15)  # periodic: w[n] = w[N - n]
    assert w.sum() == pytest.approx(200.0, abs=1e-9)  # sum of a periodic Hann = N/2
    np.testing.assert_allclose(w, np_hann_periodic(400), atol=1e-15)


def test_htk_mel_scale_and_matrix():
    assert hertz_to_mel(700.0) == pytest.approx(1127.0 * math.log(2.0), rel=1e-15)
    assert hertz_to_mel(0.0) == 0.0
    m = mel_matrix(64, 257, 16000, 125.0, 7500.0)
    assert m.shape == (257, 64)
    np.testing.assert_array_equal(m[0], 0.0)  # DC bin zeroed
    np.testing.assert_allclose(m, np_mel_weights(257), atol=1e-15)
    assert m.max() <= 1.0 and m.min() == 0.0
    # bins outside 125-7500 Hz get no weight (bin k = k * 31.25 Hz)
    assert m[:4].sum() == 0.0 and m[241:].sum() == 0.0  # 3*31.25 < 125; 241*31.25 = 7531 > 7500
    assert (m[5:240].sum(1) > 0).all()


@pytest.mark.parametrize("freq", [437.5, 1000.0, 3000.0, 6000.0])
def test_sine_energy_lands_in_its_mel_band(freq):
    # a sine on an FFT bin (k * 31.25 Hz): |rfft| peaks at that bin with height A * sum(w) / 2 = 100 A,
    # and the loudest mel band is the triangle that weighs that frequency most (closed form in mel space)
    amp = 0.5
    t = np.arange(SR) / SR
    x = amp * np.sin(2 * np.pi * freq * t)
    k = int(round(freq / 31.25))
    frames = np_frame(x, 400, 160)
    mag = np.abs(np.fft.rfft(frames * np_hann_periodic(400), 512))
    assert (mag.argmax(1) == k).all()
    np.testing.assert_allclose(mag[:, k], 100 * amp, rtol=2e-3)
    m = np_hz_to_mel(freq)
    edges = np.linspace(np_hz_to_mel(FMIN), np_hz_to_mel(FMAX), N_MELS + 2)
    tri = np.clip(np.minimum((m - edges[:-2]) / (edges[1:-1] - edges[:-2]), (edges[2:] - m) / (edges[2:] - edges[1:-1])), 0, None)
    expected_band = int(tri.argmax())
    lm = LogMel().log_mel(torch.from_numpy(x)).numpy()
    assert lm.shape == (98, 64)
    assert (lm.argmax(1) == expected_band).all()
    # bands more than 3 away from the tone only see the window's leakage: far below the tone's band
    far = [b for b in range(64) if abs(b - expected_band) > 3]
    assert lm[:, expected_band].min() > lm[:, far].max() + 2.0


def test_frame_and_window_counts():
    fe = LogMel()
    # STFT frames: 1 + floor((n - 400) / 160)
    assert fe.n_frames(16000) == 98 and fe.n_frames(160000) == 998 and fe.n_frames(399) == 0 and fe.n_frames(400) == 1
    assert np_log_mel(np.zeros(16000)).shape == (98, 64)
    # torchvggish: non-overlapping 96-frame examples over the clip: 10 per 10 s, none below 400 + 95 * 160 samples
    assert fe.n_examples(160000) == 10 and fe.n_examples(15600) == 1 and fe.n_examples(15599) == 0
    assert np_examples(np_log_mel(np.zeros(160000))).shape == (10, 96, 64)
    # Google: range(0, n - 16000 + 1, 8000) full windows, each 98 frames -> exactly one 96x64 example
    assert google_examples(np.ones(160000)).shape == (19, 96, 64)
    assert google_examples(np.ones(16000)).shape == (1, 96, 64)
    assert google_examples(np.ones(15999)).shape == (0, 96, 64)
    assert google_examples(np.ones(23999)).shape == (1, 96, 64) and google_examples(np.ones(24000)).shape == (2, 96, 64)
    assert n_frames(98, 96, 96) == 1


def test_batched_log_mel_matches_numpy_reference(music_dir):
    import soundfile as sf

    rng = np.random.default_rng(0)
    wav, sr = sf.read(str(sorted(music_dir.glob("*[0-9].flac"))[0]), dtype="float32", always_2d=True)
    music = np.array(wav.mean(1)[: 3 * 16000], np.float64)  # real spectrum (rate irrelevant for this check)
    signals = [rng.standard_normal(16000 * 2) * 0.1, music, np.sin(2 * np.pi * 440 * np.arange(40000) / SR)]
    fe = LogMel()
    for x in signals:
        ours = fe.log_mel(torch.from_numpy(x)).numpy()
        ref = np_log_mel(x)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(fe.examples(torch.from_numpy(x)).numpy(), np_examples(ref), atol=1e-10)
    # a batch of windows gives each window's own log-mel
    batch = torch.from_numpy(np.stack([signals[0][:16000], signals[1][:16000]]))
    np.testing.assert_allclose(fe.log_mel(batch)[1].numpy(), np_log_mel(signals[1][:16000]), atol=1e-10)


def test_google_reader_keeps_int16_scale_and_signed_max(tmp_path):
    import soundfile as sf

    # a clip whose largest magnitude is negative: Google divides by the largest SIGNED value
    x = np.zeros(32000, np.int16)
    x[100], x[200] = -20000, 10000
    sf.write(str(tmp_path / "a.wav"), x, SR, subtype="PCM_16")
    raw = google_read_wav(tmp_path / "a.wav")
    assert raw.dtype == np.float64 and raw[100] == -20000.0  # no /32768
    y = raw / np.maximum(0.1, np.amax(raw))
    assert y[200] == 1.0 and y[100] == -2.0
    # all-negative (or silent) input: the 0.1 floor
    z = -np.ones(16000)
    np.testing.assert_allclose(z / np.maximum(0.1, np.amax(z)), -10.0)
