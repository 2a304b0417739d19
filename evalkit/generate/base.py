"""The generator protocol: ``generate(prompts) -> iterator of GeneratedClip``.

A generator knows prompts and audio, nothing about metrics. ``pending(prompts)`` lets the run skip what an
earlier (interrupted) run already finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import torch

from evalkit.data.prompts import Prompt


@dataclass
class GeneratedClip:
    id: str
    audio: torch.Tensor  # [C, T] float32
    sample_rate: int
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Generator(Protocol):
    name: str
    random_weights: bool

    def generate(self, prompts: Sequence[Prompt]) -> Iterator[GeneratedClip]: ...

    def describe(self) -> dict[str, Any]: ...
