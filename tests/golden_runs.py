"""The runs whose numbers are pinned across refactors and machines (``tests/test_golden.py``), and their recorder.

Each recording (``tests/golden/*.json``) holds, per run, every value its metrics computed and every per-clip value,
with the fingerprint of the machine and stack that computed them (:func:`fingerprint`: CPU model and instruction-set
flags, torch, numpy). On a machine with the same fingerprint the test demands the recorded values bit for bit (a
refactor must move nothing); on any other machine it demands them to :data:`REL_TOL` / :data:`ABS_TOL`, since float32
network outputs differ in their last bits between CPU instruction sets (measured on 2026-12-03: an AMD EPYC against
the machine of ``summaries.json``: FAD 8.8e-7, KLD 3e-5 and CLAP 1.5e-5 relative; per-clip KLD 3.0e-7 and CLAP
1.4e-6 absolute).

Record on this machine (before a change that must not move numbers): ``python -m tests.golden_runs``.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

GOLDEN_DIR = Path(__file__).with_name("golden")
#: tolerances against a recording from another machine (see the module doc): relative to the value, absolute for
#: values near 0 (per-clip KLD of near-identical distributions is ~1e-4 with 3e-7 of float32 noise)
REL_TOL, ABS_TOL = 1e-4, 2e-6


def fingerprint() -> dict[str, str]:
    """What decides the last bits of a run's numbers here: the CPU (model name and the instruction-set flags that
    oneDNN/OpenBLAS dispatch on), the machine type, torch and numpy."""
    import numpy
    import torch

    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = " ".join(sorted(f for f in line.split(":", 1)[1].split()
                                        if f.startswith(("avx", "fma", "sse", "amx", "f16c"))))
                break
    except OSError:
        pass
    ident = {"machine": platform.machine(), "cpu": model, "isa": flags, "torch": torch.__version__,
             "numpy": numpy.__version__}
    ident["id"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return ident


def _folder_music(tmp: Path, music_dir: Path, extra: list[str]) -> list[str]:
    gen = tmp / "gen"
    if not gen.exists():
        gen.mkdir(parents=True)
        for f in sorted(music_dir.glob("*.melody.flac")):
            (gen / f.name.replace(".melody.flac", ".flac")).symlink_to(f.resolve())
    return ["model=folder", f"model.dir={gen}", "dataset=prompts", f"dataset.path={music_dir / 'metadata.csv'}",
            f"reference.dir={music_dir}", "metrics=[fad,kld,clap,chroma]", "backbone_weights=random",
            "backbone_size=tiny", *extra]


#: name -> overrides(tmp, music_dir); every run adds its own cache folder and progress=false
RUNS: dict[str, Callable[[Path, Path], list[str]]] = {
    # the offline demo (tiny-stereo: fad, kld, clap, stereo)
    "demo": lambda tmp, music: [],
    "tiny-stereo-melody": lambda tmp, music: ["model=tiny-stereo-melody"],
    # the card's four metrics in folder mode on the shared music: melody lines against their arrangements
    "folder-music": lambda tmp, music: _folder_music(tmp, music, []),
    # the same files as written (no solver post-processing), FAD and KLD by their other protocols (FAD's examples
    # every 0.48 s instead of 0.96 s: 12 clips give 10 examples each, too few for the 128-d covariance)
    "folder-music-raw": lambda tmp, music: _folder_music(tmp, music, [
        "postprocess=none", "metrics/fad=frechet-audio-distance", "metrics/kld=stable-audio-metrics",
        "+metrics.fad.embedder.example_hop_frames=48"]),
}


def run_one(name: str, tmp: Path, music_dir: Path) -> tuple[dict, Path]:
    from evalkit import evaluate

    out = tmp / name
    overrides = [*RUNS[name](tmp, music_dir), f"cache.dir={tmp / 'cache'}", "progress=false"]
    return evaluate(overrides, out_dir=out), out


def values_of(summary: dict, out: Path) -> dict[str, Any]:
    """Every metric's ``values`` and every per-clip column its spec declares, in id order."""
    import pandas as pd

    df = pd.read_parquet(out / "clips.parquet").sort_values("id")
    metrics, per_clip = {}, {}
    for m, e in summary["metrics"].items():
        metrics[m] = {k: float(v) for k, v in (e.get("values") or {}).items() if isinstance(v, (int, float))}
        for col in (e.get("spec") or {}).get("per_clip") or ():
            if col in df:
                per_clip[col] = [None if pd.isna(v) else float(v) for v in df[col]]
    return {"metrics": metrics, "ids": df["id"].tolist(), "per_clip": per_clip}


def same(a: float | None, b: float | None, exact: bool) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if exact or math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def record(music_dir: Path) -> Path:
    fp = fingerprint()
    tmp = Path(tempfile.mkdtemp(prefix="evalkit-golden-"))
    runs = {}
    for name in RUNS:
        summary, out = run_one(name, tmp, music_dir)
        runs[name] = values_of(summary, out)
    from evalkit.stages.folder import git_sha

    path = GOLDEN_DIR / f"machine-{fp['id']}.json"
    path.write_text(json.dumps({"fingerprint": fp, "git_sha": git_sha(), "runs": runs}, indent=1) + "\n")
    return path


if __name__ == "__main__":
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(__file__).resolve().parents[1]
    print(record(Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "data" / "music"))
