"""FAD on ``clap-laion-music`` (fadtk's recipe, protocol ``clap-laion-music``): evalkit's run vs fadtk 1.1.0's own
per-file loop, the same LAION-CLAP HTSAT-base weights, the same files.

* weights: laion_clap's own ``CLAP`` (HTSAT-base + roberta, non-fusion: ``references/laion_clap_model.py``, seed 0)
  made trained-looking (``randomise``: a fresh bn0 makes every window's embedding nearly the same, and the FAD ~0),
  converted into evalkit's ``ClapModel`` by name as a released checkpoint is.
* reference: fadtk's ``FrechetAudioDistance(ml, audio_load_worker=1, load_model=False)``: ``cache_embedding_file``
  for every file of both folders in one process (its ``load_audio``: ``torchaudio.load``, channel mean, Kaiser
  ``Resample`` to 48 kHz, ``torchaudio.save`` to ``convert/``; ``CLAPLaionModel('music')``'s ``load_wav`` and
  ``_get_embedding``: int16 round trip, 10 s inputs every second, each through ``CLAP_Module
  .get_audio_embedding_from_data`` alone; the float16 ``.npy`` files), then ``score(baseline, eval)``. Its model is
  laion_clap's ``CLAP_Module`` around the laion model above (``references/fadtk.py: clap_laion_model``). Folders
  copied, fadtk's caches removed before each round. Its backbone time is ``CLAP.get_audio_embedding``. Needs
  torchaudio's load/save to work (torchcodec + FFmpeg).
* files: 512 dimensions need at least 512 windows a side, and the 32 pairs of 10 s give 320: the part scores
  longer files made of consecutive clips of the set (``data.longer_files``: 20 s for 32 pairs; for fewer pairs,
  longer files whose clips come back shifted), 1.25 x 512 windows a side or more. ``clips``: those files.
* evalkit: the scoring stage on the same files (``FAD.update`` per batch of clips, the windows of a batch through
  ``ClapModel`` ``batch_size`` at a time, ``compute``).
* floor: every ``ClapEmbedder.embed_audio`` call evalkit ran (front end, audio tower, projection), run again alone.
"""
from __future__ import annotations

import time
from pathlib import Path

from .common import Clock, FadtkPart, Recorder, ToolFolders, enough_windows, load_laion_clap, random_recipe

PROTOCOL = "clap-laion-music"


class FadClapMusicPart(FadtkPart):
    name = "fad_clap_music"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.fad import FAD

        from references.fadtk import clap_laion_model
        from references.laion_clap_model import build_clap, clap_module, randomise

        t0 = time.perf_counter()
        self.recipe = random_recipe("fad", PROTOCOL, size, batch)
        self.metric = FAD(self.recipe, device=device)
        emb = self.metric.embedder
        model, cfg = build_clap(size, "HTSAT-base", vocab_size=len(emb.tokenizer) if size == "tiny" else None, seed=0)
        randomise(model, 100)
        load_laion_clap(emb, model)
        self.ml = clap_laion_model(clap_module(model.to(emb.device), cfg, emb.tokenizer), "music")
        self.clips = enough_windows(clips, tmp / "clap-long", emb.dim, float(self.recipe["hop_s"]))
        self.build_s = time.perf_counter() - t0
        self.metrics = [self.metric]
        self.folders = ToolFolders(self.clips, tmp / "fadtk-clap")
        self.clock = Clock()
        self.clock.patch(model, "get_audio_embedding")
        self.recorders = {"audio": Recorder(emb.clap, "embed_audio")}

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"LAION-CLAP HTSAT-base ({self.metric.embedder.weights.model_size}), "
                f"laion_clap's init (seed 0) randomised (seed 100), in both",
                "evalkit_clap_batch": self.metric.embedder.batch_size,
                "reference": "fadtk 1.1.0: FrechetAudioDistance.cache_embedding_file per file (load_audio, "
                             "CLAPLaionModel('music').get_embedding: 10 s every 1 s, one per pass, .npy), one "
                             "process; score(baseline, eval)",
                "file_s": self.clips.seconds, "build_s": round(self.build_s, 2)}
