"""FAD on fadtk's and kadtk's embeddings, from the command line, against those tools' own code on the same files and
identical weights (environment ``evalkit[reference]``: fadtk 1.1.0 and kadtk 1.1.0 installed ``--no-deps``, laion_clap,
encodec, torchlibrosa, and torchcodec with FFmpeg's libraries, which ``torchaudio.load``/``save`` need since
torchaudio 2.9; see the README's Tests section).

evalkit's side is ``python -m evalkit model=folder model.dir=GEN reference.dir=REF metrics=[fad]
metrics.fad.protocol=<name> backbone_weights=random`` on files a user has (WAV at 44.1 kHz stereo and 48 kHz mono,
FLAC at 48 kHz mono, the shared 32 kHz stereo music). The reference side is the tool's own code from the file on:
fadtk's ``FrechetAudioDistance.load_audio`` (``torchaudio.load``, channel mean, ``torchaudio.transforms.Resample``,
``torchaudio.save`` as 16-bit PCM, the loader's ``load_wav``), its model loader's ``get_embedding`` (float16 storage),
``cache_embedding_file`` (the ``.npy`` files) and ``score(baseline_dir, eval_dir)`` (``calculate_embd_statistics_online``
and ``calc_frechet_distance``); kadtk's ``EmbeddingLoader`` and ``FrechetAudioDistance.score`` for PANNs. Only the
network inside the tool's loader is set by the test: the tool's own class (encodec's ``EncodecModel``, laion_clap's
``CLAP_Module`` around laion's ``CLAP``, torchvggish's layout served as a torch hub repo, kadtk's ``Cnn14``) given
evalkit's random weights, renamed to the tool's layout by hand here. Shrunken (``tiny``) networks where the full one
would need hundreds of forward passes per side; ``tests/test_encodec.py``, ``tests/test_panns.py`` and
``tests/test_clap_backbone.py`` check the full-size networks' embeddings.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import MUSIC_DIR, REPO, needs_reference

pytestmark = [*needs_reference("fadtk"), pytest.mark.slow]


def _torchcodec_works() -> bool:
    """fadtk's and kadtk's ``load_audio`` call ``torchaudio.load``/``save``: torchaudio >= 2.9 needs torchcodec and
    FFmpeg's shared libraries for both."""
    import tempfile

    try:
        import torchaudio

        with tempfile.TemporaryDirectory() as d:
            torchaudio.save(f"{d}/t.wav", torch.zeros(1, 160), 16000, encoding="PCM_S", bits_per_sample=16)
            return torchaudio.load(f"{d}/t.wav")[0].shape == (1, 160)
    except Exception:
        return False


needs_torchcodec = pytest.mark.skipif(not _torchcodec_works(), reason="torchaudio.load/save do not work here (torchaudio"
                                      " >= 2.9 needs torchcodec and FFmpeg's libraries: README, Tests)")


# ---------------------------------------------------------------------------------------------------------------
# Files a user has, the command line, the tools' folders
# ---------------------------------------------------------------------------------------------------------------
def _tone(rng, sr, seconds):
    t = np.arange(int(round(sr * seconds))) / sr
    x = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 3000) * t * (1 + 0.01 * np.sin(3 * t)))
            for _ in range(4))
    return x * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t)) + 0.01 * rng.standard_normal(t.size)


def _noise(rng, sr, seconds):
    n = int(round(sr * seconds))
    x = np.convolve(rng.standard_normal(n), np.ones(rng.integers(2, 40)) / 20, mode="same")
    return 0.3 * x * np.exp(-np.mod(np.arange(n) / sr, rng.uniform(0.2, 0.7)) * 4)


def user_folders(tmp: Path, n: int, seconds: float, music: bool = True, equal: bool = False) -> tuple[Path, Path]:
    """``n`` clips a side, named alike (evalkit's folder mode pairs a clip with the reference of its name; fadtk
    scores the two folders as sets). GEN: tonal clips, WAV at 44.1 kHz stereo (every third at 48 kHz mono); REF:
    noisy percussive clips, FLAC at 48 kHz mono, the last two the shared 32 kHz stereo music (10 s) when ``music``.
    Lengths vary by +-10 % (``equal``: GEN's are all ``seconds`` at 44.1 kHz, as a model's clips are)."""
    gen, ref = tmp / "gen", tmp / "ref"
    gen.mkdir(parents=True)
    ref.mkdir(parents=True)
    shared = sorted(MUSIC_DIR.glob("shared0*[0-9].flac"))[:2] if music else []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        sr, ch = (48000, 1) if i % 3 == 2 and not equal else (44100, 2)
        x = _tone(rng, sr, seconds * (1.0 if equal else rng.uniform(0.9, 1.1)))
        sf.write(str(gen / f"c{i:03d}.wav"), np.stack([x * (1 - 0.3 * c) for c in range(ch)], 1).astype(np.float32),
                 sr, subtype="PCM_16")
        if i >= n - len(shared):
            shutil.copy(shared[i - (n - len(shared))], ref / f"c{i:03d}.flac")
            continue
        rng = np.random.default_rng(i)
        sf.write(str(ref / f"c{i:03d}.flac"), _noise(rng, 48000, seconds * rng.uniform(0.9, 1.1)).astype(np.float32),
                 48000, subtype="PCM_16", format="FLAC")
    return gen, ref


def run_cli(tmp: Path, gen: Path, ref: Path, protocol: str, *extra: str, metrics: str = "fad",
            of: str = "fad") -> tuple[dict, Path]:
    """``python -m evalkit`` as a user types it (``metrics.<of>.protocol=<protocol>``); returns (summary.json, run
    folder)."""
    out = tmp / f"run-{protocol}-{metrics.replace(',', '-')}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", EVALKIT_OFFLINE="1", PYTHONPATH=str(REPO),
               EVALKIT_CACHE=str(tmp / "cache"))
    cmd = [sys.executable, "-m", "evalkit", "model=folder", f"model.dir={gen}", f"reference.dir={ref}",
           f"metrics=[{metrics}]",
           f"metrics.{of}.protocol={protocol}", "backbone_weights=random", *extra, f"hydra.run.dir={out}",
           "progress=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), out


def evalkit_network(protocol: str, size: str) -> torch.nn.Module:
    """The network the command line built: the same recipe, the same seeded random weights."""
    from evalkit.embeddings import build_embedder
    from evalkit.spec import metric_recipe

    recipe = metric_recipe("fad", [f"metrics.fad.protocol={protocol}", "backbone_weights=random",
                                   f"backbone_size={size}"])
    return build_embedder(recipe, "metrics.fad").network


def tool_copy(tmp: Path, gen: Path, ref: Path, tool: str) -> tuple[Path, Path]:
    """The folders copied for the tool, which writes convert/ and embeddings/ into them."""
    g, r = tmp / tool / "gen", tmp / tool / "ref"
    shutil.copytree(gen, g)
    shutil.copytree(ref, r)
    return g, r


def fadtk_score(ml, gen: Path, ref: Path) -> float:
    """fadtk: every file through ``cache_embedding_file`` (load_audio -> get_embedding -> .npy), then
    ``score(baseline, eval)`` on the two folders."""
    from fadtk.fad import FrechetAudioDistance

    fad = FrechetAudioDistance(ml, audio_load_worker=1, load_model=False)
    for d in (gen, ref):
        for f in sorted(d.glob("*.*")):
            fad.cache_embedding_file(f)
    return float(fad.score(str(ref), str(gen)))


def compare(summary: dict, run: Path, score: float, gen: Path, ref: Path, model: str) -> dict:
    """evalkit's number and saved arrays against the tool's score and .npy files: the relative FAD difference, the
    largest embedding difference and the share of differing embedding values (each a float16 value)."""
    from evalkit.report.rundir import load_run

    rec = load_run(run)
    value = summary["metrics"]["fad"]["value"]
    diffs, differing, total = [], 0, 0
    for folder, column in ((gen, "fad_gen_emb"), (ref, "fad_ref_emb")):
        ours = rec.clip_arrays(column)
        theirs = {p.stem: np.load(p) for p in (folder / "embeddings" / model).glob("*.npy")}
        assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
        for k in ours:
            assert theirs[k].dtype == np.float16 and ours[k].shape == theirs[k].shape, (k, ours[k].shape,
                                                                                        theirs[k].shape)
            d = np.abs(ours[k] - theirs[k].astype(np.float32))
            diffs.append(float(d.max()))
            differing += int((d > 0).sum())
            total += d.size
    out = {"evalkit": value, "tool": score, "rel": abs(value - score) / abs(score), "max_emb_diff": max(diffs),
           "differing_share": differing / total}
    print(model, json.dumps(out))
    return out


def _not_negligible(summary: dict, run: Path) -> None:
    """The sets differ: the FAD is a visible share of the covariances' traces (not a 0 == 0 comparison)."""
    from evalkit.report.rundir import load_run

    rec = load_run(run)
    ref = np.concatenate([a for _, a in sorted(rec.clip_arrays("fad_ref_emb").items())]).astype(np.float64)
    trace = float(np.trace(np.cov(ref, rowvar=False)))
    assert summary["metrics"]["fad"]["value"] > 1e-3 * trace, (summary["metrics"]["fad"]["value"], trace)


# ---------------------------------------------------------------------------------------------------------------
# encodec-emb (full size)
# ---------------------------------------------------------------------------------------------------------------
@needs_torchcodec
def test_encodec_emb_from_the_command_line_is_fadtks(tmp_path):
    """Measured: every float16 embedding value identical, FAD to 1.5e-13 relative."""
    from references.fadtk import encodec_model

    gen, ref = user_folders(tmp_path, 5, 6.0)
    summary, run = run_cli(tmp_path, gen, ref, "encodec-emb", "backbone_size=full")
    ml = encodec_model(evalkit_network("encodec-emb", "full"))
    g, r = tool_copy(tmp_path, gen, ref, "fadtk")
    out = compare(summary, run, fadtk_score(ml, g, r), g, r, "encodec-emb")
    assert out["differing_share"] == 0.0 and out["rel"] <= 1e-9
    _not_negligible(summary, run)


@needs_torchcodec
def test_folders_whose_names_do_not_match_are_scored_as_fadtk_scores_them(tmp_path):
    """fadtk scores two folders as sets: two references without a clip of their name and a clip without its reference
    count as any other file (evalkit used to leave both out: the clip had no pair, the references no prompt)."""
    from references.fadtk import encodec_model

    gen, ref = user_folders(tmp_path, 7, 6.0)
    for f in (gen / "c000.wav", gen / "c001.wav", ref / "c002.flac"):
        f.unlink()
    summary, run = run_cli(tmp_path, gen, ref, "encodec-emb", "backbone_size=full")
    assert summary["metrics"]["fad"]["n_clips"] == 5 and summary["reference_only"]["n_files"] == 2
    ml = encodec_model(evalkit_network("encodec-emb", "full"))
    g, r = tool_copy(tmp_path, gen, ref, "fadtk")
    out = compare(summary, run, fadtk_score(ml, g, r), g, r, "encodec-emb")
    assert out["differing_share"] == 0.0 and out["rel"] <= 1e-9
    _not_negligible(summary, run)


# ---------------------------------------------------------------------------------------------------------------
# clap-laion-audio, clap-laion-music (tiny: fadtk's recipe needs >= 512 ten-second windows per side)
# ---------------------------------------------------------------------------------------------------------------
def laion_clap_checkpoint(tmp: Path):
    """laion's own ``CLAP`` of the tiny layout with trained-looking random weights (``tests/test_clap_backbone.py``:
    every tensor perturbed, bn0 holding log-mel dB statistics; evalkit's seeded initial weights leave bn0 at mean 0,
    variance 1, which makes every clip's embedding nearly the same), saved as a released LAION checkpoint is
    (``{"state_dict": {"module.…"}}`` with ``position_ids``); and laion_clap's ``CLAP_Module`` around it (whose
    ``get_audio_embedding_from_data`` fadtk calls; its __init__, which downloads RoBERTa, is not run)."""
    from laion_clap import CLAP_Module

    from evalkit.embeddings.tokenizers import tiny_roberta_tokenizer
    from references.laion_clap_model import build_clap
    from tests.test_clap_backbone import _randomise, _save_laion_checkpoint

    model, cfg = build_clap("tiny", vocab_size=len(tiny_roberta_tokenizer()), seed=11)
    _randomise(model, 111)
    path = tmp / "laion-tiny.pt"
    _save_laion_checkpoint(model, path)
    mod = CLAP_Module.__new__(CLAP_Module)
    torch.nn.Module.__init__(mod)
    mod.enable_fusion, mod.model, mod.model_cfg = False, model.eval(), cfg
    return path, mod


@needs_torchcodec
def test_clap_laion_audio_and_music_from_the_command_line_are_fadtks(tmp_path):
    """Both protocols at tiny size from the same laion checkpoint (passed as ``metrics.fad.checkpoint``: the
    conversion to ClapModel is on the path). laion's CLAP and transformers' ClapModel compute the same function with
    other operation orders (<= 1e-7), so a few float16 values land on the neighbouring value."""
    from references.fadtk import clap_laion_model

    gen, ref = user_folders(tmp_path, 7, 110.0)  # >= 693 and >= 515 ten-second windows
    path, module = laion_clap_checkpoint(tmp_path)
    ml = clap_laion_model(module, "audio")  # its __init__ (which downloads the released checkpoint) not run
    g, r = tool_copy(tmp_path, gen, ref, "fadtk")
    score = fadtk_score(ml, g, r)
    for protocol in ("clap-laion-audio", "clap-laion-music"):
        summary, run = run_cli(tmp_path, gen, ref, protocol, "backbone_size=tiny", f"metrics.fad.checkpoint={path}",
                               "metrics.fad.checkpoint_sha256=null")  # a test file, not the released one
        assert summary["metrics"]["fad"]["values"]["n_gen_windows"] >= 512
        out = compare(summary, run, score, g, r, "clap-laion-audio")
        # measured (clap-laion-audio): 0.22 % of the float16 values one step apart (max 6.1e-5), FAD 1.30e-6 relative
        # (FAD 0.0544): laion's CLAP and ClapModel order their float32 operations differently (<= 1e-7)
        assert out["rel"] <= 3e-6 and out["max_emb_diff"] <= 2 ** -11 and out["differing_share"] <= 0.01
        _not_negligible(summary, run)


# ---------------------------------------------------------------------------------------------------------------
# vggish with fadtk's recipe (tiny)
# ---------------------------------------------------------------------------------------------------------------
@needs_torchcodec
def test_vggish_protocol_from_the_command_line_is_fadtks(tmp_path, monkeypatch):
    """fadtk's VGGishModel loads torchvggish from torch hub: the hub is served a repo written here
    (``tests/test_fad_reference.py``, torchvggish's layout) holding evalkit's weights; fadtk removes the final ReLU and
    the PCA itself. One file is 0.6 s: fadtk pads it to 1 s (enforce_min_len), and so does the protocol."""
    from fadtk.model_loader import VGGishModel

    from references import google_fad as tv

    gen, ref = user_folders(tmp_path, 7, 19.0, music=False)
    sf.write(str(gen / "c007.wav"), (0.2 * np.sin(np.arange(26460) * 0.05)).astype(np.float32), 44100)
    shutil.copy(ref / "c000.flac", ref / "c007.flac")
    summary, run = run_cli(tmp_path, gen, ref, "vggish", "backbone_size=tiny")
    net = evalkit_network("vggish", "tiny")
    repo = tmp_path / "hub" / "harritaylor_torchvggish_master"
    channels = tuple(net.features[i].out_channels for i in (0, 3, 6, 11))
    tv.write_fake_hub(repo, {k: v.clone() for k, v in net.state_dict().items()}, channels,
                      net.embeddings[0].out_features)
    real_load = torch.hub.load
    monkeypatch.setattr(torch.hub, "load", lambda name, model, *a, **k: real_load(str(repo), model, source="local"))
    ml = VGGishModel()
    ml.load_model()
    g, r = tool_copy(tmp_path, gen, ref, "fadtk")
    out = compare(summary, run, fadtk_score(ml, g, r), g, r, "vggish")
    # measured: 0.045 % of the float16 values one step apart (evalkit's channels-last, batched convolutions move the
    # float32 embeddings by ~1e-7 relative; float16 storage rounds a few of them the other way), FAD 4.1e-6 relative
    assert out["differing_share"] <= 0.002 and out["max_emb_diff"] <= 2 ** -8 and out["rel"] <= 2e-5
    assert np.load(g / "embeddings" / "vggish" / "c007.npy").shape == (1, 128)


# ---------------------------------------------------------------------------------------------------------------
# panns-cnn14-32k with kadtk's recipe (tiny: one embedding per file, > 64 files per side)
# ---------------------------------------------------------------------------------------------------------------
TINY_WIDTHS = (1, 4, 8, 16, 32, 64, 64)  # conf/embeddings/panns-cnn14-32k.yaml tiny: channels, dim 64


def kadtk_cnn14_checkpoint(tmp: Path):
    """kadtk's own ``Cnn14`` (its forward pass) with kadtk's own ``ConvBlock`` of the tiny widths and Linears of the
    tiny size in place of its blocks and ``fc1``/``fc_audioset``; BatchNorm statistics measured on a few clips (as a
    trained network holds them: random ones make every clip's embedding nearly the same), biases perturbed; saved
    as the released file is (``{"model": state_dict}``, front-end tensors and classifier included)."""
    from kadtk.models.panns import Cnn14
    from kadtk.models.panns.models import ConvBlock

    g = torch.Generator().manual_seed(5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = Cnn14(features_list=["2048", "logits"], sample_rate=32000, window_size=1024, hop_size=320,
                      mel_bins=64, fmin=50, fmax=14000, classes_num=527)
        for i in range(6):
            setattr(model, f"conv_block{i + 1}", ConvBlock(TINY_WIDTHS[i], TINY_WIDTHS[i + 1]))
        model.fc1, model.fc_audioset = torch.nn.Linear(64, 64), torch.nn.Linear(64, 527)
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None  # a cumulative average over the calibration batch
        rng = np.random.default_rng(9)
        calib = [_tone(rng, 32000, 1.3) for _ in range(8)] + [_noise(rng, 32000, 1.3) for _ in range(8)]
        with torch.no_grad():
            model.train()
            model(torch.tensor(np.stack(calib), dtype=torch.float32))
            for k, v in model.state_dict().items():
                if k.endswith("bias") and "bn" in k:
                    v.add_(0.05 * torch.randn(v.shape, generator=g))
    path = tmp / "Cnn14_tiny.pth"
    torch.save({"model": model.state_dict(), "sampling_rate": 32000}, path)
    return path, model.eval()


@needs_torchcodec
def test_panns_from_the_command_line_is_kadtks(tmp_path):
    """kadtk's EmbeddingLoader (its load_audio, the loader's get_embedding), then kadtk's score (float32 torch.mean
    and torch.cov, scipy sqrtm) and fadtk's float64 math on the same .npy embeddings. The network comes from a file
    in the released layout (``metrics.fad.checkpoint``: its front-end tensors and classifier are handled on the path).
    Measured: every float16 embedding identical, FAD equal to fadtk's float64 math to 1.8e-8; kadtk's float32
    statistics differ in the 5th digit (1.4e-5)."""
    from fadtk.fad import calc_embd_statistics, calc_frechet_distance
    from kadtk.emb_loader import EmbeddingLoader
    from kadtk.fad import FrechetAudioDistance as KadtkFAD

    from references.kadtk import panns_model

    gen, ref = user_folders(tmp_path, 70, 1.3, music=False)
    path, model = kadtk_cnn14_checkpoint(tmp_path)
    summary, run = run_cli(tmp_path, gen, ref, "panns-cnn14-32k", "backbone_size=tiny",
                           f"metrics.fad.checkpoint={path}", "metrics.kad.protocol=panns-cnn14-32k",
                           f"metrics.kad.checkpoint={path}", metrics="fad,kad")
    ml = panns_model(model, 64)  # the tiny embedding (kadtk checks the width it was told)
    g, r = tool_copy(tmp_path, gen, ref, "kadtk")
    loader = EmbeddingLoader(ml, audio_load_worker=1, load_model=False)
    for d in (g, r):
        for f in sorted(d.glob("*.*")):
            loader.cache_embedding_file(f)
    kadtk_score = float(KadtkFAD(ml, "cpu", audio_load_worker=1, logger=logging.getLogger("kadtk")).score(r, g))
    # kadtk takes the statistics of the float16 files in float32 (torch.tensor(x, dtype=float32)): no float16 mean;
    # fadtk's math on the same values in float64 is what evalkit computes
    emb = {d: np.concatenate([np.load(p) for p in sorted((d / "embeddings" / ml.name).glob("*.npy"))]).astype(np.float64)
           for d in (g, r)}
    fadtk_math = float(calc_frechet_distance(*calc_embd_statistics(emb[r]), *calc_embd_statistics(emb[g])))
    out = compare(summary, run, fadtk_math, g, r, ml.name)
    print("kadtk's own score (float32 statistics):", kadtk_score, abs(out["evalkit"] - kadtk_score) / kadtk_score)
    # measured 1.8e-8: 70 clips for 64 dimensions make both covariances nearly singular, where fadtk's eig-based
    # trace term and evalkit's eigh-based one part in the 8th digit (on fadtk's own statistics: <= 5e-11)
    assert out["differing_share"] == 0.0 and out["rel"] <= 1e-6
    assert abs(out["evalkit"] - kadtk_score) <= 1e-3 * kadtk_score, (out["evalkit"], kadtk_score)
    _not_negligible(summary, run)
    # KAD (`python -m kadtk panns-cnn14-32k <baseline> <eval>`: KernelAudioDistance.score = calc_kernel_audio_distance
    # of the loader's float16 .npy files, x = baseline, y = eval) on the same embeddings, computed once for both
    from evalkit.report.rundir import load_run
    from kadtk.kad import calc_kernel_audio_distance

    kad = summary["metrics"]["kad"]
    assert (kad["protocol"], kad["embedding"]) == ("panns-cnn14-32k", "panns-cnn14-32k")
    rec = load_run(run)
    for side in ("gen", "ref"):
        a, b = rec.clip_arrays(f"kad_{side}_emb"), rec.clip_arrays(f"fad_{side}_emb")
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    stacked = {d: np.concatenate([np.load(p) for p in sorted((d / "embeddings" / ml.name).glob("*.npy"))]) for d in (g, r)}
    theirs = float(calc_kernel_audio_distance(torch.from_numpy(stacked[r]), torch.from_numpy(stacked[g]), (None, None),
                                              "cpu"))
    print("KAD panns-cnn14-32k", kad["value"], theirs, abs(kad["value"] - theirs) / abs(theirs))
    # measured 5.0e-7: kadtk sums dense float32 kernel matrices, evalkit float32 blocks in another order
    assert kad["value"] == pytest.approx(theirs, rel=5e-6) and abs(theirs) > 1e-2


@needs_torchcodec
def test_kad_alone_on_panns_from_the_command_line_is_kadtks(tmp_path):
    """`python -m evalkit ... metrics=[kad] metrics/kad=panns-cnn14-32k` alone (no FAD to share embeddings with) is
    `python -m kadtk panns-cnn14-32k ref gen`: kadtk's EmbeddingLoader embeds one file per pass; so does evalkit (KAD's
    conf once batched 128 files per pass, which moved float16 values one step from kadtk's)."""
    from kadtk.emb_loader import EmbeddingLoader
    from kadtk.kad import calc_kernel_audio_distance

    from evalkit.report.rundir import load_run
    from references.kadtk import panns_model

    gen, ref = user_folders(tmp_path, 24, 1.3, music=False, equal=True)  # equal lengths: what a batched pass groups
    path, model = kadtk_cnn14_checkpoint(tmp_path)
    summary, run = run_cli(tmp_path, gen, ref, "panns-cnn14-32k", "backbone_size=tiny", f"metrics.kad.checkpoint={path}",
                           metrics="kad", of="kad")
    ml = panns_model(model, 64)
    g, r = tool_copy(tmp_path, gen, ref, "kadtk")
    loader = EmbeddingLoader(ml, audio_load_worker=1, load_model=False)
    for d in (g, r):
        for f in sorted(d.glob("*.*")):
            loader.cache_embedding_file(f)
    rec = load_run(run)
    for side, d in (("gen", g), ("ref", r)):
        ours = rec.clip_arrays(f"kad_{side}_emb")
        theirs = {p.stem: np.load(p) for p in (d / "embeddings" / ml.name).glob("*.npy")}
        assert sorted(ours) == sorted(theirs) and len(ours) == 24
        assert all(np.array_equal(ours[k], theirs[k].astype(np.float32)) for k in ours), side
    stacked = {d: np.concatenate([np.load(p) for p in sorted((d / "embeddings" / ml.name).glob("*.npy"))]) for d in (g, r)}
    theirs = float(calc_kernel_audio_distance(torch.from_numpy(stacked[r]), torch.from_numpy(stacked[g]), (None, None),
                                              "cpu"))
    kad = summary["metrics"]["kad"]
    print("KAD panns-cnn14-32k alone", kad["value"], theirs, abs(kad["value"] - theirs) / abs(theirs))
    assert kad["value"] == pytest.approx(theirs, rel=5e-6) and abs(theirs) > 1e-2


# ---------------------------------------------------------------------------------------------------------------
# fadtk's shipped statistics, and its Fréchet distance
# ---------------------------------------------------------------------------------------------------------------
FMA_POP_MODELS = {"MERT-v1-95M": 768, **{f"MERT-v1-95M-{i}": 768 for i in range(1, 12)}, "cdpam-acoustic": 512,
                  "cdpam-content": 512, "clap-2023": 1024, "clap-laion-audio": 512, "clap-laion-music": 512,
                  "dac-44kHz": 1024, "encodec-emb": 128, "encodec-emb-48k": 128, "vggish": 128}


def test_fma_pop_is_read_as_it_ships():
    """The wheel's fadtk/stats/fma_pop.npz: 42 arrays, <model>.mu [d] and <model>.cov [d, d]; evalkit reads each of
    its embeddings' arrays (as fadtk's load_stats does: the same values), and refuses one the file lacks."""
    from fadtk.fad import FrechetAudioDistance

    from evalkit.statistics.stats_file import StatsFileError, read_stats_file, resolve_stats_path

    path = resolve_stats_path("fadtk:fma_pop")
    with np.load(path) as z:
        shapes = {k: z[k].shape for k in z.files}
    assert len(shapes) == 42
    assert shapes == {f"{m}.{s}": ((d,) if s == "mu" else (d, d)) for m, d in FMA_POP_MODELS.items()
                      for s in ("mu", "cov")}
    for name in ("vggish", "clap-laion-audio", "clap-laion-music", "encodec-emb"):
        found = read_stats_file("fadtk:fma_pop", embedding=name)
        holder = type("ML", (), {"name": name})()
        fad = FrechetAudioDistance.__new__(FrechetAudioDistance)
        fad.ml = holder
        mu, cov = fad.load_stats("fma_pop")  # fadtk's own reader
        assert (found.kind, found.model) == ("fadtk", name)
        assert np.array_equal(found.mu, mu) and np.array_equal(found.sigma, cov)
    with pytest.raises(StatsFileError, match=r"no statistics for the panns-cnn14-32k embedding"):
        read_stats_file("fadtk:fma_pop", embedding="panns-cnn14-32k")


def test_fma_pop_from_the_command_line_is_refused_for_random_weights(tmp_path):
    gen, _ = user_folders(tmp_path, 1, 3.0, music=False)
    env = dict(os.environ, HF_HUB_OFFLINE="1", EVALKIT_OFFLINE="1", PYTHONPATH=str(REPO),
               EVALKIT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "evalkit", "model=folder", f"model.dir={gen}", "metrics=[fad]",
                           "metrics.fad.protocol=encodec-emb", "reference.stats=fadtk:fma_pop",
                           "backbone_weights=random", "backbone_size=tiny", f"hydra.run.dir={tmp_path / 'run'}",
                           "progress=false"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "fadtk's statistics of encodec-emb were made with the released weights and fadtk's recipe" in proc.stderr
    assert "random weights (backbone_weights=random)" in proc.stderr


@pytest.mark.parametrize("a, b", [("clap-laion-audio", "clap-laion-music"), ("encodec-emb", "vggish"),
                                  ("MERT-v1-95M-3", "MERT-v1-95M-9"), ("encodec-emb", "encodec-emb-48k")])
def test_frechet_distance_equals_fadtks_on_its_own_statistics(a, b):
    """evalkit's trace term (eigh of sqrt(S1) S2 sqrt(S1)) against fadtk's (eig of S1 S2, V sqrt(D) V^-1) on pairs
    of fadtk's shipped statistics of equal dimension: equal to 1e-6 relative."""
    from fadtk.fad import calc_frechet_distance

    from evalkit.statistics.frechet import frechet_distance
    from evalkit.statistics.stats_file import resolve_stats_path

    with np.load(resolve_stats_path("fadtk:fma_pop")) as z:
        mu1, s1, mu2, s2 = z[f"{a}.mu"], z[f"{a}.cov"], z[f"{b}.mu"], z[f"{b}.cov"]
    theirs = float(calc_frechet_distance(mu1, s1, mu2, s2))
    ours = frechet_distance(mu1, s1, mu2, s2)
    print(a, b, ours, theirs, abs(ours - theirs) / theirs)
    assert ours == pytest.approx(theirs, rel=1e-6)
