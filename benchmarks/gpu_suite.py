"""All of evalkit's benchmarks in one run on one machine, each part under a time cap; one results.json.

    python benchmarks/gpu_suite.py                 # on a GPU machine: full-size models, < 8 minutes in all
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_suite.py --cpu-smoke     # tiny sizes on the CPU, < 4 minutes

Parts (each its own process, killed at its cap; whatever it finished is kept):
  generate  benchmarks/bench_generate.py: eager transformers ``generate`` at batch 1 vs evalkit's generator
            (as configured, and with the static cache really in effect + compiled decode on CUDA); stereo-medium with
            random weights in bf16 at batch 128 on a GPU; MusicCaps projection vs the memory-bandwidth floor.
  fad, kld, clap, chroma
            benchmarks/suite.py, one metric per part: evalkit's scoring stage vs the tool it replaces (the
            ``frechet_audio_distance`` package's loop, audiocraft's clip-by-clip KLD, laion_clap per clip, audiocraft's
            chroma metric one pair per update) and vs the backbone floor, on 32 pairs of 10 s music files. GPU: full-size
            backbones on CUDA (chroma on the CPU: no network); smoke: tiny backbones, 14 pairs.

Writes ``$OUT/results.json`` when ``OUT`` is set (the device tool's output folder), else
``benchmarks/results/results.json``, after every part; prints a compact table at the end.
Every model has random weights: the numbers are about speed only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



# -- the parts ------------------------------------------------------------------------------------------------------
def suite_part(name: str, py: str, tmp: Path, device: str, size: str, clips: int, rounds: int, cap: int) -> dict:
    out = tmp / f"{name}.json"
    cmd = [py, str(HERE / "suite.py"), "--device", device, "--size", size, "--only", name, "--clips", str(clips),
           "--rounds", str(rounds), "--json", str(out)]
    return {"name": name, "cmd": cmd, "cap": cap, "json": out, "needs": NEEDS[name]}


def parts(gpu: bool, py: str, tmp: Path) -> list[dict[str, Any]]:
    """name, command, cap (s), how to read its results. GPU sizes are chosen so the whole suite fits 8 minutes on an
    H100; the CPU smoke sizes so it fits 4 minutes on 2 cores."""
    gen_json = tmp / "generate.json"
    if gpu:
        gen = [py, str(HERE / "bench_generate.py"), "--device", "cuda", "--model", "stereo-medium", "--json", str(gen_json)]
        metric_parts = [suite_part("fad", py, tmp, "cuda", "full", 32, 1, 55), suite_part("kld", py, tmp, "cuda", "full", 32, 1, 75),
                        suite_part("clap", py, tmp, "cuda", "full", 32, 1, 55),
                        suite_part("chroma", py, tmp, "cpu", "full", 32, 3, 25)]
        gen_cap = 240
    else:
        gen = [py, str(HERE / "bench_generate.py"), "--device", "cpu", "--json", str(gen_json)]
        metric_parts = [suite_part("fad", py, tmp, "cpu", "tiny", 14, 2, 45), suite_part("kld", py, tmp, "cpu", "tiny", 14, 2, 40),
                        suite_part("clap", py, tmp, "cpu", "tiny", 14, 2, 50),
                        suite_part("chroma", py, tmp, "cpu", "tiny", 14, 3, 25)]
        gen_cap = 60
    return [{"name": "generate", "cmd": gen, "cap": gen_cap, "json": gen_json, "needs": NEEDS["generate"]}, *metric_parts]


#: top-level modules each part imports (checked before it starts: a bare GPU image lacks the audio packages). The
#: reference side of each part is a transcription in references/ (no pytest, no hydra: recipes come from
#: recipe_from_files)
NEEDS = {
    "generate": ["transformers", "tokenizers"],
    "fad": ["frechet_audio_distance", "resampy", "numba", "soundfile", "julius", "yaml", "scipy", "pandas"],
    "kld": ["hear21passt", "omegaconf", "julius", "torchaudio", "yaml", "pandas"],
    "clap": ["laion_clap", "transformers", "julius", "yaml", "librosa", "pandas"],
    "chroma": ["librosa", "julius", "yaml", "torchaudio", "pandas"],
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
    for name in ("fad", "kld", "clap", "chroma"):
        r = ((results["parts"].get(name, {}).get("result") or {}).get("metrics") or {}).get(name) or {}
        if r.get("ratio") is None:
            continue
        rff = r.get("reference_floor_fraction")
        target = ">= 1.5x" if rff is not None and rff <= 0.67 else ">= 1.0x"
        rows.append((f"{name} ({r.get('protocol')})", f"{r['evalkit_clips_per_s']:.2f} clips/s, floor fraction "
                     f"{r['floor_fraction']:.2f}", f"{r['reference_clips_per_s']:.2f} clips/s ({r.get('reference')}), floor "
                     f"fraction {rff if rff is None else round(rff, 2)}", f"{r['ratio']:.2f}x",
                     f"{target}; floor fraction >= 0.8"))
    return rows


def header(gpu: bool, budget: float) -> dict[str, Any]:
    import torch

    try:
        git_sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        git_sha = None
    return {
        "suite": "gpu" if gpu else "cpu-smoke", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "git_sha": git_sha,
        "python": platform.python_version(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if gpu else f"cpu: {platform.machine()} x{os.cpu_count()}",
        "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "budget_s": budget, "random_weights": True, "parts": {},
    }


def run_all(todo: list[dict[str, Any]], results: dict[str, Any], budget: float, out_file: Path) -> None:
    """Every part in order under its cap (squeezed so each later part keeps 10 s); results written after each."""
    t0 = time.perf_counter()
    for i, part in enumerate(todo):
        left = budget - (time.perf_counter() - t0)
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


def print_table(results: dict[str, Any], budget: float, out_file: Path) -> None:
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (< 4 min)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole suite (default 470 GPU, 240 CPU)")
    ap.add_argument("--only", default=None, help="comma-separated parts to run")
    ap.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results)")
    args = ap.parse_args(argv)

    import torch

    gpu = torch.cuda.is_available() and not args.cpu_smoke
    budget = args.budget or (470.0 if gpu else 240.0)
    out_dir = Path(args.out or os.environ.get("OUT") or HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "results.json"
    results = header(gpu, budget)
    if not gpu and not args.cpu_smoke:
        print("no CUDA device: running the CPU smoke sizes (pass --cpu-smoke to say so)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        todo = parts(gpu, sys.executable, Path(tmp))
        if args.only:
            todo = [p for p in todo if p["name"] in set(args.only.split(","))]
        run_all(todo, results, budget, out_file)
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results["table"] = [dict(zip(("part", "evalkit", "baseline", "ratio", "target"), r)) for r in summary_rows(results)]
    out_file.write_text(json.dumps(results, indent=1, default=str))
    print_table(results, budget, out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
