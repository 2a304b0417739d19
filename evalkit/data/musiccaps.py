"""MusicCaps reference audio: a resumable fetcher and an honest manifest of what is there and what is missing.

MusicCaps (google/MusicCaps on the Hugging Face hub, file ``musiccaps-public.csv``, CC BY-SA 4.0; Agostinelli et
al. 2023, "MusicLM") is a table of 5,521 rows with the columns ``ytid, start_s, end_s, audioset_positive_labels,
aspect_list, caption, author_id, is_balanced_subset, is_audioset_eval``. The audio itself is not distributed: each
row names a YouTube video (``ytid``) and a ten-second excerpt ``[start_s, end_s)`` in seconds. Some of those videos
have since been removed, so every lab ends up with a slightly different reference set. This module makes that set
reproducible and its gaps visible::

    python -m evalkit.data.musiccaps download --out DIR [--subset all|audioset_eval|balanced] [--limit N]
        [--jobs J] [--downloader CMD] [--table FILE.csv] [--timeout S] [--retries N] [--backoff S]
    python -m evalkit.data.musiccaps check DIR [--table FILE.csv] [--subset ...] [--limit N]

``download`` runs ``yt-dlp`` (the optional extra ``pip install 'evalkit[musiccaps]'``; yt-dlp itself needs ffmpeg
for the section cut and the wav conversion) once per clip, see :func:`downloader_command`, and writes
``DIR/<ytid>.wav``: 16-bit PCM at the source's sample rate and channel count (no resampling; yt-dlp's
``-x --audio-format wav`` converts the codec only). audiocraft reads such a file with ``audiocraft/data/audio.py:
audio_read`` and resamples it itself. Each file is verified before it is put in place (:func:`verify_clip`): soundfile
reads it, it lasts ``end_s - start_s`` seconds to within :data:`DURATION_TOLERANCE_FRAMES` sample frame, and its
peak is above :data:`SILENCE_PEAK`.

Safety: a download happens in a hidden work folder ``DIR/.musiccaps-work/`` and only ``os.replace`` of a verified
file creates ``DIR/<ytid>.wav``, so nothing in ``DIR`` that a run reads as a clip (``evalkit.data.references.
ReferenceSet.from_dir``: ``<id>.wav|flac|mp3|ogg`` not starting with '.') is ever partial. Finished clips are
never fetched twice (a manifest row ``ok`` whose sha256 matches the file, or a file that verifies on disk). A file
already in ``DIR`` that fails verification is moved, not deleted, to ``DIR/.musiccaps-rejected/`` and fetched again.
One run at a time per folder (a lock file ``DIR/.musiccaps.lock``).

Outcomes: ``unavailable`` (the video is gone: yt-dlp reports YouTube's own reason, matched by
:data:`UNAVAILABLE_PATTERNS`; not retried, also not on later runs), ``failed`` (anything else: timeouts, network
errors, a file that is unreadable, of the wrong length or silent; retried up to ``--retries`` times with back-off
``backoff * 2**k`` seconds, and again on the next run), ``ok``; ``missing`` marks ids of the selection not attempted
(yet). The manifest ``DIR/manifest.csv`` (:data:`MANIFEST_COLUMNS`) is rewritten atomically after every result, so a
killed run keeps what finished; rows for ids outside the current selection are carried over unchanged.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from evalkit.audio import AUDIO_EXTENSIONS
from evalkit.data.prompts import MUSICCAPS_SUBSETS, Prompt, PromptError, load_musiccaps_dataset, select, validate
from evalkit.errors import InputError
from evalkit.io import sha256_file

#: The manifest's file name inside the clips folder.
MANIFEST_NAME = "manifest.csv"
#: Its columns, in order. ``duration_s`` in seconds (6 decimals), ``sample_rate`` in Hz, ``fetched_at`` ISO 8601 UTC
#: (``download``: when the file was verified; ``check``: the file's modification time). ``sha256`` is the hash of
#: the file in the folder that the row describes; empty when no file is there (e.g. a rejected download).
MANIFEST_COLUMNS = ("ytid", "status", "reason", "sha256", "duration_s", "sample_rate", "channels", "fetched_at")
#: Row statuses.
STATUSES = ("ok", "failed", "unavailable", "missing")
#: Hidden folders/files inside the clips folder (names start with '.', so no run reads them as clips).
WORK_DIR_NAME = ".musiccaps-work"
REJECTED_DIR_NAME = ".musiccaps-rejected"
LOCK_NAME = ".musiccaps.lock"
#: A clip is silent when its absolute peak (float samples in [-1, 1]) is at most this. 0.0: only digital silence is
#: refused; quiet but real recordings are kept (the table has quiet ones, and a higher bar would drop them).
SILENCE_PEAK = 0.0
#: Allowed difference, in sample frames at the file's own rate, between a clip's length and ``end_s - start_s``.
DURATION_TOLERANCE_FRAMES = 1
DEFAULT_DOWNLOADER = "yt-dlp"
DEFAULT_JOBS = 4
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 2.0
YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
#: YouTube video ids are 11 characters of [A-Za-z0-9_-]; any id used as a file name must at least be of that alphabet.
_YTID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
#: Lines of yt-dlp's output that mean the video is gone for good (for this downloader, without an account).
#: yt-dlp prints ``ERROR: [youtube] <ytid>: <reason>``, the reason being YouTube's playability text
#: (``yt_dlp/extractor/youtube/_video.py``: ``raise_no_formats(reason, expected=True)``). The strings are those seen in
#: yt-dlp's own test skips and its issue tracker, e.g. "Video unavailable. This video is no longer available because
#: the YouTube account associated with this video has been terminated.", "Private video. Sign in if you've been
#: granted access to this video", "Sign in to confirm your age. This video may be inappropriate for some users.",
#: "This video has been removed for violating YouTube's policy on ...", "This video is not available",
#: "The uploader has not made this video available in your country". Not here on purpose: "Sign in to confirm
#: you're not a bot" (rate limiting of this machine: transient), "HTTP Error 503: Service Unavailable" (network).
UNAVAILABLE_PATTERNS = (
    r"\bVideo unavailable\b",
    r"\bPrivate video\b",
    r"\bThis video is private\b",
    r"\bThis video has been removed\b",
    r"\baccount associated with this video has been terminated\b",
    r"\bThis video is no longer available\b",
    r"\bThis video is not available\b",
    r"\bThis video does not exist\b",
    r"\bSign in to confirm your age\b",
    r"\bThis video is age-restricted\b",
    r"\bnot made this video available in your country\b",
    r"\bblocked it (?:in your country )?on copyright grounds\b",
    r"\bmembers-only content\b",
)
#: Errors that no retry can cure and that hit every clip alike: the run stops with a message instead of failing
#: 5,521 times (``yt_dlp/YoutubeDL.py`` and ``yt_dlp/postprocessor/ffmpeg.py``).
FATAL_PATTERNS = (
    r"ffmpeg is not installed",
    r"ffmpeg not found",
    r"ffprobe and ffmpeg not found",
)
_UNAVAILABLE_RE = re.compile("|".join(UNAVAILABLE_PATTERNS), re.IGNORECASE)
_FATAL_RE = re.compile("|".join(FATAL_PATTERNS), re.IGNORECASE)
_REASON_MAX = 400


class MusicCapsError(InputError, RuntimeError):
    """A setting or a folder that cannot be used; the message names the file or setting and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    """One MusicCaps row: ``ytid`` and the excerpt ``[start_s, end_s)`` in seconds of the YouTube video."""

    ytid: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def load_clips(table: str | os.PathLike | None = None, subset: str = "all", limit: int | None = None) -> list[Clip]:
    """The clips of ``subset`` (``all`` 5,521 / ``audioset_eval`` 2,858 / ``balanced`` 1,000 rows), read through
    :func:`evalkit.data.prompts.load_musiccaps_dataset` (``table``: a local ``musiccaps-public.csv``; ``None``: the
    hub's ``google/MusicCaps``), and ``limit`` of them chosen by :func:`evalkit.data.prompts.select`: the same ids as
    ``dataset=musiccaps dataset.limit=N`` in a run. Returned in that (sha1) order.

    Raises :class:`MusicCapsError` naming ``--table`` and the row when the table is missing, lacks ``start_s`` /
    ``end_s``, or holds an excerpt that is not a positive span or an id that is not a YouTube id."""
    if table is not None and not Path(table).is_file():
        raise MusicCapsError(f"--table {table}: no such file; pass a local copy of musiccaps-public.csv "
                             f"(or leave --table out to load google/MusicCaps from the hub)")
    try:
        ds, src = load_musiccaps_dataset(None if table is None else str(table), subset)
    except PromptError as exc:
        raise MusicCapsError(f"{exc} (here: --table FILE.csv / --subset)") from exc
    missing = {"start_s", "end_s"} - set(ds.column_names)
    if missing:
        raise MusicCapsError(f"{src}: not a MusicCaps table (missing columns {sorted(missing)}); pass musiccaps-public.csv")
    rows = list(ds)
    # the same Prompt objects load_musiccaps builds, so validation (empty/duplicate ids) and selection are identical
    prompts = validate([Prompt(str(r["ytid"]), str(r["caption"] or "").strip(), str(r["ytid"])) for r in rows], src)
    try:
        chosen = select(prompts, limit)
    except PromptError as exc:
        raise MusicCapsError(f"--limit {limit}: must be a positive number of clips (or leave it out for all)") from exc
    by_id = {str(r["ytid"]): (i, r) for i, r in enumerate(rows)}
    clips = []
    for p in chosen:
        i, r = by_id[p.id]
        if not _YTID_RE.match(p.id):
            raise MusicCapsError(f"{src}: row {i + 1}: ytid {p.id!r} is not a YouTube id ([A-Za-z0-9_-]); fix the table")
        try:
            start, end = float(r["start_s"]), float(r["end_s"])
        except (TypeError, ValueError) as exc:
            raise MusicCapsError(f"{src}: row {i + 1} ({p.id}): start_s={r['start_s']!r}, end_s={r['end_s']!r} are not "
                                 f"numbers of seconds") from exc
        if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
            raise MusicCapsError(f"{src}: row {i + 1} ({p.id}): excerpt [{start:g}, {end:g}) s is not a positive span")
        clips.append(Clip(p.id, start, end))
    return clips


# ----------------------------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipCheck:
    """The verdict on one file. ``reason`` starts with ``unreadable``, ``wrong duration`` or ``silent`` when not
    ``ok``. ``duration_s`` (seconds), ``sample_rate`` (Hz), ``channels`` are None when the file is unreadable."""

    ok: bool
    reason: str
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


def verify_clip(path: str | os.PathLike, expected_s: float) -> ClipCheck:
    """Read ``path`` with soundfile and check: readable, finite; ``frames`` within :data:`DURATION_TOLERANCE_FRAMES`
    of ``expected_s * sample_rate``; absolute peak above :data:`SILENCE_PEAK`. Never raises for a bad file."""
    import soundfile as sf

    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # LibsndfileError, RuntimeError, TypeError, OSError
        return ClipCheck(False, f"unreadable: soundfile cannot read {path.name} ({type(exc).__name__}: {_one_line(exc)})")
    from evalkit.audio import integrity_problem

    problem = integrity_problem(path, int(sf.info(str(path)).frames), int(data.shape[0]), int(sr))
    if problem:
        return ClipCheck(False, f"unreadable: {path.name}: {problem}")
    frames, channels, sr = int(data.shape[0]), int(data.shape[1]), int(sr)
    info = dict(duration_s=frames / sr if sr else None, sample_rate=sr, channels=channels)
    expected_frames = expected_s * sr
    if abs(frames - expected_frames) > DURATION_TOLERANCE_FRAMES:
        return ClipCheck(False, f"wrong duration: {frames / sr:.3f} s ({frames} frames at {sr} Hz), expected "
                                f"{expected_s:g} s ({expected_frames:g} frames) ± {DURATION_TOLERANCE_FRAMES} frame", **info)
    if not np.isfinite(data).all():
        return ClipCheck(False, f"unreadable: {path.name} holds NaN or infinite samples", **info)
    peak = float(np.abs(data).max())
    if peak <= SILENCE_PEAK:
        return ClipCheck(False, f"silent: peak {peak:g} <= SILENCE_PEAK={SILENCE_PEAK:g}", **info)
    return ClipCheck(True, "", **info)


# ----------------------------------------------------------------------------------------------------------------
# The downloader
# ----------------------------------------------------------------------------------------------------------------
def _seconds(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def downloader_command(downloader: str, clip: Clip, output_template: str | os.PathLike) -> list[str]:
    """The argv for one clip (yt-dlp's options, from its README):

    ``--ignore-config`` (a user's config must not change format, rate or file names), ``--no-playlist``,
    ``--no-progress``, ``-f bestaudio/best`` (the best audio-only stream; the ``/best`` fallback keeps videos that have
    no audio-only stream), ``-x --audio-format wav`` (extract the audio, convert to PCM wav; no ``-ar``/``-ac``, so
    the source rate and channels are kept), ``--download-sections *START-END`` (time range in seconds, via ffmpeg),
    ``--force-keyframes-at-cuts`` (cut at the exact time, not the nearest keyframe), ``-o TEMPLATE`` (``%(ext)s`` is
    filled by yt-dlp), then ``--`` and the watch URL (ids may start with '-')."""
    return [
        str(downloader), "--ignore-config", "--no-playlist", "--no-progress",
        "-f", "bestaudio/best", "-x", "--audio-format", "wav",
        "--download-sections", f"*{_seconds(clip.start_s)}-{_seconds(clip.end_s)}", "--force-keyframes-at-cuts",
        "-o", str(output_template), "--", YOUTUBE_URL.format(ytid=clip.ytid),
    ]


def classify_failure(output: str) -> tuple[str, str]:
    """``(kind, reason)`` for a downloader run that failed; kind ``unavailable`` (see :data:`UNAVAILABLE_PATTERNS`),
    ``fatal`` (:data:`FATAL_PATTERNS`) or ``failed``. Only ``ERROR:`` lines are read when there are any (warnings
    such as "Some formats may be missing" must not decide); the reason is the first such line, on one line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")] or lines[-3:]
    for ln in errors:
        if _FATAL_RE.search(ln):
            return "fatal", _one_line(ln)
    for ln in errors:
        if _UNAVAILABLE_RE.search(ln):
            return "unavailable", _one_line(ln)
    return "failed", _one_line(" | ".join(errors) if errors else "no output")


def resolve_downloader(downloader: str = DEFAULT_DOWNLOADER) -> str:
    """The downloader's path. Raises :class:`MusicCapsError` with the fix when it is not installed."""
    found = shutil.which(downloader)
    if found is None:
        raise MusicCapsError(
            f"--downloader {downloader}: not found{' on PATH' if os.sep not in downloader else ' (or not executable)'}. "
            f"Install yt-dlp with `pip install 'evalkit[musiccaps]'` (it also needs ffmpeg on PATH), or pass "
            f"--downloader /path/to/yt-dlp")
    return found


# ----------------------------------------------------------------------------------------------------------------
# The manifest
# ----------------------------------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mtime(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(x) -> str:
    s = " ".join(str(x).split())
    return s if len(s) <= _REASON_MAX else s[: _REASON_MAX - 3] + "..."


def _row(ytid: str, status: str, reason: str = "", sha256: str = "", check: ClipCheck | None = None,
         fetched_at: str = "") -> dict[str, str]:
    dur = sr = ch = ""
    if check is not None and check.sample_rate is not None:
        dur, sr, ch = f"{check.duration_s:.6f}", str(check.sample_rate), str(check.channels)
    return {"ytid": ytid, "status": status, "reason": _one_line(reason), "sha256": sha256, "duration_s": dur,
            "sample_rate": sr, "channels": ch, "fetched_at": fetched_at}


def _parse_manifest(text: str, src: str):
    import pandas as pd

    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != MANIFEST_COLUMNS:
        raise MusicCapsError(f"{src}: not a musiccaps manifest (header {header}, expected {','.join(MANIFEST_COLUMNS)}); "
                             f"move it away and run `check` to rebuild it")
    records = []
    for n, rec in enumerate(reader, 2):
        if len(rec) != len(MANIFEST_COLUMNS) or rec[1] not in STATUSES:
            raise MusicCapsError(f"{src}: line {n} is not a manifest row ({rec!r}); move the file away and run `check`")
        records.append(rec)
    df = pd.DataFrame(records, columns=list(MANIFEST_COLUMNS), dtype=object)
    df["duration_s"] = pd.to_numeric(df["duration_s"], errors="coerce").astype("float64")  # "" -> NaN
    for col in ("sample_rate", "channels"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    return df


def read_manifest(dir: str | os.PathLike):
    """``DIR/manifest.csv`` as a ``pandas.DataFrame`` with the columns :data:`MANIFEST_COLUMNS`: strings, except
    ``duration_s`` float64 seconds (NaN when empty) and ``sample_rate``/``channels`` Int64 (``<NA>`` when empty).

    Raises :class:`MusicCapsError` naming the file when it is absent or not a manifest."""
    path = Path(dir) / MANIFEST_NAME
    if not path.is_file():
        raise MusicCapsError(f"{path}: no manifest; run `python -m evalkit.data.musiccaps check {dir}` to write one")
    return _parse_manifest(path.read_text(encoding="utf-8"), str(path))


def _manifest_rows(dir: Path) -> dict[str, dict[str, str]]:
    """The manifest (through :func:`read_manifest`) as ``{ytid: row of strings}``; empty when there is none."""
    if not (dir / MANIFEST_NAME).is_file():
        return {}
    df = read_manifest(dir)
    rows = {}
    for rec in df.to_dict("records"):
        row = {c: ("" if _isna(rec[c]) else str(rec[c])) for c in MANIFEST_COLUMNS}
        if row["duration_s"]:
            row["duration_s"] = f"{float(rec['duration_s']):.6f}"
        rows[row["ytid"]] = row
    return rows


def _isna(v) -> bool:
    import pandas as pd

    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_manifest(dir: str | os.PathLike, rows: Mapping[str, Mapping[str, str]]) -> Path:
    """Write ``rows`` (``{ytid: {column: str}}``) to ``DIR/manifest.csv``, sorted by ytid, atomically: a hidden
    ``.manifest.csv.<pid>.part`` beside it, fsync, ``os.replace``."""
    dir = Path(dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for ytid in sorted(rows):
        w.writerow([rows[ytid].get(c, "") for c in MANIFEST_COLUMNS])
    path = dir / MANIFEST_NAME
    tmp = dir / f".{MANIFEST_NAME}.{os.getpid()}.part"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(dir)
    return path


def reference_set_identity(dir: str | os.PathLike) -> dict | None:
    """What a run should record about its MusicCaps reference folder: ``{"manifest": path (str), "manifest_sha256":
    sha256 hex of the manifest file's bytes, "n_ok", "n_failed", "n_unavailable", "n_missing": row counts}``, or None
    when ``DIR/manifest.csv`` does not exist. The counts are parsed from the same bytes that are hashed."""
    path = Path(dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    raw = path.read_bytes()
    df = _parse_manifest(raw.decode("utf-8"), str(path))
    counts = df["status"].value_counts()
    out = {"manifest": str(path), "manifest_sha256": hashlib.sha256(raw).hexdigest()}
    out.update({f"n_{s}": int(counts.get(s, 0)) for s in STATUSES})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Folder helpers
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _folder_lock(dir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fh = open(dir / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MusicCapsError(f"{dir}: another musiccaps download/check is running on this folder (lock "
                                 f"{dir / LOCK_NAME}); wait for it to end, or use another folder") from None
        yield
    finally:
        fh.close()


def _clip_files(dir: Path, ytid: str) -> list[Path]:
    """Files in ``dir`` that a run would read as the clip ``ytid`` (``ReferenceSet.from_dir``'s rule)."""
    return [dir / f"{ytid}{ext}" for ext in AUDIO_EXTENSIONS if (dir / f"{ytid}{ext}").is_file()]


def _move_aside(dir: Path, path: Path, why: str) -> Path:
    dest_dir = dir / REJECTED_DIR_NAME
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / path.name
    if dest.exists():
        dest = dest_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
    os.replace(path, dest)
    print(f"musiccaps: moved {path} to {dest} ({why})", file=sys.stderr)
    return dest


def _summary(dir: Path, clips: Sequence[Clip], rows: Mapping[str, Mapping[str, str]], **extra) -> dict:
    counts = {s: 0 for s in STATUSES}
    for c in clips:
        counts[rows[c.ytid]["status"]] += 1
    manifest = dir / MANIFEST_NAME
    out = {"dir": str(dir), "manifest": str(manifest), "manifest_sha256": sha256_file(manifest),
           "n_selected": len(clips), **{f"n_{s}": n for s, n in counts.items()}}
    out.update(extra)
    return out


def summary_line(summary: Mapping) -> str:
    """``musiccaps: 5,469 ok, 40 unavailable, 12 failed of 5,521 (manifest DIR/manifest.csv, sha256 ab12...)``."""
    parts = [f"{summary['n_ok']:,} ok", f"{summary['n_unavailable']:,} unavailable", f"{summary['n_failed']:,} failed"]
    if summary["n_missing"]:
        parts.append(f"{summary['n_missing']:,} missing")
    return (f"musiccaps: {', '.join(parts)} of {summary['n_selected']:,} (manifest {summary['manifest']}, "
            f"sha256 {summary['manifest_sha256'][:12]}...)")


# ----------------------------------------------------------------------------------------------------------------
# download
# ----------------------------------------------------------------------------------------------------------------
class _Runner:
    """Shared state of one download: settings, the stop flag, the running downloader processes."""

    def __init__(self, dir: Path, exe: str, timeout_s: float, retries: int, backoff_s: float):
        self.dir, self.exe, self.timeout_s, self.retries, self.backoff_s = dir, exe, timeout_s, retries, backoff_s
        self.work_root = dir / WORK_DIR_NAME
        self.stop = threading.Event()
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            _kill_group(p)

    def run(self, cmd: list[str]) -> tuple[int | None, str, bool]:
        """(returncode, output, timed_out). The downloader runs in its own session (process group), so that a
        timeout kills it and every child (ffmpeg) at once."""
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with self._lock:
            self._procs.add(proc)
        if self.stop.is_set():  # started while kill_all ran: it missed this one
            _kill_group(proc)
        try:
            try:
                out, _ = proc.communicate(timeout=self.timeout_s)
                return proc.returncode, out.decode("utf-8", "replace"), False
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                try:
                    out, _ = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:  # something outside the group holds the pipe
                    proc.kill()
                    out = b""
                return proc.returncode, (out or b"").decode("utf-8", "replace"), True
        finally:
            with self._lock:
                self._procs.discard(proc)

    def fetch(self, clip: Clip) -> dict[str, str] | None:
        """Attempt ``clip`` up to ``1 + retries`` times; the row for the manifest, or None if stopped first."""
        row, made = None, 0
        for attempt in range(self.retries + 1):
            if attempt and self.stop.wait(self.backoff_s * 2 ** (attempt - 1)):
                break
            if self.stop.is_set():
                break
            row, kind = self._attempt(clip, attempt)
            made += 1
            if kind == "fatal":  # every other clip would fail alike: start no more downloads
                self.stop.set()
            if kind != "failed":
                return row
        if row is not None and made > 1:
            row["reason"] = _one_line(f"{row['reason']} (after {made} attempts)")
        return row

    def _attempt(self, clip: Clip, attempt: int) -> tuple[dict[str, str], str]:
        # the pid keeps an orphaned downloader of a killed run (it outlives its parent) out of this run's folders
        work = self.work_root / f"{clip.ytid}.{os.getpid()}.{attempt}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            cmd = downloader_command(self.exe, clip, work / f"{clip.ytid}.%(ext)s")
            rc, output, timed_out = self.run(cmd)
            if timed_out:
                return _row(clip.ytid, "failed", f"timeout: the downloader ran longer than --timeout={self.timeout_s:g} s "
                                                 f"and was killed (its whole process group)", fetched_at=_now()), "failed"
            if rc != 0:
                kind, reason = classify_failure(output)
                status = "unavailable" if kind == "unavailable" else "failed"
                return _row(clip.ytid, status, f"{reason} (exit status {rc})", fetched_at=_now()), kind
            produced = work / f"{clip.ytid}.wav"
            if not produced.is_file():
                found = sorted(p.name for p in work.iterdir())
                return _row(clip.ytid, "failed", f"the downloader exited 0 but wrote no {produced.name} "
                                                 f"(work folder holds {found or 'nothing'})", fetched_at=_now()), "failed"
            check = verify_clip(produced, clip.duration_s)
            if not check.ok:
                return _row(clip.ytid, "failed", check.reason, check=check, fetched_at=_now()), "failed"
            with open(produced, "rb+") as fh:
                os.fsync(fh.fileno())
            digest = sha256_file(produced)
            os.replace(produced, self.dir / produced.name)  # the only way a clip enters the folder
            _fsync_dir(self.dir)
            return _row(clip.ytid, "ok", "", digest, check, _now()), "ok"
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def _reuse(dir: Path, clip: Clip, row: Mapping[str, str] | None) -> dict[str, str] | None:
    """The ``ok`` row for a clip already in ``dir`` (manifest ``ok`` with the file's sha256, or verified now), or
    None; files that fail verification (or duplicates of a good one) are moved to the rejected folder."""
    keep = None
    for path in _clip_files(dir, clip.ytid):
        if keep is not None:
            _move_aside(dir, path, f"a second file for {clip.ytid}; {keep['_path']} is kept")
            continue
        digest = sha256_file(path)
        if row and row.get("status") == "ok" and row.get("sha256") == digest:
            keep = dict(row)
        else:
            check = verify_clip(path, clip.duration_s)
            if not check.ok:
                _move_aside(dir, path, check.reason)
                continue
            keep = _row(clip.ytid, "ok", "", digest, check, _mtime(path))
        keep["_path"] = path.name
    if keep is not None:
        keep.pop("_path")
    return keep


def _to_fetch(dir: Path, clips: Sequence[Clip], rows: dict, progress: bool) -> list[Clip]:
    """The clips to download: not verified on disk, not known to be unavailable. Updates ``rows`` (verified files
    reused, the others marked missing until attempted)."""
    from tqdm.auto import tqdm

    todo = []
    for clip in tqdm(clips, desc="musiccaps: checking existing files", unit="clip", disable=not progress, leave=False):
        prev = rows.get(clip.ytid)
        reused = _reuse(dir, clip, prev)
        if reused is not None:
            rows[clip.ytid] = reused
        elif prev is not None and prev["status"] == "unavailable":
            continue
        else:
            rows[clip.ytid] = _row(clip.ytid, "missing", "not attempted yet")
            todo.append(clip)
    return todo


def download(out: str | os.PathLike, clips: Sequence[Clip], *, downloader: str = DEFAULT_DOWNLOADER,
             jobs: int = DEFAULT_JOBS, timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
             backoff_s: float = DEFAULT_BACKOFF_S, progress: bool = True) -> dict:
    """Fetch every clip of ``clips`` not yet in ``out`` (see the module docstring), ``jobs`` downloads at a time,
    each killed after ``timeout_s`` seconds, failures retried ``retries`` times after ``backoff_s * 2**k`` s.
    Returns the summary: ``n_selected, n_ok, n_failed, n_unavailable, n_missing`` (over ``clips``), ``n_fetched``
    (downloader runs this call), ``manifest``, ``manifest_sha256``, ``fatal`` (a reason that stopped the run, or "").

    Raises :class:`MusicCapsError` for unusable settings (downloader not installed, folder locked)."""
    if jobs < 1 or timeout_s <= 0 or retries < 0 or backoff_s < 0:
        raise MusicCapsError(f"--jobs {jobs} / --timeout {timeout_s} / --retries {retries} / --backoff {backoff_s}: need "
                             f"jobs >= 1, timeout > 0, retries >= 0, backoff >= 0")
    exe = resolve_downloader(downloader)
    dir = Path(out).expanduser().resolve()
    if dir.exists() and not dir.is_dir():
        raise MusicCapsError(f"--out {dir}: not a folder")
    dir.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    with _folder_lock(dir):
        runner = _Runner(dir, exe, float(timeout_s), int(retries), float(backoff_s))
        shutil.rmtree(runner.work_root, ignore_errors=True)  # what a killed run left behind
        rows = _manifest_rows(dir)
        todo = _to_fetch(dir, clips, rows, progress)
        write_manifest(dir, rows)
        counts = {"ok": 0, "failed": 0, "unavailable": 0}
        fatal = ""
        bar = tqdm(total=len(todo), desc="musiccaps", unit="clip", disable=not progress)
        ex = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="musiccaps")
        try:
            futures = [ex.submit(runner.fetch, c) for c in todo]
            for fut in as_completed(futures):
                row = fut.result()
                if row is None:  # stopped before its first attempt
                    continue
                rows[row["ytid"]] = row
                write_manifest(dir, rows)
                counts[row["status"]] += 1
                bar.update(1)
                bar.set_postfix(counts)
                if not fatal and _FATAL_RE.search(row["reason"]):
                    fatal = row["reason"]
                    runner.stop.set()
        except BaseException:
            runner.stop.set()
            runner.kill_all()
            ex.shutdown(wait=True, cancel_futures=True)
            write_manifest(dir, rows)
            raise
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            bar.close()
            shutil.rmtree(runner.work_root, ignore_errors=True)
        n_fetched = sum(1 for c in todo if rows[c.ytid]["status"] != "missing")
        return _summary(dir, clips, rows, n_fetched=n_fetched, fatal=fatal)


# ----------------------------------------------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------------------------------------------
def check(dir: str | os.PathLike, clips: Sequence[Clip], *, progress: bool = True) -> dict:
    """Verify the files already in ``dir`` (``<ytid>.wav|flac|mp3|ogg``) for ``clips`` and write the manifest:
    ``ok``; ``failed`` with the reason (``unreadable``, ``wrong duration``, ``silent``, or two files for one id);
    ``missing`` (no file; a previous manifest's ``unavailable`` row is kept instead). Moves and fetches nothing.
    Returns the same summary as :func:`download` (without ``n_fetched``/``fatal``)."""
    from tqdm.auto import tqdm

    from evalkit.io import folder_problem

    dir = Path(dir).expanduser().resolve()
    problem = folder_problem(dir)
    if problem:
        raise MusicCapsError(f"{dir}: {problem} (the folder of <ytid>.wav|flac|mp3 clips to check)")
    with _folder_lock(dir):
        rows = _manifest_rows(dir)
        for clip in tqdm(clips, desc="musiccaps: checking", unit="clip", disable=not progress):
            files = _clip_files(dir, clip.ytid)
            prev = rows.get(clip.ytid)
            if not files:
                if prev is not None and prev["status"] == "unavailable":
                    continue
                rows[clip.ytid] = _row(clip.ytid, "missing", f"no file {clip.ytid}.wav|flac|mp3|ogg in the folder")
                continue
            if len(files) > 1:
                rows[clip.ytid] = _row(clip.ytid, "failed", f"two files for one id ({', '.join(p.name for p in files)}): "
                                                            f"a run refuses the folder; keep one", fetched_at=_mtime(files[0]))
                continue
            path = files[0]
            verdict = verify_clip(path, clip.duration_s)
            status = "ok" if verdict.ok else "failed"
            rows[clip.ytid] = _row(clip.ytid, status, verdict.reason, sha256_file(path), verdict, _mtime(path))
        write_manifest(dir, rows)
        return _summary(dir, clips, rows)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evalkit.data.musiccaps",
                                description="MusicCaps reference audio: download the clips with yt-dlp, or check a "
                                            "folder you have; both write DIR/manifest.csv.")
    sub = p.add_subparsers(dest="command", required=True)

    def table_args(sp):
        sp.add_argument("--table", metavar="FILE.csv", help="local musiccaps-public.csv (default: google/MusicCaps "
                                                            "from the hub)")
        sp.add_argument("--subset", default="all", choices=sorted(MUSICCAPS_SUBSETS),
                        help="all (5,521) | audioset_eval (2,858) | balanced (1,000)")
        sp.add_argument("--limit", type=int, metavar="N", help="the N clips a run with dataset.limit=N uses")

    d = sub.add_parser("download", help="fetch the clips (resumable)")
    d.add_argument("--out", required=True, metavar="DIR", help="folder for <ytid>.wav and manifest.csv")
    table_args(d)
    d.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="J", help="parallel downloads (default %(default)s)")
    d.add_argument("--downloader", default=DEFAULT_DOWNLOADER, metavar="CMD",
                   help="the yt-dlp executable (default %(default)s)")
    d.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds before one download is killed (default %(default)s)")
    d.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                   help="retries of a failed download (default %(default)s)")
    d.add_argument("--backoff", type=float, default=DEFAULT_BACKOFF_S, metavar="S",
                   help="first retry delay in seconds, doubled each retry (default %(default)s)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")

    c = sub.add_parser("check", help="verify a folder of clips and write its manifest")
    c.add_argument("dir", metavar="DIR")
    table_args(c)
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _raise_terminated(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry. Exit status: 0 when no clip failed, 1 when some failed (rerun to retry them), 2 on an error."""
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # a batch system's SIGTERM unwinds like Ctrl-C: the running downloaders (own process groups) are killed and
        # the manifest is written, instead of leaving orphaned downloads behind
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        clips = load_clips(args.table, args.subset, args.limit)
        if args.command == "download":
            summary = download(args.out, clips, downloader=args.downloader, jobs=args.jobs, timeout_s=args.timeout,
                               retries=args.retries, backoff_s=args.backoff, progress=not args.no_progress)
        else:
            summary = check(args.dir, clips, progress=not args.no_progress)
    except MusicCapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_line(summary), flush=True)
    if summary.get("fatal"):
        print(f"error: stopped: {summary['fatal']}. Install ffmpeg (yt-dlp needs it to cut and convert) and rerun.",
              file=sys.stderr)
        return 2
    if summary["n_failed"]:
        print(f"musiccaps: {summary['n_failed']:,} failed (reasons in {summary['manifest']}); rerun the same command "
              f"to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
