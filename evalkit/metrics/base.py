"""The metric contract (the ``torchmetrics.Metric`` pattern, without the dependency).

A metric streams batches of :class:`Clip` through :meth:`Metric.update`, keeps only **sufficient statistics**
(float64 sums in ``self.state``) and turns them into numbers in :meth:`Metric.compute`. Every state entry is a sum,
so states merge by addition (:meth:`Metric.merge`, :meth:`Metric.add_state_delta`): a sharded or resumed run gives the
one-process number bit for bit.

- ``spec`` (a :class:`~evalkit.metrics.spec.MetricSpec`) declares what the metric is, once.
- ``update(clips) -> {clip id: ClipResult}``: per-clip values (``clips.parquet`` columns), per-clip arrays
  (embeddings) and, for a clip it cannot score, the reason (``ClipResult.skipped``; counted in ``n_skipped``).
- ``compute() -> dict``: one rule when there is nothing to compute from: :class:`MetricUnavailable` with the reason
  (never NaN, never a number made of nothing). Every metric counts the clips it scored in ``state["n_clips"]``.
- Hooks the run asks instead of checking metric names: :meth:`Metric.run_skip_reason` (not applicable to this run),
  :meth:`Metric.needs_reference_audio`, :meth:`Metric.write_reference_artifacts`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from evalkit.metrics.spec import MetricSpec


class MetricUnavailable(ValueError):
    """The metric has no number for this run (nothing scored, too few clips for a covariance, ...): the message
    says why and what to do."""


@dataclass
class Clip:
    """One scored item: generated audio, its caption and (if any) its reference audio, at their own rates."""

    id: str
    caption: str
    audio: torch.Tensor  # [C, T] float32, after the run's post-processing step
    sample_rate: int
    reference: torch.Tensor | None = None  # [C, T] float32, at the rate and channels the protocol hands over
    reference_sr: int | None = None


@dataclass
class ClipResult:
    """What ``update`` says about one clip: ``values`` (columns of ``clips.parquet``, named ``<metric>...``),
    ``arrays`` (saved to ``embeddings/``, e.g. ``fad_gen_emb`` [windows, 128]) and ``skipped`` (the reason this metric
    did not score the clip, or None)."""

    values: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "skipped": self.skipped}


@dataclass(frozen=True)
class RunContext:
    """What a metric may ask about the run before it is built (see :meth:`Metric.run_skip_reason`)."""

    melody_model: bool = False
    melody_source: str = "none"
    #: False when the prompt set has no captions (dataset=folder without dataset.captions)
    captions: bool = True


class Metric:
    """Base class: state handling, merging, the empty-compute rule. Subclasses set ``spec`` and implement
    ``update`` and ``_compute``."""

    spec: ClassVar[MetricSpec]

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        self.recipe = dict(recipe)
        self.device = torch.device(device)
        self.state: dict[str, np.ndarray] = {}
        #: what the last compute() found questionable about its number (summary.json ``warnings``)
        self.warnings: list[str] = []
        self.add_state("n_clips", ())
        self.add_state("n_skipped", ())

    @property
    def name(self) -> str:
        return self.spec.name

    # -- state -----------------------------------------------------------------------------------------------------
    def add_state(self, key: str, shape: tuple[int, ...] | int) -> None:
        self.state[key] = np.zeros(shape, np.float64)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in self.state.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        missing = set(self.state) - set(state)
        if missing:
            raise KeyError(f"{self.name}: saved state lacks {sorted(missing)}")
        for k in self.state:
            arr = np.asarray(state[k], np.float64)
            if arr.shape != self.state[k].shape:
                raise ValueError(f"{self.name}: state {k!r} has shape {arr.shape}, expected {self.state[k].shape}")
            self.state[k] = arr.copy()

    def add_state_delta(self, delta: Mapping[str, np.ndarray]) -> None:
        """Add another state (a batch's contribution, another rank's sums) to this one."""
        for k in self.state:
            self.state[k] = self.state[k] + np.asarray(delta[k], np.float64)

    def merge(self, other: "Metric") -> "Metric":
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        self.add_state_delta(other.state)
        return self

    def reset(self) -> None:
        for k in self.state:
            self.state[k] = np.zeros_like(self.state[k])

    def count(self, key: str) -> int:
        return int(round(float(self.state[key])))

    # -- the recipe --------------------------------------------------------------------------------------------------
    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metric's numbers (``spec.primary`` is the headline). Raises :class:`MetricUnavailable` when no clip
        was scored, or when the scored clips cannot give a number (the reason says which). Doubts about a number
        that exists (e.g. a rank-deficient covariance) go to ``self.warnings``."""
        self.warnings = []
        if self.count("n_clips") <= 0:
            raise MetricUnavailable(
                f"no clip was scored: every clip was kept from it (the reasons: summary.json skip_reasons, "
                f"clips.parquet columns skip_reason and {self.spec.skip_column})")
        return self._compute()

    def _compute(self) -> dict[str, float]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What identifies the numbers: protocol, checkpoint name and sha256, random weights or not."""
        return {"protocol": self.recipe.get("protocol", "")}

    def skip(self, reason: str) -> ClipResult:
        """A clip this metric cannot score: counted, and the reason kept for ``clips.parquet``."""
        self.state["n_skipped"] = self.state["n_skipped"] + 1
        return ClipResult(skipped=reason)

    # -- hooks the run asks ------------------------------------------------------------------------------------------
    @classmethod
    def run_skip_reason(cls, recipe: Mapping[str, Any], ctx: RunContext) -> str | None:
        """Why this metric does not apply to the run at all (it is then listed as skipped), or None. Default: a
        metric that reads captions does not apply to a prompt set without them."""
        if cls.spec.needs_captions and not ctx.captions:
            return "no captions: the prompt set is the clips of model.dir; give dataset.captions=FILE (id,caption)"
        return None

    @classmethod
    def applies_channel_view(cls) -> bool:
        """Whether the metric scores the run's ``channel_view`` (the card's metrics) or the clip's own channels."""
        return True

    @classmethod
    def needs_reference_audio(cls, recipe: Mapping[str, Any]) -> bool:
        """Whether the run must provide reference audio for this metric (checked before any generation)."""
        return cls.spec.needs_reference

    @property
    def uses_reference_audio(self) -> bool:
        return type(self).needs_reference_audio(self.recipe)

    def write_reference_artifacts(self, folder: Path) -> list[Path]:
        """Files describing the reference side that later runs can reuse (FAD: its statistics). Default: none."""
        return []
