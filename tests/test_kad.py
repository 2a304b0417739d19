"""KAD's statistic (evalkit/statistics/kernel.py) against its definition, closed forms and torch.pdist.

The definition (kadtk 1.1.0 ``kadtk/kad.py calc_kernel_audio_distance``, written here densely in float64 from the
paper's formula, not copied): ``(mean_{i≠j} k(x_i,x_j) + mean_{i≠j} k(y_i,y_j) − 2 mean_{i,j} k(x_i,y_j)) · 100``,
``k`` gaussian ``exp(−γd²)`` / iq ``1/(1+γd²)`` / imq ``1/sqrt(1+γd²)``, ``γ = 1/(2h² + 1e-8)``, ``h`` the lower median
of the pairwise distances of y. Parity with kadtk's own code is in tests/test_kad_reference.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit.metrics.kad import TorchPdist
from evalkit.statistics import bootstrap as bs
from evalkit.statistics import kernel as K


def dense_kad(x, y, kernel="gaussian", bandwidth=None):
    """The formula, densely, in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if bandwidth is None:
        i, j = np.triu_indices(len(y), 1)
        d = np.sqrt(((y[i] - y[j]) ** 2).sum(1))
        bandwidth = np.sort(d)[(d.size - 1) // 2]
    g = 1.0 / (2 * bandwidth ** 2 + 1e-8)
    k = {"gaussian": lambda a: np.exp(-g * a), "iq": lambda a: 1 / (1 + g * a),
         "imq": lambda a: 1 / np.sqrt(1 + g * a)}[kernel]

    def d2(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    m, n = len(x), len(y)
    kxx, kyy = k(d2(x, x)), k(d2(y, y))
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return (xx + yy - 2 * k(d2(x, y)).mean()) * 100, bandwidth


def sets(seed=0, m=180, n=150, d=24, shift=0.3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, d)) * 2).astype(np.float32), (rng.standard_normal((n, d)) * 2.2 + shift).astype(
        np.float32)


@pytest.mark.parametrize("kernel", K.KERNELS)
@pytest.mark.parametrize("bandwidth", [None, 3.7])
def test_kad_is_the_formula(kernel, bandwidth):
    x, y = sets()
    got = K.kad(x, y, K.KernelSettings(kernel=kernel, bandwidth=bandwidth, precision="float64"), block=64)
    h = dense_kad(x, y, kernel, bandwidth)[1]
    assert got.bandwidth == pytest.approx(h, rel=1e-7)  # float64 rows vs float32 distances: one float32 rounding
    want = dense_kad(x, y, kernel, got.bandwidth)[0]
    assert got.value == pytest.approx(want, rel=1e-9, abs=1e-12)
    f32 = K.kad(x, y, K.KernelSettings(kernel=kernel, bandwidth=bandwidth), block=64)  # kadtk's float32 default
    assert f32.value == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert f32.value != got.value  # the precision is used


def test_kad_of_a_set_with_itself_closed_form():
    """x = y (integer coordinates: every squared distance exact): xx = yy = S/(m(m-1)), xy = (S + m)/m², so
    KAD = 2S/(m(m-1)) − 2(S + m)/m² with S the off-diagonal kernel sum; and it is asymmetric in general."""
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (40, 5)).astype(np.float32)
    s = K.KernelSettings(bandwidth=2.0, precision="float64")
    g = s.gamma(2.0)
    d2 = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    S = np.exp(-g * d2).sum() - 40
    assert K.kad(x, x, s).value == pytest.approx((2 * S / (40 * 39) - 2 * (S + 40) / 40 ** 2) * 100, rel=1e-12)
    a, b = sets(1)
    assert K.kad(a, b).value != pytest.approx(K.kad(b, a).value, rel=1e-3)  # the bandwidth is y's (kadtk)


def test_threads_never_change_the_number_and_blocks_only_the_last_bits():
    x, y = sets(2, 700, 650, 32)
    one = K.kad(x, y, block=128, threads=1)
    three = K.kad(x, y, block=128, threads=3)
    assert (one.value, one.xx, one.yy, one.xy) == (three.value, three.xx, three.yy, three.xy)
    # another block size: BLAS tiles the products differently, each float32 distance may move by an ulp
    assert K.kad(x, y, block=4096).value == pytest.approx(one.value, rel=1e-7)


def test_kernels_and_a_bad_setting():
    a = np.array([0.0, 1.0, 4.0])
    assert np.allclose(K.kernel_inplace(a.copy(), 0.5, "gaussian"), np.exp(-0.5 * a))
    assert np.allclose(K.kernel_inplace(a.copy(), 0.5, "iq"), 1 / (1 + 0.5 * a))
    assert np.allclose(K.kernel_inplace(a.copy(), 0.5, "imq"), 1 / np.sqrt(1 + 0.5 * a))
    with pytest.raises(ValueError, match="kernel 'rbf'"):
        K.KernelSettings(kernel="rbf")
    with pytest.raises(ValueError, match="bandwidth"):
        K.KernelSettings(bandwidth=0.0)
    with pytest.raises(ValueError, match="at least 2 embeddings per side"):
        K.kad(np.zeros((1, 3)), np.zeros((5, 3)))


# -- the median -------------------------------------------------------------------------------------------------------
def test_lower_median_is_torch_median():
    v = np.array([4.0, 1.0, 3.0, 2.0], np.float32)
    assert K.lower_median(v) == torch.median(torch.from_numpy(v)).item() == 2.0


@pytest.mark.parametrize("n, d, dup", [(2600, 128, 0), (2201, 17, 300), (3000, 64, 0)])
def test_the_blocked_median_is_exactly_torch_median_of_pdist(n, d, dup, monkeypatch):
    """The bracketed selection (forced here on sets whose pdist fits) returns torch.median(torch.pdist(y)) bit for
    bit: 128-d (a multiple of the SIMD width), 17-d (a remainder), ties (duplicated rows: zero distances)."""
    rng = np.random.default_rng(n)
    y = (rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d) + 1.5).astype(np.float32)
    if dup:
        y[100:100 + dup] = y[7]
    want = torch.median(torch.pdist(torch.from_numpy(y))).item()
    monkeypatch.setattr(K, "SMALL_PAIRS", 1000)
    monkeypatch.setattr(K, "SAMPLE_PAIRS", 1 << 15)
    assert K.median_pairwise_distance(y, TorchPdist(), block=512, threads=2) == want
    approx = K.median_pairwise_distance(y, block=512)  # numpy's own: float64 rounded to float32
    assert approx == pytest.approx(want, rel=1e-6)


def test_the_median_when_the_bracket_misses_first(monkeypatch):
    """A sample that brackets the wrong rank (a tiny sample, a narrow bracket) is widened, not trusted."""
    rng = np.random.default_rng(5)
    y = rng.standard_normal((1500, 8)).astype(np.float32)
    want = torch.median(torch.pdist(torch.from_numpy(y))).item()
    monkeypatch.setattr(K, "SMALL_PAIRS", 100)
    monkeypatch.setattr(K, "SAMPLE_PAIRS", 16)
    calls = []
    original = K._bracket
    monkeypatch.setattr(K, "_bracket", lambda s, k, n, w: calls.append(w) or (original(s, k, n, w) if w != 10.0 else
                                                                                  (0.0, 1e-3)))
    assert K.median_pairwise_distance(y, TorchPdist(), block=256) == want
    assert calls[:2] == [10.0, 40.0]


def test_torch_pdist_pairs_are_pdists_own_values():
    rng = np.random.default_rng(9)
    y = rng.standard_normal((300, 37)).astype(np.float32)
    full = torch.pdist(torch.from_numpy(y)).numpy()
    i, j = np.triu_indices(300, 1)
    pick = rng.choice(full.size, 5000, replace=False)
    assert np.array_equal(TorchPdist().pairs(y, i[pick], j[pick]), full[pick])


# -- per clip, moments ------------------------------------------------------------------------------------------------
def test_moments_give_the_kernel_mean_at_any_gamma():
    x, _ = sets(4, 400, 10, 16)
    mom = K.Moments()
    K.within_sum(x, None, "gaussian", moments=mom, block=96)
    n = K.sqnorms(x)
    d2 = K.sq_dists(x, x, n, n).astype(np.float64)  # the float32 squared distances it binned
    off = ~np.eye(400, dtype=bool)
    for kernel in K.KERNELS:
        for g in (1e-3, 0.02, 0.3):
            exact = K.kernel_inplace(d2.copy(), g, kernel)[off].mean()
            assert mom.kernel_means([g], kernel)[0] == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("bandwidth", [None, 4.0])
def test_per_clip_kad_is_kadtks_score_individual(bandwidth):
    """Each clip's value is the KAD of that clip's frames alone against the whole baseline, with that clip's own
    bandwidth (kadtk score_individual); a clip with one frame has none."""
    x, y = sets(6, 300, 90, 20)
    clips = [y[:19], y[19:38], y[38:39], y[39:90]]
    s = K.KernelSettings(bandwidth=bandwidth)
    res = K.kad_with_clips(x, clips, s, distances=TorchPdist(), block=64)
    assert res.value == K.kad(x, y, s, distances=TorchPdist(), block=64).value
    for c, v, h in zip(clips, res.clip_values, res.clip_bandwidths):
        if len(c) < 2:
            assert np.isnan(v) and np.isnan(h) if bandwidth is None else np.isnan(v)
            continue
        alone = K.kad(x, c, s, distances=TorchPdist())
        assert h == alone.bandwidth
        if bandwidth is not None:  # the same gamma (only BLAS' tiling of other row blocks differs)
            assert v == pytest.approx(alone.value, rel=1e-7)
        else:  # the baseline term from binned moments in float64 vs float32 kernel values (each rounded by ~6e-8):
            assert v == pytest.approx(alone.value, abs=2e-6)  # float32 noise, ×100 on a difference of ~0.7 terms


# -- bootstrap, KAD∞ --------------------------------------------------------------------------------------------------
def test_a_bootstrap_draw_is_the_kad_of_the_resampled_clips():
    """wᵀSw − w·D is the within-set sum of the stacked resample (duplicated frames included, its diagonal not)."""
    rng = np.random.default_rng(7)
    parts = [rng.standard_normal((int(k), 6)).astype(np.float32) for k in rng.integers(2, 9, 12)]
    S, D = K.clip_block_sums(parts, 0.05, "gaussian", block=16)
    w = np.array([0, 2, 1, 0, 3, 1, 0, 0, 1, 2, 0, 1], float)
    stacked = np.concatenate([p for p, k in zip(parts, w) for _ in range(int(k))])
    assert w @ S @ w - w @ D == pytest.approx(K.within_sum(stacked, 0.05, "gaussian", block=16), rel=1e-12)


def test_kad_bootstrap_interval():
    x, y = sets(8, 400, 360, 12)
    gen = {f"c{i:02d}": y[i * 12:(i + 1) * 12] for i in range(30)}
    s = K.KernelSettings()
    h = K.median_pairwise_distance(y)
    iv = K.kad_bootstrap(x, gen, s, h, n_boot=300, seed=1)
    assert iv.value == pytest.approx(K.kad(x, y, K.KernelSettings(bandwidth=h)).value, rel=1e-10)
    assert iv.low < iv.value < iv.high and iv.n_clips == 30 and not iv.degenerate
    assert iv.bias > 0  # resamples repeat clips: duplicated frames raise the within term
    again = K.kad_bootstrap(x, gen, s, h, n_boot=300, seed=1)
    assert (again.low, again.high) == (iv.low, iv.high)


def test_kad_inf_follows_kadtks_score_inf():
    """Points at int(linspace(min_n, N, steps)) frames; each the KAD of one seeded with-replacement draw with its own
    bandwidth; the intercept of a least-squares line in 1/n."""
    x, y = sets(10, 300, 900, 8)
    gen = {f"c{i:03d}": y[i * 9:(i + 1) * 9] for i in range(100)}
    r = K.kad_inf(x, gen, K.KernelSettings(), steps=5, min_n=200, seed=3, metric="kad", block=128)
    ns = [int(v) for v in np.linspace(200, 900, 5)]
    assert [p[0] for p in r.points] == ns
    rng = bs._rng(3, "kad_inf")
    for n, (_, v) in zip(ns, r.points):
        sub = y[rng.integers(0, 900, size=n)]
        # the baseline term from binned moments (float64) vs float32 kernel values: float32 noise
        assert v == pytest.approx(K.kad(x, sub).value, abs=2e-6)
    slope, intercept = np.polyfit(1 / np.array(ns), [p[1] for p in r.points], 1)
    assert r.score == pytest.approx(intercept) and r.slope == pytest.approx(slope)
    assert K.kad_inf(x, gen, K.KernelSettings(), steps=3, min_n=20, unit="clips", seed=0).unit == "clips"
    with pytest.raises(ValueError, match="more than min_n=900"):
        K.kad_inf(x, gen, K.KernelSettings(), min_n=900)


# -- kadtk's audio path steps -------------------------------------------------------------------------------------------
def test_pcm16_round_trip_and_the_kaiser_resampler():
    """write_int16: pcm16 is round(x·32768) (half to even), saturated, / 32768 in float64; torchaudio_kaiser is kadtk's
    Resample(..., lowpass_filter_width=64, rolloff=0.9475937167399596, sinc_interp_kaiser, beta=14.769656459379492)."""
    import torchaudio

    from evalkit import audio as A
    from evalkit.input_path import InputPath, InputPathError

    x = torch.tensor([[0.5, 1.0, -1.0, 1.5 / 32768, 2.5 / 32768, -0.25, 1.2]])
    got = A.pcm16_round_trip(x)
    assert got.dtype == torch.float64
    assert (got * 32768).tolist() == [[16384.0, 32767.0, -32768.0, 2.0, 2.0, -8192.0, 32767.0]]
    rng = np.random.default_rng(0)
    wav = torch.from_numpy(rng.standard_normal((2, 44100)).astype(np.float32)) * 0.1
    want = torchaudio.transforms.Resample(44100, 16000, lowpass_filter_width=64, rolloff=0.9475937167399596,
                                          resampling_method="sinc_interp_kaiser", beta=14.769656459379492)(wav)
    assert torch.equal(A.resample_with(wav, 44100, 16000, "torchaudio_kaiser"), want)
    with pytest.raises(InputPathError, match="write_int16: 'pcm24'; expected audiocraft or pcm16"):
        InputPath({"both": [{"write_int16": "pcm24"}]}, setting="metrics.kad.input")
