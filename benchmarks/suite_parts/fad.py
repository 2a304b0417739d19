"""FAD (VGGish), protocol ``frechet-audio-distance``: evalkit's run vs the PyPI package ``frechet_audio_distance``
0.3.4, same VGGish weights (random, seed 0), same files.

* reference: ``FrechetAudioDistance(model_name="vggish", use_pca=False, use_activation=False).score(ref_dir,
  gen_dir)`` with its defaults (8 loader threads: soundfile, channel mean, resampy; then one VGGish call per file:
  torchvggish's numpy log-mel and the network on that file's 10 examples). Offline, its torch hub load of
  ``harritaylor/torchvggish`` is served the transcription in ``references/google_fad.py``. Its backbone time is
  the network's forward (``TorchVGGishVGG.forward``), its log-mel excluded.
* evalkit: the scoring stage on the same files (``FAD.update`` per batch of clips, ``compute``).
* floor: every VGGish forward evalkit ran (its log-mel examples, recorded), run again alone, back to back.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .common import Clock, Outcome, Recorder, score_with_evalkit

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = "frechet-audio-distance"


def _package(tmp: Path, model):
    """The package's FrechetAudioDistance (defaults) whose hub load builds torchvggish with ``model``'s weights, and
    the module whose ``TorchVGGishVGG`` the fake hub builds (its forward is the reference's backbone time)."""
    from frechet_audio_distance import FrechetAudioDistance

    from references import google_fad as ref

    repo = tmp / "torch_hub" / "harritaylor_torchvggish_master"
    channels = tuple(model.features[i].out_channels for i in (0, 3, 6, 11))
    hub = ref.write_fake_hub(repo, model.state_dict(), channels, model.embeddings[0].out_features)
    original = torch.hub.load
    torch.hub.load = lambda repo_or_dir, model, *a, **k: original(str(repo), model, source="local")
    try:
        return FrechetAudioDistance(ckpt_dir=str(tmp / "torch_hub"), model_name="vggish", sample_rate=16000,
                                    use_pca=False, use_activation=False, verbose=False), hub
    finally:
        torch.hub.load = original


class FadPart:
    name = "fad"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.fad import FAD
        from evalkit.spec import recipe_from_files

        t0 = time.perf_counter()
        overrides = {"batch_size": batch} if batch else {}
        self.recipe = recipe_from_files("fad", PROTOCOL, model_size=size, checkpoint="random", random_seed=0,
                                        backbone_weights="random", reference_stats=None, postprocess="none",
                                        **overrides)
        self.metric = FAD(self.recipe, device=device)
        self.package, hub = _package(tmp, self.metric.embedder.network)
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        self.clock = Clock()
        self.clock.patch(hub.TorchVGGishVGG, "forward")  # the class the package's hub load instantiated
        self.recorder = Recorder(self.metric.embedder.network, "forward")

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"VGGish ({self.metric.embedder.weights.model_size}), random weights seed 0",
                "evalkit_vggish_batch": self.metric.embedder.batch_size,
                "reference": "frechet_audio_distance 0.3.4 FrechetAudioDistance.score (defaults: 8 loader threads, "
                             "one VGGish call per file)",
                "build_s": round(self.build_s, 2)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def warm_up(self) -> None:
        """One file each, untimed (resampy's and numba's compilation, oneDNN primitives)."""
        from frechet_audio_distance.utils import load_audio_task

        first = str(self.clips.gen(self.clips.ids[0]))
        self.package.get_embeddings([load_audio_task(first, 16000, 1, "float32")], sr=16000)
        from evalkit.audio import load_audio
        from evalkit.metrics.base import Clip

        wav, sr = load_audio(first)
        self.metric.update([Clip("warm", "", wav, sr, wav, sr)])
        self.metric.reset()

    def reference(self) -> Outcome:
        self.clock.reset()
        t0 = time.perf_counter()
        value = self.package.score(str(self.clips.ref_dir), str(self.clips.gen_dir))
        return Outcome(time.perf_counter() - t0, float(value), self.clock.seconds)

    def evalkit(self) -> Outcome:
        self.recorder.calls.clear()
        self.recorder.active = True
        try:
            seconds, values = score_with_evalkit(self.metric, self.clips, batch=8)
        finally:
            self.recorder.active = False
        return Outcome(seconds, float(values["fad"]), extra={"forward_calls": len(self.recorder.calls)})

    def floor(self) -> Outcome:
        return Outcome(self.recorder.replay())
