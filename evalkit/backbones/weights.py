"""Resolving a backbone checkpoint: the released file (downloaded once, cached, checksummed), a local path, or
random weights (tests, the offline demo).

``checkpoint`` values in a metric's config:
- ``null``: follow the run's ``backbone_weights`` policy: ``released`` downloads the released file into the cache
  (``$EVALKIT_CACHE``, default ``~/.cache/evalkit``) unless it is already there; ``random`` builds random weights.
- ``random``: random weights (seeded); every summary built on them says ``random_weights: true``.
- a path: that file. Its sha256 is recorded in the run's summary and checked against the expected one when the
  recipe names it (``checkpoint_sha256``); a mismatch stops the run, naming both digests.

With ``HF_HUB_OFFLINE=1`` (or ``EVALKIT_OFFLINE=1``) nothing is downloaded: a missing file is an error that names
the file, the address to get it from, and where to put it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from evalkit.io import sha256_file


class CheckpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    """What a backbone is built from. ``path`` is None for random weights."""

    name: str
    path: Path | None
    sha256: str | None
    random: bool

    def describe(self) -> dict:
        return {"checkpoint": self.name, "checkpoint_sha256": self.sha256, "random_weights": self.random}


def cache_dir() -> Path:
    return Path(os.environ.get("EVALKIT_CACHE", Path.home() / ".cache" / "evalkit")).expanduser()


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "EVALKIT_OFFLINE"))


def _verify(path: Path, expected: str | None, what: str) -> str:
    digest = sha256_file(path)
    if expected and not digest.startswith(expected.lower()):
        raise CheckpointError(
            f"{path}: sha256 {digest} does not match the expected {expected} for {what}. "
            f"The file is corrupt or is another checkpoint; delete it (it will be downloaded again) or pass the "
            f"right file with {what}=PATH."
        )
    return digest


def resolve_checkpoint(
    spec: str | os.PathLike | None,
    *,
    setting: str,
    filename: str,
    url: str,
    expected_sha256: str | None,
    policy: str = "released",
) -> Checkpoint:
    """Turn a ``checkpoint`` setting into a :class:`Checkpoint`.

    ``setting`` is the config key users set (``metrics.fad.checkpoint``) and is named in every error.
    ``expected_sha256`` may be a prefix (torch hub names files ``name-<first 8 hex of sha256>.pth``)."""
    if spec is None:
        spec = "random" if policy == "random" else None
        if policy not in ("released", "random"):
            raise CheckpointError(f"backbone_weights={policy!r}: expected 'released' or 'random'")
    if isinstance(spec, str) and spec == "random":
        return Checkpoint(name=f"random:{filename}", path=None, sha256=None, random=True)
    if spec is not None:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{setting}={spec}: no such file")
        return Checkpoint(name=path.name, path=path, sha256=_verify(path, expected_sha256, setting), random=False)
    path = cache_dir() / filename
    if not path.is_file():
        if offline():
            raise CheckpointError(
                f"{filename} is not in the cache ({path}) and downloads are off (HF_HUB_OFFLINE/EVALKIT_OFFLINE). "
                f"Download it from {url} and put it there, or pass {setting}=PATH."
            )
        _download(url, path)
    return Checkpoint(name=filename, path=path, sha256=_verify(path, expected_sha256, setting), random=False)


def _download(url: str, path: Path) -> None:
    import torch.hub

    from evalkit.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.hub.download_url_to_file(url, str(tmp), progress=True)
