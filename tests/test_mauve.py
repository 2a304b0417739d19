"""MAUVE: evalkit's statistic is ``mauve.compute_mauve`` (mauve-text 0.4.0, defaults) on identical features, the
metric is that statistic on the pooled embeddings of the files as the command line reads them, and it needs every
clip's vector at compute time: a resumed or sharded run gives the one-process number exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from evalkit.metrics.base import Clip, MetricUnavailable
from evalkit.registry import get_metric
from evalkit.spec import metric_recipe
from evalkit.statistics.mauve import MauveSettings, curve_area, divergence_curve, frontier_integral, kl, mauve
from tests.conftest import reference_test

REPO = Path(__file__).resolve().parents[1]


def features(seed: int, n: int, d: int, shift: float = 0.0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) + shift).astype(dtype)


# ----------------------------------------------------------------------------------------------------------------
# The statistic
# ----------------------------------------------------------------------------------------------------------------
def test_closed_forms():
    """KL is infinite off the support and 0 on itself; for disjoint histograms the curve's points are
    ``((1 - w)^5, w^5)`` (KL(q‖r) = -ln(1 - w), KL(p‖r) = -ln w) between the extremes; the area is the trapezoid
    rule's both ways; a set against itself has MAUVE 1 (``compute_mauve(p, p)``) and a frontier integral of 0."""
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    assert kl(p, q) == pytest.approx(np.log(2)) and kl(q, p) == np.inf and kl(p, p) == 0.0
    w = np.linspace(1e-6, 1 - 1e-6, 25)
    curve = divergence_curve(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 25, 5.0)
    np.testing.assert_allclose(curve[1:-1], np.stack([(1 - w) ** 5, w ** 5], 1), rtol=1e-9)
    assert curve[0].tolist() == [1.0, 0.0] and curve[-1].tolist() == [0.0, 1.0]
    bent = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.9]])  # by x: 0.5·1.9/2 + 0.5·0.9/2; by y: 0.9·1.5/2 + 0.1·0.5/2
    assert curve_area(bent) == pytest.approx(0.7) and curve_area(np.array([[0.0, 1.0], [1.0, 0.0]])) == 0.5
    assert frontier_integral(q, q) == 0.0 and frontier_integral(p, q) > 0
    x = features(0, 60, 16)
    out = mauve(x, x)
    assert out.mauve == pytest.approx(1.0) and out.mad == pytest.approx(0.0, abs=1e-12) and out.num_buckets == 6
    assert MauveSettings().buckets(20, 1000) == 2 and MauveSettings().buckets(5000, 5521) == 500


@reference_test("mauve")
@pytest.mark.parametrize("n_p, n_q, d, shift, dtype, buckets", [
    (200, 200, 64, 0.3, np.float32, "auto"), (120, 300, 16, 0.1, np.float64, "auto"), (80, 50, 128, 1.0, np.float32, 7),
    (40, 40, 8, 0.0, np.float32, "auto")])
def test_the_statistic_is_compute_mauve(n_p, n_q, d, shift, dtype, buckets):
    """Every output of ``mauve.compute_mauve(p_features=P, q_features=Q)``: MAUVE, MAUVE*, both frontier integrals,
    the histograms, the divergence curve and the number of buckets, on the same features."""
    import mauve as reference

    p, q = features(1, n_p, d, 0.0, dtype), features(2, n_q, d, shift, dtype)
    want = reference.compute_mauve(p_features=p, q_features=q, num_buckets=buckets)
    got = mauve(p, q, MauveSettings(num_buckets=buckets))
    assert got.num_buckets == want.num_buckets
    np.testing.assert_array_equal(got.p_hist, want.p_hist)
    np.testing.assert_array_equal(got.q_hist, want.q_hist)
    np.testing.assert_allclose(got.divergence_curve, want.divergence_curve, rtol=1e-13, atol=0)
    for key in ("mauve", "mauve_star", "frontier_integral", "frontier_integral_star"):
        assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-13, abs=1e-15), key
    assert got.mad == pytest.approx(-np.log(want.mauve), rel=1e-13)  # mad_metric: -np.log(mauve_out.mauve)


# ----------------------------------------------------------------------------------------------------------------
# The metric
# ----------------------------------------------------------------------------------------------------------------
def recipe(*extra: str) -> dict:
    return metric_recipe("mauve", ["backbone_weights=random", "backbone_size=tiny", *extra])


def tone(seed: int, sr: int, seconds: float, channels: int, shift: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 3000) * shift * t) for _ in range(3))
    x = x + 0.05 * rng.standard_normal(t.size)
    return torch.from_numpy(np.stack([x] * channels).astype(np.float32))


@pytest.mark.parametrize("pool", ["max", "mean", "none"])
def test_pooling_is_a_protocol_constant(pool):
    """``pool``: one vector per clip (max or mean of the embedder's frames over time) or every frame."""
    m = get_metric("mauve")(recipe(f"metrics.mauve.pool={pool}"))
    clip = Clip("c", "", tone(0, 16000, 3.0, 1), 16000, tone(1, 16000, 2.0, 1), 16000)
    res = m.update([clip])["c"]
    frames = m.embedder.embed([clip.audio[0], clip.reference[0]])[0]  # one batched pass, as the metric's
    want = {"max": frames.max(0, keepdims=True), "mean": frames.mean(0, keepdims=True), "none": frames}[pool]
    np.testing.assert_array_equal(res.arrays["mauve_gen_emb"], want)
    assert res.values == {"mauve_frames": 3, "mauve_ref_frames": 2}
    with pytest.raises(MetricUnavailable, match="keep_arrays"):
        m.compute()  # without the arrays the scorer hands over: no number made of nothing


def test_compute_reads_the_arrays_in_clip_id_order():
    m = get_metric("mauve")(recipe())
    clips = [Clip(f"c{i:02d}", "", tone(i, 16000, 1.5, 1), 16000, tone(100 + i, 16000, 1.5, 1, 1.3), 16000)
             for i in range(24)]
    res = m.update(clips[::-1])  # any order in, the clip ids' order at compute
    m.keep_arrays({c: {k: r.arrays[c] for k, r in res.items()} for c in m.kept_arrays()})
    got = m.compute()
    p = np.concatenate([res[c.id].arrays["mauve_gen_emb"] for c in clips])
    q = np.concatenate([res[c.id].arrays["mauve_ref_emb"] for c in clips])
    assert got["mauve"] == mauve(p, q).mauve and got["mad"] == -np.log(got["mauve"]) and got["num_buckets"] == 2


# ----------------------------------------------------------------------------------------------------------------
# Through the command line: user files, resume, shards
# ----------------------------------------------------------------------------------------------------------------
N_CLIPS = 24


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """24 generated clips (44.1 kHz stereo, 2.3 s) and their references (48 kHz mono, 2 s, other tones)."""
    root = tmp_path_factory.mktemp("mauve")
    for side, sr, ch, sec, shift in (("gen", 44100, 2, 2.3, 1.0), ("ref", 48000, 1, 2.0, 1.3)):
        (root / side).mkdir()
        for i in range(N_CLIPS):
            x = tone(i if side == "gen" else 1000 + i, sr, sec, ch, shift).numpy().T
            sf.write(str(root / side / f"c{i:02d}.wav"), 0.6 * x, sr, subtype="PCM_16")
    return root


def cli(out: Path, folders: Path, *extra: str, kill_at: str | None = None, nproc: int = 1):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("EVALKIT_KILL_AT", None)
    if kill_at:
        env["EVALKIT_KILL_AT"] = kill_at
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] \
        if nproc > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "evalkit", "model=folder", f"model.dir={folders / 'gen'}",
                           f"reference.dir={folders / 'ref'}", "metrics=[mauve]", "backbone_weights=random",
                           "backbone_size=tiny", "progress=false", f"hydra.run.dir={out}", *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@reference_test("mauve")
def test_cli_is_compute_mauve_on_the_pooled_embeddings(tmp_path, folders):
    """`python -m evalkit model=folder ... metrics=[mauve] backbone_weights=random`: the files read as MAD reads them
    (channel mean, soxr_hq to 16 kHz), VGGish (tiny, random) frames max-pooled per clip, then
    ``mauve.compute_mauve(p_features=generated, q_features=reference)``; the summary's MAUVE and -ln MAUVE are its."""
    import librosa
    import mauve as reference

    p = cli(tmp_path / "run", folders, f"cache.dir={tmp_path / 'cache'}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "MAUVE" in p.stdout and "-ln MAUVE (MAD's formula; not MERT)" in p.stdout
    entry = json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]["mauve"]
    emb = get_metric("mauve")(recipe()).embedder

    def vectors(side: str) -> np.ndarray:
        out = []
        for i in range(N_CLIPS):
            x, sr = sf.read(str(folders / side / f"c{i:02d}.wav"), dtype="float32", always_2d=True)
            mono = librosa.resample(x.mean(1), orig_sr=sr, target_sr=16000, res_type="soxr_hq")
            out.append(emb.embed([torch.from_numpy(mono)])[0].max(0, keepdims=True))
        return np.concatenate(out)

    want = reference.compute_mauve(p_features=vectors("gen"), q_features=vectors("ref"))
    assert entry["values"]["mauve"] == pytest.approx(want.mauve, rel=1e-9)
    assert entry["values"]["mad"] == pytest.approx(-np.log(want.mauve), rel=1e-9)
    assert entry["n_clips"] == N_CLIPS and entry["values"]["num_buckets"] == want.num_buckets == 2
    from evalkit.report.table import collect_runs

    rows = collect_runs([tmp_path / "run"]).set_index("metric")
    assert rows.loc["mauve", "ci_note"] and rows.loc["mauve_mad", "ci_note"]  # aggregate none: said, not faked
    assert rows.loc["mauve_mad", "value"] == pytest.approx(-np.log(rows.loc["mauve", "value"]))


def test_resumed_and_sharded_runs_give_the_one_process_number(tmp_path, folders):
    """Killed after the rows of scoring batch 2 and resumed; and two processes (torchrun): compute sees every
    clip's vector, in the same order, so MAUVE is the uninterrupted run's exactly."""
    args = ("metric_batch_size=5", "cache.scores=false")
    one = cli(tmp_path / "one", folders, *args)
    assert one.returncode == 0, one.stderr[-3000:]
    killed = cli(tmp_path / "killed", folders, *args, kill_at="score:rows:2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = cli(tmp_path / "killed", folders, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    two = cli(tmp_path / "two", folders, *args, nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    want = json.loads((tmp_path / "one" / "summary.json").read_text())["metrics"]["mauve"]["values"]
    for run in ("killed", "two"):
        got = json.loads((tmp_path / run / "summary.json").read_text())["metrics"]["mauve"]["values"]
        assert got == want, run
