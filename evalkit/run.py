"""One run: the stages of :mod:`evalkit.stages` composed, Hydra-free (``run(spec_or_cfg, out_dir)``).

inputs -> generation -> (prepare -> scoring, batch by batch) -> outputs, in one folder that is claimed first and
whose ``manifest.json`` says ``running``, ``finished`` or ``failed`` (with the error). Never loses work: every
stage writes atomically and resumes from what it finds (see each stage's module doc); a run killed at any point and
started again in the same folder ends with the numbers of an uninterrupted run, bit for bit.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from evalkit import distributed
from evalkit.spec import RunSpec
from evalkit.stages import RunError  # noqa: F401  (re-exported: evalkit.run.RunError)
from evalkit.stages import folder, generation, inputs, outputs, scoring
from evalkit.stages.outputs import RANDOM_WEIGHTS_NOTE, format_summary  # noqa: F401  (re-exported)

log = logging.getLogger("evalkit")


def resolve_device(spec: RunSpec, dist) -> str:
    """``device`` from the config (``auto``: cuda if available); under torchrun on GPUs each rank takes
    ``cuda:LOCAL_RANK``."""
    import torch

    dev = str(spec.device)
    if dist.world > 1 and dev in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{dist.local_rank}"
    if dev in ("auto", "None", ""):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def run(spec: RunSpec | Any, out_dir: str | Path) -> dict[str, Any]:
    """Run ``spec`` (a :class:`RunSpec`, or a composed Hydra config) into ``out_dir``; returns the summary
    (``{}`` on ranks other than 0)."""
    import torch

    from evalkit.backbones.base import reuse_freed_memory

    reuse_freed_memory()  # before any thread picks a malloc arena (backbones/base.py)
    spec = spec if isinstance(spec, RunSpec) else RunSpec.from_config(spec)
    out = Path(out_dir)
    dist = distributed.init()
    start = time.time()
    device = resolve_device(spec, dist)
    folder.claim(spec, out, dist)
    dist.barrier()
    if dist.rank == 0:
        folder.write_manifest(spec, out, dist, torch.device(device), start, None, "running")
    try:
        summary = _stages(spec, out, dist, device)
    except BaseException as exc:
        if dist.rank == 0:
            folder.write_manifest(spec, out, dist, torch.device(device), start, time.time(), "failed",
                                  error=f"{type(exc).__name__}: {exc}")
        raise
    if dist.rank == 0:
        folder.write_manifest(spec, out, dist, torch.device(device), start, time.time(), "finished")
        try:  # the look-and-listen page (evalkit/report/html.py): a view of the finished run, never a reason to fail it
            from evalkit.report.html import write_run_page

            log.info("look and listen: %s", write_run_page(out))
        except Exception as exc:
            log.warning("could not write %s: %s: %s", out / "report.html", type(exc).__name__, exc)
    return summary


def _stages(spec: RunSpec, out: Path, dist, device: str) -> dict[str, Any]:
    ins = inputs.load_inputs(spec, out)
    gen = generation.build_generator(spec, device)
    gen_rows = generation.generate(spec, ins, gen, out, dist)
    metrics, skipped_metrics = scoring.build_metrics(spec, device)
    score_rows = scoring.Scorer(spec, metrics, out, dist).score(ins, gen_rows)
    if dist.rank != 0:
        return {}
    return outputs.write_outputs(spec, out, ins, gen, metrics, skipped_metrics, gen_rows, score_rows)
