"""CLAP text consistency throughput: evalkit's batched update vs per-clip calls, in one run on one device.

Per-clip baselines (same model, same weights, same audio):
  * laion_clap's ``CLAP_Module.get_audio_embedding_from_data`` + ``get_text_embedding`` called once per clip
    (the loop stable-audio-metrics and most scripts run);
  * evalkit's ``ClapScore.update`` called with one clip at a time.
Clips are 10 s stereo at 32 kHz (MusicGen output), so every path includes the 32 -> 48 kHz resampling.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_clap.py                   # tiny random model, CPU
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_clap.py --size full --device cuda --clips 64 --batch 16
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from evalkit.audio import convert_audio  # noqa: E402
from evalkit.metrics.base import Clip  # noqa: E402
from evalkit.spec import recipe_from_files  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def recipe(size: str, batch: int) -> dict:
    return recipe_from_files("clap", model_size=size, checkpoint="random", batch_size=batch, backbone_weights="random",
                             postprocess="none")  # the metric's own work, as laion's per-clip loop does it


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds, interleaved; the best round of each counts")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from evalkit.metrics.clap import ClapScore

    t0 = time.perf_counter()
    metric = ClapScore(recipe(args.size, args.batch), device=args.device)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    clips = [Clip(id=f"c{i:04d}", caption=f"clip {i}: a mellow jazz trio with brushed drums and upright bass",
                  audio=0.1 * torch.randn(2, 320000, generator=g), sample_rate=32000) for i in range(args.clips)]

    from laion_clap import CLAP_Module

    laion = CLAP_Module.__new__(CLAP_Module)
    torch.nn.Module.__init__(laion)
    laion.enable_fusion = False
    laion.model = metric.embedder.clap.model
    laion.tokenize = metric.embedder.tokenizer

    def laion_per_clip():
        for c in clips:
            wav = convert_audio(c.audio, c.sample_rate, 48000, 1).to(args.device)  # [1, T] mono
            with torch.no_grad():
                a = laion.get_audio_embedding_from_data(wav, use_tensor=True)
                t = laion.get_text_embedding([c.caption], use_tensor=True)
            torch.nn.functional.cosine_similarity(a, t, dim=1, eps=1e-8).cpu()

    def evalkit_per_clip():
        metric.reset()
        for c in clips:
            metric.update([c])

    def evalkit_batched():
        metric.reset()
        for i in range(0, len(clips), args.batch):
            metric.update(clips[i:i + args.batch])

    # warm-up (allocator, oneDNN/cuDNN kernels), then interleaved rounds: the best round of each path counts,
    # which keeps a busy shared machine from favouring whichever path ran in a quiet moment
    metric.update(clips[:min(args.batch, len(clips))])
    metric.reset()
    # On CPU the process's CPU time is reported too: on a shared machine it is the steadier measure.
    results: dict[str, float] = {}
    cpu_results: dict[str, float] = {}
    paths = [("laion_clap per-clip", laion_per_clip), ("evalkit per-clip", evalkit_per_clip),
             ("evalkit batched", evalkit_batched)]
    for r in range(max(1, args.repeats)):
        for name, fn in paths[r % 3:] + paths[:r % 3]:  # rotate the order between rounds
            sync(args.device)
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync(args.device)
            results[name] = max(results.get(name, 0.0), len(clips) / (time.perf_counter() - t))
            cpu_results[name] = max(cpu_results.get(name, 0.0), len(clips) / (time.process_time() - c))

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads"
    print(f"CLAP bench: model_size={args.size}, device={args.device} ({dev}), {len(clips)} clips of 10 s stereo "
          f"32 kHz, batch={args.batch}, best of {args.repeats} rounds, build {build_s:.1f} s")
    for name, v in results.items():
        print(f"  {name:22s} {v:8.2f} clips/s (wall)   {cpu_results[name]:8.2f} clips per CPU-second")
    for label, res in (("wall", results), ("cpu", cpu_results)):
        print(f"  ratio [{label}] batched / laion_clap per-clip: "
              f"{res['evalkit batched'] / res['laion_clap per-clip']:.2f}x; "
              f"batched / evalkit per-clip: {res['evalkit batched'] / res['evalkit per-clip']:.2f}x")


if __name__ == "__main__":
    main()
