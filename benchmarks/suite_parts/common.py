"""What every part of the full-size suite shares: clocks around backbone calls, the capture and replay of evalkit's
backbone inputs (the floor), and evalkit's side run exactly as a run scores (``evalkit.stages.scoring.Scorer``).

The reference side of each part is a transcription in ``references/`` (the repository root is on ``sys.path``:
``benchmarks/suite.py`` puts it there); nothing here imports ``tests/``."""
from __future__ import annotations

import functools
import os
import shutil
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
#: the warm-up's input: at most the first 10 s of a file (the parts with longer files would embed minutes of audio)
WARM_S = 10.0
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
    #: a part scoring several metrics in one stage: each one's headline value (``value`` stays None)
    values: dict[str, float] | None = None


def run_spec(recipes: dict[str, dict], batch: int, workers: int = 0, cache_dir: Path | None = None):
    """The :class:`RunSpec` of a folder-mode run scoring ``recipes`` (name -> recipe, each composed with postprocess
    ``none``), the run's audit, mono view, ``metric_batch_size = batch``, the score cache on only when ``cache_dir``
    is given."""
    from evalkit.spec import RunSpec

    return RunSpec(model={"name": "folder", "generator": "folder"}, dataset={}, generation={"duration": 10.0},
                   postprocess=POSTPROCESS_NONE, reference={}, metrics=dict(recipes),
                   cache={"scores": cache_dir is not None, "dir": str(cache_dir) if cache_dir else None},
                   metric_batch_size=int(batch), num_workers=int(workers), progress=False, audit=AUDIT)


def random_recipe(name: str, protocol: str, size: str, batch: int | None = None, **settings) -> dict:
    """The recipe of metric ``name`` with ``protocol`` as the suite runs it: random weights of ``size`` (seed 0),
    postprocess ``none``, ``batch_size`` when given (else the recipe's), then ``settings``."""
    from evalkit.spec import recipe_from_files

    return recipe_from_files(name, protocol, model_size=size, checkpoint="random", random_seed=0,
                             backbone_weights="random", postprocess="none",
                             **({"batch_size": batch} if batch else {}), **settings)


def score_with_evalkit(metric, clips, batch: int, workers: int = 0, cache_dir: Path | None = None,
                       references: bool = True) -> tuple[float, dict]:
    """evalkit's side: the run's scoring stage (``Scorer.score``: prefetching workers that read, audit and
    prepare batch i+1 while the metric updates on batch i, rows and statistics written per batch) on the files of
    ``clips``, then ``compute()``. ``metric``: one metric, or a list of metrics scored in the same stage (each file
    decoded once, as a run with several metrics does). ``references=False``: no reference folder (a metric without a
    reference, run as its user runs it). Returns (seconds, the metric's values; for a list: name -> values)."""
    from evalkit.data.prompts import Prompt
    from evalkit.data.references import ReferenceSet
    from evalkit.distributed import Dist
    from evalkit.stages.inputs import Inputs
    from evalkit.stages.scoring import Scorer

    metrics = {m.name: m for m in (metric if isinstance(metric, (list, tuple)) else [metric])}
    spec = run_spec({k: m.recipe for k, m in metrics.items()}, batch, workers, cache_dir)
    prompts = [Prompt(cid, clips.captions[cid]) for cid in clips.ids]
    inputs = Inputs(prompts, ReferenceSet.from_dir(clips.ref_dir) if references else ReferenceSet.empty())
    gen_rows = {cid: {"audio_path": str(clips.gen(cid))} for cid in clips.ids}
    for m in metrics.values():
        m.reset()
    with tempfile.TemporaryDirectory(prefix="suite-run-") as out:
        t0 = time.perf_counter()
        Scorer(spec, metrics, Path(out), Dist()).score(inputs, gen_rows)
        values = {k: m.compute() for k, m in metrics.items()}
        seconds = time.perf_counter() - t0
    return seconds, values if isinstance(metric, (list, tuple)) else values[metric.name]


class Part:
    """evalkit's side and the floor as the parts built on :func:`score_with_evalkit` share them: ``self.metrics``
    (scored together in one scoring stage), ``self.recorders`` (label -> :class:`Recorder` of a backbone method whose
    calls during evalkit's run are replayed alone as the floor), ``self.clips``."""

    metrics: list
    recorders: dict[str, Recorder]
    clips: Any

    def n_items(self) -> int:
        return len(self.clips.ids)

    def warm_evalkit(self) -> None:
        """One update of every metric on the first generated file's first 10 s (as its own reference), then reset:
        untimed."""
        from evalkit.audio import load_audio
        from evalkit.metrics.base import Clip

        cid = self.clips.ids[0]
        wav, sr = load_audio(self.clips.gen(cid))
        wav = wav[..., :int(sr * WARM_S)]
        for m in self.metrics:
            m.update([Clip("warm", self.clips.captions[cid], wav, sr, wav, sr)])
            m.reset()

    def evalkit(self) -> Outcome:
        for r in self.recorders.values():
            r.calls.clear()
            r.active = True
        try:
            seconds, values = score_with_evalkit(list(self.metrics), self.clips, batch=8)
        finally:
            for r in self.recorders.values():
                r.active = False
        found = {m.name: float(values[m.name][m.spec.primary]) for m in self.metrics}
        calls = {k: len(r.calls) for k, r in self.recorders.items()}
        extra = {"forward_calls": calls if len(calls) > 1 else sum(calls.values())}
        if len(found) == 1:
            return Outcome(seconds, next(iter(found.values())), extra=extra)
        return Outcome(seconds, extra=extra, values=found)

    def floor(self) -> Outcome:
        return Outcome(sum(r.replay() for r in self.recorders.values()))


def enough_windows(clips, root: Path, dim: int, hop_s: float):
    """``clips``, or files made longer (:func:`suite_parts.data.longer_files`, under ``root``) when its 10 s files
    give fewer than 1.25 x ``dim`` windows (one every ``hop_s``) a side: a Fréchet distance's covariance needs at least
    ``dim`` embeddings (evalkit refuses fewer), and a margin keeps it away from rank deficiency."""
    from .data import longer_files

    return longer_files(clips, root, 1.25 * dim * hop_s / len(clips.ids))


def load_laion_clap(embedder, laion_model: torch.nn.Module) -> None:
    """evalkit's LAION-CLAP embedder given laion's own model's tensors, converted by name as a released checkpoint is
    (``ClapBackbone.load_weights``: the path of ``metrics.<m>.checkpoint=<file>``, its front-end tensors included)."""
    net = embedder.network
    embedder.backbone().load_weights(net, {k: v.detach().clone() for k, v in laion_model.state_dict().items()},
                                     "suite")
    net.front_end = net.front_end.to(embedder.device).eval()
    embedder._clap = None  # rebuilt around the converted network on first use


class ToolFolders:
    """Copies of the clip set's two folders for a tool that writes its caches beside the audio (fadtk and kadtk:
    ``convert/``, ``embeddings/``, ``stats/``); :meth:`clean` removes those before every round (the tool would reuse
    them), :meth:`embed_every_file` is the tools' per-file loop (``cache_embedding_file`` of every file, one
    process: their default pools would add a model load per worker on 2 cores)."""

    CACHES = ("convert", "embeddings", "stats", "kernel_stats")

    def __init__(self, clips, root: Path) -> None:
        self.root, self.dirs = root, {}
        for side, paths in (("gen", [clips.gen(c) for c in clips.ids]), ("ref", [clips.ref(c) for c in clips.ids])):
            self.dirs[side] = root / side
            self.dirs[side].mkdir(parents=True, exist_ok=True)
            for f in paths:
                shutil.copy(f, self.dirs[side] / f.name)

    def __getitem__(self, side: str) -> Path:
        return self.dirs[side]

    def clean(self) -> None:
        for d in self.dirs.values():
            for sub in self.CACHES:
                shutil.rmtree(d / sub, ignore_errors=True)

    def embed_every_file(self, loader) -> None:
        for d in (self.dirs["gen"], self.dirs["ref"]):
            for f in sorted(d.glob("*.*")):
                loader.cache_embedding_file(f)


class ToolPart(Part):
    """A part whose reference is fadtk's or kadtk's own per-file loop on copies of the clip set's folders
    (``self.folders``, a :class:`ToolFolders`): a fresh :meth:`loader` (its ``cache_embedding_file`` for every file,
    float16 ``.npy`` files), then :meth:`score` (the tool's number from the two folders' files); ``self.clock``
    times its backbone."""

    folders: ToolFolders
    clock: Clock

    def loader(self):
        raise NotImplementedError

    def score(self, loader) -> float:
        raise NotImplementedError

    def warm_up(self) -> None:
        """One 10 s file each, untimed (oneDNN primitives, the resampler's kernel)."""
        from evalkit.audio import load_audio, save_audio

        first = self.clips.gen(self.clips.ids[0])
        wav, sr = load_audio(first)
        warm = self.folders.root / "warm" / first.name
        save_audio(warm, wav[..., :int(sr * WARM_S)], sr)
        self.loader().cache_embedding_file(warm)
        self.warm_evalkit()

    def reference(self) -> Outcome:
        self.folders.clean()
        self.clock.reset()
        t0 = time.perf_counter()
        loader = self.loader()
        self.folders.embed_every_file(loader)
        value = float(self.score(loader))
        return Outcome(time.perf_counter() - t0, value, self.clock.seconds)


class FadtkPart(ToolPart):
    """:class:`ToolPart` with fadtk 1.1.0's ``FrechetAudioDistance(ml, audio_load_worker=1, load_model=False)``
    (``self.ml``: its model loader) and its ``score(baseline, eval)``."""

    def loader(self):
        from fadtk.fad import FrechetAudioDistance

        return FrechetAudioDistance(self.ml, audio_load_worker=1, load_model=False)

    def score(self, loader) -> float:
        return loader.score(str(self.folders["ref"]), str(self.folders["gen"]))


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def best(outcomes: list[Outcome]) -> Outcome:
    return min(outcomes, key=lambda o: o.seconds)
