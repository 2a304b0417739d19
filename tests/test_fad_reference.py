"""An independent numpy/scipy transcription of the two VGGish FAD recipes, checked against closed forms, and
evalkit's batched torch front end checked against it.

The reference half of this file is written from the published formulas (not copied):
- google-research ``frechet_audio_distance``: ``create_embeddings_beam.py ReadWavFiles`` (scipy.io.wavfile, raw int16
  values as floats), ``audioset_model.py extract_features`` (``x /= max(0.1, amax(x))``, 16,000-sample windows every
  8,000 samples, full windows only, one log-mel + ``frame(96, 96)`` per window);
- ``tensorflow/models research/audioset/vggish/mel_features.py`` + ``vggish_params.py`` (float64 numpy);
- ``harritaylor/torchvggish``: ``vggish_input.waveform_to_examples`` (mean over axis 1, resampy, whole-clip log-mel,
  non-overlapping 96-frame examples) and ``vggish.py`` (``VGG`` with its two transposes and a final ReLU; ``VGGish``
  with ``forward(x, fs)``, ``preprocess``/``postprocess`` flags and ``device``).
``test_fad_parity.py`` serves this module to ``frechet_audio_distance`` as the torch hub ``harritaylor/torchvggish``
repo (a fake hubconf.py in a tmp dir), and ``benchmarks/suite_parts/fad.py`` does the same.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# ----------------------------------------------------------------------------------------------------------------
# Reference: vggish_params.py constants
# ----------------------------------------------------------------------------------------------------------------
SR = 16000
WIN_S, HOP_S = 0.025, 0.010
N_MELS, FMIN, FMAX, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
EXAMPLE_S = 0.96
GOOGLE_STEP = 8000  # create_embeddings_main.py --model_step_size


def np_frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    """mel_features.frame: 1 + floor((n - window) / hop) full frames (index arithmetic, no stride tricks)."""
    count = 1 + int(math.floor((data.shape[0] - window) / hop))
    if count <= 0:
        return np.zeros((0, window) + data.shape[1:], data.dtype)
    idx = np.arange(count)[:, None] * hop + np.arange(window)[None, :]
    return data[idx]


def np_hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def np_hz_to_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)


def np_mel_weights(n_bins: int, sr: int = SR, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX):
    """Triangles in mel space between edges spaced evenly in mel; the DC bin weighs nothing (HTK)."""
    bin_mel = np_hz_to_mel(np.linspace(0.0, sr / 2.0, n_bins))
    edges = np.linspace(np_hz_to_mel(fmin), np_hz_to_mel(fmax), n_mels + 2)
    out = np.zeros((n_bins, n_mels))
    for i in range(n_mels):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        out[:, i] = np.clip(np.minimum((bin_mel - lo) / (c - lo), (hi - bin_mel) / (hi - c)), 0.0, None)
    out[0] = 0.0
    return out


def np_log_mel(x: np.ndarray, sr: int = SR) -> np.ndarray:
    win = int(round(sr * WIN_S))
    hop = int(round(sr * HOP_S))
    nfft = 2 ** int(np.ceil(np.log(win) / np.log(2.0)))
    frames = np_frame(x, win, hop)
    mag = np.abs(np.fft.rfft(frames * np_hann_periodic(win), nfft))
    return np.log(mag @ np_mel_weights(mag.shape[1], sr) + LOG_OFFSET)


def np_examples(log_mel: np.ndarray) -> np.ndarray:
    n = int(round(EXAMPLE_S / HOP_S))
    return np_frame(log_mel, n, n)


def google_read_wav(path) -> np.ndarray:
    """ReadWavFiles + BatchedInference._floats: scipy.io.wavfile.read -> tf float feature -> np.array (float64)."""
    import scipy.io.wavfile

    _, data = scipy.io.wavfile.read(str(path))
    assert data.dtype == np.int16
    return np.array(data.astype(np.float32).tolist())


def google_examples(samples: np.ndarray, step: int = GOOGLE_STEP) -> np.ndarray:
    """audioset_model.AudioSetModel(step_size=8000, normalize=True).extract_features, concatenated -> [W, 96, 64]."""
    x = np.array(samples, np.float64)
    x /= np.maximum(0.1, np.amax(x))
    chunks = [np_examples(np_log_mel(x[i : i + SR])) for i in range(0, x.shape[0] - SR + 1, step)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 96, N_MELS))


def audiocraft_write_int16(wav: torch.Tensor, sr: int, crop: int | None = None) -> np.ndarray:
    """audiocraft fad.py update(): crop, convert_audio(16 kHz, mono) (julius, then mean), audio_write(strategy=peak,
    peak_clip_headroom_db=1) -> i16_pcm. Written with julius directly, not through evalkit.audio."""
    import julius

    if crop is not None:
        wav = wav[..., :crop]
    wav = julius.resample_frac(wav, sr, SR).mean(dim=-2, keepdim=True)
    wav = wav * (10 ** (-1 / 20) / wav.abs().max())
    q = (wav * 2**15).round()
    if q.max() >= 2**15:
        q = (wav * (2**15 - 1)).round()
    return q.short()[0].numpy()


def torchvggish_waveform_to_examples(data: np.ndarray, sample_rate: int) -> torch.Tensor:
    """torchvggish vggish_input.waveform_to_examples(data, sr, return_tensor=True)."""
    import resampy

    if data.ndim > 1:
        data = np.mean(data, axis=1)
    if sample_rate != SR:
        data = resampy.resample(data, sample_rate, SR)
    ex = np_examples(np_log_mel(data))
    return torch.tensor(ex, requires_grad=True)[:, None, :, :].float()


# ----------------------------------------------------------------------------------------------------------------
# Reference: torchvggish's network layout (vggish.py), weights passed in
# ----------------------------------------------------------------------------------------------------------------
def _make_layers(channels):
    c1, c2, c3, c4 = channels
    layers, in_ch = [], 1
    for v in [c1, "M", c2, "M", c3, c3, "M", c4, c4, "M"]:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    return nn.Sequential(*layers)


class TorchVGGishVGG(nn.Module):
    def __init__(self, channels=(64, 128, 256, 512), hidden=4096):
        super().__init__()
        self.features = _make_layers(channels)
        self.embeddings = nn.Sequential(
            nn.Linear(channels[3] * 4 * 6, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True),
            nn.Linear(hidden, 128), nn.ReLU(True),
        )

    def forward(self, x):
        x = self.features(x)
        x = torch.transpose(x, 1, 3)
        x = torch.transpose(x, 1, 2)
        x = x.contiguous()
        x = x.view(x.size(0), -1)
        return self.embeddings(x)


class TorchVGGish(TorchVGGishVGG):
    """torchvggish.vggish.VGGish as frechet_audio_distance drives it (forward(np.ndarray, fs))."""

    def __init__(self, state_dict, channels=(64, 128, 256, 512), hidden=4096, device=None, preprocess=True,
                 postprocess=True):
        super().__init__(channels, hidden)
        self.load_state_dict(state_dict, strict=True)
        self.device = device or torch.device("cpu")
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.to(self.device)

    def forward(self, x, fs=None):
        if self.preprocess:
            x = torchvggish_waveform_to_examples(x, fs)
        x = x.to(self.device)
        x = TorchVGGishVGG.forward(self, x)
        if self.postprocess:
            raise NotImplementedError("PCA postprocessing is not part of this reference")
        return x


#: what the fake hubconf builds: set by the test before FrechetAudioDistance() is constructed
HUB_MODEL: dict = {}


def hub_vggish(**kwargs):
    return TorchVGGish(HUB_MODEL["state_dict"], HUB_MODEL["channels"], HUB_MODEL["hidden"], **kwargs)


FAKE_HUBCONF = '''\
# A stand-in for harritaylor/torchvggish's hubconf.py (offline tests): the model comes from the evalkit test module
# named below, written from torchvggish's published layout; nothing here was fetched.
dependencies = ["torch", "numpy", "resampy"]
import importlib.util, sys

_NAME = "evalkit_fad_numpy_reference"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, {path!r})
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _mod
    _spec.loader.exec_module(_mod)


def vggish(**kwargs):
    return sys.modules[_NAME].hub_vggish(**kwargs)
'''


def write_fake_hub(repo_dir: Path, state_dict, channels, hidden):
    """A torch hub repo dir whose ``vggish`` entry point builds :class:`TorchVGGish` with these weights. Returns the
    module instance the hubconf uses (its ``HUB_MODEL`` is filled)."""
    import importlib.util
    import sys

    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    (repo_dir / "hubconf.py").write_text(FAKE_HUBCONF.format(path=str(Path(__file__).resolve())))
    name = "evalkit_fad_numpy_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve())
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    mod = sys.modules[name]
    mod.HUB_MODEL.update(state_dict=state_dict, channels=tuple(channels), hidden=int(hidden))
    return mod


# ================================================================================================================
# Tests: the reference against closed forms, evalkit's front end against the reference
# ================================================================================================================
from evalkit.embeddings.vggish import LogMel, hertz_to_mel, mel_matrix, n_frames, periodic_hann  # noqa: E402


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
