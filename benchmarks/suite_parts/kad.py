"""KAD (VGGish), protocol ``kadtk``: evalkit's run vs kadtk 1.1.0's own loop, same VGGish weights (random, seed 0),
same files.

* reference: kadtk's per-file path for every file of both folders, in one process (one worker of its
  ``cache_embedding_files``; its default 8-process pool would add 8 model loads on 2 cores): ``EmbeddingLoader
  .load_audio`` written out in memory (its ``torchaudio.load``/``save`` need torchcodec on torchaudio >= 2.9: soundfile
  read, ``torch.mean(x, 0)``, its Kaiser ``Resample``, the 16-bit round trip; tests/test_kad_reference.py), then its
  own ``VGGishModel.get_embedding`` (torchvggish served through a fake torch hub with evalkit's weights, as
  tests/test_fad_parity.py does; float16), then ``calc_kernel_audio_distance(baseline, eval, (None, None), "cpu")``
  as ``KernelAudioDistance.score`` calls it. Its backbone time is the network's forward (``TorchVGGishVGG.forward``).
* evalkit: the scoring stage on the same files (``KAD.update`` per batch of clips, the arrays handed back, ``compute``
  with per-clip KAD).
* floor: every VGGish forward evalkit ran (its log-mel examples, recorded), run again alone, back to back.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .common import Clock, Outcome, Recorder, score_with_evalkit, test_module

PROTOCOL = "kadtk"


class KadPart:
    name = "kad"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.kad import KAD
        from evalkit.spec import recipe_from_files

        t0 = time.perf_counter()
        overrides = {"batch_size": batch} if batch else {}
        self.recipe = recipe_from_files("kad", PROTOCOL, model_size=size, checkpoint="random", random_seed=0,
                                        backbone_weights="random", postprocess="none", **overrides)
        self.metric = KAD(self.recipe, device=device)
        network = self.metric.embedder.network
        ref = test_module("test_kad_reference.py")
        self.load_audio = ref.kadtk_load_audio
        self.ml = ref.kadtk_model(tmp / "kadtk", _Patch(), network)
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        self.clock = Clock()
        import sys

        hub = sys.modules["evalkit_fad_numpy_reference"]  # the module the fake hub's vggish() builds from
        self.clock.patch(hub.TorchVGGishVGG, "forward")
        self.recorder = Recorder(network, "forward")

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"VGGish ({self.metric.embedder.weights.model_size}), random "
                f"weights seed 0", "evalkit_vggish_batch": self.metric.embedder.batch_size,
                "reference": "kadtk 1.1.0: load_audio (in memory) + VGGishModel.get_embedding per file, one process; "
                             "calc_kernel_audio_distance(baseline, eval)",
                "build_s": round(self.build_s, 2)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def warm_up(self) -> None:
        """One file each, untimed (oneDNN primitives, the resampler's kernel)."""
        from evalkit.audio import load_audio
        from evalkit.metrics.base import Clip

        first = self.clips.gen(self.clips.ids[0])
        self.ml.get_embedding(self.load_audio(first))
        wav, sr = load_audio(first)
        self.metric.update([Clip("warm", "", wav, sr, wav, sr)])
        self.metric.reset()

    def reference(self) -> Outcome:
        from kadtk.kad import calc_kernel_audio_distance

        self.clock.reset()
        t0 = time.perf_counter()
        sides = []
        for files in ([self.clips.ref(c) for c in self.clips.ids], [self.clips.gen(c) for c in self.clips.ids]):
            sides.append(torch.tensor(np.concatenate([self.ml.get_embedding(self.load_audio(f)) for f in files])))
        value = calc_kernel_audio_distance(sides[0], sides[1], (None, None), "cpu").item()
        return Outcome(time.perf_counter() - t0, float(value), self.clock.seconds)

    def evalkit(self) -> Outcome:
        self.recorder.calls.clear()
        self.recorder.active = True
        try:
            seconds, values = score_with_evalkit(self.metric, self.clips, batch=8)
        finally:
            self.recorder.active = False
        return Outcome(seconds, float(values["kad"]), extra={"forward_calls": len(self.recorder.calls)})

    def floor(self) -> Outcome:
        return Outcome(self.recorder.replay())


class _Patch:
    """What ``kadtk_model`` needs of pytest's monkeypatch: ``setattr`` (the suite keeps the served hub for its run)."""

    @staticmethod
    def setattr(obj, name, value) -> None:
        setattr(obj, name, value)
