"""FAD (VGGish) throughput: evalkit vs the ``frechet_audio_distance`` package's own per-file loop, one run, one CPU.

Baseline = ``FrechetAudioDistance(model_name="vggish", sample_rate=16000, use_pca=False, use_activation=False)
.score(background_dir, eval_dir)``: the package reads every file (soundfile, channel mean, resampy to 16 kHz) and
calls ``model.forward(audio, 16000)`` once per file (torchvggish's numpy log-mel, then VGGish on that file's
examples). Offline, its torch hub load of ``harritaylor/torchvggish`` is served the transcription of torchvggish in
``tests/test_fad_reference.py`` (numpy front end and layout as published) with evalkit's weights.

evalkit: ``load_audio`` + ``FAD.update`` (torch float64 log-mel, examples of all clips of an update batched into
VGGish forward passes of ``--batch``) + ``compute``, same protocol (``frechet-audio-distance``), same weights, same
files. The two FADs are printed side by side (they agree to 1e-5). The ``audiocraft`` protocol (Google's recipe:
19 overlapping windows per 10 s clip instead of 10 examples, plus julius, peak normalisation and int16) is timed too,
for information; it has no PyTorch baseline (Google's is TF).

Clips: 10 s, 32 kHz mono, chords plus noise. Weights are random (the speed does not depend on them).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_fad.py                  # full VGGish, 8 + 8 clips
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_fad.py --clips 16 --threads 2
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def recipe(protocol: str, size: str, batch: int) -> dict:
    from evalkit.spec import recipe_from_files

    return recipe_from_files("fad", protocol, model_size=size, checkpoint="random", random_seed=0, batch_size=batch,
                             backbone_weights="random", reference_stats=None)


def write_clips(folder: Path, seeds, sr: int = 32000, seconds: float = 10.0) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        rng = np.random.default_rng(s)
        t = np.arange(int(seconds * sr)) / sr
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        x = sum(0.1 * np.sin(2 * math.pi * f0 * r * t) for r in (1, 1.26, 1.5, 2.0)) + 0.02 * rng.standard_normal(t.size)
        sf.write(str(folder / f"c{s:04d}.wav"), x.astype(np.float32), sr, subtype="PCM_16")


def reference_module():
    name = "evalkit_fad_numpy_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "test_fad_reference.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def package_fad(tmp: Path, model):
    from frechet_audio_distance import FrechetAudioDistance

    ref = reference_module()
    repo = tmp / "torch_hub" / "harritaylor_torchvggish_master"
    channels = tuple(model.features[i].out_channels for i in (0, 3, 6, 11))
    ref.write_fake_hub(repo, model.state_dict(), channels, model.embeddings[0].out_features)
    original = torch.hub.load
    torch.hub.load = lambda repo_or_dir, model, *a, **k: original(str(repo), model, source="local")
    try:
        return FrechetAudioDistance(ckpt_dir=str(tmp / "torch_hub"), model_name="vggish", sample_rate=16000,
                                    use_pca=False, use_activation=False, verbose=False, audio_load_worker=2)
    finally:
        torch.hub.load = original


def run_evalkit(metric_cls, rec, model, gen_dir: Path, ref_dir: Path, per_update: int) -> tuple[float, float]:
    from evalkit.audio import load_audio
    from evalkit.metrics.base import Clip

    m = metric_cls(dict(rec, model_size="tiny"))  # cheap to build; the real network is swapped in
    m.model = model
    gens, refs = sorted(os.listdir(gen_dir)), sorted(os.listdir(ref_dir))
    t0 = time.perf_counter()
    for i in range(0, len(gens), per_update):
        clips = []
        for g, r in zip(gens[i : i + per_update], refs[i : i + per_update]):
            gw, gsr = load_audio(gen_dir / g)
            rw, rsr = load_audio(ref_dir / r)
            clips.append(Clip(g, "", gw, gsr, rw, rsr))
        m.update(clips)
    fad = m.compute()["fad"]
    return time.perf_counter() - t0, fad


def warm_up(pkg, model, rec, gen_dir, factory) -> None:
    """Untimed warm-up on one clip each (resampy's numba kernels, oneDNN primitives): the package's loop and an
    evalkit FAD sharing ``model`` (built by ``factory`` from ``rec``)."""
    from frechet_audio_distance.utils import load_audio_task

    from evalkit.audio import load_audio
    from evalkit.metrics.base import Clip

    first = sorted(os.listdir(gen_dir))[0]
    pkg.get_embeddings([load_audio_task(str(gen_dir / first), 16000, 1, "float32")], sr=16000)
    warm = factory(dict(rec, model_size="tiny"))
    warm.model = model
    gw, gsr = load_audio(gen_dir / first)
    warm.update([Clip("w", "", gw, gsr, gw, gsr)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8, help="clips per side (>= 13: 128 examples for a covariance)")
    ap.add_argument("--size", choices=["tiny", "full"], default="full")
    ap.add_argument("--batch", type=int, default=128, help="VGGish examples per forward pass (evalkit)")
    ap.add_argument("--per-update", type=int, default=8, help="clips per FAD.update (the run's metric_batch_size)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating timed runs; the best of each is reported")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.clips = max(args.clips, 13)

    from evalkit.metrics.fad import FAD

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen_dir, ref_dir = tmp / "gen", tmp / "ref"
        write_clips(gen_dir, range(args.clips))
        write_clips(ref_dir, range(1000, 1000 + args.clips))
        rec = recipe("frechet-audio-distance", args.size, args.batch)
        model = FAD(rec).model
        pkg = package_fad(tmp, model)
        warm_up(pkg, model, rec, gen_dir, FAD)

        # alternate the contenders, keep each one's best time (the CPU may be shared)
        t_pkg = t_ek = t_ac = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pkg_fad = pkg.score(str(ref_dir), str(gen_dir))
            t_pkg = min(t_pkg, time.perf_counter() - t0)
            t, ek_fad = run_evalkit(FAD, rec, model, gen_dir, ref_dir, args.per_update)
            t_ek = min(t_ek, t)
            t, ac_fad = run_evalkit(FAD, recipe("audiocraft", args.size, args.batch), model, gen_dir, ref_dir, args.per_update)
            t_ac = min(t_ac, t)

    n = 2 * args.clips  # clip files embedded per run (both sides)
    print(f"device=cpu threads={torch.get_num_threads()} vggish={args.size} clips={args.clips}+{args.clips} "
          f"(10 s, 32 kHz) batch={args.batch} per_update={args.per_update} best of {args.repeats}")
    print(f"package per-file loop (frechet-audio-distance): {n / t_pkg:7.2f} clips/s  ({t_pkg:.2f} s)  FAD={pkg_fad:.6g}")
    print(f"evalkit batched       (frechet-audio-distance): {n / t_ek:7.2f} clips/s  ({t_ek:.2f} s)  FAD={ek_fad:.6g}")
    print(f"evalkit batched       (audiocraft, 19 windows/clip): {n / t_ac:7.2f} clips/s  ({t_ac:.2f} s)  FAD={ac_fad:.6g}")
    print(f"ratio evalkit / package (same protocol): {t_pkg / t_ek:.2f}x")
    rel = abs(ek_fad - pkg_fad) / max(abs(pkg_fad), 1e-30)
    print(f"FAD relative difference evalkit vs package: {rel:.2e}")


if __name__ == "__main__":
    main()
