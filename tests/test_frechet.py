"""The Fréchet math against closed forms and an independent float64 computation."""
import numpy as np
import pytest
import scipy.linalg

from evalkit.statistics.frechet import FrechetError, GaussianStats, frechet_distance, trace_sqrt_product


def test_equal_gaussians_give_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 8))
    s = a.T @ a / 40
    mu = rng.standard_normal(8)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-10


def test_diagonal_closed_form():
    # FD of N(m1, diag(a)) and N(m2, diag(b)) = |m1-m2|^2 + sum (sqrt(a) - sqrt(b))^2
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(10.0 + 1.0 + 1.0 + 6.25)


def test_scalar_case():
    # 1-d: (m1-m2)^2 + (s1 - s2)^2 with variances s^2
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9.0 + 1.0)


def test_random_pair_matches_independent_float64():
    rng = np.random.default_rng(1)
    d = 16
    x, y = rng.standard_normal((200, d)), rng.standard_normal((300, d)) @ rng.standard_normal((d, d)) * 0.3 + 0.5
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(covmean), rel=1e-8)


def test_rank_deficient_is_finite_and_real():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 10))  # rank 4 covariance in 10-d
    s = np.cov(x, rowvar=False)
    v = frechet_distance(x.mean(0), s, x.mean(0) + 1, s)
    assert np.isfinite(v) and isinstance(v, float)
    assert v == pytest.approx(10.0, abs=1e-6)


def test_stats_stream_and_merge_equal_one_pass():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 6))
    whole = GaussianStats(6)
    whole.update(x)
    a, b = GaussianStats(6), GaussianStats(6)
    a.update(x[:37])
    b.update(x[37:])
    a.merge(b)
    mu, sigma = a.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    mu2, sigma2 = whole.mean_cov()
    np.testing.assert_allclose(sigma, sigma2, rtol=1e-12)
    # state round trip
    c = GaussianStats.from_state(a.state("g_"), "g_")
    assert c.n == 100 and np.array_equal(c.sum_outer, a.sum_outer)


def test_too_few_embeddings_is_a_clear_error():
    s = GaussianStats(128)
    s.update(np.ones((20, 128)))
    with pytest.raises(FrechetError, match="20 embeddings for dimension 128"):
        s.mean_cov()


def test_nan_is_refused():
    with pytest.raises(FrechetError, match="NaN"):
        frechet_distance([np.nan], [[1.0]], [0.0], [[1.0]])
