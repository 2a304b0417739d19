"""stable-audio-metrics as one run (``metrics=stable-audio-metrics``: FD_openl3, KL_passt, CLAP score) vs
Stability-AI/stable-audio-metrics' own loops (``references/stable_audio_metrics.py``: ``src/openl3_fd.py``,
``src/passt_kld.py``, ``src/clap_score.py``, transcribed), the same weights, the same files.

* weights: OpenL3 (mel256, music, 512 a channel): evalkit's random weights (seed 0) loaded into torchopenl3 1.0.1's
  own ``PytorchOpenl3`` (the same layout). PaSST (``passt_s_swa_p16_128_ap476``, 10 s): evalkit's network (random,
  seed 0; its classifier heads scaled x10, as ``tests/test_kld_passt.py`` does, so that the label distributions are
  far from uniform) inside hear21passt's own ``base.get_basic_model(mode="logits")`` wrapper (its mel front end). CLAP
  (HTSAT-tiny + roberta, fusion ``aff_2d``): laion_clap's own ``CLAP`` (seed 0, made trained-looking by
  ``randomise``) converted into evalkit's ``ClapModel`` by name as a released checkpoint is; both sides tokenise with
  the tokenizer evalkit resolved (roberta-base's files cannot be downloaded here).
* files: FD_openl3's 1024 dimensions need at least 1024 frames a side, and the 32 pairs of 10 s give 672: the part
  scores longer files made of consecutive clips of the set (``data.longer_files``: 20 s for 32 pairs; for fewer
  pairs, longer files whose clips come back shifted), 1.25 x 1024 frames a side or more; all three metrics score them.
* reference, in one process, each script's loop on the folders: ``openl3_fd``'s ``extract_embeddings`` (the batched
  path, ``batching=4``: ``librosa.load``, pyloudnorm's peak, soxr to 44.1 kHz, torchopenl3's framing and resampy to
  48 kHz, left and right channels) of the generated then the reference folder, its statistics and
  ``calculate_frechet_distance``; ``passt_kld(ids, gen, ".flac", ref, ".wav")`` (``librosa.load`` at 32 kHz, peak,
  10 s windows every 5 s, batch 1); ``clap_score(id2text, gen)`` (caption embeddings in batches of 64, then per clip
  ``librosa.load`` at 48 kHz, peak, int16 round trip, laion's fusion input, the audio embedding, cosine), numpy
  seeded per clip as evalkit's ``fusion_seed`` and torchvision's ``Resize`` without antialiasing as in
  stable-audio-metrics' pinned torchvision 0.16. Its backbone time: ``PytorchOpenl3.forward``, the PaSST wrapper's
  forward (mel + network), ``CLAP.get_audio_embedding`` and ``CLAP.get_text_embedding``.
* evalkit: the scoring stage with the three metrics (each file decoded once, each metric's input path from it),
  ``compute`` of each.
* floor: every OpenL3 and PaSST forward and every CLAP ``embed_features`` / ``embed_text`` call evalkit ran, run
  again alone, back to back.
"""
from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import torch

from .common import Clock, Outcome, Part, Recorder, enough_windows, load_laion_clap, random_recipe

PROTOCOL = "stable-audio-metrics"
METRICS = ("fd_openl3", "kl_passt", "clap_score")


class SamPart(Part):
    name = "sam"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.registry import get_metric

        t0 = time.perf_counter()
        self.metrics = []
        for name in METRICS:
            recipe = random_recipe(name, PROTOCOL, size, batch)
            self.metrics.append(get_metric(name, recipe)(recipe, device=device))
        openl3, passt, clap = (m.embedder for m in self.metrics)
        self.clips = enough_windows(clips, tmp / "sam-long", openl3.dim, float(openl3.config["hop_s"]))
        self.clock = Clock()
        self._reference_models(size, openl3, passt, clap)
        self.build_s = time.perf_counter() - t0
        self.recorders = {"openl3": Recorder(openl3.network, "forward"), "passt": Recorder(passt.network, "forward"),
                          "clap_audio": Recorder(clap.clap, "embed_features"),
                          "clap_text": Recorder(clap.clap, "embed_text")}

    def _reference_models(self, size: str, openl3, passt, clap) -> None:
        """torchopenl3's model, hear21passt's wrapper and laion's CLAP, each with the weights evalkit's embedder holds."""
        from evalkit.embeddings.openl3 import MODEL_SIZES

        from references.audiocraft_kld import passt_wrapper
        from references.laion_clap_model import LaionEmbedder, build_clap, randomise
        from references.stable_audio_metrics import torchopenl3_model

        self.openl3 = torchopenl3_model(MODEL_SIZES["tiny"] if size == "tiny" else None)
        self.openl3.load_state_dict(openl3.network.state_dict())
        self.openl3.to(openl3.device)
        net = passt.network.net
        with torch.no_grad():  # a random head gives near-uniform distributions and KLs at the float32 noise (~1e-4)
            net.head[1].weight.mul_(10.0)
            net.head_dist.weight.mul_(10.0)
        self.passt = passt_wrapper("base", net)[0].to(passt.device)
        forward = self.passt.forward
        self.passt.forward = lambda x: forward(x.to(passt.device))  # passt_kld hands it CPU tensors
        model, self.clap_cfg = build_clap(size, "HTSAT-tiny", vocab_size=len(clap.tokenizer) if size == "tiny" else None,
                                          seed=0, enable_fusion=True)
        randomise(model, 100)
        load_laion_clap(clap, model)
        self.clap = model.to(clap.device)
        self.clap_text = LaionEmbedder(model, self.clap_cfg, clap.tokenizer, device=clap.device).embed_text
        self.fusion_seed = clap.fusion_seed
        self.clock.patch(self.openl3, "forward")
        self.clock.patch(self.passt, "forward")
        self.clock.patch(model, "get_audio_embedding")
        self.clock.patch(model, "get_text_embedding")

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "metrics": list(METRICS), "backbone": "OpenL3 mel256/music, PaSST 10 s, CLAP "
                f"HTSAT-tiny fusion ({self.metrics[0].embedder.weights.model_size}; random: evalkit's seed 0 for "
                "OpenL3 and PaSST, laion's seed 0 randomised for CLAP)",
                "evalkit_batch": {m.name: m.embedder.batch_size for m in self.metrics},
                "reference": "stable-audio-metrics' loops (openl3_fd extract_embeddings batching 4 on torchopenl3, "
                             "passt_kld on hear21passt's wrapper, clap_score on laion_clap), one process",
                "file_s": self.clips.seconds, "build_s": round(self.build_s, 2)}

    def warm_up(self) -> None:
        """One short input through each reference model and each evalkit metric, untimed."""
        import numpy as np

        from references import stable_audio_metrics as sam

        x = np.zeros((1, 48000 * 2), np.float32)
        with torch.no_grad():
            self.openl3(torch.zeros(1, 1, 48000))
            self.passt(torch.zeros(1, 320000))
            sam.clap_audio_embedding(self.clap, self.clap_cfg, x, seed=self.fusion_seed)
            self.clap_text(["warm up"])
        self.warm_evalkit()

    def reference(self) -> Outcome:
        import torchvision

        from references import stable_audio_metrics as sam

        gen, ref, ids = self.clips.gen_dir, self.clips.ref_dir, self.clips.ids
        resize = torchvision.transforms.Resize  # stable-audio-metrics' torchvision 0.16: no antialiasing
        self.clock.reset()
        t0 = time.perf_counter()
        ev = sam.openl3_extract_embeddings(str(gen / "*.flac"), self.openl3)
        rf = sam.openl3_extract_embeddings(str(ref / "*.wav"), self.openl3)
        fd = sam.calculate_frechet_distance(*sam.calculate_embd_statistics(ev), *sam.calculate_embd_statistics(rf))
        kl, _ = sam.passt_kld(self.passt, ids, gen, ".flac", ref, ".wav")
        with mock.patch.object(torchvision.transforms, "Resize", lambda *a, **k: resize(*a, **{**k, "antialias": False})):
            score = sam.clap_score(self.clips.captions, str(gen), self.clap, self.clap_cfg, self.clap_text, ext=".flac",
                                   seed=self.fusion_seed)
        values = {"fd_openl3": float(fd), "kl_passt": float(kl), "clap_score": float(score)}
        return Outcome(time.perf_counter() - t0, backbone_s=self.clock.seconds, values=values)
