"""The embedder contract, and the backbone interface behind it.

:class:`Embedder` (fadtk's ``ModelLoader``, with evalkit's weights and offline errors): one model that turns audio
into vectors. It says the ``sample_rate`` and ``channels`` it takes, the band it analyses (``band_hz``: the audit
flags a file sampled too low for it), its ``dim``, its :meth:`~Embedder.identity` (name, checkpoint, sha256, random
or released, the constants that decide its vectors) and :meth:`~Embedder.embed`: a list of inputs (each ``[T]``, or
``[N, T]`` for N equal-length windows of one clip) -> one float32 array ``[frames, dim]`` per input. Its constants
come from ``conf/embeddings/<name>.yaml``; the weights from :class:`WeightSettings` (the metric's ``checkpoint``,
``checkpoint_sha256``, ``trust_checkpoint``, ``backbone_weights``, ``model_size``, ``random_seed``), resolved by
:func:`~evalkit.embeddings.weights.resolve_checkpoint` the same way for every model: a release URL with sha256, a hub
repository pinned to a revision, a local path, or random weights; with downloads off, an error naming the file.

A :class:`Backbone` is the network itself. :meth:`Backbone.load` is the same for all: build the architecture with
seeded random weights (the caller's RNG untouched), then, when the checkpoint has a file, read it with the one safe
reader (:func:`~evalkit.embeddings.weights.read_state_dict`: ``weights_only=True``), adapt it to the network
(:meth:`Backbone.load_weights`) and load it strictly.

A new embedding model = one module here (a :class:`Backbone` and an :class:`Embedder` registered with
:func:`~evalkit.embeddings.register_embedder`) + one conf file ``conf/embeddings/<name>.yaml``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch

from evalkit.embeddings.weights import Checkpoint, CheckpointError, read_state_dict, resolve_checkpoint


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
        if torch.device(device).type == "cpu":
            from evalkit.cpu import reuse_freed_memory

            reuse_freed_memory()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = self.build()
        if checkpoint.path is not None:
            state = read_state_dict(checkpoint.path, setting=setting, trust=trust)
            self.load_weights(module, state, f"{setting}={checkpoint.path}")
        return module.to(device).eval()


#: ``checkpoint_sha256`` of a metric's run settings that means "the sha256 its embedder's conf file pins"
PINNED = "pinned"


@dataclass(frozen=True)
class WeightSettings:
    """How a metric asks for its embedder's weights (its run settings, ``conf/metrics/<metric>.yaml``).

    ``setting``: the config prefix users set (``metrics.fad``), named in every error. ``checkpoint``: ``None`` (the
    ``policy`` decides: ``released`` downloads the published file once, ``random`` builds seeded random weights),
    ``"random"``, or a path. ``checkpoint_sha256``: :data:`PINNED` (the embedder's published digest), a digest or
    prefix, or ``None`` (no check; the digest is recorded). ``model_size``: ``full`` | ``tiny`` (a shrunken network
    of the same classes, random weights only, for tests and the demo)."""

    setting: str
    checkpoint: str | None = None
    checkpoint_sha256: str | None = PINNED
    trust_checkpoint: bool = False
    policy: str = "released"
    model_size: str = "full"
    seed: int = 0
    batch_size: int | None = None

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], setting: str) -> "WeightSettings":
        sha = recipe.get("checkpoint_sha256", PINNED)
        bs = recipe.get("batch_size")
        return cls(setting=setting, checkpoint=None if recipe.get("checkpoint") is None else str(recipe["checkpoint"]),
                   checkpoint_sha256=None if sha is None else str(sha),
                   trust_checkpoint=bool(recipe.get("trust_checkpoint", False)),
                   policy=str(recipe.get("backbone_weights") or "released"),
                   model_size=str(recipe.get("model_size") or "full"), seed=int(recipe.get("random_seed") or 0),
                   batch_size=int(bs) if bs else None)


class Embedder(ABC):
    """One embedding model (see the module doc). Subclasses set :meth:`backbone` and :meth:`embed`; everything
    else (weights, identity) is here."""

    #: the registry name (``conf/embeddings/<name>.yaml``), set by :func:`~evalkit.embeddings.register_embedder`
    name: ClassVar[str] = ""

    def __init__(self, config: Mapping[str, Any], weights: WeightSettings, device: str | torch.device = "cpu",
                 name: str | None = None) -> None:
        if name:
            self.name = name  # one class may serve several embeddings (passt-10s, passt-20s)
        self.config = config if isinstance(config, dict) else dict(config)
        self.weights = weights
        self.device = torch.device(device)
        #: Hz of the audio it takes; channels it takes (1: mono)
        self.sample_rate = int(self.config["sample_rate"])
        self.channels = int(self.config.get("channels") or 1)
        #: the dimension of its vectors
        self.dim = int(self.config["dim"])
        #: the highest frequency its front end analyses (Hz), or None for the whole band
        self.band_hz = float(self.config["band_hz"]) if self.config.get("band_hz") else None
        if weights.model_size not in self.model_sizes():
            raise ValueError(f"{weights.setting}.model_size={weights.model_size!r}: expected one of "
                             f"{self.model_sizes()} for the {self.name} embedding")
        self._checkpoint: Checkpoint | None = None
        self._network: torch.nn.Module | None = None

    # -- weights -----------------------------------------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], setting: str, device: str | torch.device = "cpu") -> "Embedder":
        """The embedder a metric's recipe asks for: ``recipe["embedding"]`` with its constants
        (``recipe["embedder"]``, filled in by the run's spec) and the weights of its run settings."""
        return cls(recipe["embedder"], WeightSettings.from_recipe(recipe, setting), device, name=recipe["embedding"])

    @classmethod
    def model_sizes(cls) -> tuple[str, ...]:
        return ("full", "tiny")

    @property
    def checkpoint(self) -> Checkpoint:
        """The weights, resolved once (see :class:`WeightSettings`). A shrunken model has no released file."""
        if self._checkpoint is None:
            w, c = self.weights, self.config
            if w.model_size != "full" and w.checkpoint is None and w.policy != "random":
                raise CheckpointError(
                    f"{w.setting}.model_size={w.model_size} has no released weights: set backbone_weights=random (or "
                    f"{w.setting}.checkpoint=random), or pass a state dict saved from a {w.model_size} model")
            sha = c.get("checkpoint_sha256") if w.checkpoint_sha256 == PINNED else w.checkpoint_sha256
            self._checkpoint = resolve_checkpoint(
                w.checkpoint, setting=f"{w.setting}.checkpoint", filename=str(c.get("checkpoint_file") or self.name),
                url=c.get("checkpoint_url"), hub=c.get("hub"), expected_sha256=sha, policy=w.policy)
        return self._checkpoint

    @property
    def network(self) -> torch.nn.Module:
        """The network on :attr:`device`, in eval mode, loaded on first use."""
        if self._network is None:
            self._network = self.backbone().load(self.checkpoint, setting=f"{self.weights.setting}.checkpoint",
                                                  device=self.device, trust=self.weights.trust_checkpoint)
        return self._network

    @abstractmethod
    def backbone(self) -> Backbone:
        """The :class:`Backbone` that builds and loads this model's network."""

    # -- what it is ----------------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What decides its vectors: the embedding's name and constants, the checkpoint (name, sha256, random or
        released, and the seed of random weights) and the model size."""
        ck = self.checkpoint
        constants = {k: v for k, v in self.config.items()
                     if k not in ("module", "checkpoint_file", "checkpoint_url", "checkpoint_sha256", "hub")}
        return {"embedding": self.name, **ck.describe(), "model_size": self.weights.model_size,
                "random_seed": self.weights.seed if ck.random else None, "constants": constants}

    def describe(self) -> dict[str, Any]:
        """For ``summary.json``: the identity without its constants (those are in the recipe)."""
        return {k: v for k, v in self.identity().items() if k != "constants"}

    # -- the vectors ---------------------------------------------------------------------------------------------------
    @abstractmethod
    def embed(self, items: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """One float32 array ``[frames, dim]`` per item; an item is ``[T]`` (a clip) or ``[N, T]`` (N windows of one
        clip), mono at :attr:`sample_rate`. Items are batched across for the network; the values do not depend on
        how (``tests/test_cpu_threads.py``)."""


def by_length(items: Sequence[torch.Tensor], batch_size: int,
              forward: Callable[[torch.Tensor], np.ndarray]) -> list[list[np.ndarray]]:
    """Run ``forward`` on the inputs of ``items`` (each ``[T]``, or ``[N, T]``: N inputs of one item) stacked
    ``[n, T]``, at most ``batch_size`` inputs of one length at a time (a model that takes a whole input, whose
    output must not depend on zero padding). ``forward`` returns one row per input (``[n, ...]``). Returns, per item,
    its inputs' rows in order."""
    import itertools

    flat = [(i, r) for i, x in enumerate(items) for r in x.reshape(-1, x.shape[-1])]
    rows: list[Any] = [None] * len(flat)
    order = sorted(range(len(flat)), key=lambda k: flat[k][1].shape[-1])
    for _, group in itertools.groupby(order, key=lambda k: flat[k][1].shape[-1]):
        group = list(group)
        for s in range(0, len(group), max(1, int(batch_size))):
            part = group[s:s + max(1, int(batch_size))]
            for k, row in zip(part, forward(torch.stack([flat[k][1] for k in part]))):
                rows[k] = row
    out: list[list[np.ndarray]] = [[] for _ in items]
    for (i, _), row in zip(flat, rows):
        out[i].append(row)
    return out
