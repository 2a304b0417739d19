"""The run folder under stress (issue 26, items 10 and 11): a full disk or a read-only folder is one line with the fix
(exit status 2), a full cache disk is a warning and the run goes on, a run resumed after freeing space ends with the
numbers of an uninterrupted run bit for bit; two runs in one folder at once: the second is refused, naming the first."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evalkit import io as eio
from evalkit.run import RunError, run
from evalkit.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
ARGS = ["generation.duration=1.0", "dataset.limit=4", "batch_size=2", "metric_batch_size=1", "metrics=[chroma]",
        "progress=false"]
NO_CACHE = ["cache.generations=false", "cache.scores=false"]  # the failing runs must really generate and score
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("disk") / "uninterrupted"
    return out, run(RunSpec.from_overrides(ARGS + NO_CACHE), out)


@contextlib.contextmanager
def disk_full_after(n: int):
    """Every atomic write after the first ``n`` fails as a full disk does, half-way through its temp file, with the
    ``[Errno 28]`` numpy's and pandas' writers raise (no file name); the disk stays full."""
    real, count = eio.atomic_path, [0]

    @contextlib.contextmanager
    def atomic_path(path):
        count[0] += 1
        with real(path) as tmp:
            if count[0] > n:
                tmp.write_bytes(b"half a file")
                raise OSError(errno.ENOSPC, "No space left on device")
            yield tmp

    eio.atomic_path = atomic_path
    try:
        yield
    finally:
        eio.atomic_path = real


def test_a_full_disk_is_one_line_and_the_resumed_run_equals_an_uninterrupted_one(uninterrupted, tmp_path):
    """The disk fills up three times - in the middle of generation, between a scoring batch's rows and its
    statistics, and at summary.json - and is freed each time; the resumed run ends with the uninterrupted numbers."""
    ref_dir, ref = uninterrupted
    out = tmp_path / "full"
    spec = RunSpec.from_overrides(ARGS + NO_CACHE)
    for n, where in ((7, "audio/demo-piano.flac"), (10, "scores/state-000-of-001.npz"), (9, "summary.json")):
        with disk_full_after(n), pytest.raises(RunError) as exc:
            run(spec, out)
        assert str(exc.value) == (
            f"cannot write {out / where}: no space left on the device (ENOSPC). Free space on that disk and run the "
            f"same command again: everything finished in {out} is kept and the run resumes; or start in a run folder "
            "on another disk (hydra.run.dir=DIR; out_dir= in Python)")
        assert isinstance(exc.value.__cause__, OSError) and exc.value.__cause__.errno == errno.ENOSPC
        assert not [p for p in out.rglob("*") if p.name.endswith(eio.TEMP_SUFFIX)]  # no half-written file left
    resumed = run(spec, out)
    assert resumed["metrics"] == ref["metrics"]
    a, b = (eio.read_npz(d / "scores" / "state-000-of-001.npz") for d in (ref_dir, out))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    for f in sorted((ref_dir / "audio").glob("*.flac")):
        assert f.read_bytes() == (out / "audio" / f.name).read_bytes(), f.name
    cols = ["id", "seed", "chroma", "chroma_frames"]
    pd.testing.assert_frame_equal(pd.read_parquet(ref_dir / "clips.parquet")[cols],
                                  pd.read_parquet(out / "clips.parquet")[cols])
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"


def test_a_full_cache_disk_warns_once_and_the_run_goes_on(uninterrupted, tmp_path, monkeypatch, caplog):
    """The caches are optional: a cache write that fails (here every one) costs nothing but the cache."""
    import evalkit.stages.generation as generation

    _, ref = uninterrupted
    cache = tmp_path / "cache"
    real_npz, real_link = eio.write_npz, generation.link_or_copy

    def full(path):
        return OSError(errno.ENOSPC, "No space left on device", str(path))

    def write_npz(path, **arrays):
        if Path(path).is_relative_to(cache):
            raise full(path)
        return real_npz(path, **arrays)

    def link_or_copy(src, dst):
        if Path(dst).is_relative_to(cache):
            raise full(dst)
        return real_link(src, dst)

    monkeypatch.setattr(eio, "write_npz", write_npz)
    monkeypatch.setattr(generation, "link_or_copy", link_or_copy)
    with caplog.at_level(logging.WARNING, logger="evalkit"):
        s = run(RunSpec.from_overrides(ARGS + [f"cache.dir={cache}"]), tmp_path / "out")
    assert s["metrics"] == ref["metrics"]
    warned = [r.getMessage() for r in caplog.records if "cache:" in r.getMessage()]
    assert [w.split(":")[0] for w in warned] == ["generation cache", "score cache"]  # one each, not one per batch
    assert warned[1].startswith(f"score cache: cannot write {cache / 'scores' / 'chroma'}")
    assert "no space left on the device (ENOSPC); the run goes on without storing scores in it" in warned[1]
    assert "cache.generations=false" in warned[0] and "cache.scores=false" in warned[1]


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot write into: read-only permissions, or (as root, who ignores them) /sys."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    probe = Path("/sys/evalkit-test")
    try:
        probe.mkdir()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            yield probe
            return
    else:
        probe.rmdir()
    pytest.skip("no folder here refuses a write by root")


def test_a_read_only_run_folder_is_one_line_with_exit_status_2(unwritable, tmp_path):
    out = unwritable / "run"
    p = subprocess.run([sys.executable, "-m", "evalkit", *ARGS, f"hydra.run.dir={out}"], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"evalkit: cannot write {out}: ") and line.endswith(
        f"Choose a run folder you can write (hydra.run.dir=DIR; out_dir= in Python), or make {out} writable")
    import evalkit

    with pytest.raises(RunError, match=r"^cannot write .*Choose a run folder you can write"):
        evalkit.evaluate(ARGS, out_dir=out)
    clip = tmp_path / "g" / "c0.wav"
    from evalkit.audio import save_audio
    from evalkit.data.references import synth_clip

    save_audio(clip, synth_clip("c0", 32000, 1.0), 32000)
    with pytest.raises(RunError, match=r"^cannot write .*Choose a run folder you can write"):
        evalkit.score(clip.parent, metrics="chroma", out_dir=out)


HOLD = """
import sys, time
from pathlib import Path
from evalkit.distributed import Dist
from evalkit.stages.folder import hold
with hold(Path(sys.argv[1]), Dist()):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_second_run_in_a_held_folder_exits_2_naming_the_first_and_a_dead_holder_blocks_nothing(tmp_path):
    """Issue 26, item 11: two runs started in one folder at once both did the whole job."""
    import platform
    import re
    import signal

    from evalkit.distributed import Dist
    from evalkit.stages.folder import LOCK_FILE, hold

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        p = subprocess.run([sys.executable, "-m", "evalkit", *ARGS, f"hydra.run.dir={out}"], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
        (line,) = p.stderr.strip().splitlines()
        assert re.fullmatch(
            rf"evalkit: {re.escape(str(out))} is in use by another evalkit run: process {holder.pid} on "
            rf"{re.escape(platform.node())}, started \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 "
            rf"\(-c {re.escape(str(out))}\)\. "
            r"Two runs in one folder would both do the whole job and overwrite each other's files: wait for it to end "
            r"\(the same command afterwards resumes what it leaves\), or use another folder \(hydra\.run\.dir=DIR; "
            r"out_dir= in Python\)", line), line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing of the refused run: not even .hydra/
        with pytest.raises(RunError, match=rf"is in use by another evalkit run: process {holder.pid} on "):
            run(RunSpec.from_overrides(ARGS), out)  # the Python API meets the lock itself
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock
        holder.wait()
    with hold(out, Dist()):  # free again; and the holder's record is written while held
        record = json.loads((out / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["hostname"] == platform.node()
    assert (out / LOCK_FILE).read_text() == ""  # released: no stale holder named
