"""The metric interface (the ``torchmetrics.Metric`` pattern, without the dependency).

A metric streams batches of :class:`Clip` through :meth:`Metric.update`, keeps only **sufficient statistics**
(float64 sums in ``self.state``), and turns them into numbers in :meth:`Metric.compute`. Because every state entry
is a sum, states merge by addition (:meth:`merge`): a sharded or resumed run gives the same number as one process.

``update`` returns per-clip values (``{clip_id: {column: value}}``) that the run writes to ``clips.parquet``;
a clip the metric cannot score gets ``{f"{name}_skipped": reason}`` and is counted in ``state["n_skipped"]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch


@dataclass
class Clip:
    """One scored item: generated audio, its caption and (if any) its reference audio, at native rates."""

    id: str
    caption: str
    audio: torch.Tensor  # [C, T] float32, after the run's post-processing step
    sample_rate: int
    reference: torch.Tensor | None = None  # [C, T] float32, as read from disk
    reference_sr: int | None = None


class Metric:
    #: registry name, also the prefix of its per-clip columns
    name: ClassVar[str] = ""
    #: the headline key of ``compute()``
    primary: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True
    #: the column header in the model card's table
    card_column: ClassVar[str] = ""

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        self.recipe = dict(recipe)
        self.device = torch.device(device)
        self.state: dict[str, np.ndarray] = {}
        self.add_state("n_skipped", ())

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

    def merge(self, other: "Metric") -> "Metric":
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for k in self.state:
            self.state[k] = self.state[k] + other.state[k]
        return self

    def reset(self) -> None:
        for k in self.state:
            self.state[k] = np.zeros_like(self.state[k])

    # -- the recipe --------------------------------------------------------------------------------------------------
    def update(self, clips: Sequence[Clip]) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What identifies the numbers: protocol, checkpoint name and sha256, random weights or not."""
        return {"protocol": self.recipe.get("protocol", "")}

    def skip(self, clip_id: str, reason: str) -> dict[str, Any]:
        self.state["n_skipped"] = self.state["n_skipped"] + 1
        return {f"{self.name}_skipped": reason}


def resolve_recipe(node: Mapping[str, Any]) -> dict[str, Any]:
    """The effective recipe of a metric config node (``conf/metrics/<name>.yaml``).

    ``node.protocols[node.protocol]`` holds the protocol's constants (one file each under
    ``conf/metrics/<name>/``); any other key of the node that is not ``None`` overrides the protocol's value
    (``metrics.kld.pad_chunks=true``), and keys the protocol does not define (checkpoint, batch size, device) are
    carried as they are."""
    node = dict(node)
    protocols = node.pop("protocols", {}) or {}
    protocol = node.get("protocol")
    if protocol not in protocols:
        raise KeyError(f"unknown protocol {protocol!r}; known: {sorted(protocols)}")
    recipe = dict(protocols[protocol])
    for k, v in node.items():
        if v is not None or k not in recipe:
            recipe[k] = v
    recipe["protocol"] = protocol
    return recipe
