"""KAD on ``panns-cnn14-32k`` (kadtk's recipe, protocol ``panns-cnn14-32k`` of the KAD metric): evalkit's run vs kadtk
1.1.0's own per-file loop and ``KernelAudioDistance.score``, the same PANNs Cnn14 weights, the same files.

KAD, not FAD: fadtk 1.1.0 has no PANNs loader, kadtk's command (``python -m kadtk panns-cnn14-32k <baseline>
<eval>``) computes KAD unless told ``--fad``, and FAD on one 2048-d embedding per file needs more than 2,048 files a
side (32 pairs give a covariance of rank 31).

* weights: kadtk's own ``Cnn14`` (``references/kadtk.py: cnn14_32k``: initial weights from seed 0, BatchNorm
  statistics measured on synthetic tones and noise: with mean 0 / variance 1 every clip's embedding is nearly the
  same), its state dict loaded into evalkit's ``Cnn14`` as the released ``Cnn14_mAP=0.431.pth``'s ``"model"`` is
  (``PannsBackbone.load_weights``: its front-end tensors checked and used, the classifier dropped).
* reference: ``EmbeddingLoader(ml, audio_load_worker=1, load_model=False).cache_embedding_file`` for every file of
  both folders in one process (its ``load_audio``: ``torchaudio.load``, channel mean, Kaiser ``Resample`` to 32 kHz,
  ``torchaudio.save`` to ``convert/``; ``PANNsModel('cnn14-32k')``'s ``load_wav`` and ``get_embedding``: the
  ``"2048"`` output of the whole file, float16 ``.npy``), then ``KernelAudioDistance(ml, device).score(baseline,
  eval)`` (``calc_kernel_audio_distance``, median bandwidth, float32). Folders copied, kadtk's caches
  (``convert/``, ``embeddings/``, ``kernel_stats/``) removed before each round. Its backbone time is ``Cnn14.forward``
  (torchlibrosa front end included). Needs torchaudio's load/save to work (torchcodec + FFmpeg).
* evalkit: the scoring stage on the same files (``KAD.update`` per batch of clips, ``compute`` with per-clip KAD), the
  embedder's own batch (one file per pass on a CPU, as kadtk runs them, so the float16 embeddings are kadtk's bit
  for bit; ``conf/metrics/kad.yaml``'s ``batch_size: 128``, which a ``metrics=[kad]`` run gets, batches the files and
  moves a few float16 values one step: ``--batch fad_panns=128``).
* floor: every ``Cnn14`` forward evalkit ran (front end included), run again alone, back to back.
"""
from __future__ import annotations

import time
from pathlib import Path

from .common import Clock, Recorder, ToolFolders, ToolPart, random_recipe

PROTOCOL = "panns-cnn14-32k"


class FadPannsPart(ToolPart):
    name = "fad_panns"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.kad import KAD

        from references.kadtk import cnn14_32k, panns_model

        if size != "full":
            raise ValueError("fad_panns: full size only (kadtk's Cnn14 has no shrunken layout here)")
        t0 = time.perf_counter()
        self.recipe = random_recipe("kad", PROTOCOL, size, batch_size=batch)
        self.metric = KAD(self.recipe, device=device)
        emb = self.metric.embedder
        model = cnn14_32k(seed=0)
        emb.backbone().load_weights(emb.network, {k: v.clone() for k, v in model.state_dict().items()}, "suite")
        emb.network.to(emb.device)
        self.ml = panns_model(model)
        self.device = device
        self.build_s = time.perf_counter() - t0
        self.clips, self.metrics = clips, [self.metric]
        self.folders = ToolFolders(clips, tmp / "kadtk-panns")
        self.clock = Clock()
        self.clock.patch(model, "forward")
        self.recorders = {"cnn14": Recorder(emb.network, "forward")}

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "metric": "kad", "backbone": "PANNs Cnn14 32 kHz (full), kadtk's init (seed 0) "
                "in both", "evalkit_batch": self.metric.embedder.batch_size,
                "reference": "kadtk 1.1.0: EmbeddingLoader.cache_embedding_file per file (load_audio, "
                             "PANNsModel('cnn14-32k').get_embedding, .npy), one process; "
                             "KernelAudioDistance.score(baseline, eval)",
                "build_s": round(self.build_s, 2)}

    def loader(self):
        from kadtk.emb_loader import EmbeddingLoader

        return EmbeddingLoader(self.ml, audio_load_worker=1, load_model=False)

    def score(self, loader) -> float:
        import logging

        from kadtk.kad import KernelAudioDistance

        kad = KernelAudioDistance(self.ml, self.device, audio_load_worker=1, logger=logging.getLogger("kadtk"))
        return float(kad.score(str(self.folders["ref"]), str(self.folders["gen"])))
