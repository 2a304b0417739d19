"""VGGish (Hershey et al., ICASSP 2017) in PyTorch: the network and its log-mel front end, both batched.

Network: the layout of ``harritaylor/torchvggish: torchvggish/vggish.py`` so that its released state dict
(``vggish-10086976.pth``) loads as is: ``features.{0,3,6,8,11,13}`` (3x3 convolutions, ReLU, 2x2 max-pools) and
``embeddings.{0,2,4}`` (fully connected 12288 -> 4096 -> 4096 -> 128). The output is the **pre-activation** 128-d
embedding, TF's ``vggish/embedding`` tensor (``tensorflow/models research/audioset/vggish/vggish_slim.py``: ``fc2``
has ``activation_fn=None``; torchvggish appends a ReLU that the FAD tools drop). The conv stack's output
``[N, 512, 6, 4]`` is laid out as ``[N, 6, 4, 512]`` before flattening, as TF's NHWC ``slim.flatten`` does
(torchvggish: ``transpose(1, 3)`` then ``transpose(1, 2)``). No PCA/quantisation postprocessor.

Front end: ``research/audioset/vggish/mel_features.py`` written with torch ops over a batch: frames of
``window_length`` samples every ``hop_length`` (full frames only), periodic Hann, ``|rfft(frame, fft_length)|``
(magnitude, not power), times the HTK mel matrix (``1127 ln(1 + f/700)``, triangles in mel space, DC row zeroed),
``log(mel + log_offset)``; then ``frame`` again over time into examples of ``example_frames`` frames. Google computes
all of it in float64 numpy and feeds float32 to the network; :func:`log_mel` works in the dtype it is given
(the FAD metric passes float64) and the caller casts.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder
from evalkit.embeddings.weights import Checkpoint, CheckpointError, load_strict

#: Layouts of the same class. ``full`` is VGGish; ``tiny`` is for fast tests (random weights, or a state dict saved
#: from a tiny model).
MODEL_SIZES: dict[str, dict] = {
    "full": {"channels": (64, 128, 256, 512), "hidden": 4096},
    "tiny": {"channels": (4, 8, 16, 32), "hidden": 256},
}
EMBEDDING_DIM = 128  # vggish_params.EMBEDDING_SIZE
NUM_FRAMES = 96  # vggish_params.NUM_FRAMES (input patch height)
NUM_BANDS = 64  # vggish_params.NUM_BANDS (input patch width)


class VGGishError(CheckpointError):
    pass


class VGGish(nn.Module):
    """VGGish up to its (pre-activation) embedding layer. Input ``[N, 96, 64]`` or ``[N, 1, 96, 64]`` log-mel
    patches (float32), output ``[N, embedding_dim]``."""

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        hidden: int = 4096,
        embedding_dim: int = EMBEDDING_DIM,
        activation: bool = False,
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        # torchvggish make_layers(): [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"] -> indices 0..15
        layers: list[nn.Module] = []
        in_ch = 1
        for v in (c1, "M", c2, "M", c3, c3, "M", c4, c4, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        out_h, out_w = NUM_FRAMES // 16, NUM_BANDS // 16  # four 2x2 pools: 96x64 -> 6x4
        self.embeddings = nn.Sequential(
            nn.Linear(c4 * out_h * out_w, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embedding_dim),
        )
        self.embedding_dim = embedding_dim
        #: torchvggish's final ReLU; False = TF's vggish/embedding (what both FAD protocols use)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        # channels-last (NHWC) convolutions: ~30 % faster with oneDNN on CPU, the layout cuDNN prefers; the sums are
        # reordered, which moves embeddings by ~1e-6 relative (float32 rounding)
        x = self.features(x.contiguous(memory_format=torch.channels_last))  # [N, C, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC flatten, as TF (torchvggish's two transposes)
        x = self.embeddings(x)
        return torch.relu(x) if self.activation else x

    @torch.inference_mode()
    def embed(self, examples: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Embeddings of ``[N, 96, 64]`` examples in batches of ``batch_size``, float32, on the model's device,
        with TF32 off (cuDNN would otherwise round the convolutions to 10-bit mantissas on Ampere+ GPUs)."""
        device = next(self.parameters()).device
        outs = []
        with _no_tf32():
            for i in range(0, examples.shape[0], max(1, int(batch_size))):
                outs.append(self(examples[i : i + batch_size].to(device=device, dtype=torch.float32)))
        if not outs:
            return torch.zeros(0, self.embedding_dim, device=device)
        return torch.cat(outs)


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


class VGGishBackbone(Backbone):
    """VGGish in torchvggish's state-dict layout (``features.*``, ``embeddings.0/2/4``), any :data:`MODEL_SIZES`."""

    name = "vggish"

    def __init__(self, size: str = "full", seed: int = 0, activation: bool = False) -> None:
        if size not in MODEL_SIZES:
            raise VGGishError(f"model_size={size!r}: expected one of {sorted(MODEL_SIZES)}")
        super().__init__(size, seed)
        self.activation = bool(activation)

    def build(self) -> VGGish:
        return VGGish(**MODEL_SIZES[self.size], activation=self.activation)

    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        # torchvggish's VGG has a trailing ReLU at embeddings.5 (no parameters) and, in some exports, the PCA
        # postprocessor under pproc.*: neither is part of the embedding network.
        state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
        load_strict(module, state, setting=setting,
                    hint=f"Expected a VGGish state dict of size {self.size!r} in torchvggish's layout "
                         f"(vggish-10086976.pth).")

    def describe(self) -> dict:
        return {**super().describe(), "activation": self.activation}

    def load(self, checkpoint: Checkpoint, *, setting: str, device="cpu", trust: bool = False) -> VGGish:
        module = super().load(checkpoint, setting=setting, device=device, trust=trust)
        return module.to(memory_format=torch.channels_last)


def build_vggish(
    path=None, *, model_size: str = "full", seed: int = 0, activation: bool = False, device="cpu"
) -> VGGish:
    """A VGGish from a state-dict file (torchvggish layout), or with seeded random weights when ``path`` is None.

    Random weights use PyTorch's default initialisation under ``torch.manual_seed(seed)`` in a forked RNG, so the
    same seed gives the same network without touching the caller's RNG. A file that is not a VGGish state dict
    raises :class:`VGGishError` naming it."""
    ckpt = Checkpoint(name=str(path) if path else "random", path=Path(path) if path else None, sha256=None,
                      random=path is None)
    try:
        return VGGishBackbone(model_size, seed, activation).load(ckpt, setting=str(path), device=device)
    except CheckpointError as exc:
        raise VGGishError(f"{path}: not a VGGish state dict of size {model_size!r}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# Front end (mel_features.py), batched
# ----------------------------------------------------------------------------------------------------------------
def n_frames(n_samples: int, window_length: int, hop_length: int) -> int:
    """``mel_features.frame``: ``1 + floor((n - window) / hop)`` full frames (0 when shorter than one window)."""
    if n_samples < window_length:
        return 0
    return 1 + (n_samples - window_length) // hop_length


def periodic_hann(window_length: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """``mel_features.periodic_hann``: ``0.5 - 0.5 cos(2 pi n / N)``, n = 0..N-1."""
    n = torch.arange(window_length, dtype=torch.float64, device=device)
    return (0.5 - 0.5 * torch.cos(2 * math.pi / window_length * n)).to(dtype)


def hertz_to_mel(f):
    """HTK mel scale: ``1127 ln(1 + f / 700)`` (``mel_features.hertz_to_mel``)."""
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(
    num_mel_bins: int = 64,
    num_spectrogram_bins: int = 257,
    sample_rate: int = 16000,
    lower_edge_hertz: float = 125.0,
    upper_edge_hertz: float = 7500.0,
) -> np.ndarray:
    """``mel_features.spectrogram_to_mel_matrix``: ``[num_spectrogram_bins, num_mel_bins]`` float64 triangular
    weights, linear in mel between band edges spaced evenly in mel, DC row zeroed."""
    nyquist = sample_rate / 2.0
    if lower_edge_hertz < 0.0 or lower_edge_hertz >= upper_edge_hertz or upper_edge_hertz > nyquist:
        raise VGGishError(f"mel edges {lower_edge_hertz}-{upper_edge_hertz} Hz invalid for {sample_rate} Hz audio")
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_edge_hertz), hertz_to_mel(upper_edge_hertz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    lower_slope = (bins_mel[:, None] - lower) / (center - lower)
    upper_slope = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    weights[0, :] = 0.0
    return weights


class LogMel:
    """The VGGish log-mel front end with its constants bound (``vggish_params.py``), cached per device/dtype."""

    def __init__(
        self,
        sample_rate: int = 16000,
        window_length: int = 400,
        hop_length: int = 160,
        fft_length: int = 512,
        num_mel_bins: int = 64,
        lower_edge_hertz: float = 125.0,
        upper_edge_hertz: float = 7500.0,
        log_offset: float = 0.01,
        example_frames: int = 96,
        example_hop_frames: int = 96,
    ) -> None:
        if fft_length < window_length:
            raise VGGishError(f"fft_length {fft_length} < window_length {window_length}")
        self.sample_rate, self.window_length, self.hop_length = int(sample_rate), int(window_length), int(hop_length)
        self.fft_length, self.log_offset = int(fft_length), float(log_offset)
        self.example_frames, self.example_hop_frames = int(example_frames), int(example_hop_frames)
        self._mel = mel_matrix(num_mel_bins, self.fft_length // 2 + 1, sample_rate, lower_edge_hertz, upper_edge_hertz)
        self._cache: dict = {}

    def _consts(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._cache:
            self._cache[key] = (
                periodic_hann(self.window_length, dtype, device),
                torch.as_tensor(self._mel, dtype=dtype, device=device),
            )
        return self._cache[key]

    def n_frames(self, n_samples: int) -> int:
        return n_frames(n_samples, self.window_length, self.hop_length)

    def n_examples(self, n_samples: int) -> int:
        return n_frames(self.n_frames(n_samples), self.example_frames, self.example_hop_frames)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., T]`` waveform -> ``[..., frames, bands]`` log-mel (``mel_features.log_mel_spectrogram``)."""
        window, mel = self._consts(x.dtype, x.device)
        frames = x.unfold(-1, self.window_length, self.hop_length)  # [..., F, window]
        spec = torch.fft.rfft(frames * window, n=self.fft_length).abs()
        return torch.log(spec @ mel + self.log_offset)

    def examples(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., T]`` -> ``[..., E, example_frames, bands]``: log-mel framed into examples, full examples only."""
        lm = self.log_mel(x)
        return lm.unfold(-2, self.example_frames, self.example_hop_frames).transpose(-1, -2)


# ----------------------------------------------------------------------------------------------------------------
# The embedder
# ----------------------------------------------------------------------------------------------------------------

@register_embedder("vggish")
class VGGishEmbedder(Embedder):
    """VGGish as the FAD tools run it (``conf/embeddings/vggish.yaml``): an input's log-mel framed into examples of
    ``example_frames`` frames (:class:`LogMel`, float64 as Google and torchvggish compute it, on the GPU if any), each
    example one 128-d pre-activation embedding. An input ``[T]`` gives ``n_examples(T)`` rows; ``[N, T]`` (N windows
    of one clip, e.g. audiocraft's 1 s windows) gives every window's examples in order."""

    def __init__(self, config, weights, device="cpu", name=None) -> None:
        super().__init__(config, weights, device, name)
        c = self.config
        if c.get("use_pca"):
            raise VGGishError(f"{weights.setting}.embedder.use_pca=true: the PCA/whitening postprocessor (torchvggish "
                              f"vggish_pca_params-970ea276.pth) is not implemented; neither FAD tool uses it")
        self.front = LogMel(
            sample_rate=self.sample_rate, window_length=int(c["stft_window"]), hop_length=int(c["stft_hop"]),
            fft_length=int(c["fft_length"]), num_mel_bins=int(c["mel_bins"]), lower_edge_hertz=float(c["mel_min_hz"]),
            upper_edge_hertz=float(c["mel_max_hz"]), log_offset=float(c["log_offset"]),
            example_frames=int(c["example_frames"]), example_hop_frames=int(c["example_hop_frames"]))
        self.batch_size = weights.batch_size or 128
        # the front end runs in float64 (Google and torchvggish compute it in float64 numpy), on the GPU if any
        self.front_device = self.device if self.device.type == "cuda" else torch.device("cpu")

    def backbone(self) -> VGGishBackbone:
        return VGGishBackbone(self.weights.model_size, self.weights.seed, activation=bool(self.config["use_activation"]))

    @property
    def min_samples(self) -> int:
        """The fewest samples that give one example: ``window + (example_frames - 1) * hop``."""
        return self.front.window_length + (self.front.example_frames - 1) * self.front.hop_length

    def examples(self, item: torch.Tensor) -> torch.Tensor:
        """``[T]`` or ``[N, T]`` -> ``[E, example_frames, mel_bins]`` float64 log-mel examples, in order."""
        ex = self.front.examples(item.to(self.front_device, torch.float64))
        return ex.reshape(-1, ex.shape[-2], ex.shape[-1])

    def embed(self, items):
        """See :class:`VGGishEmbedder`. On a CPU the inputs' log-mel examples are computed side by side, one intra-op
        thread each; then one batched network pass over all of them (``batch_size`` examples at a time)."""
        from evalkit.cpu import cpu_threads, run_calls

        cpu = self.front_device.type == "cpu"
        with cpu_threads(1 if cpu else None):
            examples = run_calls(self.examples, list(items), torch.get_num_threads() if cpu else 1)
        return self.embed_examples(examples)

    def embed_examples(self, examples) -> list:
        """One network pass over ``[E_i, frames, bands]`` example sets -> one ``[E_i, dim]`` float32 array each."""
        if not examples:
            return []
        emb = self.network.embed(torch.cat(list(examples)), self.batch_size).cpu().numpy()
        out, start = [], 0
        for ex in examples:
            out.append(np.array(emb[start:start + ex.shape[0]], dtype=np.float32))
            start += ex.shape[0]
        return out
