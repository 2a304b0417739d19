"""Atomic, verifiable writes: every file a run leaves is either whole or absent.

Pattern: write to ``.<name>.<pid>.tmp`` in the same folder (hidden, and never ending in the final name's extension,
so no tool that lists ``*.flac`` or ``*.npz`` reads it), flush + fsync, ``os.replace`` onto the final name, fsync the
folder. A crash leaves at most a temp file, which is never mistaken for a finished one, and :func:`sweep_temp_files`
removes what a killed process left.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


TEMP_SUFFIX = ".tmp"
_FAULTS: dict[str, int] = {}
#: errno of a write the disk refuses, with its words: the user's to fix (space, permissions), not a bug
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "the operation is not permitted"}


def disk_problem(exc: BaseException) -> str | None:
    """``"cannot write <file>: <what> (<ERRNO name>)"`` when ``exc`` is an OSError of a disk that refuses a write
    (:data:`DISK_ERRNOS`: full, over quota, read-only, no permission), else None. Callers add the fix that fits
    where they write (a run folder, a cache)."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot write{where}: {DISK_ERRNOS[exc.errno]} ({errno.errorcode[exc.errno]})"


def fault_point(point: str) -> None:
    """Crash testing: ``EVALKIT_KILL_AT=<point>:<n>`` SIGKILLs this process the n-th time it reaches ``point``
    (``generate:clip`` right after a clip file is written; ``score:rows`` after a batch's rows are written and
    before its statistics are saved; ``io:replace`` inside an atomic write, its temp file written and not yet renamed
    - the worst moments to die). No effect when the variable is unset."""
    kill_at = os.environ.get("EVALKIT_KILL_AT")
    if not kill_at or not kill_at.startswith(point + ":"):
        return
    _FAULTS[point] = _FAULTS.get(point, 0) + 1
    if _FAULTS[point] == int(kill_at.rsplit(":", 1)[1]):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def temp_name(path: str | os.PathLike) -> Path:
    """The temp file beside ``path`` that an atomic write goes through: ``.<name>.<pid>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def sweep_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files of unfinished atomic writes under ``folder`` (a killed run's leftovers; also the
    ``.<name>.tmp-<pid><ext>`` names of evalkit <= 0.1, which ended in the final extension). Returns them."""
    import re

    legacy = re.compile(r"^\..+\.tmp-\d+(\.\w+)?$")
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for p in root.rglob(".*"):
        if p.is_file() and (p.name.endswith(TEMP_SUFFIX) or legacy.match(p.name)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it onto ``path``. A write that fails (a full
    disk mid-file) leaves no temp file, and its OSError names ``path`` (numpy, pandas and soundfile's buffers raise
    ``[Errno 28]`` without a file name)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        fault_point("io:replace")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.errno is not None and exc.filename in (None, str(tmp)):
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Arrays only (never pickles): ``np.load(..., allow_pickle=False)`` reads them back."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(str(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_parquet(path: str | os.PathLike, df) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be used as a folder (``"no such folder"``, or that it is a file and which folder holds
    it), for the caller's error after ``setting=path: ``; ``None`` when it is a folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        return None
    if p.exists():
        return f"is a file, not a folder: pass the folder that holds the clips (this file is in {p.parent})"
    return "no such folder"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
