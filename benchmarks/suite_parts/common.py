"""What every part of the full-size suite shares: clocks around backbone calls, the capture and replay of evalkit's
backbone inputs (the floor), and evalkit's side run exactly as a run scores (``evalkit.stages.scoring.Scorer``).

The reference side of each part is a transcription in ``references/`` (the repository root is on ``sys.path``:
``benchmarks/suite.py`` puts it there); nothing here imports ``tests/``."""
from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

#: the run's audit settings (conf/config.yaml), references and generated clips audited as a run audits them
AUDIT = {"skip": ["non_finite", "silent", "constant", "unreadable", "clamped"], "silent_below_dbfs": -70.0,
         "constant_below_dbfs": -70.0, "clamped_share": 0.01, "dc_offset_dbfs": -30.0, "duration_s": 10.0,
         "duration_tolerance_s": 0.05}
#: conf/postprocess/none.yaml: the audio as written, which is what the reference tools read (each part's recipe is
#: composed with postprocess="none": its input path has no solver steps)
POSTPROCESS_NONE = {"name": "none", "reference": [], "generated": []}


class Clock:
    """Wall time spent inside wrapped calls (summed; calls are sequential in the reference tools)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def wrap(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - t0
                    self.calls += 1
        return timed

    def patch(self, obj: Any, name: str) -> Callable[[], None]:
        """Time ``obj.name`` (a method or function attribute) from now on; returns the undo."""
        original = getattr(obj, name)
        setattr(obj, name, self.wrap(original))
        return lambda: setattr(obj, name, original)


class Recorder:
    """Records the arguments of every call of ``obj.name`` (tensors cloned), to replay them alone: the floor."""

    def __init__(self, obj: Any, name: str) -> None:
        self.obj, self.name, self.calls = obj, name, []
        self.original = getattr(obj, name)
        self.active = False

        def record(*args, **kwargs):
            if self.active:
                self.calls.append((_clone(args), _clone(kwargs)))
            return self.original(*args, **kwargs)
        setattr(obj, name, record)

    def restore(self) -> None:
        setattr(self.obj, self.name, self.original)

    def replay(self, fn: Callable | None = None) -> float:
        """Seconds to run every recorded call again, back to back, through ``fn`` (default: the original)."""
        fn = fn or self.original
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            for args, kwargs in self.calls:
                fn(*args, **kwargs)
            sync()
            return time.perf_counter() - t0


def sync() -> None:
    """Wait for queued CUDA work (timings on a GPU); nothing on a CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


@dataclass
class Outcome:
    """One timed run of one contender."""

    seconds: float
    value: float | None = None
    backbone_s: float | None = None
    extra: dict = field(default_factory=dict)


def run_spec(name: str, recipe: dict, batch: int, workers: int = 0, cache_dir: Path | None = None):
    """The :class:`RunSpec` of a folder-mode run scoring one metric (``recipe``: composed with postprocess ``none``),
    the run's audit, mono view, ``metric_batch_size = batch``, the score cache on only when ``cache_dir`` is given."""
    from evalkit.spec import RunSpec

    return RunSpec(model={"name": "folder", "generator": "folder"}, dataset={}, generation={"duration": 10.0},
                   postprocess=POSTPROCESS_NONE, reference={}, metrics={name: recipe},
                   cache={"scores": cache_dir is not None, "dir": str(cache_dir) if cache_dir else None},
                   metric_batch_size=int(batch), num_workers=int(workers), progress=False, audit=AUDIT)


def score_with_evalkit(metric, clips, batch: int, workers: int = 0, cache_dir: Path | None = None,
                       references: bool = True) -> tuple[float, dict]:
    """evalkit's side: the run's scoring stage (``Scorer.score``: prefetching workers that read, audit and
    prepare batch i+1 while the metric updates on batch i, rows and statistics written per batch) on the files of
    ``clips``, then ``compute()``. ``references=False``: no reference folder (a metric without a reference, run
    as its user runs it). Returns (seconds, the metric's values)."""
    from evalkit.data.prompts import Prompt
    from evalkit.data.references import ReferenceSet
    from evalkit.distributed import Dist
    from evalkit.stages.inputs import Inputs
    from evalkit.stages.scoring import Scorer

    spec = run_spec(metric.name, metric.recipe, batch, workers, cache_dir)
    prompts = [Prompt(cid, clips.captions[cid]) for cid in clips.ids]
    inputs = Inputs(prompts, ReferenceSet.from_dir(clips.ref_dir) if references else ReferenceSet.empty())
    gen_rows = {cid: {"audio_path": str(clips.gen(cid))} for cid in clips.ids}
    metric.reset()
    with tempfile.TemporaryDirectory(prefix="suite-run-") as out:
        t0 = time.perf_counter()
        Scorer(spec, {metric.name: metric}, Path(out), Dist()).score(inputs, gen_rows)
        values = metric.compute()
        seconds = time.perf_counter() - t0
    return seconds, values


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def best(outcomes: list[Outcome]) -> Outcome:
    return min(outcomes, key=lambda o: o.seconds)
