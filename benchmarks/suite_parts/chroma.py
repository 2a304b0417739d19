"""Chroma cosine similarity, protocol ``audiocraft``: evalkit's run vs audiocraft's metric fed one pair per update
(no network: the "backbone" is the STFT and the chroma filter bank).

* reference: ``audiocraft/metrics/chroma_cosinesim.py: ChromaCosineSimilarityMetric`` with its ``ChromaExtractor``
  (``torchaudio.transforms.Spectrogram`` + librosa's filter bank), as ``references/audiocraft_chroma.py`` transcribes
  it line by line, one pair per update: both files read with soundfile, ``convert_audio`` to 32 kHz mono, chroma of the
  reference and of the generated clip, per-frame cosine over ``ceil(n / 4096)`` frames. Its backbone time is the
  extractor (spectrogram, filter bank, normalisation, one-hot).
* evalkit: the scoring stage on the same files (``ChromaCosineSimilarity.update`` per batch, ``compute``).
* floor: every ``ChromaFrontEnd.normalized_chroma`` call (STFT, filter bank, normalisation) evalkit made, recorded,
  run again alone, one after the other at torch's default threads.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .common import Clock, Outcome, Recorder, score_with_evalkit

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = "audiocraft"


def _transcription():
    from references.audiocraft_chroma import ChromaCosineSimilarity

    return ChromaCosineSimilarity()


class ChromaPart:
    name = "chroma"

    def __init__(self, clips, tmp: Path, size: str, batch: int | None, device: str) -> None:
        from evalkit.metrics.chroma import ChromaCosineSimilarity
        from evalkit.spec import recipe_from_files

        t0 = time.perf_counter()
        self.recipe = recipe_from_files("chroma", PROTOCOL, postprocess="none",
                                        **({"batch_size": batch} if batch else {}))
        self.metric = ChromaCosineSimilarity(self.recipe, device=device)
        self.audiocraft = _transcription()
        self.build_s = time.perf_counter() - t0
        self.clips = clips
        self.clock = Clock()
        self.clock.patch(self.audiocraft, "extract")
        self.recorder = Recorder(self.metric.front, "normalized_chroma")

    def info(self) -> dict:
        return {"protocol": PROTOCOL, "backbone": "STFT (n_fft 16384, hop 4096) + librosa chroma filter bank",
                "evalkit_chroma_batch": self.metric.batch_size,
                "reference": "audiocraft ChromaCosineSimilarityMetric (torchaudio Spectrogram), one pair per update",
                "build_s": round(self.build_s, 3)}

    def n_items(self) -> int:
        return len(self.clips.ids)

    def warm_up(self) -> None:
        from evalkit.audio import load_audio
        from evalkit.metrics.base import Clip

        cid = self.clips.ids[0]
        wav, sr = load_audio(self.clips.gen(cid))
        self.metric.update([Clip(cid, "", wav, sr, wav, sr)])
        self.metric.reset()
        self.audiocraft.score(wav[None], wav[None], torch.tensor([wav.shape[-1]]), sr)

    def reference(self) -> Outcome:
        from evalkit.audio import load_audio

        self.clock.reset()
        total = frames = 0
        t0 = time.perf_counter()
        for cid in self.clips.ids:
            wav, sr = load_audio(self.clips.gen(cid))
            ref, rsr = load_audio(self.clips.ref(cid))
            assert sr == rsr and wav.shape == ref.shape, "audiocraft's update takes equal shapes and one rate"
            [(s, t)] = self.audiocraft.score(wav[None], ref[None], torch.tensor([ref.shape[-1]]), sr)
            total, frames = total + s, frames + t
        return Outcome(time.perf_counter() - t0, total / frames, self.clock.seconds)

    def evalkit(self) -> Outcome:
        self.recorder.calls.clear()
        self.recorder.active = True
        try:
            seconds, values = score_with_evalkit(self.metric, self.clips, batch=8)
        finally:
            self.recorder.active = False
        return Outcome(seconds, float(values["chroma"]), extra={"frontend_calls": len(self.recorder.calls)})

    def floor(self) -> Outcome:
        return Outcome(self.recorder.replay())
