"""One run: the stages of :mod:`evalkit.stages` composed, Hydra-free (``run(spec_or_cfg, out_dir)``).

inputs -> generation -> (decode -> input paths -> metrics, batch by batch) -> outputs, in one folder that is held (one run at a
time) and claimed first and whose ``manifest.json`` says ``running``, ``finished``, ``interrupted`` (Ctrl-C; with
what to do) or ``failed`` (with the error). Never loses work: every stage writes atomically and resumes from what it
finds (see each stage's module doc); a run killed at any point, or stopped by a full disk, and started again in the
same folder ends with the numbers of an uninterrupted run, bit for bit.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from evalkit import distributed
from evalkit.spec import RunSpec
from evalkit.stages import RunError  # also re-exported: evalkit.run.RunError
from evalkit.stages import folder, generation, inputs, outputs, scoring
from evalkit.stages.outputs import RANDOM_WEIGHTS_NOTE, format_summary  # noqa: F401  (re-exported)

log = logging.getLogger("evalkit")
#: manifest.json's ``error`` of a run stopped by Ctrl-C (SIGINT): not a failure, and what to do next
INTERRUPTED = ("interrupted (Ctrl-C / SIGINT); every finished clip and scored batch is kept: run the same command "
               "(the same run folder) again to resume")


def run(spec: RunSpec | Any, out_dir: str | Path) -> dict[str, Any]:
    """Run ``spec`` (a :class:`RunSpec`, or a composed Hydra config) into ``out_dir``; returns the summary
    (``{}`` on ranks other than 0). A write the disk refuses (full, read-only, no permission) raises
    :class:`RunError` naming the file and the fix (:func:`evalkit.stages.folder.disk_message`); what was finished
    before it is kept, and the same call after freeing space resumes with the numbers of an uninterrupted run."""
    from evalkit.cpu import reuse_freed_memory

    reuse_freed_memory()  # before any thread picks a malloc arena (evalkit/cpu.py)
    spec = spec if isinstance(spec, RunSpec) else RunSpec.from_config(spec)
    out = Path(out_dir)
    dist = distributed.init()
    try:
        return _run(spec, out, dist)
    except OSError as exc:
        message = folder.disk_message(exc, out)
        if message is None:
            raise
        raise RunError(message) from exc


def _run(spec: RunSpec, out: Path, dist) -> dict[str, Any]:
    """Hold and claim the folder, run the stages, keep manifest.json's status (running -> finished | interrupted |
    failed)."""
    import torch

    start = time.time()
    device = distributed.device_for(str(spec.device), dist)

    def manifest(status: str, end: float | None = None, error: str | None = None) -> None:
        if dist.rank == 0:
            folder.write_manifest(spec, out, dist, torch.device(device), start, end, status, error=error)

    with folder.hold(out, dist):  # one run at a time in a folder (rank 0 holds the lock)
        folder.claim(spec, out, dist)
        dist.barrier()
        manifest("running")
        try:
            summary = _stages(spec, out, dist, device)
        except BaseException as exc:
            status, error = (("interrupted", INTERRUPTED) if isinstance(exc, KeyboardInterrupt) else
                             ("failed", folder.disk_message(exc, out) or f"{type(exc).__name__}: {exc}"))
            try:
                manifest(status, time.time(), error)
            except OSError as why:  # the disk that failed the run may refuse the manifest too: the run's error wins
                log.warning("could not record status %r in %s (%s)", status, out / "manifest.json", why)
            raise
        manifest("finished", time.time())
        if dist.rank == 0:
            _write_page(out)
    return summary


def _write_page(out: Path) -> None:
    """The look-and-listen page (evalkit/report/html.py): a view of the finished run, never a reason to fail it."""
    try:
        from evalkit.report.html import write_run_page

        log.info("look and listen: %s", write_run_page(out))
    except Exception as exc:
        log.warning("could not write %s: %s: %s", out / "report.html", type(exc).__name__, exc)


def _stages(spec: RunSpec, out: Path, dist, device: str) -> dict[str, Any]:
    ins = inputs.load_inputs(spec, out)
    gen = generation.build_generator(spec, device)
    gen_rows = generation.generate(spec, ins, gen, out, dist)
    metrics, skipped_metrics = scoring.build_metrics(spec, device)
    score_rows = scoring.Scorer(spec, metrics, out, dist).score(ins, gen_rows)
    if dist.rank != 0:
        return {}
    return outputs.write_outputs(spec, out, ins, gen, metrics, skipped_metrics, gen_rows, score_rows)
