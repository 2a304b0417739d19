"""Resolving an embedder's checkpoint, the same way for every model: the released file (downloaded once, cached,
checksummed) from a release URL or from a hub repository pinned to a revision, a local path, or random weights (tests,
the offline demo).

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

from typing import Any, Mapping

from evalkit.cache import cache_dir
from evalkit.errors import InputError
from evalkit.io import sha256_file


class CheckpointError(InputError, RuntimeError):
    """A checkpoint that cannot be had or used; the message names the setting, the file and the fix."""


@dataclass(frozen=True)
class Checkpoint:
    """What a backbone is built from. ``path`` is None for random weights."""

    name: str
    path: Path | None
    sha256: str | None
    random: bool

    def describe(self) -> dict:
        return {"checkpoint": self.name, "checkpoint_sha256": self.sha256, "random_weights": self.random}


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "EVALKIT_OFFLINE"))


def _verify(path: Path, expected: str | None, setting: str, downloaded: bool) -> str:
    """``path``'s sha256, checked against ``expected`` (a prefix is enough) when one is pinned; a mismatch names
    what to do for a cached download (delete it) or for a file the user passed (another file, or unpin)."""
    digest = sha256_file(path)
    if expected and not digest.startswith(expected.lower()):
        fix = ("The download is corrupt: delete it and it will be downloaded again." if downloaded else
               f"If it is your own export of the same network, set {setting}_sha256=null (the run records the file's "
               f"sha256 instead); otherwise pass the released file.")
        raise CheckpointError(
            f"{setting}={path}: sha256 {digest} does not start with {expected}, the released checkpoint's "
            f"sha256{' prefix' if len(expected) < 64 else ''} pinned by {setting}_sha256. {fix}")
    return digest


def resolve_checkpoint(
    value: str | os.PathLike | None,
    *,
    setting: str,
    filename: str,
    url: str | None,
    expected_sha256: str | None,
    policy: str = "released",
    hub: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Turn a ``checkpoint`` setting into a :class:`Checkpoint`.

    ``setting`` is the config key users set (``metrics.fad.checkpoint``) and is named in every error.
    ``expected_sha256`` may be a prefix (torch hub names files ``name-<first 8 hex of sha256>.pth``). The released
    file comes from ``url`` (into the cache as ``filename``) or, when ``hub`` is given (``{repo, revision,
    filename}``), from that hub repository at that exact revision (huggingface_hub's cache)."""
    if value is None:
        value = "random" if policy == "random" else None
        if policy not in ("released", "random"):
            raise CheckpointError(f"backbone_weights={policy!r}: expected 'released' or 'random'")
    if isinstance(value, str) and value == "random":
        return Checkpoint(name=f"random:{filename}", path=None, sha256=None, random=True)
    if value is not None:
        path = Path(value).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{setting}={value}: no such file")
        return Checkpoint(name=path.name, path=path, sha256=_verify(path, expected_sha256, setting, False), random=False)
    if hub:
        path = _from_hub(hub, setting)
        return Checkpoint(name=f"{hub['repo']}@{str(hub['revision'])[:12]}/{hub['filename']}", path=path,
                          sha256=_verify(path, expected_sha256, setting, True), random=False)
    if not url:
        raise CheckpointError(f"{setting}: no released file is known for it (no checkpoint_url or hub in its "
                              f"embedding's conf): pass {setting}=PATH, or backbone_weights=random")
    path = cache_dir() / filename
    if not path.is_file():
        if offline():
            raise CheckpointError(
                f"{filename} is not in the cache ({path}) and downloads are off (HF_HUB_OFFLINE/EVALKIT_OFFLINE). "
                f"Download it from {url} and put it there, or pass {setting}=PATH; to try the pipeline without "
                f"weights, backbone_weights=random (every number is then labelled random and means nothing)."
            )
        _download(url, path)
    return Checkpoint(name=filename, path=path, sha256=_verify(path, expected_sha256, setting, True), random=False)


def _from_hub(hub: Mapping[str, Any], setting: str) -> Path:
    """``hub["filename"]`` of ``hub["repo"]`` at ``hub["revision"]`` (a commit sha, so the file cannot change under
    the same name), from huggingface_hub's cache, downloaded once unless downloads are off."""
    for key in ("repo", "revision", "filename"):
        if not hub.get(key):
            raise CheckpointError(f"{setting}: the embedding's hub entry lacks {key!r} (it needs repo, revision, "
                                  f"filename)")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(str(hub["repo"]), str(hub["filename"]), revision=str(hub["revision"]),
                                    local_files_only=offline()))
    except Exception as exc:
        how = (f"downloads are off (HF_HUB_OFFLINE/EVALKIT_OFFLINE): run `hf download {hub['repo']} {hub['filename']} "
               f"--revision {hub['revision']}` while online" if offline() else f"the download failed ({exc})")
        raise CheckpointError(f"{setting}: {hub['filename']} of {hub['repo']} at revision {hub['revision']} is not in "
                              f"the Hugging Face cache and {how}, or pass {setting}=PATH; to try the pipeline without "
                              f"weights, backbone_weights=random") from exc


def _download(url: str, path: Path) -> None:
    import torch.hub

    from evalkit.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.hub.download_url_to_file(url, str(tmp), progress=True)


# ----------------------------------------------------------------------------------------------------------------
# One reader for every checkpoint file, one strict loader
# ----------------------------------------------------------------------------------------------------------------
class UnsafeCheckpointError(CheckpointError):
    """The file holds Python objects other than tensors: loading it would run code from it."""


def _looks_like_torch_save(path: Path) -> bool:
    """The first bytes of what ``torch.save`` writes: a zip archive (``PK\\x03\\x04``, torch >= 1.6) or a pickle
    (protocol marker ``\\x80``, the legacy format)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_state_dict(path: str | os.PathLike, *, setting: str, trust: bool = False,
                    unwrap: tuple[str, ...] = ("state_dict", "model")) -> dict:
    """The tensors of a PyTorch checkpoint file, as a flat ``{name: tensor}`` dict.

    ``torch.load(weights_only=True)`` (memory-mapped when the file is zip-format), so unpickling never runs code from
    the file; a file that needs full unpickling raises :class:`UnsafeCheckpointError` naming ``setting`` and the
    trust switch, unless ``trust=True``. A container dict under one of ``unwrap`` (``{"state_dict": ...}``,
    ``{"model": ...}``) is unwrapped and a DataParallel ``module.`` prefix removed. Errors name ``setting``."""
    import pickle

    import torch

    path = Path(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip-format file: no mmap
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _looks_like_torch_save(path):
            raise CheckpointError(f"{setting}={path}: not a PyTorch checkpoint (neither the zip archive nor the "
                                  f"pickle that torch.save writes): pass the .pt/.pth/.ckpt file") from exc
        if not trust:
            raise UnsafeCheckpointError(
                f"{setting}={path}: holds objects other than tensors and plain containers, so it cannot be loaded "
                f"safely (weights_only=True: {str(exc).splitlines()[0]}). If you trust the file, set "
                f"{setting.rsplit('.', 1)[0]}.trust_checkpoint=true; better, save its state_dict and pass that."
            ) from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise CheckpointError(f"{setting}={path}: not a readable PyTorch checkpoint, even trusted "
                                  f"({type(exc2).__name__}: {exc2})") from exc2
    except Exception as exc:  # truncated files, not a checkpoint at all
        raise CheckpointError(f"{setting}={path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    for key in unwrap:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{setting}={path}: holds no state dict (found {type(obj).__name__})")
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_strict(module, state: dict, *, setting: str, hint: str = "", error: type[Exception] | None = None) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch raises ``error`` (default :class:`CheckpointError`)
    naming the first missing and unexpected keys and shape mismatches (and ``hint``: what the file should be)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise (error or CheckpointError)(
            f"{setting}: the file does not fit the network built here (missing {len(missing)}: {missing[:4]}, "
            f"unexpected {len(unexpected)}: {unexpected[:4]}, shape mismatches {len(shapes)}: {shapes[:3]}). {hint}")
    module.load_state_dict(state, strict=True)
