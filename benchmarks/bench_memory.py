"""Peak memory of a folder-mode run is flat in the number of clips: N short clips vs 8 N, all four card metrics.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_memory.py                 # 64 vs 512 clips of 2 s, tiny backbones
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_memory.py --sizes 64,512 --seconds 2 --backbone-size tiny --json F

Each run is ``evalkit.evaluate`` (``model=folder``, ``metrics=[fad,kld,clap,chroma]``, random-weight backbones, score
cache in a fresh folder, ``postprocess=audiocraft``) in its own Python process, which reports its own peak resident
set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) when the run is over. Clips: 2 s slices of the shared music
(generated: the melody lines, references: the arrangements, 32 kHz), each slice at another offset and gain, so that
no two clips are the same audio. 2 s rather than 1 s: the FAD protocol's 1 s windows every 0.5 s give 3 per clip,
and the smaller run still has the 128 windows a covariance needs. Target: the peaks within 10 % of each other.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MUSIC = ROOT.parent / "shared" / "data" / "music"

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from evalkit import evaluate
t0 = time.perf_counter()
summary = evaluate({overrides!r}, out_dir={out!r})
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
status = {{m: ("ok" if "values" in v else v.get("status", "?")) for m, v in summary["metrics"].items()}}
print(json.dumps({{"peak_rss_mib": peak_kib / 1024, "seconds": time.perf_counter() - t0, "metrics": status}}))
"""


def write_clips(folder: Path, n: int, seconds: float) -> Path:
    """``gen/<id>.flac``, ``ref/<id>.wav`` and ``prompts.csv`` for ``n`` pairs of ``seconds`` (see the module doc)."""
    import csv

    import torch

    from evalkit.audio import load_audio, save_audio

    rows = list(csv.DictReader(open(MUSIC / "metadata.csv", newline="")))[:12]
    pieces = [(load_audio(MUSIC / f"{r['id']}.melody.flac")[0], load_audio(MUSIC / f"{r['id']}.flac")[0], r["caption"])
              for r in rows]
    sr, length = 32000, int(32000 * seconds)
    (folder / "gen").mkdir(parents=True)
    (folder / "ref").mkdir()
    with open(folder / "prompts.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "caption"])
        for k in range(n):
            mel, full, caption = pieces[k % 12]
            start = (k // 12 * 7919) % (full.shape[-1] - length)
            gain = 10 ** (-(k % 9) / 20)
            save_audio(folder / "gen" / f"c{k:04d}.flac", gain * mel[..., start:start + length], sr)
            save_audio(folder / "ref" / f"c{k:04d}.wav", torch.clamp(full[..., start:start + length], -1, 1), sr)
            w.writerow([f"c{k:04d}", caption])
    return folder


def measure(n: int, seconds: float, size: str, tmp: Path) -> dict:
    folder = write_clips(tmp / f"clips-{n}", n, seconds)
    overrides = ["model=folder", f"model.dir={folder / 'gen'}", "dataset=prompts", f"dataset.path={folder / 'prompts.csv'}",
                 f"reference.dir={folder / 'ref'}", "metrics=[fad,kld,clap,chroma]", "backbone_weights=random",
                 f"backbone_size={size}", f"audit.duration_s={seconds}", f"cache.dir={tmp / f'cache-{n}'}",
                 "progress=false"]
    code = CHILD.format(root=str(ROOT), overrides=overrides, out=str(tmp / f"run-{n}"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"run over {n} clips failed:\n{proc.stderr[-3000:]}")
    return {"clips": n, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,512")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--backbone-size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="evalkit-memory-") as tmp:
        for n in sizes:
            runs.append(measure(n, args.seconds, args.backbone_size, Path(tmp)))
            r = runs[-1]
            print(f"{n:5d} clips of {args.seconds:g} s: peak RSS {r['peak_rss_mib']:8.1f} MiB  ({r['seconds']:.1f} s, "
                  f"metrics {r['metrics']})", flush=True)
    peaks = [r["peak_rss_mib"] for r in runs]
    growth = max(peaks) / min(peaks) - 1
    print(f"largest / smallest peak: +{100 * growth:.1f} % (target: within 10 %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "growth": growth, "seconds_per_clip": args.seconds,
                                               "backbone_size": args.backbone_size,
                                               "load_average": os.getloadavg()[0],
                                               "measured": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
