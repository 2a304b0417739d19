"""The backbone interface: one way to build, load and describe VGGish, PaSST and CLAP.

A backbone is the network a metric embeds audio (or text) with. :meth:`Backbone.load` is the same for all three:
build the architecture with seeded random weights (the caller's RNG untouched), then, when the resolved
:class:`~evalkit.backbones.weights.Checkpoint` has a file, read it with the one safe reader
(:func:`~evalkit.backbones.weights.read_state_dict`: ``weights_only=True``), adapt it to the network
(:meth:`Backbone.load_weights`) and load it strictly. Where the files come from (release download with sha256, local
path, random) is :func:`~evalkit.backbones.weights.resolve_checkpoint`'s business.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from evalkit.backbones.weights import Checkpoint, read_state_dict


class Backbone(ABC):
    #: short name (vggish, passt, clap)
    name: str = ""

    def __init__(self, size: str = "full", seed: int = 0) -> None:
        self.size, self.seed = str(size), int(seed)

    @abstractmethod
    def build(self) -> torch.nn.Module:
        """The network with random weights drawn from ``self.seed``."""

    @abstractmethod
    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        """Put a checkpoint's tensors (as :func:`read_state_dict` returns them) into ``module``, strictly."""

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.name, "model_size": self.size}

    def load(self, checkpoint: Checkpoint, *, setting: str, device: str | torch.device = "cpu",
             trust: bool = False) -> torch.nn.Module:
        """The network for ``checkpoint`` (random weights when it has no file), in eval mode on ``device``.
        ``setting`` (e.g. ``metrics.fad.checkpoint``) and the file are named in every error; ``trust`` is the
        metric's ``trust_checkpoint`` (full unpickling of a file that needs it)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = self.build()
        if checkpoint.path is not None:
            state = read_state_dict(checkpoint.path, setting=setting, trust=trust)
            self.load_weights(module, state, f"{setting}={checkpoint.path}")
        return module.to(device).eval()
