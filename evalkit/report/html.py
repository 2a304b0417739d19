"""Look and listen: one self-contained HTML page per run (``report.html`` in the run folder), or one page for several
runs with their paired per-clip differences.

A FAD is trusted once the clips behind it have been heard. The page holds, for each run: the card table with the
published values and evalkit's own tables (:mod:`evalkit.report.table`, :mod:`evalkit.report.paired`); the RANDOM
WEIGHTS banner; the run's warnings and its audit (flags with their counts and clips, every skipped clip with its
reason, unused files, missing and unusable references); each metric's numbers, recipe and settings; the N worst and
N best clips of every metric with a per-clip value (direction from ``spec.higher_is_better``); and a table of every
clip (id, caption, audit flags, each metric's ``spec.per_clip`` columns) that sorts by any column and filters by
flag, each row playing the generated clip beside its reference, :data:`ROWS_PER_PAGE` rows at a time (the rest
wait in an inert ``<template>``: a browser lays out the 11,042 players of a MusicCaps run in minutes, a page of
them at once). With two or more runs it adds, for each run against the first one named, the paired per-clip
difference of every shared metric and the clips that moved most, with both runs' audio.

``write_run_page(run_dir)`` writes ``<run_dir>/report.html`` (every run does, at its end: :func:`evalkit.run.run`);
``write_page(runs, out)`` writes one page for several runs (``python -m evalkit.report RUN... --html OUT``).

Self-contained: no server, no network, no framework; it works opened from ``file://`` and keeps working when the run
folder is copied elsewhere.
- Links: a file inside a run folder (the run's own ``audio/<id>.flac``, summary.json, references synthesised into
  the run folder) is linked relative to the page. A path recorded in ``clips.parquet`` is read as the run wrote it:
  relative paths against the run's working directory (``manifest.json`` ``cwd``), and a path inside the folder the
  run was written to (``summary.json`` ``run_dir``) is taken inside the run folder wherever that is now. A file
  outside every run folder (a reference set, ``model.dir`` in folder mode) is linked by its absolute ``file://`` URL:
  a relative link to it would break as soon as the run folder moves without it.
- Images: spectrograms are PNG files beside the page, in ``<page stem>_files/`` (``report_files/`` for
  ``report.html``), linked relatively and loaded lazily. Each is named by a hash of the audio file's path, size and
  modification time and the drawing settings, so it is drawn once and reused by the next page; files no longer
  shown are removed. By default only the clips shown at the top (worst, best, moved most) get them, so that a
  5,521-clip page stays small; ``all_images=True`` draws every clip's.
- User text (ids, captions, file names, reasons) is escaped by the template (Jinja2 autoescaping) and never placed
  inside a script; the page's one script is pinned by its sha256 in a Content-Security-Policy, so that not even an
  injected inline script or event handler could run.

Reads run folders only, like the rest of :mod:`evalkit.report` (numpy, pandas, matplotlib's colour maps, Pillow,
soundfile, Jinja2; never torch). The page is the one thing the report writes into a run folder.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from evalkit.metrics.spec import MetricSpec
from evalkit.report import bootstrap as bs
from evalkit.report.paired import SIDES, TITLE as PAIRED_TITLE, paired_cell, paired_metrics, paired_table
from evalkit.report.rundir import RunRecord, SkippedFolder, load_runs
from evalkit.report.table import (
    MISSING,
    NA_MARK,
    NOT_AVAILABLE,
    RANDOM_MARK,
    card_table,
    cell_decimals,
    cell_text,
    collect_runs,
    format_number,
    format_published,
    load_published,
    run_labels,
)

#: The page every run writes into its folder.
PAGE_NAME = "report.html"
#: Worst and best clips shown per metric.
DEFAULT_N_TOP = 5
#: Rows of the table of every clip shown at a time (a browser lays out 11,042 players of a MusicCaps run in minutes).
ROWS_PER_PAGE = 100
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
SCRIPT = "report.js"
#: The banner of a run whose numbers come from random weights (summary.json ``random_weights``), and what it means.
RANDOM_BANNER = "RANDOM WEIGHTS"
RANDOM_MEANING = "These numbers exercise the pipeline and say nothing about any released model."
#: The marks of a clip's flags in the per-clip table's filter: a reference's flags and a clip a metric did not score.
REFERENCE_FLAG = "reference:{flag}"
SKIPPED_FLAG = "skipped"


@dataclass(frozen=True)
class SpectrogramSettings:
    """How a spectrogram thumbnail is drawn: ``width`` frames × ``n_mels`` mel bands (image pixels), power
    spectra of ``n_fft``-sample Hann windows spread evenly over the clip (mono mix), on an HTK mel scale from
    ``fmin_hz`` to half the file's sample rate, in dB below the clip's loudest bin down to ``range_db``, quantised
    to ``levels`` colours of matplotlib's ``cmap``. 200 × 64 px of music is ~8 KB as an indexed PNG."""

    width: int = 200
    n_mels: int = 64
    n_fft: int = 1024
    fmin_hz: float = 20.0
    range_db: float = 80.0
    levels: int = 64
    cmap: str = "magma"

    def key(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


SPECTROGRAM = SpectrogramSettings()


# -- numbers --------------------------------------------------------------------------------------------------------
def _finite(x: Any) -> bool:
    try:
        return x is not None and not isinstance(x, bool) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def number_text(x: Any, decimals: int, integral: bool = False) -> str:
    """A number of a metric as the page writes it: an integer count as an integer (``integral``, or an int), else
    with the metric's ``decimals`` or the 2 significant digits a small value needs (:func:`cell_decimals`); ``–``
    when missing or not finite."""
    if not _finite(x):
        return MISSING
    if isinstance(x, (int, np.integer)) or (integral and float(x).is_integer()):
        return str(int(x))
    return format_number(x, cell_decimals(decimals, x))


def _json_text(x: Any) -> str:
    """A setting or recipe value as summary.json writes it."""
    return json.dumps(x, ensure_ascii=False)


def summary_key(run_index: int, *keys: Any) -> str:
    """The ``data-summary`` attribute of the element showing ``summary.json[keys[0]][keys[1]]...`` of run
    ``run_index``: ``json.dumps([run_index, *keys])`` (tests look numbers up by it)."""
    return json.dumps([run_index, *keys], ensure_ascii=False)


def _flatten(value: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """``[(key path, leaf)]`` of nested dicts (lists are leaves)."""
    if isinstance(value, Mapping) and value:
        out = []
        for k, v in value.items():
            out += _flatten(v, prefix + (str(k),))
        return out
    return [(prefix, value)]


# -- links ----------------------------------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (a relative path string) when it lies inside it, else None; lexically, both
    made absolute (string operations: a page links 11,042 files of a MusicCaps run)."""
    p, f = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder))
    if p == f or p.startswith(f.rstrip(os.sep) + os.sep):
        return os.path.relpath(p, f)
    return None


def _run_cwd(run: RunRecord) -> Path:
    """The working directory the run was started in (``manifest.json`` ``cwd``; the current one when unknown)."""
    try:
        cwd = json.loads((run.path / "manifest.json").read_text(encoding="utf-8")).get("cwd")
    except (OSError, ValueError, AttributeError):
        cwd = None
    return Path(cwd) if isinstance(cwd, str) and cwd else Path.cwd()


def locate(recorded: Any, run: RunRecord, cwd: Path | None = None) -> Path | None:
    """Where a file recorded in ``clips.parquet`` is now (see the module doc); None for no path. ``cwd``: the run's
    working directory (read from manifest.json when None)."""
    if not isinstance(recorded, str) or not recorded:
        return None
    base = cwd if cwd is not None else _run_cwd(run)
    path = base / Path(recorded).expanduser()
    written_to = run.summary.get("run_dir")
    if isinstance(written_to, str) and written_to:
        inner = _inside(path, base / Path(written_to).expanduser())
        if inner is not None:
            return run.path / inner
    return path


def href(path: Path, page_dir: Path, run_dirs: Iterable[Path]) -> str:
    """The page's link to ``path``: relative to ``page_dir`` when it lies in one of ``run_dirs`` (or beside the
    page), else its absolute ``file://`` URL; every segment percent-encoded (a file named ``"><img src=x>.wav``
    is a link, not markup)."""
    inside_run = any(_inside(path, d) is not None for d in run_dirs) or _inside(path, page_dir) is not None
    if inside_run:
        rel = os.path.relpath(os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(page_dir)))
        return "/".join(urllib.parse.quote(part, safe="") for part in rel.split(os.sep))
    return Path(os.path.normpath(os.path.abspath(path))).as_uri()


# -- spectrograms ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float) -> np.ndarray:
    """Triangular filters on the HTK mel scale, ``[n_mels, n_fft // 2 + 1]`` float32, from ``fmin_hz`` to
    ``sample_rate / 2`` (unnormalised: a thumbnail's dB range is relative to its own maximum)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(min(fmin_hz, sample_rate / 4)), mel(sample_rate / 2), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))).astype(np.float32)


@lru_cache(maxsize=4)
def _palette(cmap: str, levels: int) -> list[int]:
    from matplotlib import colormaps

    rgb = colormaps[cmap](np.linspace(0.0, 1.0, levels))[:, :3]
    return np.round(rgb * 255).astype(np.uint8).ravel().tolist()


def spectrogram_png(path: str | os.PathLike, settings: SpectrogramSettings = SPECTROGRAM) -> bytes:
    """A mel spectrogram thumbnail of an audio file (see :class:`SpectrogramSettings`): PNG bytes, an indexed image of
    ``settings.width`` × ``settings.n_mels`` pixels, low frequencies at the bottom.

    Raises ValueError naming the file when it cannot be read (soundfile: wav, flac, ogg, mp3), holds no samples, or
    holds NaN or infinite samples."""
    import soundfile as sf
    from PIL import Image

    try:
        audio, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise ValueError(f"{path}: not a readable audio file ({type(exc).__name__}: {exc})") from exc
    if audio.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no samples")
    mono = audio @ np.full(audio.shape[1], 1.0 / audio.shape[1], np.float32)  # [T]; 15x faster than mean(axis=1)
    if not np.isfinite(mono).all():
        raise ValueError(f"{path}: the audio holds NaN or infinite samples")
    s = settings
    if mono.size < s.n_fft:
        mono = np.pad(mono, (0, s.n_fft - mono.size))
    starts = np.linspace(0, mono.size - s.n_fft, s.width).round().astype(np.int64)
    frames = mono[starts[:, None] + np.arange(s.n_fft)] * np.hanning(s.n_fft).astype(np.float32)  # [width, n_fft]
    power = np.abs(np.fft.rfft(frames, axis=1)).astype(np.float32) ** 2
    mels = power @ mel_filterbank(int(sample_rate), s.n_fft, s.n_mels, s.fmin_hz).T  # [width, n_mels]
    db = 10.0 * np.log10(mels + 1e-20)
    db = np.clip(db - db.max(), -s.range_db, 0.0)
    index = np.round((db + s.range_db) / s.range_db * (s.levels - 1)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(index.T[::-1]), mode="P")
    image.putpalette(_palette(s.cmap, s.levels))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


class ImageFolder:
    """The spectrograms of one page: PNG files in ``folder`` (``<page stem>_files/``), each drawn once and named by
    a hash of the audio file's path, size and modification time and the drawing settings."""

    def __init__(self, folder: Path, settings: SpectrogramSettings = SPECTROGRAM) -> None:
        self.folder, self.settings = folder, settings
        self.used: set[str] = set()

    def image(self, audio: Path) -> tuple[str | None, str]:
        """The spectrogram of ``audio``: ``(file name in the folder, "")``, or ``(None, why there is none)``."""
        try:
            st = audio.stat()
        except OSError as exc:
            return None, f"{audio}: {exc.strerror or exc}"
        key = f"{os.path.normpath(audio.absolute())}|{st.st_size}|{st.st_mtime_ns}|{self.settings.key()}"
        name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ".png"
        if not (self.folder / name).is_file():
            try:
                png = spectrogram_png(audio, self.settings)
            except ValueError as exc:
                return None, str(exc)
            from evalkit.io import atomic_path

            with atomic_path(self.folder / name) as tmp:
                tmp.write_bytes(png)
        self.used.add(name)
        return name, ""

    def draw(self, audio: Iterable[Path], workers: int | None = None) -> None:
        """Draw the spectrograms of ``audio`` that are not drawn yet, on ``workers`` threads (default: the CPUs, at
        most 8; decoding and FFTs release the GIL). :meth:`image` then finds them drawn."""
        todo = list(dict.fromkeys(audio))
        workers = workers or min(8, os.cpu_count() or 1)
        if workers < 2 or len(todo) < 2:
            for a in todo:
                self.image(a)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self.image, todo))

    def remove_unused(self) -> None:
        """Delete the folder's PNG files this page does not show (and the folder when it is left empty)."""
        if not self.folder.is_dir():
            return
        for f in self.folder.glob("*.png"):
            if f.name not in self.used:
                f.unlink(missing_ok=True)
        if not any(self.folder.iterdir()):
            self.folder.rmdir()


# -- one run --------------------------------------------------------------------------------------------------------
def value_columns(run: RunRecord) -> dict[str, tuple[str, MetricSpec]]:
    """``{metric: (per-clip value column, spec)}`` of the run's metrics whose number is a mean of a per-clip column
    present in clips.parquet (the ones with worst and best clips; a Fréchet distance has none)."""
    out = {}
    for m, spec in run.specs.items():
        col = spec.value_column or spec.primary
        if spec.aggregate == "mean" and col in run.clips.columns:
            out[m] = (col, spec)
    return out


def per_clip_columns(run: RunRecord) -> list[tuple[str, str, MetricSpec]]:
    """``[(metric, column, spec)]``: every metric's ``spec.per_clip`` columns present in clips.parquet, in the
    summary's order."""
    return [(m, c, spec) for m, spec in run.specs.items() for c in spec.per_clip if c in run.clips.columns]


def top_clips(run: RunRecord, metric: str, n: int) -> tuple[list[str], list[str]]:
    """``(worst, best)``: the ids of the ``n`` worst and ``n`` best scored clips by the metric's per-clip value, worst
    (best) first; ties in clips.parquet's order. Raises KeyError for a metric without a per-clip value column."""
    col, spec = value_columns(run)[metric]
    clips = run.clips
    v = clips[col].to_numpy(np.float64)
    keep = np.flatnonzero(np.isfinite(v))
    up = np.argsort(v[keep], kind="stable")
    down = np.argsort(-v[keep], kind="stable")
    ids = clips["id"].astype(str).to_numpy()
    best, worst = (down, up) if spec.higher_is_better else (up, down)
    return [ids[keep[i]] for i in worst[:n]], [ids[keep[i]] for i in best[:n]]


def _flags(value: Any) -> list[str]:
    """A clips.parquet list column's cell as a list of strings (None and NaN: none)."""
    if value is None or isinstance(value, float):
        return []
    return [str(f) for f in list(value)]


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


class RunView:
    """One run as the page shows it: labels, links and per-clip rows (built once, shared by its sections). The
    columns it reads are held as lists (a MusicCaps run has 5,521 rows; pandas row access would dominate)."""

    def __init__(self, run: RunRecord, index: int, label: str, page_dir: Path, run_dirs: Sequence[Path],
                 images: ImageFolder) -> None:
        self.run, self.index, self.label = run, index, label
        self.page_dir, self.run_dirs, self.images = page_dir, run_dirs, images
        self.clips = run.clips.reset_index(drop=True)
        n = len(self.clips)
        self.ids = self.clips["id"].astype(str).tolist()
        self.position = {cid: i for i, cid in enumerate(self.ids)}
        self.columns = per_clip_columns(run)
        self.integral = {c: _integral(self.clips[c]) for _, c, _ in self.columns}

        def column(name: str) -> list:
            return self.clips[name].tolist() if name in self.clips.columns else [None] * n

        self.captions = [_text(c) for c in column("caption")]
        self.values = {c: self.clips[c].to_numpy(np.float64).tolist() for _, c, _ in self.columns}
        self.flags = {"generated": [_flags(f) for f in column("audit_flags")],
                      "reference": [_flags(f) for f in column("reference_audit_flags")]}
        self.skip_reasons = [("every metric", column("skip_reason"))]
        self.skip_reasons += [(m, column(s.skip_column)) for m, s in run.specs.items()
                              if s.skip_column in self.clips.columns]
        cwd = _run_cwd(run)
        self.files = {side: [locate(p, run, cwd) for p in column(col)]
                      for side, col in (("generated", "audio_path"), ("reference", "reference_path"))}
        self.present = {side: [p is not None and p.is_file() for p in paths] for side, paths in self.files.items()}
        self.with_images: set[str] = set()

    def link(self, path: Path | None) -> str | None:
        return None if path is None else href(path, self.page_dir, self.run_dirs)

    def skips(self, i: int) -> list[tuple[str, str]]:
        """``[(what was not scored, why)]`` of clip ``i``: the run's skip (every metric), then each metric's own."""
        return [(what, _text(reasons[i])) for what, reasons in self.skip_reasons if _text(reasons[i])]

    def _player_problem(self, i: int, side: str) -> str:
        """Why clip ``i``'s ``side`` file gets no player (no file there, or the audit found it unreadable), or ""."""
        if self.files[side][i] is not None and not self.present[side][i]:
            return f"no file at {self.files[side][i]}"
        return "unreadable (audit)" if "unreadable" in self.flags[side][i] else ""

    def drawable(self, clip_id: str) -> list[Path]:
        """The files of a clip that can get a spectrogram: those present and not found unreadable by the audit."""
        i = self.position[clip_id]
        return [self.files[side][i] for side in ("generated", "reference")
                if self.files[side][i] is not None and not self._player_problem(i, side)]

    def media(self, i: int) -> dict[str, Any]:
        """Players and spectrograms of clip ``i``: ``{side: {"href", "playable", "why", "image", "image_why"}}`` for
        the generated clip and its reference. A file the audit found unreadable gets a link instead of a player, a
        file that is not there its path; ``why`` says which."""
        out = {}
        for side in ("generated", "reference"):
            path = self.files[side][i]
            why = self._player_problem(i, side)
            image, image_why = None, ""
            if self.ids[i] in self.with_images and path is not None and not why:
                name, image_why = self.images.image(path)
                image = None if name is None else href(self.images.folder / name, self.page_dir, ())
            out[side] = {"href": self.link(path) if self.present[side][i] else None,
                         "playable": not why, "why": why, "image": image, "image_why": image_why}
        return out

    def row(self, i: int) -> dict[str, Any]:
        """A row of the per-clip table: id, caption, flags (with their filter tokens), values, players."""
        flags, ref_flags = self.flags["generated"][i], self.flags["reference"][i]
        skips = self.skips(i)
        tokens = flags + [REFERENCE_FLAG.format(flag=f) for f in ref_flags] + ([SKIPPED_FLAG] if skips else [])
        cells = []
        for _, col, spec in self.columns:
            v = self.values[col][i]
            cells.append({"text": number_text(v, spec.decimals, self.integral[col]),
                          "sort": repr(v) if _finite(v) else ""})
        return {"id": self.ids[i], "anchor": f"run{self.index}-clip{i}", "caption": self.captions[i],
                "flags": flags, "reference_flags": ref_flags, "skips": skips, "tokens": " ".join(tokens),
                "cells": cells, "media": self.media(i)}


def _integral(column: pd.Series) -> bool:
    """True when every finite value of a numeric per-clip column is a whole number (a count: windows, rows)."""
    try:
        v = column.to_numpy(np.float64)
    except (TypeError, ValueError):
        return False
    v = v[np.isfinite(v)]
    return bool(v.size) and bool(np.all(v == np.round(v)))


def _fact(name: str, text: str, key: str | None = None, link: str | None = None,
          link_text: str | None = None) -> dict[str, Any]:
    return {"name": name, "text": text, "key": key, "href": link, "link_text": link_text}


def _facts(view: RunView) -> list[dict[str, Any]]:
    """The run's identity and counts: ``[{"name", "text", "key", "href", "link_text"}]``."""
    run, s, i = view.run, view.run.summary, view.index
    model = s.get("model") if isinstance(s.get("model"), dict) else {}
    out = [_fact("model", run.model_name),
           _fact("checkpoint", str(model.get("hub_id") or model.get("source") or MISSING))]
    out += [_fact(k, str(s[k]), summary_key(i, k)) for k in ("n_clips", "n_generated", "n_missing_reference",
                                                             "n_unusable_reference", "n_skipped") if _finite(s.get(k))]
    out.append(_fact("channel view", run.channel_view))
    out += [_fact(k, s[k] if isinstance(s[k], str) else _json_text(s[k]))
            for k in ("evalkit_version", "prompt_set_sha256", "synthetic_references") if k in s]
    out += [_fact(".".join(keys), v if isinstance(v, str) else _json_text(v), summary_key(i, *keys))
            for keys, v in _flatten(s.get("reference_set") or {}, ("reference_set",)) if len(keys) > 1]
    out.append(_fact("run folder", str(run.path), link=view.link(run.path / "summary.json"), link_text="summary.json"))
    return out


def _settings(view: RunView) -> list[dict[str, str]]:
    """The run's settings and prompt set, flattened: ``[{"name", "text", "key"}]`` (values as summary.json has them)."""
    s = view.run.summary
    out = []
    for top in ("settings", "dataset"):
        for keys, v in _flatten(s.get(top) or {}, (top,)):
            if len(keys) > 1:
                out.append({"name": ".".join(keys), "text": _json_text(v), "key": summary_key(view.index, *keys)})
    return out


#: The keys of a metric's summary.json block the page shows elsewhere than under "backbone and identity".
_SHOWN_APART = ("value", "values", "spec", "recipe", "paired", "warnings", "error", "skipped", "protocol", "n_clips",
                "n_skipped")


def _metric_details(view: RunView, headline: Mapping[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Per metric of summary.json: headline (with its interval), protocol, clips scored and skipped, why there is no
    number, every value ``compute`` returned, the backbone's identity and the recipe."""
    out = []
    for m, e in view.run.metrics.items():
        spec = view.run.spec(m)
        decimals = spec.decimals if spec else 2
        values = [{"name": k, "text": number_text(v, decimals, integral=True),
                   "key": summary_key(view.index, "metrics", m, "values", k)}
                  for k, v in (e.get("values") or {}).items() if _finite(v)]
        identity = [{"name": ".".join(keys), "text": v if isinstance(v, str) else _json_text(v),
                     "key": summary_key(view.index, "metrics", m, *keys)}
                    for k, entry_value in e.items() if k not in _SHOWN_APART
                    for keys, v in _flatten(entry_value, (k,))]
        recipe = [{"name": ".".join(keys[1:]), "text": _json_text(v),
                   "key": summary_key(view.index, "metrics", m, *keys)}
                  for keys, v in _flatten(e.get("recipe") or {}, ("recipe",)) if len(keys) > 1]
        out.append({
            "metric": m, "description": spec.description if spec else "",
            "direction": None if spec is None else ("↑ higher is better" if spec.higher_is_better
                                                    else "↓ lower is better"),
            "headline": headline.get(m), "protocol": e.get("protocol"),
            "counts": [{"name": k, "text": str(e[k]), "key": summary_key(view.index, "metrics", m, k)}
                       for k in ("n_clips", "n_skipped") if _finite(e.get(k))],
            "note": view.run.note(m), "numbers": values, "identity": identity, "recipe": recipe,
        })
    return out


def _audit(view: RunView) -> dict[str, Any]:
    """The audit of both sides, every skipped clip with its reasons, unused files, missing and unusable references."""
    s, i = view.run.summary, view.index
    sides = []
    for side, counts, ids in (("generated", "audit", "audit_ids"), ("reference", "reference_audit",
                                                                  "reference_audit_ids")):
        flags = [{"flag": f, "count": n, "key": summary_key(i, counts, f),
                  "ids": [{"id": str(c), "anchor": f"run{i}-clip{view.position[str(c)]}" if str(c) in view.position
                           else None} for c in (s.get(ids) or {}).get(f) or []],
                  "token": f if side == "generated" else REFERENCE_FLAG.format(flag=f)}
                 for f, n in (s.get(counts) or {}).items() if _finite(n)]
        sides.append({"side": side, "flags": flags})
    skipped = [{"id": view.ids[k], "anchor": f"run{i}-clip{k}", "what": what, "why": why}
               for k in range(len(view.ids)) for what, why in view.skips(k)]
    return {
        "sides": sides,
        "reasons": [{"reason": r, "count": n, "key": summary_key(i, "skip_reasons", r)}
                    for r, n in (s.get("skip_reasons") or {}).items()],
        "skipped": skipped,
        "unused": [{"file": str(u.get("file", "")), "reason": str(u.get("reason", ""))}
                   for u in (s.get("unused_files") or []) if isinstance(u, dict)],
        "missing": [str(x) for x in (s.get("missing_reference_ids") or [])],
        "unusable": [{"id": str(k), "why": str(v)} for k, v in (s.get("unusable_references") or {}).items()],
    }


def _top(view: RunView, n: int) -> list[dict[str, Any]]:
    """The worst and best ``n`` clips of every metric with a per-clip value: ``[{"metric", "column",
    "higher_is_better", "worst": [(row position, value text)], "best": [...]}]``."""
    out = []
    for m, (col, spec) in value_columns(view.run).items():
        worst, best = top_clips(view.run, m, n)
        values = view.clips[col]

        def entries(ids):
            return [(view.position[c], number_text(values.iloc[view.position[c]], spec.decimals)) for c in ids]

        out.append({"metric": m, "column": col, "higher_is_better": spec.higher_is_better,
                    "worst": entries(worst), "best": entries(best)})
    return out


def _paired_tables(runs: Sequence[RunRecord], labels: Sequence[str]) -> list[dict[str, Any]]:
    """evalkit's paired tables (e.g. the stereo image), one per metric with a ``paired`` block."""
    out = []
    for metric in paired_metrics(runs):
        df = paired_table(runs, labels, metric)
        rows = []
        for i, label in enumerate(labels):
            block = ((runs[i].summary.get("metrics") or {}).get(metric) or {}).get("paired") or {}
            for stat, entry in block.items():
                cells = []
                for side in SIDES:
                    iv = entry.get(side) or {}
                    cells.append({"text": paired_cell(df, label, stat, side),
                                  "parts": [{"name": k, "text": format_number(iv[k], 3) if k != "n" else str(iv[k]),
                                             "key": summary_key(i, "metrics", metric, "paired", stat, side, k)}
                                            for k in ("value", "low", "high", "n") if _finite(iv.get(k))]})
                nf = entry.get("n_not_finite") or {}
                n = (entry.get("generated") or {}).get("n")
                rows.append({"label": label, "statistic": stat, "cells": cells, "n": n if _finite(n) else MISSING,
                             "not_finite": [{"side": k, "text": str(v), "key": summary_key(
                                 i, "metrics", metric, "paired", stat, "n_not_finite", k)} for k, v in nf.items()],
                             "settings": [{"name": k, "text": _json_text(entry[k]), "key": summary_key(
                                 i, "metrics", metric, "paired", stat, k)} for k in ("level", "n_boot") if k in entry]})
        out.append({"title": PAIRED_TITLE.format(metric=metric), "rows": rows})
    return out


# -- the tables of the card -----------------------------------------------------------------------------------------
def _table_view(table: pd.DataFrame, keys: Mapping[tuple[str, str], str], published: bool) -> dict[str, Any]:
    """A card or section table for the template: header, rows of cells (value, interval, published), footnotes.
    ``keys``: ``{(label, column): data-summary key}`` of the measured cells."""
    columns = table.attrs.get("columns", [])
    arrows = table.attrs.get("arrows") or {}
    random_rows = set(table.attrs.get("random_rows", []))
    rows = []
    for label in table.index:
        cells = []
        for c in columns:
            v, ci, note = cell_text(table, label, c)
            cell = {"value": v, "ci": ci, "text": (NOT_AVAILABLE + NA_MARK if note else MISSING) if v is None else v,
                    "key": keys.get((label, c)), "note": note}
            if published:
                cell["published"] = format_published(table, label, c)
            cells.append(cell)
        rows.append({"label": label, "random": label in random_rows, "cells": cells})
    return {"title": table.attrs.get("title", ""), "published": published,
            "columns": [{"name": c, "arrow": "" if arrows.get(c) is None else ("↑" if arrows[c] else "↓")}
                        for c in columns],
            "rows": rows, "footnotes": list(table.attrs.get("footnotes", []))}


def _tables(collected: pd.DataFrame, index_of: Mapping[str, int]) -> list[dict[str, Any]]:
    """The card table and evalkit's own tables (one per section)."""
    keys = {(r["label"], r["column"]): summary_key(index_of[r["label"]], "metrics", r["metric"], "value")
            for _, r in collected.iterrows() if r["metric"] and r["label"] in index_of}
    table = card_table(collected)
    out = [_table_view(table, keys, published=True)]
    out += [_table_view(sub, keys, published=False) for sub in (table.attrs.get("sections") or {}).values()]
    return out


def _headlines(collected: pd.DataFrame, tables: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict]:
    """``{(label, metric): cell}`` of the tables' measured cells (the metric details repeat them)."""
    by_cell = {}
    for t in tables:
        for row in t["rows"]:
            for col, cell in zip(t["columns"], row["cells"]):
                by_cell[(row["label"], col["name"])] = cell
    return {(r["label"], r["metric"]): by_cell[(r["label"], r["column"])] for _, r in collected.iterrows()
            if r["metric"] and (r["label"], r["column"]) in by_cell}


# -- several runs ---------------------------------------------------------------------------------------------------
def paired_differences(a: RunRecord, b: RunRecord, *, n_boot: int = bs.N_BOOT, level: float = bs.LEVEL,
                       seed: int = bs.SEED) -> list[dict[str, Any]]:
    """Per metric with a per-clip value in both runs: the per-clip difference ``b − a`` over the clips both runs
    scored (matched by id).

    Each entry: ``metric, column, higher_is_better, decimals, ids`` (the paired clips, clips.parquet order of ``a``),
    ``a, b, difference`` (arrays over those clips), ``interval`` (percentile bootstrap interval of the unweighted mean
    difference over clips, :func:`evalkit.report.bootstrap.bootstrap_mean`; None with fewer than 2 clips),
    ``n_better`` / ``n_worse`` (clips that moved in the metric's good / bad direction), ``value_a`` / ``value_b`` (the
    runs' headline values)."""
    out = []
    cols_a, cols_b = value_columns(a), value_columns(b)
    for m, (col, spec) in cols_a.items():
        if m not in cols_b:
            continue
        col_b = cols_b[m][0]
        left = pd.DataFrame({"id": a.clips["id"].astype(str), "a": a.clips[col].astype(float)})
        right = pd.DataFrame({"id": b.clips["id"].astype(str), "b": b.clips[col_b].astype(float)})
        both = left.merge(right.drop_duplicates("id"), on="id", how="inner")
        both = both[np.isfinite(both["a"]) & np.isfinite(both["b"])]
        d = (both["b"] - both["a"]).to_numpy()
        up = spec.higher_is_better
        out.append({
            "metric": m, "column": col, "higher_is_better": up, "decimals": spec.decimals,
            "ids": both["id"].tolist(), "a": both["a"].to_numpy(), "b": both["b"].to_numpy(), "difference": d,
            "interval": bs.bootstrap_mean(d, metric=f"{m} b-a", n_boot=n_boot, level=level, seed=seed)
            if d.size >= 2 else None,
            "n_better": int((d > 0).sum() if up else (d < 0).sum()),
            "n_worse": int((d < 0).sum() if up else (d > 0).sum()),
            "value_a": a.value(m), "value_b": b.value(m),
        })
    return out


def moved_most(diff: Mapping[str, Any], n: int) -> list[int]:
    """Positions (in ``diff["ids"]``) of the ``n`` clips whose value moved most between the two runs (largest
    ``|b − a|`` first; ties in order)."""
    return np.argsort(-np.abs(diff["difference"]), kind="stable")[:n].tolist()


def _comparison(va: RunView, vb: RunView, diffs: Sequence[Mapping[str, Any]], n: int) -> dict[str, Any]:
    """The comparison of run ``vb`` with run ``va`` for the template: per metric, the paired difference and the ``n``
    clips that moved most, with both runs' players."""
    metrics = []
    for diff in diffs:
        dec, iv = diff["decimals"], diff["interval"]
        d_dec = cell_decimals(dec, *((iv.value, iv.low, iv.high) if iv else ()))
        moved = []
        for k in moved_most(diff, n):
            cid = diff["ids"][k]
            ia, ib = va.position[cid], vb.position[cid]
            media_a, media_b = va.media(ia), vb.media(ib)
            if media_b["reference"]["href"] == media_a["reference"]["href"]:  # one reference set: its player once
                del media_b["reference"]
            moved.append({"id": cid, "caption": va.captions[ia],
                          "anchor_a": f"run{va.index}-clip{ia}", "anchor_b": f"run{vb.index}-clip{ib}",
                          "a": number_text(diff["a"][k], dec), "b": number_text(diff["b"][k], dec),
                          "difference": format_number(diff["difference"][k], cell_decimals(dec, diff["difference"][k])),
                          "media_a": media_a, "media_b": media_b})
        metrics.append({
            "metric": diff["metric"], "column": diff["column"], "higher_is_better": diff["higher_is_better"],
            "n": len(diff["ids"]), "n_better": diff["n_better"], "n_worse": diff["n_worse"],
            "mean": format_number(iv.value, d_dec) if iv else MISSING,
            "interval": f"[{format_number(iv.low, d_dec)}, {format_number(iv.high, d_dec)}]" if iv else "",
            "level": iv.level if iv else None, "n_boot": iv.n_boot if iv else None,
            "value_a": number_text(diff["value_a"], dec), "value_b": number_text(diff["value_b"], dec),
            "moved": moved,
        })
    return {"a": va.label, "b": vb.label, "index_a": va.index, "index_b": vb.index, "metrics": metrics}


# -- the page -------------------------------------------------------------------------------------------------------
def _images_wanted(views: Sequence[RunView], tops: Sequence[list], diffs, n: int, all_images: bool) -> None:
    """Which clips get spectrograms: every clip (``all_images``), else those shown at the top of the page (each
    run's worst and best, and the clips that moved most between two runs)."""
    for view, top in zip(views, tops):
        shown = {view.ids[k] for t in top for k, _ in t["worst"] + t["best"]}
        view.with_images = set(view.ids) if all_images else shown
    for (va, vb), pair in diffs:
        for d in pair:
            for k in moved_most(d, n):
                va.with_images.add(d["ids"][k])
                vb.with_images.add(d["ids"][k])
    views[0].images.draw(path for view in views for cid in view.with_images for path in view.drawable(cid))


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def script_text() -> str:
    """The page's one script: sorting and the flag filter (``templates/report.js``)."""
    return (TEMPLATES / SCRIPT).read_text(encoding="utf-8")


def render_page(context: Mapping[str, Any]) -> str:
    """The page's HTML from the template (``templates/report.html.j2``, autoescaped) and ``context``."""
    from markupsafe import Markup

    script = script_text()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return _environment().get_template(TEMPLATE).render(**context, script=Markup(script),
                                                        script_hash=f"sha256-{digest}")


def _published_or_none() -> pd.DataFrame | None:
    """evalkit's published numbers, or None where the CSV is not there (an install without it: measured only)."""
    try:
        return load_published()
    except (OSError, ValueError):
        return None


def write_page(
    runs: Iterable[str | os.PathLike] | Iterable[RunRecord],
    out: str | os.PathLike,
    *,
    n_top: int = DEFAULT_N_TOP,
    all_images: bool = False,
    ci: bool = True,
    n_boot: int = bs.N_BOOT,
    level: float = bs.LEVEL,
    seed: int = bs.SEED,
    published: pd.DataFrame | str | os.PathLike | None = "default",
    skipped: Sequence[SkippedFolder] = (),
) -> Path:
    """Write one page for ``runs`` (run folders, summary.json files, folders holding runs, or RunRecords) to ``out``
    (an ``.html`` path; its spectrograms go to ``<out stem>_files/`` beside it). Returns ``out``.

    ``n_top``: worst and best clips per metric (and clips that moved most per metric and pair of runs);
    ``all_images``: a spectrogram for every clip, not only those; ``ci``, ``n_boot``, ``level``, ``seed``: the
    bootstrap intervals (as :func:`evalkit.report.table.collect_runs`); ``published``: the published numbers
    (``"default"``: evalkit's CSV, left out when it is not there). With two or more runs the page compares each run
    with the first one given. Raises :class:`evalkit.report.RunFolderError` when no run can be read, ValueError for
    ``n_top`` < 1."""
    if int(n_top) < 1:
        raise ValueError(f"n_top={n_top}: show at least 1 worst and 1 best clip per metric")
    items = list(runs)
    if not all(isinstance(r, RunRecord) for r in items):
        items, found_skipped = load_runs([str(p) for p in items])
        skipped = list(skipped) + found_skipped
    if isinstance(published, str) and published == "default":
        published = _published_or_none()
    collected = collect_runs(items, ci=ci, n_boot=n_boot, level=level, seed=seed, published=published,
                             skipped=skipped)
    out = Path(out)
    images = ImageFolder(out.parent / f"{out.stem}_files")
    context = _page_context(items, collected, out.parent, images, int(n_top), all_images,
                            dict(n_boot=n_boot, level=level, seed=seed))
    from evalkit.io import write_text

    write_text(out, render_page(context))
    images.remove_unused()
    return out


def _page_context(runs: Sequence[RunRecord], collected: pd.DataFrame, page_dir: Path, images: ImageFolder,
                  n_top: int, all_images: bool, bootstrap: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, for a page in ``page_dir``; draws the spectrograms it needs into ``images``.
    ``bootstrap``: ``n_boot``, ``level``, ``seed`` of the paired differences' intervals."""
    labels = run_labels(runs)
    views = [RunView(r, i, label, page_dir, [r.path for r in runs], images)
             for i, (r, label) in enumerate(zip(runs, labels))]
    tops = [_top(v, n_top) for v in views]
    diffs = [((views[0], v), paired_differences(views[0].run, v.run, **bootstrap)) for v in views[1:]]
    _images_wanted(views, tops, diffs, n_top, all_images)
    tables = _tables(collected, {label: i for i, label in enumerate(labels)})
    headlines = _headlines(collected, tables)
    notes = {label: collected.loc[collected["label"] == label, "random_note"].iloc[0] for label in labels}
    return {
        "title": f"evalkit: {labels[0]}" if len(labels) == 1 else f"evalkit: {len(labels)} runs",
        "tables": tables,
        "paired": _paired_tables(runs, labels),
        "skipped_folders": [str(s) for s in collected.attrs.get("skipped") or []],
        "comparisons": [_comparison(va, vb, pair, n_top) for (va, vb), pair in diffs],
        "runs": [_run_context(v, top, notes[v.label], headlines) for v, top in zip(views, tops)],
        "n_top": n_top, "all_images": all_images, "random_banner": RANDOM_BANNER,
        "random_meaning": RANDOM_MEANING, "random_mark": RANDOM_MARK,
        "image_width": images.settings.width, "image_height": images.settings.n_mels, "rows_per_page": ROWS_PER_PAGE,
    }


def _run_context(view: RunView, top: Sequence[Mapping[str, Any]], random_note: str,
                 headlines: Mapping[tuple[str, str], dict]) -> dict[str, Any]:
    """One run's sections for the template: banner, facts, warnings, the clips at the top, audit, every clip,
    metrics in detail, settings."""
    rows = [view.row(i) for i in range(len(view.ids))]
    return {
        "index": view.index, "label": view.label,
        "random": bool(view.run.summary.get("random_weights")) or view.run.random_weights, "random_note": random_note,
        "facts": _facts(view), "settings": _settings(view),
        "warnings": [{"metric": m, "text": str(w)} for m, e in view.run.metrics.items()
                     for w in (e.get("warnings") or [])],
        "audit": _audit(view),
        "metrics": _metric_details(view, {m: headlines.get((view.label, m)) for m in view.run.metrics}),
        "top": [dict(t, worst=[{"row": rows[k], "value": v} for k, v in t["worst"]],
                     best=[{"row": rows[k], "value": v} for k, v in t["best"]]) for t in top],
        "columns": [{"metric": m, "name": c, "value": c == (spec.value_column or spec.primary),
                     "arrow": "↑" if spec.higher_is_better else "↓"} for m, c, spec in view.columns],
        "filters": _filters(rows),
        "rows": rows,
    }


def _filters(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The flag filter's options: every token (flag, reference flag, skipped) of the rows, with its count."""
    counts: dict[str, int] = {}
    for r in rows:
        for t in r["tokens"].split():
            counts[t] = counts.get(t, 0) + 1
    return [{"token": t, "count": n} for t, n in counts.items()]


def write_run_page(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, n_top: int = DEFAULT_N_TOP,
                   all_images: bool = False) -> Path:
    """Write the run's page, ``<run_dir>/report.html`` (or ``out``), with spectrograms for the clips shown at the top
    (``all_images``: for every clip) in ``report_files/`` beside it; returns its path. ``run_dir``: a finished run
    folder or its summary.json. Raises :class:`evalkit.report.RunFolderError` when it cannot be read."""
    from evalkit.report.rundir import load_run

    run = load_run(run_dir)
    return write_page([run], out if out is not None else run.path / PAGE_NAME, n_top=n_top, all_images=all_images)
