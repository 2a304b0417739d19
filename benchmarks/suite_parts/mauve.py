"""MAUVE on VGGish (protocol ``mauve-text``: mad-metric's recipe with VGGish in MERT-v1-330M's place): evalkit's
run vs mad-metric's own loop around ``mauve.compute_mauve``, same VGGish network object (random weights, seed 0),
same files.

* reference: ``mad_metric/compute_mad.py`` as written, MERT swapped for the embedder evalkit runs (MERT is blocked:
  its code is on the hub only): for each side, the files in sorted order (mad lists ``os.listdir``'s order; faiss's
  k-means depends on the rows' order, so the two sides are compared in one order), ``librosa.load(path, sr=16000)``
  (channel mean, soxr_hq), batches of 3 through the embedder, max over time; then ``mauve.compute_mauve(
  p_features=generated, q_features=reference)`` with its defaults. Its backbone time is the embedder's calls.
* evalkit: the scoring stage on the same files (``Mauve.update`` per batch of 8 pairs, the arrays handed back to
  ``compute``, which runs evalkit's MAUVE).
* floor: every VGGish forward evalkit ran (recorded), run again alone, back to back.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .common import Clock, Outcome, Recorder, score_with_evalkit

PROTOCOL = "mauve-text"
#: mad_metric compute_mad(batch_size=3)
MAD_BATCH = 3


class MauvePart:
    name = "mauve"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.mauve import Mauve
        from evalkit.spec import recipe_from_files

        t0 = time.perf_counter()
        overrides = {"batch_size": batch} if batch else {}
        self.recipe = recipe_from_files("mauve", PROTOCOL, model_size=size, checkpoint="random", random_seed=0,
                                        backbone_weights="random", postprocess="none", **overrides)
        self.metric = Mauve(self.recipe, device=device)
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        self.clock = Clock()
        self.embed = self.clock.wrap(self.metric.embedder.embed)
        self.recorder = Recorder(self.metric.embedder.network, "forward")
        self.statistic_s: dict[str, float] = {}

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"VGGish ({self.metric.embedder.weights.model_size}), random weights "
                f"seed 0, max over time", "reference": "mad_metric 0.0.6 featurize loop (librosa.load, batches of 3, "
                "max over time) with VGGish for MERT, then mauve-text 0.4.0 compute_mauve",
                "statistic_s": {k: round(v, 3) for k, v in self.statistic_s.items()}, "build_s": round(self.build_s, 2)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def warm_up(self) -> None:
        self.reference()

    def _featurize(self, paths: list[Path]) -> np.ndarray:
        import librosa

        sr = self.metric.embedder.sample_rate
        out, batch = [], []
        for i, path in enumerate(paths):
            audio, _ = librosa.load(str(path), sr=sr)
            batch.append(torch.from_numpy(audio))
            if len(batch) == MAD_BATCH or i == len(paths) - 1:
                out += [e.max(axis=0, keepdims=True) for e in self.embed(batch)]
                batch = []
        return np.concatenate(out)

    def reference(self) -> Outcome:
        import mauve

        self.clock.reset()
        t0 = time.perf_counter()
        p = self._featurize([self.clips.gen(c) for c in sorted(self.clips.ids)])
        q = self._featurize([self.clips.ref(c) for c in sorted(self.clips.ids)])
        t1 = time.perf_counter()
        value = mauve.compute_mauve(p_features=p, q_features=q).mauve
        self.statistic_s["reference"] = time.perf_counter() - t1
        return Outcome(time.perf_counter() - t0, float(value), self.clock.seconds)

    def evalkit(self) -> Outcome:
        from evalkit.statistics import mauve as stat

        original = stat.mauve
        seconds_in = {}

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                seconds_in["s"] = time.perf_counter() - t

        self.recorder.calls.clear()
        self.recorder.active = True
        import evalkit.metrics.mauve as metric_module

        metric_module.mauve = timed
        try:
            seconds, values = score_with_evalkit(self.metric, self.clips, batch=8)
        finally:
            self.recorder.active = False
            metric_module.mauve = original
        self.statistic_s["evalkit"] = seconds_in.get("s", float("nan"))
        return Outcome(seconds, float(values["mauve"]), extra={"forward_calls": len(self.recorder.calls)})

    def floor(self) -> Outcome:
        return Outcome(self.recorder.replay())
