"""Named audio transforms against their references (torchaudio loudness, audiocraft i16_pcm / peak / channel rules)."""
import numpy as np
import pytest
import torch

from evalkit.audio import (AudioError, convert_audio, crop_or_pad, i16_pcm, load_audio, loudness_lufs, loudness_normalize,
                           peak_normalize, resample, save_audio, to_channels)
from tests.conftest import noise, sine


def test_loudness_parity_with_torchaudio():
    F = pytest.importorskip("torchaudio.functional")
    for wav, sr in [(sine(440, 32000, 3.0, 0.3), 32000), (noise(32000, 2.0, 0.2, channels=2), 32000),
                    (sine(100, 16000, 1.0, 0.5) + noise(16000, 1.0, 0.05), 16000)]:
        ours = loudness_lufs(wav, sr)
        ref = float(F.loudness(wav, sr))
        assert ours == pytest.approx(ref, abs=2e-3)


def test_loudness_normalize_hits_target_and_skips_quiet():
    wav = sine(440, 32000, 3.0, 0.1)
    out = loudness_normalize(wav, 32000, headroom_db=14)
    assert loudness_lufs(out, 32000) == pytest.approx(-14.0, abs=1e-3)
    quiet = sine(440, 32000, 1.0, 1e-3)  # RMS 7e-4 < 2e-3: left as is
    assert torch.equal(loudness_normalize(quiet, 32000), quiet)
    loud = sine(440, 32000, 1.0, 0.99) * 0 + 5.0  # would exceed 1: clamped
    assert loudness_normalize(noise(32000, 1.0, 3.0), 32000).abs().max() <= 1.0
    del loud


def test_i16_pcm_rules():
    x = torch.tensor([0.0, 0.5, -1.0, 0.999])
    assert i16_pcm(x).tolist() == [0, 16384, -32768, 32735]
    # reaching +2**15 switches to the 2**15 - 1 scale for the whole clip
    y = torch.tensor([1.0, -1.0, 0.5])
    assert i16_pcm(y).tolist() == [32767, -32767, 16384]
    with pytest.raises(AudioError):
        i16_pcm(torch.tensor([1.5]))


def test_peak_normalize():
    x = torch.tensor([[0.1, -0.5, 0.25]])
    out = peak_normalize(x, -1.0)
    assert out.abs().max().item() == pytest.approx(10 ** (-1 / 20))
    with pytest.raises(AudioError, match="silent"):
        peak_normalize(torch.zeros(1, 10))


def test_channels_and_order():
    st = torch.stack([sine(440)[0], sine(660)[0]])
    assert torch.allclose(to_channels(st, 1), st.mean(0, keepdim=True))
    assert to_channels(sine(440), 2).shape == (2, 32000)
    out = convert_audio(st, 32000, 16000, 1)
    assert out.shape == (1, 16000)
    assert torch.allclose(out, resample(st, 32000, 16000).mean(0, keepdim=True))


def test_resample_keeps_a_tone():
    x = sine(1000, 32000, 1.0)
    y = resample(x, 32000, 16000)
    spec = np.abs(np.fft.rfft(y[0, 2000:-2000].numpy()))
    freqs = np.fft.rfftfreq(y.shape[-1] - 4000, 1 / 16000)
    assert freqs[spec.argmax()] == pytest.approx(1000, abs=2)


def test_crop_or_pad():
    x = torch.ones(2, 10)
    assert crop_or_pad(x, 4).shape == (2, 4)
    y = crop_or_pad(x, 12)
    assert y.shape == (2, 12) and y[:, 10:].abs().sum() == 0


def test_roundtrip_and_bad_files(tmp_path):
    wav = sine(440, 32000, 0.5, 0.5, channels=2)
    p = save_audio(tmp_path / "a.flac", wav, 32000)
    back, sr = load_audio(p)
    assert sr == 32000 and back.shape == (2, 16000)
    assert torch.allclose(back, wav, atol=1 / 32768 + 1e-6)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(bad)
    with pytest.raises(AudioError, match="no such"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    import soundfile as sf
    sf.write(str(empty), np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.array([[0.1], [np.nan]], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(nan)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                         ("FLAC", "PCM_24"), ("WAV", "PCM_U8")])
@pytest.mark.parametrize("channels", [1, 2])
def test_load_audio_equals_libsndfiles_float_conversion(tmp_path, fmt, subtype, channels):
    """16-bit files are read as int16 and scaled by 2^-15 in evalkit: bit for bit libsndfile's float32 conversion,
    extremes included (-32768 -> -1.0, 32767 -> 0.999969...); other subtypes are libsndfile's float32 as they are."""
    import soundfile as sf

    rng = np.random.default_rng(channels)
    x = rng.integers(-32768, 32768, size=(4000, channels), dtype=np.int16)
    x[:2] = [[-32768] * channels, [32767] * channels]
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(str(path), x, 32000, subtype=subtype, format=fmt)
    expected, sr = sf.read(str(path), dtype="float32", always_2d=True)
    got, got_sr = load_audio(path)
    assert got.dtype == torch.float32 and got.shape == (channels, 4000) and got.is_contiguous() and got_sr == sr
    np.testing.assert_array_equal(got.numpy(), expected.T)
    if subtype == "PCM_16":
        assert got[0, 0] == -1.0 and got[0, 1] == 32767 / 32768
