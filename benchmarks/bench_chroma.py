"""Chroma cosine similarity throughput: batched update (equal-length clips share one STFT) vs one clip per update.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_chroma.py [--clips 32] [--batch 16] [--ref-sr 32000]

Clips are 10 s: generated stereo at 32 kHz, references mono at --ref-sr (MusicCaps files are usually 48 kHz; the
resampling then dominates). Prints clips/s for both and the ratio, measured in this one run; the scores must agree.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from evalkit.metrics.base import Clip
from evalkit.metrics.chroma import ChromaCosineSimilarity

ROOT = Path(__file__).resolve().parents[1]


def recipe(batch: int) -> dict:
    from evalkit.spec import recipe_from_files

    return recipe_from_files("chroma", batch_size=batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ref-sr", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    clips = [
        Clip(f"c{i}", "", 0.1 * torch.randn(2, 320000, generator=g), 32000,
             0.1 * torch.randn(1, 10 * args.ref_sr, generator=g), args.ref_sr)
        for i in range(args.clips)
    ]
    ChromaCosineSimilarity(recipe(args.batch)).update(clips[:2])  # warm-up (librosa filter bank, FFT plans)

    def run(batch: int, per_clip: bool) -> tuple[float, float]:
        m = ChromaCosineSimilarity(recipe(batch))
        t0 = time.perf_counter()
        if per_clip:
            for c in clips:
                m.update([c])
        else:
            for s in range(0, len(clips), batch):
                m.update(clips[s : s + batch])
        return time.perf_counter() - t0, m.compute()["chroma"]

    t_one, v_one = run(1, per_clip=True)
    t_bat, v_bat = run(args.batch, per_clip=False)
    assert v_one == v_bat, (v_one, v_bat)
    print(f"torch threads: {torch.get_num_threads()}, clips: {args.clips} x 10 s, reference rate {args.ref_sr} Hz")
    print(f"per-clip : {args.clips / t_one:8.2f} clips/s")
    print(f"batch {args.batch:<3d}: {args.clips / t_bat:8.2f} clips/s")
    print(f"ratio batched / per-clip: {t_one / t_bat:.2f}x   (score {v_bat:.4f} both ways)")


if __name__ == "__main__":
    main()
