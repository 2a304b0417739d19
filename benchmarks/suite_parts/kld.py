"""KLD (PaSST), protocol ``audiocraft`` (the 20 s PaSST, one row per 10 s clip): evalkit's run vs audiocraft's
clip-by-clip loop, same network object (random weights, seed 0), same files.

* reference: ``audiocraft/metrics/kld.py: PasstKLDivergenceMetric`` as ``references/audiocraft_kld.py`` transcribes it
  (``audiocraft_label_distribution``: ``convert_audio`` to 32 kHz mono, ``torch.split`` into 20 s chunks, each chunk
  through hear21passt's own ``get_basic_model(mode="logits")`` wrapper (its ``AugmentMelSTFT`` + the network) at
  batch 1, softmax; ``F.kl_div`` both ways), generated then reference clip of each pair, files read with soundfile.
  Its backbone time is the wrapper's forward (mel + network).
* evalkit: the scoring stage on the same files (``KLD.update`` per batch, ``compute``).
* floor: every ``PasstClassifier`` forward (mel + network) evalkit ran, recorded, run again alone, one after the
  other at torch's default threads (evalkit runs them side by side on the cores, one thread each: it can beat this).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import Clock, Outcome, Recorder, score_with_evalkit

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = "audiocraft"


def _package_wrapper(net: torch.nn.Module):
    """``hear21passt.base20sec.get_basic_model(mode="logits")`` around ``net`` (the network evalkit runs)."""
    from references.audiocraft_kld import passt_wrapper

    return passt_wrapper("base20sec", net)[0]


class KldPart:
    name = "kld"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.kld import KLD
        from evalkit.spec import recipe_from_files

        t0 = time.perf_counter()
        overrides = {"batch_size": batch} if batch else {}
        self.recipe = recipe_from_files("kld", PROTOCOL, model_size=size, checkpoint="random",
                                        backbone_weights="random", postprocess="none", **overrides)
        self.metric = KLD(self.recipe, device=device)
        self.wrapper = _package_wrapper(self.metric.embedder.network.net)
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        self.wrapper.to(self.metric.device)
        original = self.wrapper.forward
        dev = self.metric.device
        self.clock = Clock()
        self.wrapper.forward = self.clock.wrap(lambda x: original(x.to(dev)).cpu())  # audiocraft: model(wav.to(device))
        self.recorder = Recorder(self.metric.embedder.network, "forward")

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"PaSST {self.recipe['embedder']['arch']} ({self.metric.embedder.weights.model_size}), "
                f"random weights seed 0", "evalkit_passt_batch": self.metric.embedder.batch_size,
                "reference": "audiocraft PasstKLDivergenceMetric, clip by clip (hear21passt wrapper, batch 1)",
                "build_s": round(self.build_s, 2)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def warm_up(self) -> None:
        with torch.inference_mode():
            x = torch.zeros(1, 32000)
            self.wrapper(x)
            self.metric.embedder.network(x.to(self.metric.device))

    def reference(self) -> Outcome:
        from evalkit.audio import load_audio

        from references.audiocraft_kld import audiocraft_label_distribution as label_distribution

        self.clock.reset()
        pq = weight = 0.0
        t0 = time.perf_counter()
        for cid in self.clips.ids:
            pred, sr = load_audio(self.clips.gen(cid))
            target, rsr = load_audio(self.clips.ref(cid))
            n = target.shape[-1]
            p_pred = label_distribution(self.wrapper, pred, sr, n, False)
            p_tgt = label_distribution(self.wrapper, target, rsr, n, False)
            a = F.kl_div((p_pred + 1e-6).log(), p_tgt, reduction="none").sum(-1)
            pq += a.sum().item()
            weight += a.shape[0]
        return Outcome(time.perf_counter() - t0, pq / weight, self.clock.seconds)

    def evalkit(self) -> Outcome:
        self.recorder.calls.clear()
        self.recorder.active = True
        try:
            seconds, values = score_with_evalkit(self.metric, self.clips, batch=8)
        finally:
            self.recorder.active = False
        return Outcome(seconds, float(values["kld"]), extra={"forward_calls": len(self.recorder.calls)})

    def floor(self) -> Outcome:
        return Outcome(self.recorder.replay())
