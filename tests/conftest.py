"""Shared test setup: offline by construction, paths to the shared data beside the repo, tone/chord synthesis."""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # laion_clap would retry the hub for 10+ minutes at import
os.environ.setdefault("EVALKIT_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "EVALKIT_CACHE" not in os.environ:  # never write into the user's cache from tests
    import tempfile

    os.environ["EVALKIT_CACHE"] = tempfile.mkdtemp(prefix="evalkit-test-cache-")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MUSICCAPS_CSV = SHARED / "musiccaps-public.csv"
MUSIC_DIR = SHARED / "music"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: The parity references of the extra evalkit[reference] (they need numpy<2, so evalkit's own install has neither).
REFERENCE_EXTRA = "pip install -e '.[reference]': Python 3.10-3.12 with numpy<2, see the README's Tests section"


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs_reference(module: str):
    """Mark a test (or class, or ``pytest.param``'s marks) ``reference`` and skip it, naming the extra, when the
    reference package ``module`` is not installed. ``pytest -m reference`` runs exactly these."""
    return [pytest.mark.reference,
            pytest.mark.skipif(not have(module), reason=f"{module} is not installed: needs the extra "
                                                        f"evalkit[reference] ({REFERENCE_EXTRA})")]


def reference_test(module: str):
    """Decorator form of :func:`needs_reference`."""
    def deco(obj):
        for mark in needs_reference(module):
            obj = mark(obj)
        return obj
    return deco


def sine(freq: float, sr: int = 32000, seconds: float = 1.0, amp: float = 0.5, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(round(sr * seconds)), dtype=torch.float64) / sr
    x = (amp * torch.sin(2 * math.pi * freq * t)).float()
    return x.expand(channels, -1).clone()


def chord(freqs, sr: int = 32000, seconds: float = 1.0, amp: float = 0.2) -> torch.Tensor:
    return sum(sine(f, sr, seconds, amp) for f in freqs)


def noise(sr: int = 32000, seconds: float = 1.0, amp: float = 0.1, seed: int = 0, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return amp * torch.randn(channels, int(round(sr * seconds)), generator=g)


@pytest.fixture(scope="session")
def musiccaps_csv() -> Path:
    if not MUSICCAPS_CSV.is_file():
        pytest.skip(f"{MUSICCAPS_CSV} not present")
    return MUSICCAPS_CSV


@pytest.fixture(scope="session")
def music_dir() -> Path:
    if not MUSIC_DIR.is_dir():
        pytest.skip(f"{MUSIC_DIR} not present")
    return MUSIC_DIR
