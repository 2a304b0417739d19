"""Every protocol equals its tool from the command line (issue 23).

Each test runs the command line exactly as a user types it, with no post-processing override::

    python -m evalkit model=folder model.dir=GEN reference.dir=REF metrics=[...] metrics.<m>.protocol=<p> \\
        backbone_weights=random backbone_size=tiny hydra.run.dir=... cache.dir=...

on files a user has (:func:`user_files`: generated clips at 44.1 and 48 kHz, WAV and FLAC, stereo and mono, 12 s and
25 s, 20 dB quieter than their 20 s references, which are at 48 and 44.1 kHz, stereo and mono), and compares the
number in the run's ``summary.json`` (and the per-clip values of ``clips.parquet``) with the tool's recipe run on the
same files with the same random weights (the CLI's: seed 0, tiny), transcribed in ``references/``:

============================  =======================================================================================
protocol                      reference (and environment)
============================  =======================================================================================
fad frechet-audio-distance    the installed package's ``FrechetAudioDistance(...).score(ref_dir, gen_dir)``, its
                              torch hub VGGish served the CLI's weights (reference environment)
kld stable-audio-metrics      ``src/passt_kld.py`` (``references/stable_audio_metrics.py``) with hear21passt's own
                              ``base.get_basic_model`` around the CLI's network
fad / kld / clap / chroma     audiocraft: the MusicGen solver's post-processing (``references/audiocraft_solver.py``:
audiocraft                    ``evaluate_audio_generation``'s crop, ``normalize_audio(strategy='loudness')`` with
                              torchaudio's float32 ``Loudness``, clamp) then each metric's audiocraft code: Google's
                              TF FAD pipeline (``references/google_fad.py``), ``metrics/kld.py`` with hear21passt's
                              ``base20sec`` wrapper, ``metrics/clap_consistency.py`` on laion_clap's own CLAP
                              (reference environment), ``metrics/chroma_cosinesim.py``
mixed                         ``metrics=[fad,kld] metrics.kld.protocol=stable-audio-metrics``: each metric's number is
                              the one it gives alone, bit for bit
============================  =======================================================================================

Tolerances (what float32 and the one deviation in the recipe justify; each test prints what it measured):

- the solver's loudness meter: evalkit measures BS.1770 in float64 (``evalkit/audio.py loudness_lufs``: torchaudio's
  filters run in float64, equal to ``torchaudio.functional.loudness`` on float64 input to 1e-13 dB), audiocraft with
  torchaudio in float32, whose filters are off by up to 6.7e-4 dB on these clips (20 s of quiet 48 kHz audio: a gain
  7.7e-5 apart). So each audiocraft reference runs twice (:data:`METERS`): with the float64 meter the CLI must equal
  it to float32 precision (the "floor"); with audiocraft's own float32 meter, to the floor plus the distance between
  the two references;
- KL divergences: with random weights PaSST's softmax is nearly uniform (p ~ 1/527), so the KLs are ~2e-3, and one
  float32 ulp on each probability moves them by ~5e-5 of themselves. Their floor is that propagation
  (:func:`kl_float32_bound`: every probability moved by 2 float32 ulps, the most evalkit's and the package's softmax
  outputs differ on these clips, plus the package's own float32 summation), computed from the reference's
  probabilities, on top of 1e-6 relative.

CPU only, ``slow``: measured on 2 shared cores (load 5-6) on 2026-12-03, 381 s in the current environment (6 tests, the
2 ``reference`` ones skip) and 406 s in the reference environment (all 8); seven command-line runs of ~20-40 s each
and the PaSST references (~1 minute each) are most of it.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import MUSIC_DIR, REPO, reference_test

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
RANDOM_TINY = ["backbone_weights=random", "backbone_size=tiny"]
N_PAIRS = 8


# ----------------------------------------------------------------------------------------------------------------
# Files a user has
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Files:
    gen: Path
    ref: Path
    captions: Path
    ids: list[str]
    gen_ext: dict[str, str]  # id -> ".wav" | ".flac"
    caption: dict[str, str]

    def gen_path(self, cid: str) -> Path:
        return self.gen / f"{cid}{self.gen_ext[cid]}"

    def ref_path(self, cid: str) -> Path:
        return self.ref / f"{cid}.wav"


def _piece(rows, i: int, melody: bool = False) -> torch.Tensor:
    import soundfile as sf

    x, sr = sf.read(str(MUSIC_DIR / f"{rows[i % len(rows)]['id']}{'.melody' if melody else ''}.flac"), dtype="float32",
                    always_2d=True)
    assert sr == 32000
    x = torch.from_numpy(x.T.copy())
    return x.expand(2, -1) if x.shape[0] == 1 else x


def _write(path: Path, x: torch.Tensor, sr: int, gain: float, mono: bool) -> None:
    import julius
    import soundfile as sf

    y = julius.resample_frac(x, 32000, sr) * gain
    if mono:
        y = y.mean(0, keepdim=True)
    assert float(y.abs().max()) < 1.0
    sf.write(str(path), y.T.numpy(), sr, subtype="PCM_16")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> Files:
    """8 pairs from the shared music (real 10 s pieces at 32 kHz, concatenated): references of 20 s at 48 kHz (even
    ids) or 44.1 kHz (odd), mono every third; generated clips of 25 s (p0-p3: longer than the reference, cropped)
    or 12 s (p4-p7: shorter, zero-padded by the audiocraft protocols), at 44.1 kHz (even) or 48 kHz (odd), mono when
    id % 3 == 1, FLAC for p1 and p5, 20 dB below the level of the source. Per side: 152 (generated) and 160
    (reference) VGGish examples of 0.96 s, enough for a 128x128 covariance."""
    if not (MUSIC_DIR / "metadata.csv").is_file():
        pytest.skip(f"{MUSIC_DIR} not present")
    with open(MUSIC_DIR / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    root = tmp_path_factory.mktemp("user-files")
    gen, ref = root / "generated", root / "references"
    gen.mkdir()
    ref.mkdir()
    ids, gen_ext, caption = [], {}, {}
    for i in range(N_PAIRS):
        cid = f"p{i}"
        ids.append(cid)
        _write(ref / f"{cid}.wav", torch.cat([_piece(rows, i), _piece(rows, i + 1)], -1),
               48000 if i % 2 == 0 else 44100, 1.0, mono=i % 3 == 0)
        if i < 4:
            g = torch.cat([_piece(rows, i + 4), _piece(rows, i + 5, melody=True),
                           _piece(rows, i + 6)[:, :5 * 32000]], -1)
        else:
            g = torch.cat([_piece(rows, i + 4), _piece(rows, i + 6, melody=True)[:, :2 * 32000]], -1)
        gen_ext[cid] = ".flac" if i % 4 == 1 else ".wav"
        _write(gen / f"{cid}{gen_ext[cid]}", g, 44100 if i % 2 == 0 else 48000, 0.1, mono=i % 3 == 1)
        caption[cid] = rows[(i + 4) % len(rows)]["caption"]
    captions = root / "captions.csv"
    with open(captions, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "caption"])
        w.writerows(caption.items())
    return Files(gen, ref, captions, ids, gen_ext, caption)


def test_the_files_are_what_a_user_has(user_files):
    import soundfile as sf

    f = user_files
    info = {cid: (sf.info(str(f.gen_path(cid))), sf.info(str(f.ref_path(cid)))) for cid in f.ids}
    assert {g.samplerate for g, _ in info.values()} == {r.samplerate for _, r in info.values()} == {44100, 48000}
    assert {g.channels for g, _ in info.values()} == {r.channels for _, r in info.values()} == {1, 2}
    assert sorted({round(g.duration) for g, _ in info.values()}) == [12, 25]
    assert {r.duration for _, r in info.values()} == {20.0}
    assert {g.format for g, _ in info.values()} == {"WAV", "FLAC"}

    def rms_db(p):
        x, _ = sf.read(str(p), dtype="float64")
        return 10 * np.log10(np.mean(x**2))

    gap = np.mean([rms_db(f.gen_path(c)) - rms_db(f.ref_path(c)) for c in f.ids])
    assert -26.0 < gap < -14.0, gap  # the generated clips are ~20 dB quieter: the loudness step matters


# ----------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    summary: dict
    clips: object  # pandas.DataFrame of clips.parquet

    def metric(self, name: str) -> dict:
        return self.summary["metrics"][name]

    def per_clip(self, column: str) -> dict[str, float]:
        return dict(zip(self.clips["id"], self.clips[column]))


@pytest.fixture(scope="module")
def cli(user_files, tmp_path_factory):
    """``cli(name, *args)``: the run of ``python -m evalkit model=folder model.dir=GEN reference.dir=REF *args
    backbone_weights=random backbone_size=tiny`` in its own run folder and its own cache folder (nothing reused
    between runs), once per module; returns its summary.json and clips.parquet."""
    import pandas as pd

    done: dict[tuple, Run] = {}

    def run(name: str, *args: str) -> Run:
        key = (name, *args)
        if key not in done:
            out = tmp_path_factory.mktemp(f"run-{name}")
            cmd = [sys.executable, "-m", "evalkit", "model=folder", f"model.dir={user_files.gen}",
                   f"reference.dir={user_files.ref}", *args, *RANDOM_TINY, f"hydra.run.dir={out / 'run'}",
                   f"cache.dir={out / 'cache'}", "progress=false"]
            p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900, check=False)
            assert p.returncode == 0, (cmd, p.stdout[-3000:], p.stderr[-3000:])
            summary = json.loads((out / "run" / "summary.json").read_text())
            assert summary["evalkit_version"] and summary["n_clips"] == N_PAIRS and summary["n_skipped"] == 0
            for m, entry in summary["metrics"].items():  # every clip scored: the references see the same set
                assert entry["n_clips"] == N_PAIRS and entry["n_skipped"] == 0, (m, entry)
                assert entry.get("error") is None, (m, entry)
                assert entry["random_weights"] is bool(entry.get("embedding")), (m, entry)
            done[key] = Run(summary, pd.read_parquet(out / "run" / "clips.parquet"))
        return done[key]

    return run


def _recipe(metric: str, protocol: str | None = None) -> dict:
    """The recipe the command line composes (its weights: random, seed 0, tiny)."""
    from evalkit.spec import metric_recipe

    return metric_recipe(metric, ([f"metrics.{metric}.protocol={protocol}"] if protocol else []) + RANDOM_TINY)


def _solver_steps(entry: dict, expected: bool) -> None:
    """The run's recorded input path starts with the solver's post-processing (audiocraft) or has none."""
    steps = entry["recipe"]["input"]
    if expected:
        assert steps["generated"] == [{"crop": "reference"}, {"loudness": {"lufs": -14.0, "energy_floor": 0.002}},
                                      {"clamp": 1.0}, {"pad": "reference"}]
        assert steps["reference"] == [{"resample": {"rate": 32000, "with": "julius"}}, {"channels": "model"}]
    else:
        assert steps["generated"] == steps["reference"] == []


def kl_float32_bound(p, q, ulps: int = 2, eps: float = 1e-6) -> np.ndarray:
    """How far ``sum_k p_k (log p_k - log(q_k + eps))`` (per row) can move when every float32 probability of ``p`` and
    ``q`` moves by ``ulps`` float32 ulps (first order, errors aligned), plus the difference between the package's
    float32 ``F.kl_div(...).sum()`` and the float64 sum on the same rows."""
    import torch.nn.functional as F

    p32, q32 = np.atleast_2d(np.asarray(p, np.float32)), np.atleast_2d(np.asarray(q, np.float32))
    p64, q64 = p32.astype(np.float64), q32.astype(np.float64)
    dp = ulps * np.spacing(p32).astype(np.float64)
    dq = ulps * np.spacing(q32).astype(np.float64)
    first_order = (dp * np.abs(np.log(p64) - np.log(q64 + eps) + 1)).sum(-1) + (dq * p64 / (q64 + eps)).sum(-1)
    kl32 = F.kl_div((torch.from_numpy(q32) + eps).log(), torch.from_numpy(p32), reduction="none").sum(-1)
    kl64 = (p64 * (np.log(p64) - np.log(q64 + eps))).sum(-1)
    return first_order + np.abs(kl32.double().numpy() - kl64)


# ----------------------------------------------------------------------------------------------------------------
# 1. FAD, frechet-audio-distance: the package's score()
# ----------------------------------------------------------------------------------------------------------------
@reference_test("frechet_audio_distance")
def test_fad_frechet_audio_distance_equals_the_package(cli, user_files, tmp_path, monkeypatch):
    """The CLI's FAD vs ``FrechetAudioDistance(model_name="vggish", sample_rate=16000, use_pca=False,
    use_activation=False).score(ref_dir, gen_dir)`` on the same folders, its VGGish being the CLI's (the fake torch
    hub of test_fad_parity.py): 1e-4 relative; each clip's embeddings to 1e-5 of their largest magnitude.
    Measured: 0.00187308993 vs 0.00187308933 (3.2e-7 relative)."""
    from evalkit.metrics.fad import FAD
    from tests.test_fad_parity import package_fad

    run = cli("fad-package", "metrics=[fad]", "metrics.fad.protocol=frechet-audio-distance")
    entry = run.metric("fad")
    _solver_steps(entry, expected=False)
    network = FAD(_recipe("fad", "frechet-audio-distance")).embedder.network
    pkg = package_fad(tmp_path, monkeypatch, network)
    score = pkg.score(str(user_files.ref), str(user_files.gen), background_embds_path=str(tmp_path / "bg.npy"),
                      eval_embds_path=str(tmp_path / "ev.npy"))
    assert score != -1  # the package returns -1 after printing any exception
    print(f"fad frechet-audio-distance: cli {entry['value']!r} package {float(score)!r} "
          f"rel {abs(entry['value'] - score) / score:.2e}")
    assert entry["value"] == pytest.approx(float(score), rel=1e-4)
    # the embeddings: the package concatenates its files in os.listdir order
    emb = _embeddings(run)
    for folder, npy, key in ((user_files.gen, "ev.npy", "fad_gen_emb"), (user_files.ref, "bg.npy", "fad_ref_emb")):
        theirs = np.load(tmp_path / npy)
        ours = np.concatenate([emb[f"{Path(name).stem}/{key}"] for name in os.listdir(folder)])
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()
    assert (entry["values"]["n_gen_windows"], entry["values"]["n_ref_windows"]) == (152, 160)


def _embeddings(run: Run) -> dict[str, np.ndarray]:
    folder = Path(run.summary["run_dir"]) / "embeddings"
    out = {}
    for f in sorted(folder.glob("batch-*.npz")):
        with np.load(f) as z:
            out.update({k: z[k] for k in z.files})
    return out


# ----------------------------------------------------------------------------------------------------------------
# 2. KLD, stable-audio-metrics: passt_kld
# ----------------------------------------------------------------------------------------------------------------
def test_kld_stable_audio_metrics_equals_passt_kld(cli, user_files):
    """The CLI's KLD vs stable-audio-metrics ``passt_kld(ids, gen_dir, ..., ref_dir, ...)`` (librosa.load at 32 kHz
    mono with soxr_hq, pyloudnorm's -1 dB peak, 10 s windows every 5 s, mean logits, softmax, KL(gen ‖ ref), mean)
    with hear21passt's ``base.get_basic_model`` around the CLI's network. Headline and each clip: 1e-6 relative plus
    :func:`kl_float32_bound`. Measured: 0.00260577737 vs 0.00260572741 (1.9e-5 relative, 5.0e-8 absolute; the bound:
    3.6e-7), and vs 0.00260572555 (2.0e-5, 5.2e-8) in the reference environment, where numpy 1.26 keeps the peak
    gain's product in float32 as the package did (numpy 2 promotes it to float64); the probabilities themselves
    differ by <= 4.7e-10 (2 ulps at p ~ 2.9e-3): the mel and the network give the package's logits bit for bit at
    batch 1, the inputs differ by the peak gain's float32 vs float64 rounding (<= 6e-8) and evalkit's batch of
    windows moves logits by <= 6e-8."""
    from evalkit.metrics.kld import KLD
    from references.audiocraft_kld import passt_wrapper
    from references.stable_audio_metrics import passt_kld

    run = cli("kld-sam", "metrics=[kld]", "metrics.kld.protocol=stable-audio-metrics")
    entry = run.metric("kld")
    _solver_steps(entry, expected=False)
    wrapper, seen = passt_wrapper("base", KLD(_recipe("kld", "stable-audio-metrics")).embedder.network.net)
    assert seen["arch"] == "passt_s_swa_p16_128_ap476"
    f = user_files
    value, per_id = passt_kld(wrapper, f.ids, f.gen, [f.gen_ext[c] for c in f.ids], f.ref, [".wav"] * len(f.ids))
    bounds = {c: float(kl_float32_bound(ep.numpy(), rp.numpy())[0]) for c, (_, ep, rp) in per_id.items()}
    bound = float(np.mean(list(bounds.values())))
    print(f"kld stable-audio-metrics: cli {entry['value']!r} passt_kld {value!r} "
          f"rel {abs(entry['value'] - value) / abs(value):.2e} abs {abs(entry['value'] - value):.2e} bound {bound:.2e}")
    assert entry["value"] == entry["values"]["kld_qp"]
    assert abs(entry["value"] - value) <= 1e-6 * abs(value) + bound
    for cid, kl in run.per_clip("kld").items():
        assert abs(kl - per_id[cid][0]) <= 1e-6 * abs(per_id[cid][0]) + bounds[cid], cid
    assert run.per_clip("kld_rows") == {c: 1 for c in f.ids}


# ----------------------------------------------------------------------------------------------------------------
# 3. The audiocraft protocols: the solver's post-processing, then audiocraft's metric code
# ----------------------------------------------------------------------------------------------------------------
#: the two loudness meters the audiocraft references run with: audiocraft's (torchaudio in float32) and the same
#: BS.1770 in float64 (evalkit's meter: evalkit/audio.py loudness_lufs equals torchaudio in float64 to 1e-13 dB)
METERS = {"float32": None, "float64": torch.float64}


@pytest.fixture(scope="module")
def solver_pairs(user_files) -> dict[str, dict[str, tuple[torch.Tensor, int, torch.Tensor]]]:
    """meter -> id -> (generated as the solver hands it (at its own rate), that rate, the reference at 32 kHz): the
    files read as audiocraft reads them, through ``evaluate_audio_generation``'s crop and ``normalize_audio(loudness)``
    with that meter."""
    from references.audiocraft_solver import audio_read, solver_postprocess

    out: dict[str, dict] = {m: {} for m in METERS}
    for cid in user_files.ids:
        gen, gsr = audio_read(user_files.gen_path(cid))
        ref, rsr = audio_read(user_files.ref_path(cid))
        for meter, dtype in METERS.items():
            g, r = solver_postprocess(gen, gsr, ref, rsr, meter_dtype=dtype)
            out[meter][cid] = (g, gsr, r)
    # the clamp after the loudness gain is exercised (a few samples of some clips), below the audit's 1 % skip
    shares = [float((g.abs() >= 1.0).float().mean()) for g, _, _ in out["float32"].values()]
    assert 0 < max(shares) < 0.01, shares
    # the meters' gains differ (torchaudio's float32 filters; most on the quiet 48 kHz clips)
    gains = [float(out["float64"][c][0].abs().max() / out["float32"][c][0].abs().max()) for c in user_files.ids]
    assert 1e-6 < max(abs(g - 1) for g in gains) < 1e-3, gains
    return out


def _both(name: str, value64: float, value32: float, cli_value: float, floor: float) -> None:
    """The CLI equals the reference with the float64 meter within ``floor``, and the faithful reference (audiocraft's
    float32 meter) within ``floor`` + what the meter moves the reference by."""
    meter = abs(value32 - value64)
    print(f"{name}: cli {cli_value!r} reference, float64 meter {value64!r} (diff {abs(cli_value - value64):.2e}); "
          f"audiocraft's float32 meter {value32!r} (diff {abs(cli_value - value32):.2e}, the meter moves it "
          f"{meter:.2e}); floor {floor:.2e}")
    assert abs(cli_value - value64) <= floor
    assert abs(cli_value - value32) <= floor + meter


def test_fad_audiocraft_equals_google_fad_after_the_solver(cli, solver_pairs, tmp_path):
    """The CLI's FAD vs audiocraft's FAD after the solver: each pair at 32 kHz cut to ``sizes``, ``convert_audio`` to
    16 kHz mono, ``audio_write(strategy="peak")`` to an int16 wav; Google's reader (scipy, raw int16), 1 s windows
    every 0.5 s, VGGish (the CLI's weights, pre-activation); ``ComputeMeanAndCovariance`` stored as float32,
    ``frechet_distance`` (scipy sqrtm). Floor: 1e-6 relative (float32 embeddings; Google's float32 statistics alone
    move it 4e-8). Each clip's embeddings (the run's ``embeddings/``) vs the float64-meter reference: 1e-5 of their
    largest magnitude (float32). Measured: 0.00114472418 vs 0.00114472390 with the float64 meter (2.4e-7 relative),
    vs 0.00114472513 with audiocraft's float32 meter (8.3e-7; the meters' references are 1.1e-6 apart)."""
    import soundfile as sf

    from evalkit.metrics.fad import FAD
    from references import google_fad as G
    from references.audiocraft_solver import at_solver_rate

    run = cli("fad-audiocraft", "metrics=[fad]")
    entry = run.metric("fad")
    assert entry["protocol"] == "audiocraft"
    _solver_steps(entry, expected=True)
    net = FAD(_recipe("fad")).embedder.network
    channels = tuple(net.features[i].out_channels for i in (0, 3, 6, 11))
    vgg = G.fad_network(net.state_dict(), channels, net.embeddings[0].out_features)
    emb = _embeddings(run)
    values = {}
    for meter, pairs in solver_pairs.items():
        sides: dict[str, list[np.ndarray]] = {"gen": [], "ref": []}
        for cid, (g, gsr, r) in pairs.items():
            n = r.shape[-1]  # sizes: the reference's length at 32 kHz
            for side, wav in (("gen", at_solver_rate(g, gsr)), ("ref", r)):
                path = tmp_path / f"{meter}-{side}-{cid}.wav"
                sf.write(str(path), G.audiocraft_write_int16(wav, 32000, n), 16000, subtype="PCM_16")
                examples = G.google_examples(G.google_read_wav(path))
                with torch.no_grad():
                    e = vgg(torch.from_numpy(examples).float()[:, None]).numpy()
                if meter == "float64":
                    ours = emb[f"{cid}/fad_{side}_emb"]
                    assert ours.shape == e.shape == (39, 128)  # 20 s: range(0, 320000 - 16000 + 1, 8000)
                    assert np.abs(ours - e).max() <= 1e-5 * np.abs(e).max(), (cid, side)
                sides[side].append(e.astype(np.float64))
        stats = {s: G.google_stored_stats(*G.google_mean_and_covariance(np.concatenate(v))) for s, v in sides.items()}
        values[meter] = G.google_frechet_distance(*stats["gen"], *stats["ref"])
    _both("fad audiocraft", values["float64"], values["float32"], entry["value"], 1e-6 * values["float64"])


def test_kld_audiocraft_equals_audiocraft_after_the_solver(cli, solver_pairs):
    """The CLI's KLD vs audiocraft's ``PasstKLDivergenceMetric`` (after 2454f80: 20 s chunks, one softmax row each,
    KL(reference ‖ generated) headline, KL(generated ‖ reference) beside) with hear21passt's ``base20sec`` wrapper
    around the CLI's network, on the solver's pairs at 32 kHz. Floor, headline and each clip: 1e-6 relative +
    :func:`kl_float32_bound` (3.5e-7 here). Measured: kld 0.00232890701 vs 0.00232888712 with the float64 meter
    (2.0e-8, 8.5e-6 relative), vs 0.00232881447 with audiocraft's float32 meter (9.3e-8; the meters' references are
    7.3e-8 apart); kld_qp 1.5e-8 and 5.4e-8."""
    from evalkit.metrics.kld import KLD
    from references.audiocraft_kld import audiocraft_kld, passt_wrapper
    from references.audiocraft_solver import at_solver_rate

    run = cli("kld-audiocraft", "metrics=[kld]")
    entry = run.metric("kld")
    assert entry["protocol"] == "audiocraft"
    _solver_steps(entry, expected=True)
    wrapper, seen = passt_wrapper("base20sec", KLD(_recipe("kld")).embedder.network.net)
    assert (seen["arch"], seen["input_tdim"]) == ("passt_20sec", 2000)
    results = {meter: audiocraft_kld(wrapper, [(at_solver_rate(g, gsr), r, 32000) for g, gsr, r in pairs.values()])
               for meter, pairs in solver_pairs.items()}
    (v64, clips64), (v32, clips32) = results["float64"], results["float32"]
    got = entry["values"]
    for key, reverse in (("kld", False), ("kld_qp", True)):
        bound = np.mean([float(kl_float32_bound(*((pp, pt) if reverse else (pt, pp)))[0]) for _, _, pp, pt in clips64])
        _both(f"kld audiocraft {key}", v64[key], v32[key], got[key], 1e-6 * abs(v64[key]) + bound)
    assert entry["value"] == got["kld"] == got["kld_pq"]
    for cid, (pq, _, pp, pt), (pq32, *_) in zip(solver_pairs["float64"], clips64, clips32):
        floor = 1e-6 * abs(pq) + float(kl_float32_bound(pt.numpy(), pp.numpy())[0])
        assert abs(run.per_clip("kld")[cid] - pq) <= floor, cid
        assert abs(run.per_clip("kld")[cid] - pq32) <= floor + abs(pq32 - pq), cid
        assert run.per_clip("kld_rows")[cid] == pp.shape[0] == 1


def test_chroma_audiocraft_equals_audiocraft_after_the_solver(cli, solver_pairs):
    """The CLI's chroma vs audiocraft's ``ChromaCosineSimilarityMetric`` on the solver's pairs at 32 kHz (the
    generation cut or zero-padded to the reference: audiocraft asserts equal shapes). Argmax chroma: the value is a
    count of agreeing frames over 1,256, which a gain can change only on a near-tie of two chroma bins. Tolerance:
    the same frames with either meter (1e-12). Measured: 0.11305732484076433 in all three, bit for bit."""
    from references.audiocraft_chroma import ChromaCosineSimilarity
    from references.audiocraft_solver import at_solver_rate

    run = cli("chroma-audiocraft", "metrics=[chroma]")
    entry = run.metric("chroma")
    assert entry["protocol"] == "audiocraft"
    _solver_steps(entry, expected=True)
    chroma = ChromaCosineSimilarity()
    for meter, pairs in solver_pairs.items():
        total = frames = 0
        for cid, (g, gsr, r) in pairs.items():
            n = r.shape[-1]
            g32 = at_solver_rate(g, gsr)
            g32 = g32[..., :n] if g32.shape[-1] >= n else torch.nn.functional.pad(g32, (0, n - g32.shape[-1]))
            [(s, t)] = chroma.score(g32[None], r[None], torch.tensor([n]), 32000)
            assert run.per_clip("chroma_frames")[cid] == t == 157
            assert run.per_clip("chroma")[cid] == pytest.approx(s / t, abs=1e-12), (meter, cid)
            total, frames = total + s, frames + t
        print(f"chroma audiocraft: cli {entry['value']!r} audiocraft ({meter} meter) {total / frames!r}")
        assert entry["value"] == pytest.approx(total / frames, abs=1e-12)
        assert entry["values"]["n_frames"] == frames
    assert 0.0 < entry["value"] < 1.0


@reference_test("laion_clap")
def test_clap_audiocraft_equals_laion_after_the_solver(cli, user_files, solver_pairs):
    """The CLI's CLAP vs audiocraft's ``CLAPTextConsistencyMetric`` on laion_clap's own CLAP holding the CLI's random
    tiny ClapModel weights (converted to laion's layout), after the solver: ``convert_audio(..., 48000, 1)`` from
    each generation's own rate, ``get_audio_embedding_from_data(use_tensor=True)`` on its first 10 s (laion crops
    longer input at a random offset, evalkit at the start: references/laion_clap_model.py ``crop_start``),
    ``get_text_embedding`` with the CLI's tokenizer, cosine (eps 1e-8), mean. Floor, the mean and each clip's cosine:
    1e-7 (float32 cosines of 512-d unit vectors). Measured: 0.0164385705 vs 0.0164385694 with the float64 meter
    (1.05e-9), vs 0.0164387098 with audiocraft's float32 meter (1.39e-7; the meters' references are 1.40e-7 apart:
    CLAP's cosines move most with the meter's gain)."""
    from evalkit.metrics.clap import ClapScore
    from references.laion_clap_model import build_clap, clap_module, text_consistency
    from tests.test_clap_backbone import to_laion_layout

    run = cli("clap-audiocraft", "metrics=[clap]", f"dataset.captions={user_files.captions}")
    entry = run.metric("clap")
    assert entry["protocol"] == "audiocraft"
    _solver_steps(entry, expected=True)
    emb = ClapScore(_recipe("clap")).embedder
    tok = emb.tokenizer
    state = {k[len("module."):]: v for k, v in to_laion_layout(emb.clap.model).items()}
    state.pop("text_branch.embeddings.position_ids", None)  # audiocraft pops it too (drop_state_keys)
    model, cfg = build_clap("tiny", vocab_size=len(tok), seed=0)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    # what laion's model has and ClapModel has not: its own front end (torchlibrosa; equal to evalkit's:
    # test_clap_backbone.test_front_end_equals_torchlibrosa) and heads no embedding reads
    assert {k.split(".")[1] if k.startswith("audio_branch.") else k.split(".")[0] for k in result.missing_keys} == {
        "spectrogram_extractor", "logmel_extractor", "head", "tscam_conv", "audio_transform", "text_transform"}
    laion = clap_module(model.eval(), cfg, tok)
    cos = {meter: {cid: float(text_consistency(laion, g[None], [user_files.caption[cid]], gsr, tok, crop_start=True)[0])
                   for cid, (g, gsr, _) in pairs.items()} for meter, pairs in solver_pairs.items()}
    means = {meter: float(np.mean(list(c.values()))) for meter, c in cos.items()}
    _both("clap audiocraft", means["float64"], means["float32"], entry["value"], 1e-7)
    for cid, c in run.per_clip("clap").items():
        assert abs(c - cos["float64"][cid]) <= 1e-7, cid
        assert abs(c - cos["float32"][cid]) <= 1e-7 + abs(cos["float32"][cid] - cos["float64"][cid]), cid


# ----------------------------------------------------------------------------------------------------------------
# 4. A mixed run: each metric's number is the one it gives alone
# ----------------------------------------------------------------------------------------------------------------
def test_a_mixed_run_gives_each_metric_its_number_alone(cli):
    """``metrics=[fad,kld] metrics.kld.protocol=stable-audio-metrics`` (FAD on its audiocraft protocol, with the
    solver's post-processing; KLD on the files as read): every value of both metrics, every per-clip value and every
    FAD embedding equals the one of the run of that metric alone, bit for bit (each run computed afresh: its own cache
    folder)."""
    mixed = cli("mixed", "metrics=[fad,kld]", "metrics.kld.protocol=stable-audio-metrics")
    alone = {"fad": cli("fad-audiocraft", "metrics=[fad]"),
             "kld": cli("kld-sam", "metrics=[kld]", "metrics.kld.protocol=stable-audio-metrics")}
    assert (mixed.metric("fad")["protocol"], mixed.metric("kld")["protocol"]) == ("audiocraft", "stable-audio-metrics")
    _solver_steps(mixed.metric("fad"), expected=True)
    _solver_steps(mixed.metric("kld"), expected=False)
    for name, run in alone.items():
        assert mixed.metric(name)["value"] == run.metric(name)["value"]
        assert mixed.metric(name)["values"] == run.metric(name)["values"]
        assert mixed.metric(name)["recipe"] == run.metric(name)["recipe"]
        columns = [c for c in run.clips.columns if c.startswith(name)]
        assert columns
        for c in columns:
            assert mixed.per_clip(c) == run.per_clip(c), c
    ours, theirs = _embeddings(mixed), _embeddings(alone["fad"])
    assert sorted(ours) == sorted(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    print(f"mixed: fad {mixed.metric('fad')['value']!r} kld {mixed.metric('kld')['value']!r} (== alone)")
