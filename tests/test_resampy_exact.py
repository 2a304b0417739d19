"""evalkit.embeddings.resampy_exact is resampy.resample (kaiser_best) bit for bit: real music and random signals, the
rates the FAD protocols meet (32/48/44.1/22.05/8 kHz -> 16 kHz) and odd ones, float32 and float64."""
from __future__ import annotations

import numpy as np
import pytest

resampy = pytest.importorskip("resampy")

from evalkit.audio import load_audio  # noqa: E402
from evalkit import resampy_exact  # noqa: E402

RATES = [(32000, 16000), (48000, 16000), (44100, 16000), (22050, 16000), (8000, 16000), (32000, 48000),
         (16001, 16000), (96000, 16000), (24000, 16000)]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.fixture(scope="module")
def music(music_dir) -> np.ndarray:
    wav, sr = load_audio(music_dir / "shared02_bach_bwv347.flac")
    assert sr == 32000
    return wav.mean(0).numpy()  # float32, as the frechet-audio-distance protocol hands it over


@pytest.mark.parametrize("rates", RATES)
def test_music_bit_identical(music, rates):
    a, b = rates
    x = music[: len(music) * min(a, 32000) // 32000] if a <= 32000 else np.tile(music, 3)[: 10 * a]
    assert _same_bits(resampy_exact._resample(x, a, b), resampy.resample(x, a, b))
    assert _same_bits(resampy_exact.resample(x, a, b), resampy.resample(x, a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_lengths_and_rates_bit_identical(dtype):
    rng = np.random.default_rng(1)
    for _ in range(6):
        n = int(rng.integers(3, 40000))
        x = rng.standard_normal(n).astype(dtype)
        for a, b in RATES[:6]:
            if n * b // a < 1:
                continue
            assert _same_bits(resampy_exact._resample(x, a, b), resampy.resample(x, a, b)), (n, a, b)


def test_edges_and_fallbacks():
    x = (np.arange(1000, dtype=np.float32) % 7) / 7.0
    assert _same_bits(resampy_exact.resample(x, 16000, 16000), resampy.resample(x, 16000, 16000))  # a copy
    st = np.stack([x, -x])
    assert _same_bits(resampy_exact.resample(st, 32000, 16000), resampy.resample(st, 32000, 16000))  # 2-D: resampy
    xi = (x * 100).astype(np.int16)
    assert _same_bits(resampy_exact.resample(xi, 32000, 16000), resampy.resample(xi, 32000, 16000))  # ints: resampy
    with pytest.raises(ValueError):
        resampy_exact.resample(x[:1], 32000, 16000)


def test_a_mismatch_hands_over_to_resampy(monkeypatch):
    """The first-use check: when the fast kernels disagree with resampy here, resampy computes every later call."""
    monkeypatch.setattr(resampy_exact, "_CHECKED", {})
    real = resampy_exact._resample
    monkeypatch.setattr(resampy_exact, "_resample", lambda x, a, b: real(x, a, b) + np.float32(1e-3))
    x = np.random.default_rng(2).standard_normal(20000).astype(np.float32)
    assert _same_bits(resampy_exact.resample(x, 32000, 16000), resampy.resample(x, 32000, 16000))
    assert resampy_exact._CHECKED[(32000, 16000, np.dtype(np.float32).str)] is False
