"""Metric throughput at full size: evalkit vs the tools it replaces, and vs the backbone floor, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/suite.py --device cpu --size full --json benchmarks/results/cpu-full.json
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/suite.py --only fad,chroma --clips 8 --rounds 1   # a quick look

Per metric, three contenders on the same files (``suite_parts/data.py``: 32 pairs of 10 s music built from the
shared clips; fad_clap_music and sam: those clips back to back in longer files, since a Fréchet distance on 512 or
1024 dimensions needs more windows than 320 s a side give), the same weights (random: speed does not depend on their
values) and the same machine:

* ``reference``: the tool evalkit replaces, run its own way (FAD: the ``frechet_audio_distance`` package's
  ``score``; KLD: audiocraft's clip-by-clip loop on hear21passt's own wrapper; CLAP: laion_clap's ``CLAP_Module``
  per clip, audio then caption; chroma: one pair per update; KAD: kadtk's per-file embedding loop and
  ``calc_kernel_audio_distance``; aesthetics: audiobox-aesthetics' ``AesPredictor.forward`` per batch of 100 files;
  MAUVE: mad-metric's featurize loop with VGGish for MERT, then ``mauve.compute_mauve``; fad_encodec and
  fad_clap_music: fadtk's per-file ``cache_embedding_file`` loop and ``score`` for FAD on ``encodec-emb`` and
  ``clap-laion-music``; fad_panns: kadtk's per-file loop and ``KernelAudioDistance.score`` for KAD on
  ``panns-cnn14-32k``; sam: stable-audio-metrics' ``openl3_fd``, ``passt_kld`` and ``clap_score`` loops for
  ``metrics=stable-audio-metrics``), reading the files itself;
* ``evalkit``: the run's scoring stage (``Scorer.score``: prefetching workers read, audit and prepare batch i+1 while
  the metric updates on batch i) then ``compute()``, cold (no score cache); sam: the preset's three metrics in one
  stage, each file decoded once;
* ``floor``: evalkit's backbone calls alone, on the same batches (recorded during its run, replayed back to back);
  for chroma, which has no network, the STFT + chroma filter bank.

Rounds alternate the contenders (reference, evalkit, floor, then rotated) and each contender's best round counts,
so that load from other processes hits all of them. Every line reports clips/s, ``ratio`` (evalkit / reference),
``floor_fraction`` (floor time / evalkit time) and ``reference_floor_fraction`` (the reference's own backbone time /
its total), whether the two numbers agree, the seconds of every round, threads, batch sizes and the load average.
The JSON is rewritten after every metric.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from suite_parts.common import best, load_average  # noqa: E402

#: part -> its class in ``suite_parts/<part>.py``
PARTS = {"fad": "FadPart", "kld": "KldPart", "clap": "ClapPart", "chroma": "ChromaPart", "kad": "KadPart",
         "aesthetics": "AestheticsPart", "mauve": "MauvePart", "fad_encodec": "FadEncodecPart",
         "fad_clap_music": "FadClapMusicPart", "fad_panns": "FadPannsPart", "sam": "SamPart"}
METRICS = tuple(PARTS)
#: default rounds per metric on a CPU: KLD (64 inputs through the 20 s PaSST), aesthetics (WavLM Base+, ~3 s per
#: 10 s chunk) and sam (the 10 s PaSST, OpenL3 on 21 frames a channel, fusion CLAP) take minutes per contender
ROUNDS = {"fad": 3, "kld": 1, "clap": 2, "chroma": 5, "kad": 3, "aesthetics": 1, "mauve": 3, "fad_encodec": 3,
          "fad_clap_music": 2, "fad_panns": 3, "sam": 1}


def build_part(name: str, clips, tmp: Path, args):
    import importlib

    mod = importlib.import_module(f"suite_parts.{name}")
    return getattr(mod, PARTS[name])(clips, tmp, args.size, args.batch.get(name), args.device)


def run_rounds(part, rounds: int) -> dict[str, list]:
    """``rounds`` rounds, contenders rotated between rounds; every outcome kept."""
    order = ["reference", "evalkit", "floor"]
    out: dict[str, list] = {k: [] for k in order}
    for r in range(rounds):
        for name in order[r % 3:] + order[:r % 3]:
            o = getattr(part, name)()
            out[name].append(o)
            print(f"    round {r + 1} {name:9s} {o.seconds:8.2f} s", flush=True)
    return out


def summarise(part, outcomes: dict[str, list], load_start: float | None) -> dict[str, Any]:
    n = part.n_items()
    ref, ek, fl = best(outcomes["reference"]), best(outcomes["evalkit"]), best(outcomes["floor"])
    row = {
        "evalkit_clips_per_s": n / ek.seconds, "reference_clips_per_s": n / ref.seconds,
        "ratio": ref.seconds / ek.seconds, "floor_fraction": fl.seconds / ek.seconds,
        "reference_floor_fraction": (ref.backbone_s / ref.seconds) if ref.backbone_s is not None else None,
        "floor_clips_per_s": n / fl.seconds, "clips": n,
        "evalkit_s": ek.seconds, "reference_s": ref.seconds, "floor_s": fl.seconds,
        "reference_backbone_s": ref.backbone_s,
        "rounds_s": {k: [round(o.seconds, 3) for o in v] for k, v in outcomes.items()},
        "evalkit_value": ek.value, "reference_value": ref.value,
        **part.info(), **ek.extra, **fl.extra,
        "load_average_start": load_start, "load_average_end": load_average(),
    }
    if ek.value is not None and ref.value is not None:
        row.update(agreement(ek.value, ref.value))
    if ek.values is not None and ref.values is not None:  # several metrics in one part: each one's, and the largest
        row["values"] = {k: {"evalkit": v, "reference": ref.values[k], **agreement(v, ref.values[k])}
                         for k, v in ek.values.items()}
        row.update({d: max(v[d] for v in row["values"].values()) for d in ("abs_diff", "rel_diff")})
    return row


def agreement(ours: float, theirs: float) -> dict[str, float]:
    diff = abs(ours - theirs)
    return {"abs_diff": diff, "rel_diff": diff / max(abs(theirs), 1e-30)}


def environment(args) -> dict[str, Any]:
    import torch

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        sha = None
    return {"suite": f"{args.device}-{args.size}", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "git_sha": sha,
            "python": platform.python_version(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else
            f"cpu: {platform.machine()} x{os.cpu_count()}", "torch_threads": torch.get_num_threads(),
            "random_weights": True, "clips": args.clips, "load_average_start": load_average()}


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'metric':14s} {'evalkit':>9s} {'reference':>10s} {'ratio':>7s} {'floor_fr':>8s} {'ref_floor_fr':>12s}"
          f"  (clips/s; load {results.get('load_average_start')} -> {results.get('load_average_end')})")
    for name, r in results["metrics"].items():
        if "ratio" not in r:
            print(f"{name:14s} {r.get('status')}")
            continue
        rff = r["reference_floor_fraction"]
        print(f"{name:14s} {r['evalkit_clips_per_s']:9.2f} {r['reference_clips_per_s']:10.2f} {r['ratio']:6.2f}x "
              f"{r['floor_fraction']:8.2f} {rff if rff is None else round(rff, 2)!s:>12s}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--size", default="full", choices=["full", "tiny"])
    ap.add_argument("--only", default=",".join(METRICS),
                    help=f"comma-separated metrics ({','.join(METRICS)})")
    ap.add_argument("--clips", type=int, default=32, help="pairs of 10 s clips (1..36)")
    ap.add_argument("--rounds", type=int, default=None,
                    help=f"rounds per metric (default: {', '.join(f'{k} {v}' for k, v in ROUNDS.items())})")
    ap.add_argument("--batch", default="", help="evalkit batch sizes, e.g. kld=1,clap=8 (default: the recipe's)")
    ap.add_argument("--json", default=None, help="write the results here (rewritten after every metric)")
    args = ap.parse_args(argv)
    args.only = [m for m in args.only.split(",") if m]
    unknown = set(args.only) - set(METRICS)
    if unknown:
        ap.error(f"--only: unknown metrics {sorted(unknown)}")
    args.batch = {k: int(v) for k, v in (kv.split("=") for kv in args.batch.split(",") if kv)}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from evalkit.cpu import reuse_freed_memory
    from suite_parts.data import build_clip_set, describe

    malloc = reuse_freed_memory()  # as a run does first (evalkit/run.py); the reference loops share the process
    results: dict[str, Any] = {**environment(args), "malloc": malloc, "clip_set": describe(), "metrics": {}}
    with tempfile.TemporaryDirectory(prefix="evalkit-suite-") as tmp:
        tmp = Path(tmp)
        clips = build_clip_set(tmp / "clips", args.clips)
        for name in args.only:
            print(f"{name}: building ...", flush=True)
            load_start = load_average()
            part = build_part(name, clips, tmp, args)
            part.warm_up()
            outcomes = run_rounds(part, args.rounds or ROUNDS[name])
            results["metrics"][name] = summarise(part, outcomes, load_start)
            del part
            results["load_average_end"] = load_average()
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
