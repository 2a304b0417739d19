"""Reading finished run folders (read-only): ``summary.json``, ``clips.parquet``, ``embeddings/*.npz``, ``stats/*.npz``.

The report never writes into a run folder (but for the run's look-and-listen page, ``report.html`` and its
``report_files/``: :mod:`evalkit.report.html`) and never imports the run pipeline or a metric backbone: it needs only
numpy, pandas and (for plots and pages) matplotlib, Pillow, soundfile and Jinja2, so a CI job can report on a run made
elsewhere.

Every fact about a metric (direction, card column, decimals, tolerance, per-clip columns, aggregation, arrays) is
read from its ``spec`` block in ``summary.json`` (:class:`evalkit.metrics.spec.MetricSpec`, written by the run);
nothing here names a metric. A summary whose computed metrics carry no ``spec`` (an older evalkit) is refused
(:class:`RunFolderError`, "re-run it"). A metric entry is in one of three states: a ``value``; ``error`` (asked for,
could not be computed; its ``spec`` is there); ``skipped`` (not applicable to this run, e.g. chroma of a text-only
run; no ``spec``).

Finding runs (:func:`scan_runs`, :func:`load_runs`): a path is a run folder (it holds ``summary.json``), a
``summary.json``, or a folder searched recursively for run folders (folders holding ``summary.json``,
``manifest.json`` or ``config.yaml``; hidden folders and folders inside a run folder are not searched). A folder
that cannot be read is *skipped* with its reason (:class:`SkippedFolder`) instead of stopping the others: no
summary.json (then ``manifest.json`` says why: the run failed, with its error, was interrupted, or is still running;
without one it is not a run folder), unreadable JSON, or an older summary format.

Per-clip arrays (``embeddings/**/*.npz``), e.g. a Fréchet metric's ``spec.arrays`` (``[windows, dim]`` each).
:func:`load_clip_arrays` accepts every layout a run can reasonably write, in any number of npz files (shards,
resumed chunks):

- key ``"<clip id>/<column>"`` (the run's layout, e.g. ``"-0Gj8-vB1q4/fad_gen_emb"``), or ``"<column>/<clip id>"``;
- key ``"<column>"`` alone in a per-clip file ``embeddings/<clip id>.npz``;
- the column with or without a leading ``_`` (older runs wrote ``"<clip id>/_fad_gen_emb"``).
A clip id seen twice with different arrays is an error (two runs mixed in one folder); identical repeats are fine.

Reference statistics (``stats/*.npz``, e.g. ``stats/<metric>_reference.npz`` with ``ref_n``/``ref_sum``/
``ref_sum_outer`` and ``mu``/``sigma``; or, when the run was scored against a statistics file, the file
``config.yaml`` names as ``reference.stats``): :func:`load_reference_stats` reads :class:`GaussianStats` states
(``<prefix>n``, ``<prefix>sum``, ``<prefix>sum_outer``, as ``GaussianStats.state(prefix)`` writes them; prefixes
naming the generated side are ignored) or a ``mu``/``sigma`` (or ``cov``) pair.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from evalkit.metrics.spec import MetricSpec

#: Files that mark a folder as a run folder (a finished run has all three).
RUN_MARKERS = ("summary.json", "manifest.json", "config.yaml")
#: The channel view of a summary that does not say (summaries before ``channel_view`` were mono).
DEFAULT_CHANNEL_VIEW = "mono"
#: Why a file given outside any run folder is skipped.
NOT_A_SUMMARY = "not a summary.json"


class RunFolderError(ValueError):
    """A path is not a run folder, or a run folder is incomplete, inconsistent or in an older format."""


@dataclass(frozen=True)
class SkippedFolder:
    """A folder the report could not read, and why (shown on stderr and under the markdown table)."""

    path: Path
    reason: str
    #: the run folder ``path`` lies inside, when it does
    owner: Path | None = None
    #: what is named instead of ``path`` (several paths inside one run folder)
    label: str | None = None

    def __str__(self) -> str:
        return f"{self.label or self.path}: {self.reason}"


def check_summary(summary: Any, source: str | os.PathLike) -> dict[str, Any]:
    """``summary`` if it is a summary this report can read; else :class:`RunFolderError` naming ``source``.

    Refused: not an object with a ``metrics`` object, or a metric with a value or an error but no ``spec`` block
    (a summary written by an evalkit older than :class:`MetricSpec`)."""
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise RunFolderError(f"{source}: not an evalkit summary (expected an object with a 'metrics' object)")
    old = [m for m, e in (summary.get("metrics") or {}).items()
           if isinstance(e, dict) and not e.get("skipped") and not isinstance(e.get("spec"), dict)]
    if old:
        raise RunFolderError(
            f"{source}: written by an older evalkit (no 'spec' block for {', '.join(old)}); re-run it with this "
            "evalkit (the generation and score caches make that quick) to report or compare it")
    return summary


@dataclass
class RunRecord:
    """One finished run folder, read lazily. ``path`` is the folder (for a bare summary.json: its parent).

    (Named apart from the pipeline's run: this is the report's read-only record of a run's outputs.)"""

    path: Path
    summary: dict[str, Any]
    summary_file: Path = field(repr=False, default=None)  # type: ignore[assignment]

    # -- identity --------------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """evalkit's model name (``summary.model.name``; the folder name when absent)."""
        model = self.summary.get("model") or {}
        if isinstance(model, str):
            return model
        return str(model.get("name") or self.path.name)

    @property
    def label(self) -> str:
        """The run's name in tables, plots and compare output: ``summary.model.label`` (``model.label``; a folder
        run's default is its folder's name), else :attr:`model_name` (summaries before it)."""
        model = self.summary.get("model") or {}
        return str((model.get("label") if isinstance(model, dict) else None) or self.model_name)

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face repository of the checkpoint, or None (random or local weights)."""
        model = self.summary.get("model") or {}
        return None if isinstance(model, str) else model.get("hub_id")

    @property
    def model_random(self) -> bool:
        """True when the generating model had random weights."""
        model = self.summary.get("model") or {}
        return bool(not isinstance(model, str) and model.get("random_weights"))

    @property
    def random_metrics(self) -> list[str]:
        """Metrics whose backbone had random weights."""
        return [m for m, e in self.metrics.items() if isinstance(e, dict) and e.get("random_weights")]

    @property
    def random_weights(self) -> bool:
        """True when any number of this run comes from random weights (the model's or a metric backbone's)."""
        return bool(self.summary.get("random_weights")) or self.model_random or bool(self.random_metrics)

    @property
    def channel_view(self) -> str:
        """The channel view the card's metrics were computed on (mono|left|right|mid|side; absent = mono)."""
        return str(self.summary.get("channel_view") or DEFAULT_CHANNEL_VIEW)

    @property
    def reference_set(self) -> dict[str, Any] | None:
        """``{"dir", "manifest_sha256", "n_ok"}`` of the MusicCaps reference set, or None (absent or unknown)."""
        ref = self.summary.get("reference_set")
        return dict(ref) if isinstance(ref, dict) else None

    # -- metrics ---------------------------------------------------------------------------------------------------
    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """``{name: entry}`` of summary.json, in the run's order (entries that are not objects dropped)."""
        return {k: v for k, v in (self.summary.get("metrics") or {}).items() if isinstance(v, dict)}

    @cached_property
    def specs(self) -> dict[str, MetricSpec]:
        """``{name: MetricSpec}`` of the metrics that carry a ``spec`` block (skipped metrics carry none)."""
        return {m: MetricSpec.from_dict(e["spec"]) for m, e in self.metrics.items() if isinstance(e.get("spec"), dict)}

    def spec(self, metric: str) -> MetricSpec | None:
        """The metric's spec as the run recorded it, or None (not in the run, or skipped without one)."""
        return self.specs.get(metric)

    def value(self, metric: str) -> float:
        """The headline value of ``metric`` (NaN when the run lacks it, could not compute it or skipped it)."""
        entry = self.metrics.get(metric)
        if entry is None:
            return float("nan")
        v = entry.get("value")
        spec = self.spec(metric)
        if v is None and spec is not None:
            v = (entry.get("values") or {}).get(spec.primary)
        try:
            v = float(v) if v is not None else float("nan")
        except (TypeError, ValueError):
            return float("nan")
        return v if math.isfinite(v) else float("nan")

    def note(self, metric: str) -> str:
        """Why ``metric`` has no value, in words (``"not computed: <error>"``, ``"not applicable: <reason>"``);
        ``""`` when it has one or the run did not ask for it."""
        entry = self.metrics.get(metric)
        if entry is None or math.isfinite(self.value(metric)):
            return ""
        if entry.get("skipped"):
            return f"not applicable: {entry['skipped']}"
        if entry.get("error"):
            return f"not computed: {entry['error']}"
        return "not computed: summary.json holds no value and no reason"

    def higher_is_better(self, metric: str) -> bool | None:
        """The direction from the metric's spec (None when the run holds no spec for it)."""
        spec = self.spec(metric)
        return None if spec is None else bool(spec.higher_is_better)

    # -- per-clip data ---------------------------------------------------------------------------------------------
    @cached_property
    def clips(self) -> pd.DataFrame:
        """``clips.parquet`` (an empty frame with an ``id`` column when the folder has none)."""
        p = self.path / "clips.parquet"
        if not p.is_file():
            return pd.DataFrame({"id": pd.Series([], dtype=str)})
        return pd.read_parquet(p)

    def clip_arrays(self, column: str) -> dict[str, np.ndarray]:
        """``{clip id: array}`` of one per-clip array (``spec.arrays``) under ``embeddings/``."""
        return load_clip_arrays(self.path / "embeddings", column)

    # the statistics' view of a run (evalkit.statistics.Source)
    def column(self, name: str) -> np.ndarray | None:
        """A per-clip column of ``clips.parquet`` as float64 (None when the run has no such column)."""
        return self.clips[name].to_numpy(np.float64) if name and name in self.clips.columns else None

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        return self.clip_arrays(name)

    def entry(self, metric: str) -> dict[str, Any]:
        """The metric's block of summary.json ({} when the run has none)."""
        return dict(self.metrics.get(metric) or {})

    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.yaml`` as plain data ({} when absent)."""
        p = self.path / "config.yaml"
        if not p.is_file():
            return {}
        import yaml

        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def reference_stats(self, dim: int | None = None, metric: str | None = None):
        """Reference statistics of a Fréchet metric: ``stats/*.npz`` of the run (``stats/<metric>*.npz`` first), else
        the file ``config.yaml`` names as ``reference.stats`` (a run scored against precomputed statistics exports
        none of its own). None when neither exists."""
        found = load_reference_stats(self.path / "stats", dim=dim, prefer=metric)
        if found is None:
            named = (self.config.get("reference") or {}).get("stats")
            if named and Path(str(named)).expanduser().is_file():
                found = load_reference_stats(Path(str(named)).expanduser(), dim=dim, prefer=metric)
        return found


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read one run folder (or its ``summary.json``). Raises :class:`RunFolderError` (no summary.json - with the
    reason from manifest.json -, invalid JSON, not a summary, older format)."""
    p = Path(path)
    if p.is_file():
        sp = p
    elif (p / "summary.json").is_file():
        sp = p / "summary.json"
    elif p.is_dir():
        raise RunFolderError(f"{p}: {why_no_summary(p)}")
    else:
        raise RunFolderError(f"{p}: no such run folder or summary.json")
    try:
        summary = json.loads(sp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{sp}: not valid JSON ({exc})") from exc
    return RunRecord(path=sp.parent, summary=check_summary(summary, sp), summary_file=sp)


# -- finding run folders ----------------------------------------------------------------------------------------------
def _process_gone(manifest: dict) -> bool:
    """True when the manifest names a process on this machine that no longer exists (a killed run)."""
    import platform

    pid = manifest.get("pid")
    if not isinstance(pid, int) or manifest.get("hostname") != platform.node():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by someone else
        return False
    return False


def why_no_summary(folder: Path) -> str:
    """Why ``folder`` has no summary.json, from its ``manifest.json`` (the run's status and error)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        if (folder / "config.yaml").is_file():
            return "no summary.json and no manifest.json (a run that stopped before its first stage, or not a run)"
        return "not a run folder (no summary.json, no manifest.json)"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        return f"no summary.json, and manifest.json is unreadable ({exc})"
    status = data.get("status") if isinstance(data, dict) else None
    if status == "failed":
        return f"failed run (manifest.json): {data.get('error') or 'no error recorded'}"
    if status == "interrupted":
        return f"unfinished: the run was {data.get('error') or 'interrupted; run the same command again to resume'}"
    if status == "running":
        since = f", started {data['start']}" if data.get("start") else ""
        if _process_gone(data):
            return (f"unfinished (manifest.json{since}): its process {data.get('pid')} on this machine is gone (killed?); "
                    f"run the same command again to resume it")
        return f"still running (manifest.json{since}): no summary.json yet"
    if status == "finished":
        return "manifest.json says finished, but summary.json is missing"
    return f"no summary.json (manifest.json status {status!r})"


def _candidates(root: Path) -> list[Path]:
    """Folders under ``root`` holding a run marker, outermost only, hidden folders not searched; sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(m in filenames for m in RUN_MARKERS):
            found.append(Path(dirpath))
            dirnames[:] = []  # a run folder's own folders (audio/, embeddings/, ...) are not runs
    return sorted(found)


def _run_folder_above(p: Path) -> Path | None:
    """The run folder (holding summary.json) that ``p`` lies inside, or None."""
    return next((a for a in p.resolve().parents if (a / "summary.json").is_file()), None)


def _scan_one(p: Path) -> tuple[list[Path], list[SkippedFolder]]:
    """Run folders and skipped folders for one path (see :func:`scan_runs`)."""
    if (p / "summary.json").is_file():
        return [p], []
    if p.is_file():
        owner = _run_folder_above(p)
        if p.name == "summary.json":
            return [p.parent], []
        if p.suffix == ".json" and owner is None:  # a summary saved under another name: load_run checks it
            return [p], []
        return [], [SkippedFolder(p, f"a file of the run folder {owner}, not its summary.json" if owner
                                  else NOT_A_SUMMARY, owner)]
    if not p.is_dir():
        return [], [SkippedFolder(p, "no such run folder or summary.json")]
    owner = _run_folder_above(p)
    if owner is not None:
        return [], [SkippedFolder(p, f"a folder inside the run folder {owner}, not a run", owner)]
    if any((p / m).is_file() for m in RUN_MARKERS):
        return [], [SkippedFolder(p, why_no_summary(p))]
    inner = _candidates(p)
    if not inner:
        return [], [SkippedFolder(p, "not a run folder, and no run folders under it (no summary.json or "
                                     "manifest.json here or below)")]
    return ([f for f in inner if (f / "summary.json").is_file()],
            [SkippedFolder(f, why_no_summary(f)) for f in inner if not (f / "summary.json").is_file()])


def scan_runs(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[SkippedFolder]]:
    """``(run folders, skipped folders)`` named by ``paths`` (see the module doc). Never raises for a bad path.

    A path is a run folder, its summary.json (or a summary saved as another ``.json`` file), or a folder searched
    recursively. Skipped, with the reason: a missing path, a file or folder inside a run folder, a folder without
    summary.json (the reason from its manifest.json), a folder with no run folders under it.
    Order: as given; run folders found inside one folder are sorted by path. Duplicates are dropped. What a glob
    adds is named at most once per folder (:func:`_collapse_inside_reported`): nothing for the files and folders
    inside a run folder that is itself reported (``outputs/*/*`` matches its summary.json), one entry for several
    paths inside a run folder that is not, one for several non-summary files in one folder."""
    found: list[Path] = []
    skipped: list[SkippedFolder] = []
    for raw in paths:
        f, s = _scan_one(Path(raw))
        found += f
        skipped += s
    found = _unique(found)
    return found, _collapse_inside_reported(skipped, found)


def _collapse_inside_reported(skipped: list[SkippedFolder], found: list[Path]) -> list[SkippedFolder]:
    """At most one entry per folder for what a glob adds: paths inside a run folder that is itself reported are
    dropped (``outputs/*/*`` matches a run's summary.json and its other files: the run is reported, once); several
    paths inside a run folder that is not reported are one entry naming it; several files outside any run folder
    that are not summaries (e.g. a report's own output folder under ``outputs/``) are one entry per folder."""
    reported = {f.resolve() if f.is_dir() else f.resolve().parent for f in found}

    def folder_of(s: SkippedFolder) -> tuple[str, Path] | None:
        if s.owner is not None:
            return "run", s.owner.resolve()
        return ("files", s.path.parent.resolve()) if s.reason == NOT_A_SUMMARY else None

    groups: dict[tuple[str, Path], list[SkippedFolder]] = {}
    for s in skipped:
        if folder_of(s) is not None:
            groups.setdefault(folder_of(s), []).append(s)
    out: list[SkippedFolder] = []
    for s in skipped:
        key = folder_of(s)
        if key is not None and key[0] == "run" and key[1] in reported:
            continue  # the run folder is reported: the paths inside it are no news
        if key is None or len(groups[key]) == 1:
            out.append(s)
            continue
        if s is not groups[key][0]:
            continue  # named in the entry of its folder's first path
        names = [g.path.name for g in groups[key]]
        listed = f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
        if key[0] == "run":
            out.append(SkippedFolder(s.owner, "pass the run folder itself (a glob one level too deep?)", s.owner,
                                     label=f"{len(names)} paths inside the run folder {s.owner} {listed}"))
        else:
            out.append(SkippedFolder(s.path.parent, NOT_A_SUMMARY,
                                     label=f"{len(names)} files in {s.path.parent} {listed}, none of them"))
    return out


def _unique(paths: list[Path]) -> list[Path]:
    out, seen = [], set()
    for f in paths:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            out.append(f)
    return out


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The run folders named by ``paths`` (see :func:`scan_runs`; folders without a readable summary are left out).

    Raises :class:`RunFolderError`, naming every skipped folder and its reason, when no run folder is found."""
    found, skipped = scan_runs(paths)
    if not found:
        raise RunFolderError("; ".join(str(s) for s in skipped) or "no paths given")
    return found


def load_runs(paths: Iterable[str | os.PathLike]) -> tuple[list[RunRecord], list[SkippedFolder]]:
    """``(runs read, folders skipped with their reasons)``: :func:`scan_runs`, then :func:`load_run` of each found
    folder; a summary that cannot be read (invalid JSON, older format) is skipped too. Never raises for a bad
    folder: the caller decides what no runs at all means."""
    found, skipped = scan_runs(paths)
    runs: list[RunRecord] = []
    for f in found:
        try:
            runs.append(load_run(f))
        except RunFolderError as exc:
            reason = str(exc)
            for prefix in (f"{f / 'summary.json'}: ", f"{f}: "):
                reason = reason[len(prefix):] if reason.startswith(prefix) else reason
            skipped.append(SkippedFolder(f, reason))
    return runs, skipped


# -- per-clip arrays ------------------------------------------------------------------------------------------------
def _match_key(key: str, column: str, stem: str) -> str | None:
    """The clip id that ``key`` holds ``column`` for, or None."""
    names = {column, column.lstrip("_"), "_" + column.lstrip("_")}
    parts = key.split("/")
    if len(parts) == 1:
        return stem if key in names else None
    if parts[-1] in names:
        return "/".join(parts[:-1])
    if parts[0] in names:
        return "/".join(parts[1:])
    return None


def load_clip_arrays(folder: str | os.PathLike, column: str) -> dict[str, np.ndarray]:
    """``{clip id: array}`` for ``column`` from every ``*.npz`` under ``folder`` (see the module doc for layouts)."""
    folder = Path(folder)
    out: dict[str, np.ndarray] = {}
    if not folder.is_dir():
        return out
    for f in sorted(folder.rglob("*.npz")):
        if f.name.startswith("."):  # an unfinished atomic write (".<name>.tmp-<pid>.npz")
            continue
        with np.load(f, allow_pickle=False) as z:
            for key in z.files:
                cid = _match_key(key, column, f.stem)
                if cid is None:
                    continue
                arr = z[key]
                if cid in out and not (out[cid].shape == arr.shape and np.array_equal(out[cid], arr)):
                    raise RunFolderError(f"{f}: clip {cid!r} has a second, different {column} array")
                out[cid] = arr
    return out


def load_reference_stats(folder: str | os.PathLike, dim: int | None = None, prefer: str | None = None):
    """The reference side's :class:`GaussianStats` (or a ``(mu, sigma)`` pair) from ``folder/*.npz`` (or one npz
    file), read by :func:`evalkit.statistics.stats_file.read_stats_file` (evalkit's files, fadtk-style ``mu`` +
    ``sigma``/``cov``, sums under any prefix); None if absent. Files whose name starts with ``prefer`` (the metric's
    name) come first; ``dim`` (if given) must match."""
    from evalkit.statistics.stats_file import StatsFileError, read_stats_file

    folder = Path(folder)
    if folder.is_file():
        files = [folder]
    elif folder.is_dir():
        files = sorted(f for f in folder.rglob("*.npz") if not f.name.startswith("."))
    else:
        return None
    if prefer:
        files.sort(key=lambda f: not f.stem.startswith(prefer))
    for f in files:
        try:
            found = read_stats_file(f)
        except StatsFileError:
            continue
        if dim is not None and found.dim != dim:
            continue
        return found.sums if found.sums is not None else (found.mu, found.sigma)
    return None
