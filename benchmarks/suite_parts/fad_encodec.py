"""FAD on ``encodec-emb`` (fadtk's recipe, protocol ``encodec-emb``): evalkit's run vs fadtk 1.1.0's own per-file
loop, the same EnCodec 24 kHz encoder weights (random, seed 0), the same files.

* reference: fadtk's ``FrechetAudioDistance(ml, audio_load_worker=1, load_model=False)``: ``cache_embedding_file``
  for every file of both folders in one process (its own ``load_audio``: ``torchaudio.load``, channel mean, Kaiser
  ``Resample``, ``torchaudio.save`` to ``convert/``; its ``EncodecEmbModel.load_wav`` and ``get_embedding``; the
  float16 ``.npy`` files), then ``score(baseline, eval)`` (``calculate_embd_statistics_online``,
  ``calc_frechet_distance``). Its model is the encodec package's ``EncodecModel.encodec_model_24khz(pretrained=False)``
  given evalkit's weights (renamed to encodec's layout: ``references/fadtk.py``). The folders are copies, their
  ``convert/``, ``embeddings/`` and ``stats/`` removed before each round (fadtk would reuse them).
  Its backbone time is the encoder's forward. Needs torchaudio's load/save to work (torchcodec + FFmpeg).
* evalkit: the scoring stage on the same files (``FAD.update`` per batch of clips, ``compute``).
* floor: every encoder forward evalkit ran, run again alone, back to back.
"""
from __future__ import annotations

import time
from pathlib import Path

from .common import Clock, FadtkPart, Recorder, ToolFolders, random_recipe

PROTOCOL = "encodec-emb"


class FadEncodecPart(FadtkPart):
    name = "fad_encodec"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.fad import FAD

        from references.fadtk import encodec_model

        t0 = time.perf_counter()
        self.recipe = random_recipe("fad", PROTOCOL, size, batch)
        self.metric = FAD(self.recipe, device=device)
        network = self.metric.embedder.network
        self.ml = encodec_model(network)
        self.build_s = time.perf_counter() - t0
        self.clips, self.metrics = clips, [self.metric]
        self.folders = ToolFolders(clips, tmp / "fadtk")
        self.clock = Clock()
        self.clock.patch(self.ml.model.encoder, "forward")
        self.recorders = {"encoder": Recorder(network, "forward")}

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"EnCodec 24 kHz encoder ({self.metric.embedder.weights.model_size}),"
                f" random weights seed 0", "evalkit_batch": self.metric.embedder.batch_size,
                "reference": "fadtk 1.1.0: FrechetAudioDistance.cache_embedding_file per file (load_audio, "
                             "EncodecEmbModel.get_embedding, .npy), one process; score(baseline, eval)",
                "build_s": round(self.build_s, 2)}
