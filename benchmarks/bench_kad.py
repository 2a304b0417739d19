"""KAD's statistic at MusicCaps scale: time and peak memory of evalkit's blocked KAD vs set size, and kadtk's dense one.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_kad.py --sizes 13000,26000,52000 --json benchmarks/results/kad-cpu.json
    HF_HUB_OFFLINE=1 build/venv-reference/bin/python benchmarks/bench_kad.py --sizes 6500,13000 --kadtk --json F

MusicCaps scored with the audiocraft protocol has 5,521 clips x 19 VGGish windows = 104,899 embeddings per side. Each
size N here is N baseline and N evaluated 128-d float32 embeddings (seeded Gaussians with per-dimension scales and a
shifted mean for the evaluated side; the values do not change the work), the evaluated side cut into "clips" of 19.
Each size runs in its own Python process, which reports its peak resident set (``ru_maxrss``) and, separately:

* ``median_s``: the bandwidth, ``torch.median(torch.pdist(y))`` exactly (evalkit's bracketed selection, TorchPdist);
* ``kad_s``: the whole metric as a run computes it (``kad_with_clips``: bandwidth, the three kernel sums, per-clip
  KAD with every clip's own bandwidth);
* ``bootstrap_s``: the report's interval (clip block sums + 1000 draws, bandwidth fixed);
* with ``--kadtk`` (its reference environment): ``kadtk_s`` and ``kadtk_peak_rss_mib`` of
  ``calc_kernel_audio_distance(x, y, (None, None), "cpu")`` in its own process, at sizes whose dense matrices fit.

Time grows as N² (pairs) and memory stays flat (blocks); the JSON holds the measured sizes and, labelled
``extrapolated``, the 104,899-embedding numbers from the largest measured size (time × (104899/N)², memory as
measured), with kadtk's memory at that size computed from its dense matrices (3 float32 N² matrices at once, plus
pdist's N(N-1)/2). The load average is recorded before and after each size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MUSICCAPS = 5521 * 19

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, torch
n, d = {n}, 128
rng = np.random.default_rng(0)
x = (rng.standard_normal((n, d)) * rng.uniform(0.5, 2, d)).astype(np.float32)
y = (rng.standard_normal((n, d)) * rng.uniform(0.5, 2, d) + 0.1).astype(np.float32)
out = {{"n": n, "base_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
if {kadtk}:
    from kadtk.kad import calc_kernel_audio_distance
    t = time.perf_counter()
    out["kadtk_value"] = calc_kernel_audio_distance(torch.from_numpy(x), torch.from_numpy(y), (None, None), "cpu").item()
    out["kadtk_s"] = time.perf_counter() - t
    out["kadtk_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
else:
    from evalkit.metrics.kad import TorchPdist
    from evalkit.statistics import kernel as K
    threads = torch.get_num_threads()
    t = time.perf_counter()
    h = K.median_pairwise_distance(y, TorchPdist(), threads=threads)
    out["median_s"] = time.perf_counter() - t
    clips = [y[i:i + 19] for i in range(0, n, 19)]
    t = time.perf_counter()
    res = K.kad_with_clips(x, clips, K.KernelSettings(), distances=TorchPdist(), threads=threads)
    out["kad_s"], out["value"], out["bandwidth"] = time.perf_counter() - t, res.value, res.bandwidth
    out["bandwidth_is_the_median"] = res.bandwidth == h
    gen = {{f"c{{i:06d}}": c for i, c in enumerate(clips)}}
    t = time.perf_counter()
    iv = K.kad_bootstrap(x, gen, K.KernelSettings(), res.bandwidth, n_boot=1000, threads=threads)
    out["bootstrap_s"], out["interval"] = time.perf_counter() - t, [iv.low, iv.high]
    out["threads"] = threads
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def one(n: int, kadtk: bool) -> dict:
    code = CHILD.format(root=str(ROOT), n=n, kadtk=bool(kadtk))
    start = load()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        return {"n": n, "status": f"failed (exit {p.returncode}): {p.stderr[-800:]}"}
    out = json.loads(line[7:])
    out.update(wall_s=time.perf_counter() - t0, load_average_start=start, load_average_end=load())
    return out


def extrapolate(rows: list[dict], kadtk: bool) -> dict:
    """MusicCaps-size numbers from the largest measured size: time × (N_mc / N)², memory as measured (blocks), and
    kadtk's dense matrices' bytes."""
    done = [r for r in rows if "status" not in r]
    if not done:
        return {}
    big = max(done, key=lambda r: r["n"])
    f = (MUSICCAPS / big["n"]) ** 2
    keys = ("kadtk_s",) if kadtk else ("median_s", "kad_s", "bootstrap_s")
    out = {"label": f"extrapolated from N={big['n']} (time x (N_musiccaps/N)^2; memory flat in N)", "n": MUSICCAPS,
           **{k: big[k] * f for k in keys if k in big}}
    if not kadtk:
        out["peak_rss_mib_measured_at_largest_n"] = big["peak_rss_mib"]
    out["kadtk_dense_gib"] = (3 * MUSICCAPS ** 2 * 4 + MUSICCAPS * (MUSICCAPS - 1) / 2 * 4) / 2 ** 30
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="6500,13000,26000", help="embeddings per side, comma-separated")
    ap.add_argument("--kadtk", action="store_true", help="time kadtk's dense calc_kernel_audio_distance instead")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    results = {"bench": "kad-kadtk" if args.kadtk else "kad", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "git_sha": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip(),
               "python": platform.python_version(), "torch": torch.__version__,
               "cpu": f"{platform.machine()} x{os.cpu_count()}", "dim": 128, "clip_frames": 19, "sizes": []}
    for n in (int(s) for s in args.sizes.split(",") if s):
        row = one(n, args.kadtk)
        results["sizes"].append(row)
        print(json.dumps(row), flush=True)
        results["musiccaps"] = extrapolate(results["sizes"], args.kadtk)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["musiccaps"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
