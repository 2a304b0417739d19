"""All of evalkit's benchmarks in one run on one machine, each part under a time cap; one results.json.

    python benchmarks/gpu_suite.py                 # on a GPU machine: full-size models, < 8 minutes in all
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_suite.py --cpu-smoke     # tiny sizes on the CPU, < 3 minutes

Parts (each its own process, killed at its cap; whatever it finished is kept):
  generate  benchmarks/bench_generate.py: eager transformers ``generate`` at batch 1 vs evalkit's generator
            (as configured, and with the static cache really in effect + compiled decode on CUDA); stereo-medium with
            random weights in bf16 at batch 128 on a GPU; MusicCaps projection vs the memory-bandwidth floor.
  fad       bench_fad.py's contenders on this device: the ``frechet_audio_distance`` package's per-file loop vs
            evalkit's batched FAD, same protocol, weights and files (the package picks CUDA itself when present).
  kld       bench_kld.py: audiocraft's clip-by-clip PaSST loop vs evalkit's batched update.
  clap      bench_clap.py: laion_clap per-clip calls vs evalkit's batched update.
  chroma    bench_chroma.py: one clip per update vs batched (CPU: chroma has no network).

Writes ``$OUT/results.json`` when ``OUT`` is set (the device tool's output folder), else
``benchmarks/results/results.json``, after every part; prints a compact table at the end.
Every model has random weights: the numbers are about speed only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NUM = r"([-+0-9.eE]+|inf|nan)"


# -- FAD on any device, from bench_fad's pieces ---------------------------------------------------------------------
def fad_worker(device: str, size: str, clips: int, batch: int, repeats: int) -> dict[str, Any]:
    """bench_fad.py's measurement with a device: the package's ``score`` loop vs evalkit's FAD (``load_audio`` +
    ``update`` + ``compute``), protocol ``frechet-audio-distance``; evalkit's ``audiocraft`` protocol for
    information. Same VGGish weights (random) on both sides, same 10 s files."""
    import copy

    import torch

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    import bench_fad as bf

    from evalkit.metrics.fad import FAD

    clips = max(clips, 13)
    dev = torch.device(device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def factory(rec):  # bench_fad.run_evalkit builds a tiny metric and swaps the real network in
        return FAD(rec, device=dev)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen_dir, ref_dir = tmp / "gen", tmp / "ref"
        bf.write_clips(gen_dir, range(clips))
        bf.write_clips(ref_dir, range(1000, 1000 + clips))
        rec = bf.recipe("frechet-audio-distance", size, batch)
        t = time.perf_counter()
        model = FAD(rec, device=dev).model
        pkg = bf.package_fad(tmp, copy.deepcopy(model).cpu())
        build_s = time.perf_counter() - t
        bf.warm_up(pkg, model, rec, gen_dir, factory)
        t_pkg = t_ek = t_ac = float("inf")
        for _ in range(max(1, repeats)):
            sync()
            t0 = time.perf_counter()
            pkg_fad = pkg.score(str(ref_dir), str(gen_dir))
            sync()
            t_pkg = min(t_pkg, time.perf_counter() - t0)
            t, ek_fad = bf.run_evalkit(factory, rec, model, gen_dir, ref_dir, 8)
            sync()
            t_ek = min(t_ek, t)
            t, ac_fad = bf.run_evalkit(factory, bf.recipe("audiocraft", size, batch), model, gen_dir, ref_dir, 8)
            t_ac = min(t_ac, t)
    n = 2 * clips
    return {"device": str(dev), "vggish": size, "clips": n, "build_s": round(build_s, 2),
            "package_clips_per_s": n / t_pkg, "evalkit_clips_per_s": n / t_ek, "evalkit_audiocraft_clips_per_s": n / t_ac,
            "ratio": t_pkg / t_ek, "fad_package": float(pkg_fad), "fad_evalkit": float(ek_fad),
            "fad_rel_diff": abs(ek_fad - pkg_fad) / max(abs(pkg_fad), 1e-30), "repeats": repeats,
            "package_device": str(getattr(pkg, "device", "?"))}


# -- stdout parsers of the other benches (their print formats, as they are) ----------------------------------------
def _find(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def parse_kld(text: str) -> dict[str, Any]:
    return {"baseline_clips_per_s": _find(r"clip-by-clip \(batch 1\)\s*:\s*" + NUM, text),
            "evalkit_clips_per_s": _find(r"evalkit batched \(\s*\d+\)\s*:\s*" + NUM, text),
            "ratio": _find(r"ratio batched / clip-by-clip:\s*" + NUM + "x", text)}


def parse_clap(text: str) -> dict[str, Any]:
    return {"baseline_clips_per_s": _find(r"laion_clap per-clip\s+" + NUM + r" clips/s", text),
            "evalkit_per_clip_clips_per_s": _find(r"evalkit per-clip\s+" + NUM + r" clips/s", text),
            "evalkit_clips_per_s": _find(r"evalkit batched\s+" + NUM + r" clips/s", text),
            "ratio": _find(r"ratio \[wall\] batched / laion_clap per-clip:\s*" + NUM + "x", text),
            "ratio_cpu_time": _find(r"ratio \[cpu\] batched / laion_clap per-clip:\s*" + NUM + "x", text)}


def parse_chroma(text: str) -> dict[str, Any]:
    return {"baseline_clips_per_s": _find(r"per-clip\s*:\s*" + NUM + r" clips/s", text),
            "evalkit_clips_per_s": _find(r"batch \d+\s*:\s*" + NUM + r" clips/s", text),
            "ratio": _find(r"ratio batched / per-clip:\s*" + NUM + "x", text)}


# -- the parts ------------------------------------------------------------------------------------------------------
def parts(gpu: bool, py: str, tmp: Path) -> list[dict[str, Any]]:
    """name, command, cap (s), how to read its results. GPU sizes are chosen so the whole suite fits 8 minutes on an
    H100; the CPU smoke sizes so it fits 3 minutes on 2 cores."""
    dev = "cuda" if gpu else "cpu"
    gen_json = tmp / "generate.json"
    fad_json = tmp / "fad.json"
    me = str(Path(__file__).resolve())
    if gpu:
        gen = [py, str(HERE / "bench_generate.py"), "--device", "cuda", "--model", "stereo-medium", "--json", str(gen_json)]
        fad = [py, me, "--worker", "fad", "--device", dev, "--size", "full", "--clips", "48", "--repeats", "1", "--json", str(fad_json)]
        kld = [py, str(HERE / "bench_kld.py"), "--size", "full", "--device", dev, "--clips", "64", "--batch", "32"]
        clap = [py, str(HERE / "bench_clap.py"), "--size", "full", "--device", dev, "--clips", "64", "--batch", "16", "--repeats", "2"]
        chroma = [py, str(HERE / "bench_chroma.py"), "--clips", "32", "--batch", "16"]
        caps = {"generate": 270, "fad": 60, "kld": 50, "clap": 50, "chroma": 30}
    else:
        gen = [py, str(HERE / "bench_generate.py"), "--device", "cpu", "--json", str(gen_json)]
        fad = [py, me, "--worker", "fad", "--device", "cpu", "--size", "tiny", "--clips", "16", "--repeats", "2", "--json", str(fad_json)]
        kld = [py, str(HERE / "bench_kld.py"), "--clips", "16", "--batch", "16"]
        clap = [py, str(HERE / "bench_clap.py"), "--clips", "16", "--batch", "8", "--repeats", "2"]
        chroma = [py, str(HERE / "bench_chroma.py"), "--clips", "16", "--batch", "16"]
        caps = {"generate": 60, "fad": 60, "kld": 30, "clap": 40, "chroma": 25}
    return [
        {"name": "generate", "cmd": gen, "cap": caps["generate"], "json": gen_json, "needs": NEEDS["generate"]},
        {"name": "fad", "cmd": fad, "cap": caps["fad"], "json": fad_json, "needs": NEEDS["fad"]},
        {"name": "kld", "cmd": kld, "cap": caps["kld"], "parse": parse_kld, "needs": NEEDS["kld"]},
        {"name": "clap", "cmd": clap, "cap": caps["clap"], "parse": parse_clap, "needs": NEEDS["clap"]},
        {"name": "chroma", "cmd": chroma, "cap": caps["chroma"], "parse": parse_chroma, "needs": NEEDS["chroma"]},
    ]


#: top-level modules each part imports (checked before it starts: a bare GPU image lacks the audio packages)
NEEDS = {
    "generate": ["transformers", "tokenizers"],
    "fad": ["frechet_audio_distance", "resampy", "soundfile", "julius", "yaml"],
    "kld": ["hear21passt", "omegaconf", "julius"],
    "clap": ["laion_clap", "julius", "yaml"],
    "chroma": ["librosa", "julius", "yaml"],
}


def missing(modules: list[str]) -> list[str]:
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def run_part(part: dict[str, Any], cap: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(part["cmd"], cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    status = "ok"
    try:
        out, _ = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part's own process group (it and its children only)
        out, _ = proc.communicate()
        status = "timeout"
    if status == "ok" and proc.returncode != 0:
        status = f"error (exit {proc.returncode})"
    r: dict[str, Any] = {"status": status, "cap_s": cap, "elapsed_s": round(time.perf_counter() - t0, 1),
                         "command": " ".join(Path(c).name if i < 2 else c for i, c in enumerate(part["cmd"])),
                         "output_tail": "\n".join(line for line in out.splitlines()[-40:])}
    if part.get("json") is not None and Path(part["json"]).is_file():
        r["result"] = json.loads(Path(part["json"]).read_text())
    elif part.get("parse"):
        r["result"] = part["parse"](out)
    return r


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(part, evalkit, baseline, ratio, target) rows for the table."""
    rows = []
    g = results["parts"].get("generate", {}).get("result") or {}
    if "eager" in g:
        base = f"{g['eager']['steps_per_s']:.1f} steps/s (eager generate, batch 1)"
        for k in ("evalkit", "evalkit+static"):
            if k in g:
                rows.append((f"generate: {k}", f"{g[k]['steps_per_s']:.1f} steps/s, {g[k]['clips_per_s']:.3g} clips/s "
                             f"(batch {g[k]['batch']})", base, f"{g[k]['ratio_steps_vs_eager']:.2f}x", "~3x (issue)"))
    mc = g.get("musiccaps") or {}
    if mc.get("ratio_to_floor") is not None:
        rows.append(("generate: MusicCaps", f"{mc['projected_wall_s'] / 60:.1f} min projected",
                     f"{mc['floor_s'] / 60:.2f} min floor", f"{mc['ratio_to_floor']:.2f}x floor", "<= 2x floor"))
    if "parity_greedy_batch1" in g:
        p = g["parity_greedy_batch1"]
        rows.append(("generate: parity", f"identical={p['identical']}", "eager, greedy, batch 1", "-", "identical"))
    f = results["parts"].get("fad", {}).get("result") or {}
    if f.get("ratio") is not None:
        rows.append(("fad (VGGish)", f"{f['evalkit_clips_per_s']:.2f} clips/s", f"{f['package_clips_per_s']:.2f} clips/s "
                     "(frechet-audio-distance loop)", f"{f['ratio']:.2f}x", ">= 10x"))
    names = {"kld": "audiocraft clip-by-clip", "clap": "laion_clap per-clip", "chroma": "one clip per update"}
    for name, what in names.items():
        r = results["parts"].get(name, {}).get("result") or {}
        if r.get("ratio") is not None:
            rows.append((name, f"{r['evalkit_clips_per_s']:.2f} clips/s", f"{r['baseline_clips_per_s']:.2f} clips/s ({what})",
                         f"{r['ratio']:.2f}x", ">= 10x" if name != "chroma" else "-"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (< 3 min)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole suite (default 470 GPU, 170 CPU)")
    ap.add_argument("--only", default=None, help="comma-separated parts to run")
    ap.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--size", default="full", help=argparse.SUPPRESS)
    ap.add_argument("--clips", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker == "fad":
        res = fad_worker(args.device, args.size, args.clips, args.batch, args.repeats)
        print(json.dumps(res, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0

    import torch

    gpu = torch.cuda.is_available() and not args.cpu_smoke
    budget = args.budget or (470.0 if gpu else 170.0)
    out_dir = Path(args.out or os.environ.get("OUT") or HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "results.json"
    try:
        git_sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        git_sha = None
    results: dict[str, Any] = {
        "suite": "gpu" if gpu else "cpu-smoke", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "git_sha": git_sha,
        "python": platform.python_version(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if gpu else f"cpu: {platform.machine()} x{os.cpu_count()}",
        "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "budget_s": budget, "random_weights": True, "parts": {},
    }
    if not gpu and not args.cpu_smoke:
        print("no CUDA device: running the CPU smoke sizes (pass --cpu-smoke to say so)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        todo = parts(gpu, sys.executable, Path(tmp))
        if args.only:
            keep = set(args.only.split(","))
            todo = [p for p in todo if p["name"] in keep]
        for i, part in enumerate(todo):
            left = budget - (time.perf_counter() - t0)
            # keep 10 s for each later part at least; never more than the part's own cap
            cap = min(part["cap"], left - 10 * (len(todo) - i - 1))
            if cap < 10:
                results["parts"][part["name"]] = {"status": "skipped (budget)", "cap_s": 0}
                continue
            lacking = missing(part["needs"])
            if lacking:
                results["parts"][part["name"]] = {"status": f"skipped (missing: {', '.join(lacking)})", "cap_s": 0}
                print(f"[{time.perf_counter() - t0:6.1f} s] {part['name']}: skipped, missing {lacking}", flush=True)
                continue
            print(f"[{time.perf_counter() - t0:6.1f} s] {part['name']} (cap {cap:.0f} s) ...", flush=True)
            r = run_part(part, cap)
            results["parts"][part["name"]] = r
            print(f"[{time.perf_counter() - t0:6.1f} s] {part['name']}: {r['status']} in {r['elapsed_s']} s", flush=True)
            if r["status"] != "ok":
                print("    " + "\n    ".join(r["output_tail"].splitlines()[-8:]), flush=True)
            results["elapsed_s"] = round(time.perf_counter() - t0, 1)
            out_file.write_text(json.dumps(results, indent=1, default=str))
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results["table"] = [dict(zip(("part", "evalkit", "baseline", "ratio", "target"), r)) for r in summary_rows(results)]
    out_file.write_text(json.dumps(results, indent=1, default=str))

    print(f"\nevalkit benchmarks ({results['suite']}, {results['device']}, random weights, "
          f"{results['elapsed_s']:.0f} s of {budget:.0f} s budget)")
    rows = [("part", "evalkit", "baseline", "ratio", "target")] + summary_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for j, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))
    bad = {k: v["status"] for k, v in results["parts"].items() if v["status"] != "ok"}
    if bad:
        print(f"  not ok: {bad}")
    print(f"results: {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
