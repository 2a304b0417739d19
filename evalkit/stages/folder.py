"""The run folder: one config = one run = one folder.

``hold(out_dir, dist)``: one run at a time in a folder. Rank 0 holds an OS-level lock (``fcntl.flock``) on
``<out_dir>/.evalkit.lock`` for the whole run and writes into it who holds it (pid, host, start time); a second run
started in the folder meanwhile is refused with a :class:`RunError` naming that process. The kernel drops the lock
when the holder exits in any way (a crash, SIGKILL, a lost node's process), so a dead run never blocks its resumption.
Under torchrun only rank 0 locks (the ranks of one run share the folder) and tells the others whether it could.

``claim(spec, out_dir, dist)``: the folder's ``config.yaml`` is the run's identity. A folder holding another
config (differing in anything but :data:`evalkit.spec.VOLATILE_KEYS`) is refused, since resuming would mix two
runs; ``overwrite=true`` clears what an earlier run left. ``write_manifest`` records versions, git sha, device,
seeds, times and the status (``running``, ``finished``, ``interrupted`` (Ctrl-C) or ``failed``, with the error).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from evalkit import io as eio
from evalkit.spec import RunSpec
from evalkit.stages import RunError

log = logging.getLogger("evalkit")
#: what a run writes into its folder (removed by overwrite=true)
RUN_SUBFOLDERS = ("audio", "generation", "scores", "embeddings", "stats", "references")
VERSIONED_PACKAGES = ("evalkit", "torch", "torchaudio", "transformers", "numpy", "scipy", "pandas", "datasets",
                      "hydra-core", "julius", "soundfile", "frechet-audio-distance", "laion-clap", "hear21passt",
                      "librosa")


def git_sha() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode == 0 and sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except Exception:
        pass
    return "unknown"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def device_info(device) -> dict[str, Any]:
    import torch

    from evalkit.cpu import reuse_freed_memory

    info = {"device": str(device), "cpu": platform.processor() or platform.machine(), "hostname": platform.node(),
            "torch_threads": torch.get_num_threads(), "malloc": reuse_freed_memory()}
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


#: the lock file of a run folder (hidden: never listed as a clip or a run file)
LOCK_FILE = ".evalkit.lock"


@contextlib.contextmanager
def hold(out_dir: Path, dist) -> Iterator[None]:
    """Hold ``out_dir`` for this run while the block runs (see the module doc). Raises :class:`RunError` naming the
    process that holds it; ``OSError`` when the folder cannot be made or written."""
    out_dir = Path(out_dir)
    fd, holder = None, None
    if dist.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, holder = _lock(out_dir / LOCK_FILE)
    holder = dist.broadcast(holder)
    if holder is not None:
        raise RunError(in_use_message(out_dir, holder))
    try:
        yield
    finally:
        if fd is not None:
            os.ftruncate(fd, 0)  # the record names a live holder only
            os.close(fd)  # releases the lock


def in_use_message(out_dir: Path, holder: str) -> str:
    """The one line for a run folder another run holds (``holder``: who, as :func:`_lock` says it)."""
    return (f"{out_dir} is in use by another evalkit run: {holder}. Two runs in one folder would both do the whole job "
            f"and overwrite each other's files: wait for it to end (the same command afterwards resumes what it "
            f"leaves), or use another folder (hydra.run.dir=DIR; out_dir= in Python)")


def holder_of(out_dir: Path) -> str | None:
    """Who holds ``out_dir`` now (see :func:`hold`), or None; takes and drops the lock when it is free."""
    path = Path(out_dir) / LOCK_FILE
    if not path.is_file():
        return None
    fd, holder = _lock(path)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)
    return holder


def _lock(path: Path) -> tuple[int | None, str | None]:
    """``(fd holding the lock, None)``, or ``(None, "process <pid> on <host>, started <time> (<command>)")`` when
    another process holds it."""
    import fcntl
    import json

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            who = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8"))
            holder = (f"process {who['pid']} on {who['hostname']}, started {who['start']} "
                      f"({' '.join(map(str, who.get('argv') or []))})")
        except (ValueError, KeyError, TypeError):  # taken this instant, its record not yet written
            holder = "a process that is starting now"
        os.close(fd)
        return None, holder
    except BaseException:
        os.close(fd)
        raise
    record = {"pid": os.getpid(), "hostname": platform.node(), "argv": sys.argv,
              "start": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
    return fd, None


def holds_work(out_dir: Path) -> bool:
    """Whether an earlier run left anything of value in ``out_dir``: a file in one of :data:`RUN_SUBFOLDERS` or a
    summary. A first try that stopped on its input (a missing table, a typo) leaves only its config: the corrected
    command may then take the folder without ``overwrite=true``."""
    if (out_dir / "summary.json").exists() or (out_dir / "clips.parquet").exists():
        return True
    return any(p.is_file() for sub in RUN_SUBFOLDERS if (out_dir / sub).is_dir() for p in (out_dir / sub).rglob("*"))


def claim(spec: RunSpec, out_dir: Path, dist) -> None:
    """Make ``out_dir`` this run's folder (see the module doc). Rank 0 only writes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.rank != 0:
        return
    swept = eio.sweep_temp_files(out_dir)  # a killed run's unfinished writes: never read as clips or states
    if swept:
        log.info("removed %d unfinished temp files left in %s", len(swept), out_dir)
    cfg_path = out_dir / "config.yaml"
    if cfg_path.exists():
        import yaml

        old = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        if spec.overwrite:
            for sub in RUN_SUBFOLDERS:
                if (out_dir / sub).is_dir():
                    shutil.rmtree(out_dir / sub)
        else:
            diff = spec.identity_diff(old)
            if diff and not holds_work(out_dir):
                log.info("%s held the config of a run that finished nothing (no audio, scores or summary; it differs "
                         "in: %s): this run takes the folder", out_dir, ", ".join(diff[:8]))
            elif diff:
                raise RunError(
                    f"{out_dir} holds a run of another config (differs in: {', '.join(diff[:8])}). Resuming would "
                    f"mix two runs. Use a new folder (hydra.run.dir=...) or overwrite=true to start afresh.")
            log.info("%s", resume_message(out_dir))
    import yaml

    eio.write_text(cfg_path, yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True))


def disk_message(exc: BaseException, out_dir: Path) -> str | None:
    """One line for a write the disk refused (:func:`evalkit.io.disk_problem`: full, over quota, read-only, no
    permission), naming the file and the fix; None for any other error. Everything written before it is whole (atomic
    writes), so after freeing space the same command resumes the run with the numbers of an uninterrupted one."""
    problem = eio.disk_problem(exc)
    if problem is None:
        return None
    failed, out = Path(str(exc.filename or out_dir)).resolve(), Path(out_dir).resolve()
    inside = failed.is_relative_to(out) or out.is_relative_to(failed)  # in the run folder, or making it
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{problem}. Free space on that disk and run the same command again: "
                + (f"everything finished in {out_dir} is kept and the run resumes; or start in a run folder on "
                   f"another disk (hydra.run.dir=DIR; out_dir= in Python)" if inside else
                   "everything finished so far is kept"))
    if inside:
        return (f"{problem}. Choose a run folder you can write (hydra.run.dir=DIR; out_dir= in Python), or make "
                f"{out_dir} writable")
    return f"{problem}. Make it writable (or point the setting that names it elsewhere) and run the same command again"


def writable_problem(out_dir: Path) -> str | None:
    """Why ``out_dir`` cannot take a run (its nearest existing folder refuses a small write: read-only, no permission,
    full), as :func:`disk_message` says it; None when a probe file can be written and removed there. Leaves nothing
    behind (the probe is a hidden ``.tmp`` file, swept like any unfinished write if the process dies)."""
    import tempfile

    here = Path(out_dir).absolute()
    folder = next((p for p in (here, *here.parents) if p.exists()), None)
    if folder is None or not folder.is_dir():
        return None  # a path through a file: the run's own mkdir names it
    try:
        fd, name = tempfile.mkstemp(prefix=".evalkit-probe.", suffix=eio.TEMP_SUFFIX, dir=folder)
        try:
            os.write(fd, b"evalkit")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        if exc.filename is None or str(exc.filename).startswith(str(folder / ".evalkit-probe.")):
            exc = OSError(exc.errno, exc.strerror or os.strerror(exc.errno or 0), str(here))
        return disk_message(exc, here)
    return None


def resume_message(out_dir: Path) -> str:
    """What running again in ``out_dir`` does, in words: what the earlier attempt left, and how it ended."""
    import json

    done = {sub: sum(1 for _ in (out_dir / sub).glob(pat)) for sub, pat in (("audio", "*.flac"),
                                                                          ("scores", "rows-*.parquet"))}
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    status = manifest.get("status", "unknown")
    how = {"failed": f"the earlier attempt failed ({manifest.get('error')})",
           "interrupted": "the earlier attempt was interrupted (Ctrl-C)",
           "running": "the earlier attempt did not finish (killed, or another process is running it now)",
           "finished": "the earlier attempt finished"}.get(status, "an earlier attempt left it")
    if not any(done.values()):
        return f"{out_dir}: {how}; nothing of it is reusable, running it from the start"
    kept = ([f"{done['audio']} generated clips"] if done["audio"] else []) + [f"{done['scores']} scored batches"]
    return (f"{out_dir}: {how}; resuming with its {' and '.join(kept)} "
            f"(the numbers will equal an uninterrupted run's)")


def write_manifest(spec: RunSpec, out_dir: Path, dist, device, start: float, end: float | None, status: str,
                   error: str | None = None) -> None:
    iso = lambda t: _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat()  # noqa: E731
    eio.write_json(out_dir / "manifest.json", {
        "status": status, "error": error, "argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(),
        "start": iso(start), "end": iso(end) if end else None, "seconds": round(end - start, 3) if end else None,
        "git_sha": git_sha(), "versions": versions(), **device_info(device),
        "seed": int(spec.seed), "world_size": dist.world, "config": spec.to_dict(),
    })
