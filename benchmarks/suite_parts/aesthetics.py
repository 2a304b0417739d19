"""Audiobox Aesthetics, protocol ``audiobox-aesthetics``: evalkit's run vs the package's own loop, same network
weights (random, seed 0: evalkit's, saved as the package's ``checkpoint.pt``), same files.

* reference: ``audiobox_aesthetics.infer.AesPredictor(checkpoint_pth=...)`` and its ``forward`` on batches of 100
  files, as its CLI (``audio-aes --batch-size 100``, ``main_predict``) runs it: each file read with soundfile and
  passed as a tensor (its ``torchaudio.load`` needs torchcodec and FFmpeg on torchaudio >= 2.9), resampled per
  channel to 16 kHz, downmixed, cut into 10 s chunks, every chunk of the batch in one forward pass. Its backbone time
  is ``AesMultiOutput.forward``.
* evalkit: the scoring stage on the same files (``Aesthetics.update`` per batch of 8 clips, chunks 4 per forward
  pass; no reference folder: the metric has no reference), ``compute``.
* floor: every forward pass of evalkit's network (recorded), run again alone, back to back.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .common import Clock, Outcome, Recorder, score_with_evalkit

PROTOCOL = "audiobox-aesthetics"
#: the package CLI's --batch-size default (audiobox_aesthetics/cli.py)
PACKAGE_BATCH = 100


def _predictor(tmp: Path, emb):
    """``AesPredictor`` loading evalkit's weights from a checkpoint.pt in the package's format (its WavLM config set
    to the embedder's size when that is tiny)."""
    import audiobox_aesthetics.model.aes as aes
    from audiobox_aesthetics.infer import AesPredictor
    from audiobox_aesthetics.model.wavlm import WavLMConfig

    from evalkit.embeddings.aesthetics import AXES

    s = emb.shape
    cfg = dict(aes.DEFAULT_AUDIO_CFG.__dict__)
    cfg.update(conv_feature_layers=repr([tuple(layer) for layer in s.conv_layers]), encoder_layers=s.layers,
               encoder_embed_dim=s.dim, encoder_ffn_embed_dim=s.ffn_dim, encoder_attention_heads=s.heads,
               conv_pos=s.conv_pos, conv_pos_groups=s.conv_pos_groups)
    aes.DEFAULT_AUDIO_CFG = WavLMConfig(cfg)
    path = tmp / "aes-checkpoint.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in emb.network.state_dict().items()},
                "model_cfg": {"proj_num_layer": s.proj_num_layer, "proj_ln": s.proj_ln, "proj_act_fn": "gelu",
                              "proj_dropout": 0.0, "nth_layer": s.nth_layer, "use_weighted_layer_sum": True,
                              "precision": "32", "normalize_embed": s.normalize_embed, "output_dim": 1},
                "target_transform": {a: {"mean": m, "std": d} for a, (m, d) in zip(AXES, s.target_transform)}}, path)
    return AesPredictor(checkpoint_pth=str(path))


class AestheticsPart:
    name = "aesthetics"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.aesthetics import Aesthetics
        from evalkit.spec import recipe_from_files

        t0 = time.perf_counter()
        overrides = {"batch_size": batch} if batch else {}
        self.recipe = recipe_from_files("aesthetics", PROTOCOL, model_size=size, checkpoint="random",
                                        backbone_weights="random", postprocess="none", **overrides)
        self.metric = Aesthetics(self.recipe, device=device)
        self.predictor = _predictor(tmp, self.metric.embedder)
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        self.clock = Clock()
        self.clock.patch(self.predictor.model, "forward")
        self.recorder = Recorder(self.metric.embedder.network, "forward")

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": f"WavLM Base+ and 4 heads ({self.metric.embedder.weights.model_size}),"
                f" random weights seed 0", "evalkit_chunks_per_forward": self.metric.embedder.batch_size,
                "reference": f"audiobox_aesthetics 0.0.4 AesPredictor.forward per batch of {PACKAGE_BATCH} files (its "
                             "CLI's), every chunk of a batch in one forward pass; files read with soundfile",
                "build_s": round(self.build_s, 2)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def warm_up(self) -> None:
        from evalkit.audio import load_audio
        from evalkit.metrics.base import Clip

        wav, sr = load_audio(self.clips.gen(self.clips.ids[0]))
        self.predictor.forward([{"path": wav[:, :sr], "sample_rate": sr}])
        self.metric.update([Clip("warm", "", wav[:, :sr], sr)])
        self.metric.reset()

    def reference(self) -> Outcome:
        from evalkit.audio import load_audio

        self.clock.reset()
        t0 = time.perf_counter()
        rows = []
        for i in range(0, len(self.clips.ids), PACKAGE_BATCH):
            items = []
            for cid in self.clips.ids[i:i + PACKAGE_BATCH]:
                wav, sr = load_audio(self.clips.gen(cid))
                items.append({"path": wav, "sample_rate": sr})
            rows += self.predictor.forward(items)
        value = sum(r["PQ"] for r in rows) / len(rows)
        return Outcome(time.perf_counter() - t0, value, self.clock.seconds)

    def evalkit(self) -> Outcome:
        self.recorder.calls.clear()
        self.recorder.active = True
        try:
            seconds, values = score_with_evalkit(self.metric, self.clips, batch=8, references=False)
        finally:
            self.recorder.active = False
        return Outcome(seconds, float(values["pq"]), extra={"forward_calls": len(self.recorder.calls)})

    def floor(self) -> Outcome:
        return Outcome(self.recorder.replay())
