"""PaSST (``hear21passt``) as the KLD metric uses it: the package's network class, an eval-mode copy of its mel
front end, and offline loading of the released state dict.

Why not ``hear21passt.base20sec.get_basic_model()``: it builds the network with ``pretrained=True``, which downloads
the checkpoint from a GitHub release page through timm (no checksum, fails offline). Here the network comes from
``hear21passt.models.passt.get_model(..., pretrained=False)`` (the same class and constructor arguments), and the
weights are loaded from a file that :mod:`evalkit.embeddings.weights` resolved (cache with sha256, local path, or
random). The loading steps mirror ``hear21passt/models/helpers/vit_helpers.py: load_pretrained``: unwrap a
``"model"`` key, ``checkpoint_filter_fn``, ``adapt_input_conv(1, patch_embed.proj.weight)``, strict load.

The front end (:class:`PasstMel`) is ``hear21passt/models/preprocess.py: AugmentMelSTFT`` in eval mode (no fmin/fmax
jitter, no SpecAugment masking): pre-emphasis ``[-0.97, 1]``, ``torch.stft(n_fft, hop, win, periodic=False Hann,
center=True, reflect)``, power, Kaldi mel banks (``torchaudio.compliance.kaldi.get_mel_banks``, padded by one zero
column), ``log(mel + 1e-5)``, ``(x + 4.5) / 5``. Three differences that do not change a value (the output is
bit-identical here): the mel bank is built once instead of at every call; the pre-emphasis is ``x[1:] - 0.97 x[:-1]``
instead of a 2-tap ``conv1d`` (ten times faster on 20 s inputs); the STFT is taken with ``return_complex=True`` +
``view_as_real`` (the package's ``return_complex=False`` is deprecated in torch and is the same computation).
``tests/test_kld_passt.py`` checks the front end and the whole forward pass against the package's own modules.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder
from evalkit.embeddings.weights import CheckpointError


@dataclass(frozen=True)
class MelConfig:
    """Constants of ``AugmentMelSTFT`` as ``hear21passt.base*.get_basic_model`` builds it (eval mode)."""

    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 320
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 15000.0  # fmax=None -> sr // 2 - fmax_aug_range // 2 = 16000 - 2000 // 2
    preemphasis: float = 0.97
    log_offset: float = 1e-5
    norm_shift: float = 4.5
    norm_scale: float = 5.0

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any]) -> "MelConfig":
        return cls(**{k: recipe[k] for k in cls.__dataclass_fields__ if k in recipe})


class PasstMel(nn.Module):
    """``AugmentMelSTFT.forward`` in eval mode: ``[B, T]`` waveform at 32 kHz -> ``[B, n_mels, frames]``."""

    def __init__(self, cfg: MelConfig = MelConfig()) -> None:
        super().__init__()
        import torchaudio

        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False), persistent=False)
        banks, _ = torchaudio.compliance.kaldi.get_mel_banks(
            cfg.n_mels, cfg.n_fft, float(cfg.sample_rate), cfg.fmin, cfg.fmax,
            vtln_low=100.0, vtln_high=-500.0, vtln_warp_factor=1.0,
        )
        self.register_buffer("mel_basis", nn.functional.pad(banks, (0, 1), value=0.0), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        # = conv1d(wav, [[[-p, 1]]]) bit for bit (checked in the tests), ten times faster on long inputs
        x = wav[..., 1:] + (-c.preemphasis) * wav[..., :-1]
        spec = torch.stft(x, c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self.window,
                          center=True, normalized=False, return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(dim=-1)
        mel = torch.matmul(self.mel_basis, power.float())
        return ((mel + c.log_offset).log() + c.norm_shift) / c.norm_scale


def min_input_samples(cfg: MelConfig = MelConfig(), patch: int = 16) -> int:
    """The shortest waveform PaSST accepts: the STFT must give ``patch`` frames (16) for one time patch.
    frames = 1 + (T - 1) // hop (pre-emphasis drops one sample, ``center=True``) -> T >= (patch - 1) * hop + 1 =
    4,801 at hop 320; audiocraft keeps chunks of more than ``int(0.15 * 32000)`` = 4,800 samples, the same bound."""
    return (patch - 1) * cfg.hop_length + 1


class PasstClassifier(nn.Module):
    """Mel front end + PaSST network: ``[B, T]`` (mono, 32 kHz) -> logits ``[B, n_classes]`` (the wrapper's
    ``mode="logits"``: ``head((cls + dist) / 2)``)."""

    def __init__(self, mel: PasstMel, net: nn.Module) -> None:
        super().__init__()
        self.mel = mel
        self.net = net
        self.eval()

    @torch.inference_mode()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        specs = self.mel(wav).unsqueeze(1)
        with warnings.catch_warnings():
            # PatchEmbed warns whenever the input is not the full input_tdim (10 s into the 20 s model: always)
            warnings.filterwarnings("ignore", message="Input image size")
            logits, _features = self.net(specs)
        return logits


def _quiet():
    """hear21passt prints the whole model on construction and tensor shapes on its first forward pass."""
    import hear21passt.models.passt as passt_mod

    passt_mod.first_RUN = False
    return contextlib.redirect_stdout(io.StringIO())


def _network(arch: str, input_tdim: int, n_classes: int, tiny: Mapping[str, int] | None) -> nn.Module:
    """The PaSST network (random init from the current RNG). ``tiny=None``: exactly
    ``hear21passt.models.passt.get_model(arch, pretrained=False, n_classes, in_channels=1, fstride=10, tstride=10,
    input_fdim=128, input_tdim)`` (what ``get_basic_model`` builds, minus the download). ``tiny={"embed_dim": 64,
    "depth": 1, "num_heads": 4}``: the same ``PaSST`` class and patch grid (16x16 patches, stride 10, ``input_tdim``
    time positions, distillation token) with a smaller transformer, for tests and demos."""
    from hear21passt.models.passt import PaSST, get_model

    with _quiet():
        if tiny is None:
            net = get_model(arch=arch, pretrained=False, n_classes=n_classes, in_channels=1, fstride=10, tstride=10,
                            input_fdim=128, input_tdim=input_tdim)
        else:
            net = PaSST(img_size=(128, input_tdim), patch_size=16, stride=(10, 10), in_chans=1,
                        num_classes=n_classes, distilled=True, embed_dim=int(tiny["embed_dim"]),
                        depth=int(tiny["depth"]), num_heads=int(tiny["num_heads"]))
    return net.eval()


class PasstBackbone(Backbone):
    """The KLD classifier: :class:`PasstMel` + the PaSST network of ``arch`` / ``input_tdim``."""

    name = "passt"

    def __init__(self, *, arch: str, input_tdim: int, n_classes: int = 527, mel: MelConfig = MelConfig(),
                 tiny: Mapping[str, int] | None = None, seed: int = 0) -> None:
        super().__init__("tiny" if tiny is not None else "full", seed)
        self.arch, self.input_tdim, self.n_classes, self.mel, self.tiny = arch, int(input_tdim), int(n_classes), mel, tiny

    def build(self) -> PasstClassifier:
        return PasstClassifier(PasstMel(self.mel), _network(self.arch, self.input_tdim, self.n_classes, self.tiny))

    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        load_weights(module.net, state, setting)

    def describe(self) -> dict:
        return {**super().describe(), "arch": self.arch, "input_tdim": self.input_tdim}


def build_passt_net(
    arch: str, input_tdim: int, n_classes: int = 527, *, tiny: Mapping[str, int] | None = None, seed: int = 0
) -> nn.Module:
    """The PaSST network with random weights (seeded; the global RNG is left untouched); see :func:`_network`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _network(arch, input_tdim, n_classes, tiny)


def load_weights(net: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``vit_helpers.load_pretrained`` minus the download: unwrap a ``"model"`` key (done by ``read_state_dict``),
    ``checkpoint_filter_fn``, ``adapt_input_conv`` for the one-channel patch embedding, then a strict
    ``load_state_dict`` (a mismatch names the keys)."""
    from hear21passt.models.passt import adapt_input_conv, checkpoint_filter_fn

    try:
        state = checkpoint_filter_fn(dict(state), net)
        key = "patch_embed.proj.weight"
        if key in state:
            state[key] = adapt_input_conv(1, state[key])
        net.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{what}: the state dict does not fit this PaSST ({exc})") from exc


def default_batch_size(setting: Any, device: torch.device, model_size: str) -> int:
    """PaSST inputs per forward pass: ``batch_size`` when set, else per device (``conf/metrics/kld.yaml``: null).

    CUDA: 16. CPU: 1 for the full-size PaSST: a forward pass at 10 s is compute-bound already at batch 1 and larger
    batches are slower per input (batch 4: +13 %; their attention matrices, 68 MB per input and layer, leave the
    cache), and batch 1 lets independent passes run side by side on the cores (:meth:`PasstEmbedder.embed`).
    ``model_size=tiny`` keeps 16 on the CPU too, although batch 1 would be faster there as well (measured: 18 vs 31 ms
    per input on one thread): batching moves PaSST's outputs by float rounding (~1e-7), and the tiny model's numbers
    are pinned by ``tests/test_golden.py``."""
    if setting:
        return max(1, int(setting))
    if torch.device(device).type == "cpu" and model_size == "full":
        return 1
    return 16


@register_embedder("passt-20s")
@register_embedder("passt-10s")
class PasstEmbedder(Embedder):
    """PaSST's AudioSet logits as an embedding (``conf/embeddings/passt-*.yaml``): each input ``[T]`` (mono, 32 kHz,
    at least :func:`min_input_samples`) -> ``[1, 527]`` logits, float32. Inputs of equal length share a forward pass,
    at most ``batch_size`` at a time (:func:`default_batch_size`); on a CPU the passes run side by side on the intra-op
    threads' count of workers, one thread each (:func:`~evalkit.cpu.run_calls`: the same passes, the same values as
    one after the other)."""

    def __init__(self, config, weights, device="cpu", name=None) -> None:
        super().__init__(config, weights, device, name)
        self.mel = MelConfig.from_recipe(self.config)
        self.min_samples = min_input_samples(self.mel)
        self.batch_size = default_batch_size(weights.batch_size, self.device, weights.model_size)

    def backbone(self) -> PasstBackbone:
        c = self.config
        return PasstBackbone(arch=str(c["arch"]), input_tdim=int(c["input_tdim"]), n_classes=self.dim, mel=self.mel,
                             tiny=dict(c["tiny"]) if self.weights.model_size == "tiny" else None, seed=self.weights.seed)

    def embed(self, items: Sequence[torch.Tensor]) -> list[np.ndarray]:
        from evalkit.cpu import run_calls

        out: list[np.ndarray | None] = [None] * len(items)
        by_len: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(items):
            by_len[int(s.shape[-1])].append(i)
        parts = [idx[k:k + self.batch_size] for _, idx in sorted(by_len.items())
                 for k in range(0, len(idx), self.batch_size)]
        model = self.network

        def forward(part: list[int]) -> torch.Tensor:
            return model(torch.stack([items[i] for i in part]).to(self.device, torch.float32)).float().cpu()

        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        for part, res in zip(parts, run_calls(forward, parts, workers)):
            for j, i in enumerate(part):
                out[i] = res[j:j + 1].numpy()
        return out  # type: ignore[return-value]
