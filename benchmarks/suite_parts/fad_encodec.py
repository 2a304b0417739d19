"""FAD on ``encodec-emb`` (fadtk's recipe, protocol ``encodec-emb``): evalkit's run vs fadtk 1.1.0's own per-file
loop, the same EnCodec 24 kHz encoder weights (random, seed 0), the same files.

* reference: fadtk's ``FrechetAudioDistance(ml, audio_load_worker=1, load_model=False)``: ``cache_embedding_file``
  for every file of both folders in one process (its own ``load_audio``: ``torchaudio.load``, channel mean, Kaiser
  ``Resample``, ``torchaudio.save`` to ``convert/``; its ``EncodecEmbModel.load_wav`` and ``get_embedding``; the
  float16 ``.npy`` files), then ``score(baseline, eval)`` (``calculate_embd_statistics_online``,
  ``calc_frechet_distance``). Its model is the encodec package's ``EncodecModel.encodec_model_24khz(pretrained=False)``
  given evalkit's weights (renamed to encodec's layout as ``tests/test_fadtk_parity.py`` does). The folders are
  copies, their ``convert/``, ``embeddings/`` and ``stats/`` removed before each round (fadtk would reuse them).
  Its backbone time is the encoder's forward. Needs torchaudio's load/save to work (torchcodec + FFmpeg).
* evalkit: the scoring stage on the same files (``FAD.update`` per batch of clips, ``compute``).
* floor: every encoder forward evalkit ran, run again alone, back to back.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .common import Clock, Outcome, Recorder, score_with_evalkit, test_module

PROTOCOL = "encodec-emb"


class FadEncodecPart:
    name = "fad_encodec"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from encodec import EncodecModel
        from fadtk.model_loader import EncodecEmbModel

        from evalkit.metrics.fad import FAD
        from evalkit.spec import recipe_from_files

        t0 = time.perf_counter()
        overrides = {"batch_size": batch} if batch else {}
        self.recipe = recipe_from_files("fad", PROTOCOL, model_size=size, checkpoint="random", random_seed=0,
                                        backbone_weights="random", postprocess="none", **overrides)
        self.metric = FAD(self.recipe, device=device)
        network = self.metric.embedder.network
        layout = test_module("test_fadtk_parity.py").to_encodec_layout
        self.ml = EncodecEmbModel("24k")
        self.ml.model = EncodecModel.encodec_model_24khz(pretrained=False)
        self.ml.model.set_target_bandwidth(12)
        self.ml.model.encoder.load_state_dict(layout(network), strict=True)
        self.ml.model.eval()
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        self.dirs = {}
        for side, src in (("gen", clips.gen_dir), ("ref", clips.ref_dir)):
            dst = tmp / "fadtk" / side
            dst.mkdir(parents=True, exist_ok=True)
            for cid in clips.ids:
                f = clips.gen(cid) if side == "gen" else clips.ref(cid)
                shutil.copy(f, dst / f.name)
            self.dirs[side] = dst
        self.clock = Clock()
        self.clock.patch(self.ml.model.encoder, "forward")
        self.recorder = Recorder(network, "forward")

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"EnCodec 24 kHz encoder ({self.metric.embedder.weights.model_size}),"
                f" random weights seed 0", "evalkit_batch": self.metric.embedder.batch_size,
                "reference": "fadtk 1.1.0: FrechetAudioDistance.cache_embedding_file per file (load_audio, "
                             "EncodecEmbModel.get_embedding, .npy), one process; score(baseline, eval)",
                "build_s": round(self.build_s, 2)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def _clean(self) -> None:
        for d in self.dirs.values():
            for sub in ("convert", "embeddings", "stats"):
                shutil.rmtree(d / sub, ignore_errors=True)

    def warm_up(self) -> None:
        """One file each, untimed (oneDNN primitives, the resampler's kernel)."""
        from fadtk.fad import FrechetAudioDistance

        from evalkit.audio import load_audio
        from evalkit.metrics.base import Clip

        first = self.clips.gen(self.clips.ids[0])
        FrechetAudioDistance(self.ml, audio_load_worker=1, load_model=False).cache_embedding_file(
            self.dirs["gen"] / first.name)
        self._clean()
        wav, sr = load_audio(first)
        self.metric.update([Clip("warm", "", wav, sr, wav, sr)])
        self.metric.reset()

    def reference(self) -> Outcome:
        from fadtk.fad import FrechetAudioDistance

        self._clean()
        self.clock.reset()
        t0 = time.perf_counter()
        fad = FrechetAudioDistance(self.ml, audio_load_worker=1, load_model=False)
        for d in (self.dirs["gen"], self.dirs["ref"]):
            for f in sorted(d.glob("*.*")):
                fad.cache_embedding_file(f)
        value = float(fad.score(str(self.dirs["ref"]), str(self.dirs["gen"])))
        return Outcome(time.perf_counter() - t0, value, self.clock.seconds)

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
