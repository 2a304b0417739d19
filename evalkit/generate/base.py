"""The generator contract: exactly the methods the generation stage (:mod:`evalkit.stages.generation`) calls.

A generator knows prompts and audio, nothing about metrics or run folders. The stage asks it for a plan (batches
with their seeds), then for each batch it has not finished yet, for that batch's clips. A clip is either new audio
(``GeneratedClip.audio``; the stage writes it to ``audio/<id>.flac``) or a file that already exists
(``GeneratedClip.path``: the folder generator), or skipped with a reason. Every generator goes through that one path.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from evalkit.data.prompts import Prompt


@dataclass
class Batch:
    """Prompts generated together. ``seed`` (derived from the run seed and the batch's ids) makes a batch
    reproducible on its own: a resumed run regenerates an unfinished batch bit for bit."""

    index: int
    seed: int | None
    prompts: list[Prompt]


@dataclass
class GeneratedClip:
    """One clip of a batch: ``audio`` ``[C, T]`` float32 at ``sample_rate`` (new audio), or ``path`` (an existing
    file), or neither with ``skipped`` saying why."""

    id: str
    audio: torch.Tensor | None = None
    sample_rate: int | None = None
    seed: int | None = None
    path: Path | None = None
    skipped: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Generator(ABC):
    """Base class of every generator (``model.generator`` in the config picks one from the registry)."""

    #: registry name
    name: str = ""
    #: True when the audio comes from a model with random weights (tests, the demo): every summary says so
    random_weights: bool = False
    #: True when each prompt is conditioned on its reference clip's melody (the stage loads it)
    melody: bool = False
    #: False when the generator points at existing files instead of producing audio (nothing is written or cached)
    writes_audio: bool = True

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Identity for ``summary.json``: at least ``name``, ``hub_id``, ``source``, ``random_weights``; ``label`` (the
        name in tables, plots and compare output: ``model.label``; default ``name``)."""

    @abstractmethod
    def plan(self, prompts: Sequence[Prompt]) -> list[Batch]:
        """The batches, in generation order; deterministic for the same prompts and settings."""

    @abstractmethod
    def generate_batch(self, batch: Batch, melodies: Sequence[tuple[torch.Tensor, int] | None] | None = None,
                       on_step=None) -> list[GeneratedClip]:
        """The clips of ``batch`` (one per prompt, in the batch's order). ``melodies``: one ``(wav [C, T], rate)``
        or None per prompt for a melody generator (None for text-only generation). ``on_step(n)``, when given, is
        called as work progresses, in the units of :meth:`progress_units`."""

    def progress_units(self, batch: Batch) -> tuple[int, str]:
        """How much progress a batch is and in what unit (MusicGen: decoding steps; default: clips)."""
        return len(batch.prompts), "clip"

    @property
    def expected_samples(self) -> int | None:
        """Samples every clip must have (a shorter file on disk is unfinished), or None when any length is fine."""
        return None

    def find_batch_size(self, prompts: Sequence[Prompt]) -> int:
        """``batch_size=auto``: the largest batch that fits. Generators without a memory limit refuse it."""
        raise ValueError(f"batch_size=auto is not supported by the {self.name!r} generator")

    def cache_identity(self) -> dict[str, Any] | None:
        """What decides a batch's audio besides its seed and prompts (model, settings), for the content-keyed
        generation cache; None = never cache (existing files)."""
        return None

    def unused_files(self, ids: Sequence[str]) -> list[dict[str, str]]:
        """Files of the generator's input that no prompt uses or that cannot be used, ``{"file", "reason"}``."""
        return []

    def batch_meta(self) -> dict[str, Any]:
        """Extra facts recorded in ``generation/batch-*.json`` (e.g. ``max_new_tokens``)."""
        return {}
