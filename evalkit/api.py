"""The Python API: the same runs as the command line, from a notebook, a script or a training loop.

``evaluate(overrides | RunSpec, out_dir=None) -> summary``: exactly ``python -m evalkit <overrides>``.
``score(generated, reference=None, captions=None, metrics=("fad", "kld", "clap"), out_dir=None, **overrides)``:
score a folder of clips (``<id>.wav|flac|mp3|ogg``) against a folder of reference clips: folder mode
(``model=folder``), the same numbers as the command line on the same inputs.

Both return the run's ``summary.json`` as a dict and leave the run folder behind (every file a CLI run writes).
Errors: :class:`~evalkit.spec.SpecError` for any setting or input that cannot work (what the command line reports
with exit status 2), :class:`~evalkit.stages.RunError` for a run that cannot go on. A run whose numbers come from
random weights warns :class:`evalkit.RandomWeightsWarning` and logs it (the command line prints it above its table).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from evalkit import io as eio
from evalkit.overrides import path_override
from evalkit.overrides import value as override_value
from evalkit.spec import RunSpec, SpecError, compose

log = logging.getLogger("evalkit")


def _default_out_dir(cfg) -> Path:
    """Hydra's run folder for this config (``outputs/<model>/<time>``), resolved as the CLI would."""
    try:
        return Path(str(cfg.hydra.run.dir))
    except Exception:
        return Path("outputs") / "api" / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def evaluate(overrides: Sequence[str] | RunSpec = (), out_dir: str | Path | None = None) -> dict[str, Any]:
    """One run. ``overrides``: command-line overrides (``["model=small", "dataset.limit=100"]``) or a ready
    :class:`RunSpec`. ``out_dir``: the run folder (default: ``outputs/<model>/<time>`` as on the command line).
    Returns the summary (``summary.json``). Raises :class:`~evalkit.spec.SpecError` for an invalid setting or input
    (every error the command line reports with exit status 2: a prompts file, a clip or reference folder, a
    checkpoint; the original error is its ``__cause__``) and :class:`~evalkit.stages.RunError` for a run that cannot
    go on (both name the setting and the fix)."""
    if isinstance(overrides, RunSpec):
        spec = overrides
        out = Path(out_dir) if out_dir else Path("outputs") / str(spec.model.get("name")) / \
            _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    else:
        if isinstance(overrides, str):
            raise TypeError("evaluate(overrides): pass a list of overrides, e.g. ['model=small'], not one string")
        cfg = compose(list(overrides))
        spec = RunSpec.from_config(cfg)
        out = Path(out_dir) if out_dir else _default_out_dir(cfg)
    return _run(spec, out)


def _run(spec: RunSpec, out: Path) -> dict[str, Any]:
    """:func:`evalkit.run.run` with the errors this API documents: an input error of another type (``PromptError``,
    ``ReferenceError``, ``FolderError``, ``CheckpointError``, ...: an :class:`evalkit.errors.InputError`) is raised
    as a :class:`SpecError` with the same message, the original as its ``__cause__``."""
    from evalkit.errors import InputError
    from evalkit.run import run
    from evalkit.stages import RunError

    try:
        summary = run(spec, out)
    except (SpecError, RunError):
        raise
    except InputError as exc:
        raise SpecError(str(exc)) from exc
    if summary.get("random_weights"):
        _warn_random_weights(summary)
    return summary


def _warn_random_weights(summary: Mapping[str, Any]) -> None:
    """The command line prints RANDOM WEIGHTS above its table; from Python it is a log line and a
    :class:`evalkit.RandomWeightsWarning` pointing at the caller's line (the first frame outside evalkit)."""
    import sys
    import warnings

    from evalkit.errors import RandomWeightsWarning
    from evalkit.stages.outputs import RANDOM_WEIGHTS_NOTE

    text = f"{RANDOM_WEIGHTS_NOTE} (run folder {summary.get('run_dir')})"
    log.warning("%s", text)
    package, frame, level = str(Path(__file__).resolve().parent), sys._getframe(0), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(text, RandomWeightsWarning, stacklevel=level)


def _prompts_csv(generated: Path, captions, metrics: Sequence[str], folder: Path) -> Path:
    """A prompts file for exactly the clips of ``generated`` (ids from the file names), captions from ``captions``
    (a mapping or a prompts file); a clip without a caption is an error when clap needs it."""
    from evalkit.data.prompts import load_prompt_file
    from evalkit.data.references import ReferenceError, list_audio_files

    try:  # the clips folder mode will read (two files for one id: the command line's message)
        ids = sorted(list_audio_files(generated, f"score(generated={generated})")[0])
    except ReferenceError as exc:
        raise SpecError(str(exc)) from None
    if not ids:
        raise SpecError(f"score(generated={generated}): no audio files named <id>.wav|flac|mp3|ogg")
    if captions is None:
        table = {}
    elif isinstance(captions, Mapping):
        bad = [(k, v) for k, v in captions.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise SpecError(f"score(captions=...): a caption is a non-empty string; {len(bad)} are not "
                            f"(e.g. {bad[0][0]!r}: {bad[0][1]!r})")
        table = {str(k): v for k, v in captions.items()}
    elif not isinstance(captions, (str, os.PathLike)):
        raise SpecError(f"score(captions=...): expected {{id: caption}} or a prompts file path, got "
                        f"{type(captions).__name__}")
    elif Path(captions).suffix.lower() == ".txt":
        raise SpecError(f"score(captions={captions}): a .txt file is one caption a line, without ids, so it cannot "
                        f"be matched to the clips: pass {{id: caption}} or a .csv/.jsonl with id,caption")
    else:
        table = {p.id: p.caption for p in load_prompt_file(captions)}
    from evalkit.registry import get_metric

    from evalkit.registry import metric_names

    unknown = [m for m in metrics if m not in metric_names()]
    if unknown:
        raise SpecError(f"score(metrics={list(metrics)}): unknown {unknown}; known: {', '.join(metric_names())}")
    readers = [m for m in metrics if get_metric(m).spec.needs_captions]
    lacking = [i for i in ids if not table.get(i, "").strip()]
    if readers and lacking:
        raise SpecError(f"score(): the {', '.join(readers)} metric pairs each clip with its caption, and {len(lacking)} "
                        f"clips have none (e.g. {', '.join(lacking[:3])}): pass captions={{id: text}} or a prompts "
                        f"file (.csv/.jsonl with id,caption), or leave {', '.join(readers)} out of metrics")
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["id", "caption"])
    for i in ids:
        w.writerow([i, table.get(i) or i])  # without clap no metric reads the caption
    return eio.write_text(folder / "prompts.csv", text.getvalue())


def score(generated: str | Path, reference: str | Path | None = None, captions: Mapping[str, str] | str | Path | None = None,
          metrics: Sequence[str] = ("fad", "kld", "clap"), out_dir: str | Path | None = None,
          **overrides: Any) -> dict[str, Any]:
    """Score the clips in ``generated`` (``<id>.<ext>``) against ``reference`` (a folder of ``<id>.<ext>`` clips;
    None for metrics that need none, e.g. ``metrics=("clap",)``) with the model card's protocols.

    ``captions``: ``{id: caption}`` (non-empty strings), or a prompts file (``.csv``/``.jsonl`` with id,caption);
    needed by clap. ``metrics``: names, or one name. ``overrides``: any setting, e.g. ``backbone_weights="random"``,
    ``**{"metrics.fad.protocol": "frechet-audio-distance"}``; every path and value is quoted as Hydra's override
    grammar requires (:mod:`evalkit.overrides`), so any folder name works. Returns the summary; the run folder
    (default ``outputs/score/<time>``) holds clips.parquet and the rest."""
    from evalkit.io import folder_problem

    for name, value in (("generated", generated), ("reference", reference), ("out_dir", out_dir)):
        if not (value is None and name != "generated") and not isinstance(value, (str, os.PathLike)):
            raise SpecError(f"score({name}=...): expected a folder path, got {type(value).__name__} {value!r:.60}")
    if isinstance(metrics, str):
        metrics = [metrics]  # score(metrics="kld"): one metric, not the letters k, l, d
    generated = Path(generated).expanduser()
    problem = folder_problem(generated)
    if problem:
        raise SpecError(f"score(generated={generated}): {problem}")
    metrics = list(metrics)
    out = Path(out_dir) if out_dir else Path("outputs") / "score" / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        prompts = _prompts_csv(generated, captions, metrics, out / "inputs")
    except OSError as exc:  # the run folder cannot be written: what run() says of it
        from evalkit.stages import RunError
        from evalkit.stages.folder import disk_message

        message = disk_message(exc, out)
        if message is None:
            raise
        raise RunError(message) from exc
    # quoted as Hydra's override grammar requires: folder names with , = ( ' [ # or non-ASCII letters are paths too
    ov = ["model=folder", path_override("model.dir", generated), "dataset=prompts",
          path_override("dataset.path", prompts), f"metrics={override_value(metrics)}"]
    if reference is not None:
        ov.append(path_override("reference.dir", Path(reference).expanduser()))
    ov += [f"{k}={override_value(v)}" for k, v in overrides.items()]
    return evaluate(ov, out_dir=out)
