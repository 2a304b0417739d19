"""Size and time of the look-and-listen page (evalkit/report/html.py) for a MusicCaps-size run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_html.py [--clips 5521] [--n-top 5] [--json FILE] [--keep DIR]

Synthesises one finished run folder the way a stereo-medium run on MusicCaps leaves it: the MusicCaps ids and
captions (``../shared/data/musiccaps-public.csv``, the first ``--clips``), ``audio/<id>.flac`` and a reference per
clip (symbolic links to the 12 shared 10 s music pieces, so every clip is decoded and drawn on its own; real music,
so the spectrograms compress as real music does), FAD/KLD/CLAP/stereo with the metrics' own specs and per-clip
values drawn at random, the FAD embeddings a run keeps (19 windows × 128 per clip and side: the page's bootstrap reads
them), an audit with flagged and skipped clips, unused files and a warning. Then it times, in this process:

1. ``write_run_page(run)``: the default page (spectrograms for the clips at the top only), cold;
2. the same again: the spectrograms are reused (drawn once);
3. ``write_run_page(run, all_images=True)``: a spectrogram for every clip (generated and reference).

and measures each page's bytes (report.html + report_files/). Targets (issue 27): the default page ≤ 20 MB with its
images; every clip's images ≤ 3 MB per 100 clips; building the default page ≤ 10 % of the run's scoring time. The
scoring time compared with is the CPU scoring of the card metrics measured by ``benchmarks/suite.py``
(``benchmarks/results/cpu-full.json``: full-size backbones, 2 cores, evalkit's seconds per clip summed over the card
metrics), and the stricter 0.37 s/clip the issue named.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MUSICCAPS_CSV = SHARED / "musiccaps-public.csv"
MUSIC_DIR = SHARED / "music"
SCORING_JSON = ROOT / "benchmarks" / "results" / "cpu-full.json"
#: The card metrics of a MusicCaps run (chroma: the melody variants only) and the scoring time the issue named.
CARD_METRICS = ("fad", "kld", "clap", "chroma")
ISSUE_SCORING_S_PER_CLIP = 0.37
MB = 1e6


def specs() -> dict:
    """``{name: MetricSpec}`` of a stereo-medium run's metrics, from the metric classes."""
    from evalkit.metrics.clap import ClapScore
    from evalkit.metrics.fad import FAD
    from evalkit.metrics.kld import KLD
    from evalkit.metrics.stereo import StereoImage

    return {c.spec.name: c.spec for c in (FAD, KLD, ClapScore, StereoImage)}


def per_clip_values(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-clip columns of FAD, KLD, CLAP and the stereo image, spread as real runs spread them."""
    kld = rng.gamma(4.0, 0.35, n)
    out = {"fad_windows": np.full(n, 19.0), "fad_ref_windows": np.full(n, 19.0), "kld": kld,
           "kld_pq": kld, "kld_qp": rng.gamma(4.0, 0.35, n), "kld_rows": np.ones(n),
           "clap": rng.normal(0.28, 0.08, n)}
    out["kld_both"] = out["kld_pq"] + out["kld_qp"]
    for side in ("", "ref_"):
        out[f"stereo_{side}correlation"] = np.clip(rng.normal(0.6, 0.25, n), -1, 1)
        out[f"stereo_{side}side_to_mid_db"] = rng.normal(-12.0, 5.0, n)
        out[f"stereo_{side}downmix_loss_db"] = np.abs(rng.normal(0.8, 0.5, n))
    out["stereo_correlation_gap"] = np.abs(out["stereo_correlation"] - out["stereo_ref_correlation"])
    return out


def synthesise_run(root: Path, n: int, seed: int = 0) -> Path:
    """A finished run folder of ``n`` MusicCaps clips under ``root`` (see the module doc); returns it."""
    from evalkit.metrics.frechet import GaussianStats, frechet_distance
    from evalkit.stages.outputs import paired_summary

    rng = np.random.default_rng(seed)
    table = pd.read_csv(MUSICCAPS_CSV).head(n)
    ids, captions = table["ytid"].astype(str).tolist(), table["caption"].astype(str).tolist()
    pieces = sorted(f for f in MUSIC_DIR.glob("*.flac") if not f.name.endswith(".melody.flac"))
    run, refs = root / "run", root / "references"
    (run / "audio").mkdir(parents=True)
    refs.mkdir()
    for k, cid in enumerate(ids):
        os.symlink(pieces[k % len(pieces)], run / "audio" / f"{cid}.flac")
        os.symlink(pieces[(k + 3) % len(pieces)], refs / f"{cid}.flac")
    clips = pd.DataFrame({"id": ids, "caption": captions,
                          "reference_path": [str(refs / f"{c}.flac") for c in ids],
                          "audio_path": [str(run / "audio" / f"{c}.flac") for c in ids]})
    values = per_clip_values(n, rng)
    flagged = rng.choice(n, size=max(1, n // 100), replace=False)  # 1 %: clipped; a tenth of them silent, skipped
    silent = set(flagged[: max(1, len(flagged) // 10)].tolist())
    for k in silent:
        for col in values:
            values[col][k] = np.nan
    for col, v in values.items():
        clips[col] = v
    clips["audit_flags"] = [["silent"] if k in silent else ["clipped"] if k in set(flagged.tolist()) else []
                            for k in range(n)]
    clips["reference_audit_flags"] = [[] for _ in range(n)]
    clips["skip_reason"] = [f"generated {run / 'audio' / f'{ids[k]}.flac'}: silent (RMS -inf dBFS < -70 dBFS)"
                            if k in silent else None for k in range(n)]
    clips.to_parquet(run / "clips.parquet", index=False)

    gen = {c: rng.normal(0.1, 1.0, (19, 128)).astype(np.float32) for c in ids}
    ref = {c: rng.normal(0.0, 1.0, (19, 128)).astype(np.float32) for c in ids}
    (run / "embeddings").mkdir()
    np.savez(run / "embeddings" / "fad.npz", **{f"{c}/fad_gen_emb": gen[c] for c in ids},
             **{f"{c}/fad_ref_emb": ref[c] for c in ids})
    g, r = GaussianStats(128), GaussianStats(128)
    for c in ids:
        g.update(gen[c].astype(np.float64))
        r.update(ref[c].astype(np.float64))
    metrics = {}
    for name, spec in specs().items():
        col = spec.value_column or spec.primary
        value = frechet_distance(*g.mean_cov(), *r.mean_cov()) if spec.aggregate == "frechet" else float(
            np.nanmean(clips[col]))
        skipped = int(clips["skip_reason"].notna().sum())
        metrics[name] = {"value": value, "protocol": "evalkit" if name == "stereo" else "audiocraft",
                         "n_clips": n - skipped, "n_skipped": 0, "checkpoint": "random", "checkpoint_sha256": None,
                         "random_weights": True, "values": {spec.primary: value}, "spec": spec.as_dict()}
        if spec.extra.get("paired"):
            metrics[name]["paired"] = paired_summary(clips, spec.extra["paired"])
    metrics["fad"]["warnings"] = ["the generated side's covariance has rank 127 of 128 (synthesised warning)"]
    summary = {
        "evalkit_version": "bench", "run_dir": str(run),
        "model": {"name": "stereo-medium", "hub_id": "facebook/musicgen-stereo-medium", "random_weights": True},
        "random_weights": True, "n_clips": n, "n_generated": n, "n_missing_reference": 0, "missing_reference_ids": [],
        "n_skipped": int(clips["skip_reason"].notna().sum()),
        "skip_reasons": {str(k): int(v) for k, v in clips["skip_reason"].dropna().value_counts().items()},
        "audit": {"silent": int(sum("silent" in f for f in clips["audit_flags"])),
                  "clipped": int(sum("clipped" in f for f in clips["audit_flags"]))},
        "audit_ids": {f: [c for c, fl in zip(ids, clips["audit_flags"]) if f in fl] for f in ("silent", "clipped")},
        "reference_audit": {}, "reference_audit_ids": {}, "n_unusable_reference": 0, "unusable_references": {},
        "unused_files": [{"file": str(refs / "notes.txt"), "reason": "unsupported format"}],
        "channel_view": "mono", "metrics": metrics,
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    (run / "manifest.json").write_text(json.dumps({"status": "finished", "cwd": str(root)}))
    return run


def page_bytes(run: Path) -> dict[str, float]:
    """MB of report.html, of report_files/, and the number of images."""
    images = list((run / "report_files").glob("*.png")) if (run / "report_files").is_dir() else []
    html = (run / "report.html").stat().st_size / MB
    pngs = sum(p.stat().st_size for p in images) / MB
    return {"html_mb": round(html, 3), "images_mb": round(pngs, 3), "total_mb": round(html + pngs, 3),
            "n_images": len(images)}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 2)


def scoring_s_per_clip() -> dict[str, float]:
    """evalkit's CPU scoring seconds per clip of each card metric in ``benchmarks/results/cpu-full.json``."""
    data = json.loads(SCORING_JSON.read_text())
    return {m: e["evalkit_s"] / e["clips"] for m, e in data["metrics"].items() if m in CARD_METRICS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=5521)
    ap.add_argument("--n-top", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the results here (benchmarks/results/html-*.json)")
    ap.add_argument("--keep", default=None, help="build the run in this folder and keep it (default: a temp folder)")
    args = ap.parse_args()
    for need in (MUSICCAPS_CSV, MUSIC_DIR):
        if not need.exists():
            raise SystemExit(f"{need} is missing: the benchmark takes MusicCaps captions and music from ../shared/data")
    from evalkit.report.html import write_run_page

    load_start = os.getloadavg()[0]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-html-"))
    try:
        t_build = time.perf_counter()
        run = synthesise_run(root, args.clips)
        build_s = time.perf_counter() - t_build
        n = args.clips
        default_s = timed(lambda: write_run_page(run, n_top=args.n_top))
        default = page_bytes(run)
        again_s = timed(lambda: write_run_page(run, n_top=args.n_top))
        every_s = timed(lambda: write_run_page(run, n_top=args.n_top, all_images=True))
        every = page_bytes(run)
        per_clip = scoring_s_per_clip()
        scoring_s = sum(per_clip.values()) * n
        issue_s = ISSUE_SCORING_S_PER_CLIP * n
        result = {
            "bench": "html", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "git_sha": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                      text=True).stdout.strip(),
            "python": platform.python_version(), "machine": f"{platform.machine()} x{os.cpu_count()}",
            "load_average_start": load_start, "clips": n, "n_top": args.n_top,
            "synthesise_s": round(build_s, 1),
            "default": {**default, "build_s": default_s, "rebuild_s": again_s},
            "all_images": {**every, "build_s": every_s, "mb_per_100_clips": round(every["total_mb"] / n * 100, 3),
                           "images_mb_per_100_clips": round(every["images_mb"] / n * 100, 3)},
            "scoring": {"source": str(SCORING_JSON.relative_to(ROOT)), "s_per_clip": {m: round(v, 4) for m, v in
                                                                                      per_clip.items()},
                        "run_s": round(scoring_s, 1), "issue_s_per_clip": ISSUE_SCORING_S_PER_CLIP,
                        "issue_run_s": round(issue_s, 1)},
            "default_build_fraction": {"of_measured_scoring": round(default_s / scoring_s, 4),
                                       "of_issue_scoring": round(default_s / issue_s, 4)},
            "all_images_build_fraction": {"of_measured_scoring": round(every_s / scoring_s, 4),
                                          "of_issue_scoring": round(every_s / issue_s, 4)},
            "load_average_end": os.getloadavg()[0],
        }
        result["targets"] = {
            "default_page_le_20_mb": default["total_mb"] <= 20,
            "all_images_le_3_mb_per_100_clips": result["all_images"]["mb_per_100_clips"] <= 3,
            "default_build_le_10_percent_of_scoring": result["default_build_fraction"]["of_issue_scoring"] <= 0.10,
        }
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
