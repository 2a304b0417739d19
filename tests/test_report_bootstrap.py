"""Bootstrap intervals over clips and FAD∞ (evalkit/report/bootstrap.py) on distributions with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from evalkit.report import bootstrap as bs
from evalkit.statistics.frechet import GaussianStats, frechet_distance
from evalkit.report.rundir import load_run

from tests.fake_runs import fad_of, make_run


# -- per-clip means ---------------------------------------------------------------------------------------------------
def test_mean_interval_covers_true_mean_with_the_normal_width():
    rng = np.random.default_rng(3)
    v = rng.normal(1.4, 0.3, 400)
    iv = bs.bootstrap_mean(v, metric="kld", n_boot=2000, seed=0)
    assert iv.value == pytest.approx(v.mean(), abs=1e-12)
    assert iv.low < 1.4 < iv.high
    # percentile interval of a mean ≈ mean ± 1.96·s/√n
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert (iv.high - iv.low) / 2 == pytest.approx(half, rel=0.1)
    assert iv.n_clips == 400 and iv.level == 0.95 and iv.n_boot == 2000


def test_mean_interval_is_seeded():
    v = np.random.default_rng(0).normal(size=100)
    a, b = bs.bootstrap_mean(v, seed=5, n_boot=300), bs.bootstrap_mean(v, seed=5, n_boot=300)
    c = bs.bootstrap_mean(v, seed=6, n_boot=300)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_mean_interval_coverage_is_nominal():
    """Over 200 data sets the 90 % interval contains the true mean about 90 % of the time."""
    rng = np.random.default_rng(11)
    hits = 0
    for r in range(200):
        v = rng.exponential(2.0, 60)  # skewed, true mean 2.0
        iv = bs.bootstrap_mean(v, n_boot=400, level=0.9, seed=r)
        hits += iv.low <= 2.0 <= iv.high
    assert 0.82 <= hits / 200 <= 0.96


def test_frame_weighted_mean_matches_the_metric_definition():
    """chroma = Σ per-frame cosine / Σ frames: per-clip means weighted by their frame counts."""
    vals = np.array([1.0, 0.0, 0.5, np.nan])  # the NaN is a skipped clip
    frames = np.array([30, 10, 20, 99])
    iv = bs.bootstrap_mean(vals, frames, metric="chroma", n_boot=200)
    assert iv.value == pytest.approx((30 * 1.0 + 0 + 20 * 0.5) / 60)
    assert iv.weighted and iv.n_clips == 3
    assert iv.value != pytest.approx(np.nanmean(vals))
    # every draw is a weighted mean of values in [0, 1]
    assert 0 <= iv.low <= iv.value <= iv.high <= 1


def test_mean_rejects_empty_and_bad_weights():
    with pytest.raises(ValueError, match="no finite"):
        bs.bootstrap_mean([np.nan, np.nan], metric="clap")
    with pytest.raises(ValueError, match="weights"):
        bs.bootstrap_mean([1.0, 2.0], [1.0], metric="clap")


# -- FAD: resampling clips -------------------------------------------------------------------------------------------
def _clustered(rng, n_clips, windows=4, dim=2, shift=0.7, between=0.8, within=0.6):
    """Windows of a clip share a clip-level mean: population N(shift·1, (between²+within²)·I)."""
    z = rng.normal(shift, between, (n_clips, 1, dim))
    return list(z + rng.normal(0, within, (n_clips, windows, dim)))


def test_fad_from_counts_equals_stacking_the_drawn_clips():
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(rng.integers(2, 5), 3)) for _ in range(12)]
    ref = (np.zeros(3), np.eye(3))
    counts = rng.integers(0, 3, (4, 12))
    got = bs.fad_from_counts(clips, ref, counts)
    for j in range(4):
        stacked = np.concatenate([np.repeat(c[None], k, 0).reshape(-1, 3) for c, k in zip(clips, counts[j]) if k])
        want = frechet_distance(stacked.mean(0), np.cov(stacked, rowvar=False), *ref)
        assert got[j] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_fad_interval_covers_the_expected_fad_and_resamples_clips_not_windows():
    dim, n_clips = 2, 60
    ref = (np.zeros(dim), np.eye(dim))
    rng = np.random.default_rng(7)

    def fad(clips):
        x = np.concatenate(clips)
        return frechet_distance(x.mean(0), np.cov(x, rowvar=False), *ref)

    # the estimand: FAD of a fresh eval set of the same size (Monte Carlo)
    expected = np.mean([fad(_clustered(rng, n_clips)) for _ in range(2000)])
    hits, width_clip, width_win = 0, [], []
    for r in range(60):
        clips = _clustered(rng, n_clips)
        iv = bs.fad_bootstrap(clips, ref, n_boot=150, level=0.9, seed=r)
        assert iv.value == pytest.approx(fad(clips), rel=1e-10)
        assert iv.low <= iv.value <= iv.high
        hits += iv.low <= expected <= iv.high
        width_clip.append(iv.high - iv.low)
        if r < 15:  # the wrong unit: every window its own "clip"
            win = bs.fad_bootstrap(list(np.concatenate(clips)[:, None, :]), ref, n_boot=150, level=0.9, seed=r)
            width_win.append(win.high - win.low)
    assert 0.78 <= hits / 60 <= 0.98
    # windows of a clip are correlated (ρ = 0.64, 4 per clip): treating them as independent understates the spread
    assert np.mean(width_clip[:15]) > 1.3 * np.mean(width_win)


def test_fad_bootstrap_draws_sit_above_the_measured_fad_and_the_interval_is_recentred():
    rng = np.random.default_rng(1)
    clips = [rng.normal(0, 1, (3, 4)) for _ in range(80)]  # same distribution as the reference: true FAD 0
    iv = bs.fad_bootstrap(clips, (np.zeros(4), np.eye(4)), n_boot=300)
    assert iv.bias > 0  # resamples repeat clips: more finite-sample bias
    assert iv.low < iv.value < iv.high


def test_fad_bootstrap_reference_as_gaussian_stats_and_dimension_check():
    rng = np.random.default_rng(2)
    gen = {f"c{i}": rng.normal(0.3, 1, (3, 3)) for i in range(30)}
    ref_emb = rng.normal(0, 1, (200, 3))
    st = GaussianStats(3)
    st.update(ref_emb)
    a = bs.fad_bootstrap(gen, st, n_boot=50)
    b = bs.fad_bootstrap(gen, (ref_emb.mean(0), np.cov(ref_emb, rowvar=False)), n_boot=50)
    assert a.value == pytest.approx(b.value, rel=1e-10) and a.low == pytest.approx(b.low, rel=1e-10)
    with pytest.raises(ValueError, match="dimension"):
        bs.fad_bootstrap(gen, (np.zeros(4), np.eye(4)), n_boot=10)


# -- FAD∞ ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_fad_inf_recovers_the_population_fad(shift):
    """Frames ~ N(shift·1, I) in 4 dims against the exact N(0, I): population FAD = 4·shift²."""
    dim = 4
    frames = np.random.default_rng(4).normal(shift, 1.0, (20000, dim))
    r = bs.fad_inf(frames, (np.zeros(dim), np.eye(dim)), seed=0)
    truth = dim * shift**2
    assert [n for n, _ in r.points] == [int(x) for x in np.linspace(500, 20000, 25)]  # fadtk's subset sizes
    assert r.score == pytest.approx(truth, abs=0.03)
    if shift == 0:
        # only the 1/n bias moves FAD here; with a shift the 2·shift·(mean error) term adds 1/√n noise that one
        # draw per n (fadtk) does not average out, so the fit is good but R² is not
        assert r.slope > 0 and r.r2 > 0.8
        assert r.points[0][1] > r.score  # FAD at n=500 is biased upwards


def test_fad_inf_with_replacement_keeps_the_pools_own_bias():
    """fadtk draws with replacement: the intercept is the FAD of the pool's empirical distribution (≈ the full-pool
    FAD, biased by ≈ slope/N). Drawing without replacement (Chong & Forsyth's FID∞) extrapolates to the truth, 0."""
    d, ref = 16, (np.zeros(16), np.eye(16))
    full, with_r, without_r = [], [], []
    for seed in range(6):
        x = np.random.default_rng(100 + seed).normal(0, 1, (4000, d))
        full.append(frechet_distance(x.mean(0), np.cov(x, rowvar=False), *ref))
        with_r.append(bs.fad_inf(x, ref, seed=seed, min_n=300).score)
        r = bs.fad_inf(x, ref, seed=seed, min_n=300, replace=False)
        assert r.points[-1][1] == pytest.approx(full[-1], rel=1e-9)  # n = N without replacement: the whole pool
        without_r.append(r.score)
    assert np.mean(full) > 0.015  # the finite-sample bias at N = 4000 frames, d = 16
    assert abs(np.mean(with_r) - np.mean(full)) < 0.006
    assert abs(np.mean(without_r)) < 0.004


def test_fad_inf_by_clips_and_errors():
    rng = np.random.default_rng(5)
    clips = [rng.normal(0.5, 1.0, (10, 4)) for _ in range(1500)]
    r = bs.fad_inf(clips, (np.zeros(4), np.eye(4)), unit="clips", min_n=60, steps=10)
    assert len(r.points) == 10 and r.points[0][0] == 60 and r.points[-1][0] == 1500
    assert r.score == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="more than min_n=500"):
        bs.fad_inf(np.zeros((300, 4)), (np.zeros(4), np.eye(4)))


# -- from a run folder ------------------------------------------------------------------------------------------------
def test_run_intervals_from_a_fabricated_run(tmp_path):
    run_dir = make_run(tmp_path / "r", "small", n_clips=60, dim=4)
    run = load_run(run_dir)
    ivs, why = bs.run_intervals(run, n_boot=200)
    assert set(ivs) == {"fad", "kld", "clap", "chroma"} and not why
    for m, iv in ivs.items():
        assert iv.value == pytest.approx(run.value(m), rel=1e-9), m  # recomputed == the summary's number
        assert iv.low < iv.value < iv.high
    # weighted exactly as the specs say: chroma by chroma_frames; kld by kld_rows, which this run does not have
    assert ivs["chroma"].weighted and not ivs["kld"].weighted
    gen, ref = bs.frechet_inputs(run, "fad")  # the arrays the FAD spec names: fad_gen_emb, fad_ref_emb
    assert ivs["fad"].value == pytest.approx(fad_of(gen, run.clip_arrays("fad_ref_emb")), rel=1e-12)
    assert bs.frechet_metrics(run) == ["fad"]


def test_run_intervals_read_the_older_array_keys(tmp_path):
    """Runs before the spec wrote '<id>/_fad_gen_emb': the same interval from either key layout."""
    new = load_run(make_run(tmp_path / "new", "small", n_clips=30, dim=4))
    old = load_run(make_run(tmp_path / "old", "small", n_clips=30, dim=4))
    import numpy as np

    with np.load(old.path / "embeddings" / "fad.npz") as z:
        arrays = {k.replace("/fad_", "/_fad_"): z[k] for k in z.files}
    np.savez(old.path / "embeddings" / "fad.npz", **arrays)
    assert all("/_fad_" in k for k in arrays)
    a, b = bs.metric_interval(new, "fad", n_boot=50), bs.metric_interval(old, "fad", n_boot=50)
    assert (a.value, a.low, a.high) == (b.value, b.low, b.high)


def test_run_intervals_say_why_not(tmp_path):
    # 4 clips × 3 windows = 12 embeddings for dimension 16: no covariance; no per-clip kld column
    run = load_run(make_run(tmp_path / "r", "small", n_clips=4, dim=16, values={"fad": 1.0}))
    run.clips.drop(columns=["kld"], inplace=True)
    ivs, why = bs.run_intervals(run, ["fad", "kld", "clap"], n_boot=20)
    assert set(ivs) == {"clap"}
    assert "at least 16" in why["fad"]
    assert "no per-clip 'kld'" in why["kld"]
    # a metric the run could not compute has neither an interval nor a "why" (the table shows its error instead)
    run = load_run(make_run(tmp_path / "e", "small", n_clips=4, dim=16))
    assert "FrechetError" in run.metrics["fad"]["error"]
    ivs, why = bs.run_intervals(run, ["fad", "clap"], n_boot=20)
    assert set(ivs) == {"clap"} and not why
