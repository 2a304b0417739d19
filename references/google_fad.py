"""google-research ``frechet_audio_distance`` (the audiocraft FAD protocol's tool) and torchvggish (the
frechet-audio-distance package's model), transcribed in numpy/scipy/torch.

Written from the published formulas (not copied):
- google-research ``frechet_audio_distance``: ``create_embeddings_beam.py ReadWavFiles`` (scipy.io.wavfile, raw int16
  values as floats), ``audioset_model.py extract_features`` (``x /= max(0.1, amax(x))``, 16,000-sample windows every
  8,000 samples, full windows only, one log-mel + ``frame(96, 96)`` per window), ``create_embeddings_beam.py
  ComputeMeanAndCovariance`` and ``fad_utils.py frechet_distance`` (scipy ``sqrtm``);
- ``tensorflow/models research/audioset/vggish/mel_features.py`` + ``vggish_params.py`` (float64 numpy);
- ``harritaylor/torchvggish``: ``vggish_input.waveform_to_examples`` (mean over axis 1, resampy, whole-clip log-mel,
  non-overlapping 96-frame examples) and ``vggish.py`` (``VGG`` with its two transposes and a final ReLU; ``VGGish``
  with ``forward(x, fs)``, ``preprocess``/``postprocess`` flags and ``device``);
- audiocraft ``metrics/fad.py update``: crop, ``convert_audio`` to 16 kHz mono, ``audio_write(strategy="peak")``
  (``i16_pcm``).

``tests/test_fad_parity.py`` and ``tests/test_protocol_cli.py`` serve this module to ``frechet_audio_distance`` as the
torch hub ``harritaylor/torchvggish`` repo (:func:`write_fake_hub`), and ``benchmarks/suite_parts/fad.py`` does the
same. Nothing here imports evalkit.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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


def fad_network(state_dict, channels=(64, 128, 256, 512), hidden=4096) -> TorchVGGishVGG:
    """torchvggish's ``VGG`` with ``state_dict`` and its final ReLU dropped: what both FAD tools embed with
    (Google: TF VGGish's pre-activation ``vggish/embedding``; the package: ``use_activation=False``)."""
    vgg = TorchVGGishVGG(channels, hidden)
    vgg.load_state_dict(state_dict, strict=True)
    vgg.embeddings = nn.Sequential(*list(vgg.embeddings.children())[:-1])
    return vgg.eval()


# ----------------------------------------------------------------------------------------------------------------
# Reference: the statistics and the distance (create_embeddings_beam.py, fad_utils.py)
# ----------------------------------------------------------------------------------------------------------------
def google_mean_and_covariance(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ComputeMeanAndCovariance``: float64 sums over every embedding, ``mu = sum / n``, ``sigma = sum_outer / (n - 1)
    - outer(mu, mu) * n / (n - 1)``."""
    x = np.asarray(embeddings, np.float64)
    n = x.shape[0]
    mu = x.sum(0) / n
    sigma = (x.T @ x) / (n - 1) - np.outer(mu, mu) * (n / (n - 1))
    return mu, sigma


def google_stored_stats(mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The statistics as ``compute_fad.py`` reads them back: ``extract_output`` stores mu and sigma as
    ``tf.train.FloatList`` (float32) and ``fad_utils.read_mean_and_covariances`` reads them into float64 arrays, so
    Google's distance is computed from float32-rounded statistics."""
    return (np.asarray(mu, np.float32).astype(np.float64), np.asarray(sigma, np.float32).astype(np.float64))


def google_frechet_distance(mu_test, sigma_test, mu_train, sigma_train, eps: float = 1e-7) -> float:
    """``fad_utils.frechet_distance``: ``|mu_t - mu_b|^2 + tr sigma_t + tr sigma_b - 2 tr sqrtm(sigma_t sigma_b)``
    (``_stable_trace_sqrt_product``: scipy ``sqrtm``; eps on both diagonals if it is not finite; the real part)."""
    from scipy import linalg

    try:  # scipy < 1.16 (Google's era): disp=False returns (sqrtm, error estimate)
        sqrt_product, _ = linalg.sqrtm(sigma_test.dot(sigma_train), disp=False)
    except TypeError:  # scipy >= 1.16 (disp removed): sqrtm returns the matrix alone
        sqrt_product = linalg.sqrtm(sigma_test.dot(sigma_train))
    if not np.isfinite(sqrt_product).all():
        offset = np.eye(sigma_test.shape[0]) * eps
        sqrt_product = linalg.sqrtm((sigma_test + offset).dot(sigma_train + offset))
    if not np.allclose(np.diag(sqrt_product).imag, 0, atol=1e-3):
        raise ValueError("sqrt_product has a large imaginary part")
    trace_sqrt_product = np.trace(sqrt_product.real)
    diff = mu_test - mu_train
    return float(diff.dot(diff) + np.trace(sigma_test) + np.trace(sigma_train) - 2 * trace_sqrt_product)


#: what the fake hubconf builds: set by the caller before FrechetAudioDistance() is constructed
HUB_MODEL: dict = {}
#: the name the fake hubconf looks this module up by in ``sys.modules`` (it loads the file itself if absent)
HUB_MODULE = "evalkit_fad_numpy_reference"


def hub_vggish(**kwargs):
    return TorchVGGish(HUB_MODEL["state_dict"], HUB_MODEL["channels"], HUB_MODEL["hidden"], **kwargs)


FAKE_HUBCONF = '''\
# A stand-in for harritaylor/torchvggish's hubconf.py (offline): the model comes from evalkit's reference module
# named below (references/google_fad.py), written from torchvggish's published layout; nothing here was fetched.
dependencies = ["torch", "numpy", "resampy"]
import importlib.util, sys

_NAME = "evalkit_fad_numpy_reference"  # references/google_fad.py
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
    module instance the hubconf uses (this module; its ``HUB_MODEL`` is filled)."""
    import sys

    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    (repo_dir / "hubconf.py").write_text(FAKE_HUBCONF.format(path=str(Path(__file__).resolve())))
    mod = sys.modules.setdefault(HUB_MODULE, sys.modules[__name__])  # the hubconf finds it there: one module object
    mod.HUB_MODEL.update(state_dict=state_dict, channels=tuple(channels), hidden=int(hidden))
    return mod
