"""CLAP text consistency, protocol ``audiocraft``: evalkit's run (transformers' ``ClapModel``) vs laion_clap's
``CLAP_Module`` per clip, with the same weights: laion's own HTSAT-base + roberta-base model is built by
``references/laion_clap_model.py`` (random init, seed 0) and its tensors are converted into evalkit's ``ClapModel`` the
way a released checkpoint is (``ClapBackbone.load_weights``), as ``tests/test_clap_backbone.py`` does.

* reference: per pair, as ``audiocraft/metrics/clap_consistency.py`` calls laion_clap: the generated file read with
  soundfile, ``convert_audio(wav, sr, 48000, 1)``, ``CLAP_Module.get_audio_embedding_from_data(wav,
  use_tensor=True)``, ``get_text_embedding([caption], tokenizer=..., use_tensor=True)`` (RoBERTa tokens padded to
  77), cosine (eps 1e-8); under ``torch.no_grad``. Its backbone time is ``CLAP.get_audio_embedding`` (torchlibrosa
  front end, HTSAT, projection) + ``CLAP.get_text_embedding`` (RoBERTa, projection).
* evalkit: the scoring stage on the same files (``ClapScore.update`` per batch, ``compute``).
* floor: every ``ClapEmbedder.embed_audio`` (front end, audio tower, projection) and text-tower call (RoBERTa,
  projection) evalkit ran, recorded, run again alone.
Both sides tokenise with the in-memory byte-level RoBERTa tokenizer (roberta-base's files cannot be downloaded here).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import Clock, Outcome, Recorder, score_with_evalkit

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = "audiocraft"


def _evalkit_metric(recipe: dict, laion_model, device: str):
    """``ClapScore`` whose ClapModel holds laion's tensors (converted by name, as from a released checkpoint)."""
    from evalkit.embeddings.clap import ClapNetwork
    from evalkit.metrics.clap import ClapScore

    metric = ClapScore(recipe, device=device)
    clap = metric.embedder.clap
    net = ClapNetwork(clap.model, clap.front_end, {})
    metric.embedder.backbone().load_weights(net, {k: v.detach().clone() for k, v in laion_model.state_dict().items()},
                                            "suite")
    clap.front_end = net.front_end.to(metric.device).eval()
    return metric


class ClapPart:
    name = "clap"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.spec import recipe_from_files

        from references.laion_clap_model import build_clap

        t0 = time.perf_counter()
        overrides = {"batch_size": batch} if batch else {}
        self.recipe = recipe_from_files("clap", PROTOCOL, model_size=size, checkpoint="random", random_seed=0,
                                        backbone_weights="random", postprocess="none", **overrides)
        self.metric = _evalkit_metric(self.recipe, *self._laion(size, build_clap), device)
        self.laion.model.to(self.metric.device)
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        emb = self.metric.embedder.clap
        self.audio_rec = Recorder(emb, "embed_audio")
        self.text_rec = Recorder(emb.model.text_model, "forward")

    def _laion(self, size: str, build_clap):
        from evalkit.embeddings.tokenizers import tiny_roberta_tokenizer

        self.tokenizer = tiny_roberta_tokenizer()
        model, cfg = build_clap(size, vocab_size=len(self.tokenizer) if size == "tiny" else None, seed=0)
        from references.laion_clap_model import clap_module

        self.laion = clap_module(model, cfg, self.tokenizer)
        self.clock = Clock()
        self.clock.patch(model, "get_audio_embedding")
        self.clock.patch(model, "get_text_embedding")
        return (model,)

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"CLAP HTSAT-base + roberta-base ({self.metric.embedder.weights.model_size}), "
                f"laion_clap's random init (seed 0) in both", "evalkit_clap_batch": self.metric.embedder.batch_size,
                "reference": "laion_clap CLAP_Module per clip (get_audio_embedding_from_data, get_text_embedding)",
                "build_s": round(self.build_s, 2)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def _tokens(self, captions):
        from evalkit.embeddings.tokenizers import encode_batch

        return encode_batch(self.tokenizer, captions, max_length=77, padding="max_length", truncation=True)

    def warm_up(self) -> None:
        with torch.no_grad():
            x = torch.zeros(1, 480000)
            self.laion.get_audio_embedding_from_data(x, use_tensor=True)
            self.laion.get_text_embedding(["warm up"], tokenizer=self._tokens, use_tensor=True)
            self.metric.embedder.clap.embed_audio([x[0]])
            self.metric.embedder.clap.embed_text(["warm up"])

    def reference(self) -> Outcome:
        from evalkit.audio import convert_audio, load_audio

        self.clock.reset()
        total = 0.0
        t0 = time.perf_counter()
        with torch.no_grad():
            for cid in self.clips.ids:
                wav, sr = load_audio(self.clips.gen(cid))
                wav = convert_audio(wav, sr, 48000, 1)
                a = self.laion.get_audio_embedding_from_data(wav, use_tensor=True)
                t = self.laion.get_text_embedding([self.clips.captions[cid]], tokenizer=self._tokens, use_tensor=True)
                total += float(F.cosine_similarity(a, t, dim=1, eps=1e-8).sum())
        return Outcome(time.perf_counter() - t0, total / len(self.clips.ids), self.clock.seconds)

    def evalkit(self) -> Outcome:
        for rec in (self.audio_rec, self.text_rec):
            rec.calls.clear()
            rec.active = True
        try:
            seconds, values = score_with_evalkit(self.metric, self.clips, batch=8)
        finally:
            self.audio_rec.active = self.text_rec.active = False
        return Outcome(seconds, float(values["clap"]), extra={"forward_calls": len(self.audio_rec.calls)})

    def floor(self) -> Outcome:
        model = self.metric.embedder.clap.model

        def text(**kwargs):
            F.normalize(model.text_projection(self.text_rec.original(**kwargs).pooler_output), dim=-1)
        return Outcome(self.audio_rec.replay() + self.text_rec.replay(text))
