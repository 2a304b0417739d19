"""PANNs Cnn14 (Kong et al., IEEE/ACM TASLP 2020), kadtk's ``panns-cnn14-32k`` embedding: the network and its
front end in plain torch, in the state-dict layout of the released ``Cnn14_mAP=0.431.pth``.

kadtk 1.1.0 (``kadtk/model_loader.py: PANNsModel('cnn14-32k')``, code vendored in ``kadtk/models/panns/models.py``
from qiuqiangkong/audioset_tagging_cnn) builds ``Cnn14(sample_rate=32000, window_size=1024, hop_size=320,
mel_bins=64, fmin=50, fmax=14000, classes_num=527)``, loads ``torch.load(...)["model"]`` and takes, for a whole file
in one forward pass (``[1, N]`` float32 at 32 kHz), the output ``"2048"``: ``relu(fc1(...))``, ``[1, 2048]``.

The forward pass (eval mode): torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank(ref=1.0, amin=1e-10,
top_db=None)`` (:class:`~evalkit.embeddings.logmel.TorchlibrosaLogMel`, no torchlibrosa needed), ``bn0`` over the
mel bins, six :class:`ConvBlock` (two 3x3 convolutions without bias, each with BatchNorm and ReLU; average pooling 2x2
after blocks 1-5, 1x1 after block 6), the mean over frequency, ``max + mean`` over time, ``fc1`` and ReLU. Dropout
and SpecAugment act only in training. The AudioSet classifier (``fc_audioset``) comes after the embedding and is not
built; its keys are dropped by name (:data:`DROPPED`), as are the checkpoint's copies of the front end's frozen
tensors, which replace the computed ones after a check (:func:`~evalkit.embeddings.logmel.front_end_from_state`).
``tests/test_panns.py`` checks the embeddings against kadtk's own ``Cnn14`` on identical random weights
(environment ``evalkit[reference]``).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder, by_length
from evalkit.embeddings.logmel import TorchlibrosaLogMel, front_end_from_state
from evalkit.embeddings.weights import CheckpointError, load_strict

#: ``Cnn14.__init__``: ConvBlock widths 64 ... 2048, ``fc1 = Linear(2048, 2048)``
FULL = dict(channels=(64, 128, 256, 512, 1024, 2048), dim=2048)
#: torchlibrosa's frozen parameters in the checkpoint -> the front end's buffers
FRONT_END_KEYS = {"spectrogram_extractor.stft.conv_real.weight": "conv_real",
                  "spectrogram_extractor.stft.conv_imag.weight": "conv_imag",
                  "logmel_extractor.melW": "melW"}
#: checkpoint keys the embedding does not use, and why
DROPPED = {r"fc_audioset\.(weight|bias)": "the AudioSet classifier: the embedding ('2048') is taken before it"}
_DROP_RES = [re.compile(r"\A" + p + r"\Z") for p in DROPPED]


class PannsError(CheckpointError):
    pass


class ConvBlock(nn.Module):
    """``models.py: ConvBlock``: conv1 -> bn1 -> ReLU -> conv2 -> bn2 -> ReLU -> average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1),
                               bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int]) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class Cnn14(nn.Module):
    """Cnn14 up to its ``"2048"`` embedding. ``forward(waves [B, N]) -> [B, dim]`` (float32, 32 kHz mono input of
    at least :attr:`min_samples` samples). ``front``: the log-mel front end's constants (``sample_rate``, ``n_fft``,
    ``hop_length``, ``n_mels``, ``fmin``, ``fmax``)."""

    def __init__(self, front: dict[str, Any], channels: Sequence[int] = FULL["channels"], dim: int = FULL["dim"]
                 ) -> None:
        super().__init__()
        self.front_end = TorchlibrosaLogMel(**front)
        self.bn0 = nn.BatchNorm2d(int(front["n_mels"]))
        widths = [1, *[int(c) for c in channels]]
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(widths[-1], int(dim), bias=True)
        self.dim = int(dim)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = self.front_end(waves)                  # [B, 1, T, mels]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool_size=(2, 2) if i < 6 else (1, 1))
        x = torch.mean(x, dim=3)                   # over frequency
        x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
        return F.relu_(self.fc1(x))


class PannsBackbone(Backbone):
    """:class:`Cnn14` in the released state-dict layout (``bn0``, ``conv_block1..6``, ``fc1``): random weights from
    a seed, or ``Cnn14_mAP=0.431.pth`` (its ``"model"`` entry)."""

    name = "panns"

    def __init__(self, front: dict[str, Any], layout: dict[str, Any], size: str = "full", seed: int = 0) -> None:
        super().__init__(size, seed)
        self.front, self.layout = dict(front), dict(layout)

    def build(self) -> Cnn14:
        return Cnn14(self.front, self.layout["channels"], self.layout["dim"]).eval()

    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        """Take the checkpoint's own front-end tensors (checked against the computed ones), drop the classifier
        (:data:`DROPPED`), load the rest strictly."""
        front = {k: state[k] for k in FRONT_END_KEYS if k in state}
        rest = {k: v for k, v in state.items() if k not in FRONT_END_KEYS and not any(rx.match(k) for rx in _DROP_RES)}
        module.front_end_max_abs_diff = front_end_from_state(module.front_end, front, FRONT_END_KEYS, setting,
                                                             "PANNs Cnn14 (32 kHz)", error=PannsError)
        load_strict(module, rest, setting=setting, error=PannsError,
                    hint=f"Expected a PANNs Cnn14 state dict of size {self.size!r} (Cnn14_mAP=0.431.pth, its 'model').")

    def describe(self) -> dict:
        return {**super().describe(), "model": f"evalkit Cnn14 (channels {list(self.layout['channels'])}, "
                                               f"embedding {self.layout['dim']})"}


@register_embedder("panns-cnn14-32k")
class PannsEmbedder(Embedder):
    """kadtk's ``panns-cnn14-32k`` (``conf/embeddings/panns-cnn14-32k.yaml``): an input ``[T]`` (mono, 32 kHz) -> one
    ``[1, 2048]`` embedding of the whole input; inputs of equal length are batched ``batch_size`` at a time, ``[N,
    T]`` inputs give one row per window. ``model_size: tiny`` (the conf's ``tiny``: narrower blocks and a smaller
    embedding, random weights only) makes :attr:`dim` the tiny embedding's."""

    def __init__(self, config, weights, device="cpu", name=None) -> None:
        super().__init__(config, weights, device, name)
        c = self.config
        self.front = dict(sample_rate=self.sample_rate, n_fft=int(c["window_size"]), hop_length=int(c["hop_size"]),
                          n_mels=int(c["mel_bins"]), fmin=float(c["fmin"]), fmax=float(c["fmax"]))
        tiny = dict(c["tiny"])
        self.layout = (dict(channels=tuple(tiny["channels"]), dim=int(tiny["dim"])) if weights.model_size == "tiny"
                       else dict(FULL, dim=self.dim))
        self.dim = int(self.layout["dim"])
        # CPU: one input per pass, as fadtk/kadtk run them: a batch moves the float32 outputs by ~1e-7, which the
        # float16 storage turns into whole float16 steps now and then (measured: ~0.2 % of EnCodec's values)
        self.batch_size = max(1, weights.batch_size or (8 if self.device.type == "cuda" else 1))
        #: the fewest samples with one time step left after the five 2x2 poolings: 32 frames, ``31 * hop``
        self.min_samples = 31 * self.front["hop_length"]

    def backbone(self) -> PannsBackbone:
        return PannsBackbone(self.front, self.layout, self.weights.model_size, self.weights.seed)

    @torch.inference_mode()
    def embed(self, items: Sequence[torch.Tensor]) -> list[np.ndarray]:
        def vectors(x: torch.Tensor) -> np.ndarray:  # [n, T] -> [n, dim]
            return self.network(x.to(self.device, torch.float32)).float().cpu().numpy()

        return [np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
                for rows in by_length(items, self.batch_size, vectors)]
