"""KLD (PaSST) throughput: evalkit's batched update vs the clip-by-clip loop, in one run on one device.

Baseline = audiocraft's loop (``PasstKLDivergenceMetric._get_label_distribution``): every chunk of every clip goes
through PaSST on its own (batch 1). evalkit's ``KLD.update`` stacks equal-length chunks of all clips in the update
(generated and reference) into forward passes of up to ``--batch`` inputs. Same model, weights and audio; the two
numbers must agree (1e-5 relative or 1e-6 absolute: random heads give near-uniform outputs and KLs ~1e-4).

Clips: 10 s, generated stereo at 32 kHz, references mono at --ref-sr (MusicCaps files are mostly 48 kHz), chords
plus noise. Weights are random (the speed does not depend on them).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_kld.py                             # tiny PaSST, CPU
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_kld.py --size full --clips 8 --batch 8
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_kld.py --size full --device cuda --clips 128 --batch 32
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from evalkit.metrics.base import Clip
from evalkit.spec import recipe_from_files
from evalkit.metrics.kld import KLD

ROOT = Path(__file__).resolve().parents[1]


def recipe(protocol: str, size: str, batch: int) -> dict:
    return recipe_from_files("kld", protocol, model_size=size, batch_size=batch, checkpoint="random",
                             backbone_weights="random")


def chord(seed: int, sr: int, channels: int, seconds: float = 10.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 110 * 2 ** (torch.randint(0, 24, (1,), generator=g).item() / 12)
    x = sum(torch.sin(2 * math.pi * f0 * r * t) for r in (1, 1.26, 1.5, 2.0)) * 0.1
    return (x + 0.02 * torch.randn(channels, t.numel(), generator=g)).float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--protocol", default="audiocraft", choices=["audiocraft", "stable-audio-metrics"])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16, help="PaSST inputs per forward pass (evalkit)")
    ap.add_argument("--ref-sr", type=int, default=48000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = [Clip(f"c{i}", "", chord(i, 32000, 2), 32000, chord(1000 + i, args.ref_sr, 1), args.ref_sr)
             for i in range(args.clips)]

    one = KLD(recipe(args.protocol, args.size, 1), device=args.device)
    batched = KLD(recipe(args.protocol, args.size, args.batch), device=args.device)
    for m in (one, batched):  # build the model and warm up outside the timing
        m.update(clips[:1])
        m.reset()

    def sync():
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    for c in clips:  # the clip-by-clip loop
        one.update([c])
    sync()
    t_one = time.perf_counter() - t0

    t0 = time.perf_counter()
    for s in range(0, len(clips), args.batch):  # the run hands metric_batch_size clips per update
        batched.update(clips[s:s + args.batch])
    sync()
    t_bat = time.perf_counter() - t0

    v_one, v_bat = one.compute()["kld"], batched.compute()["kld"]
    assert math.isclose(v_one, v_bat, rel_tol=1e-5, abs_tol=1e-6), (v_one, v_bat)  # random heads: KL ~ 1e-4
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"KLD {args.protocol}, PaSST {args.size}, {dev}, {args.clips} clips x 10 s (gen 32 kHz stereo, "
          f"ref {args.ref_sr} Hz mono)")
    print(f"clip-by-clip (batch 1) : {args.clips / t_one:8.2f} clips/s")
    print(f"evalkit batched ({args.batch:>3}) : {args.clips / t_bat:8.2f} clips/s")
    print(f"ratio batched / clip-by-clip: {t_one / t_bat:.2f}x   (kld {v_bat:.6g} both ways)")


if __name__ == "__main__":
    main()
