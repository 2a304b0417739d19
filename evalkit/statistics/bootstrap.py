"""Uncertainty of a run's numbers: bootstrap confidence intervals over clips, and FAD∞ (the math; numpy only).

Bootstrap (percentile method, seeded). The unit resampled is always the **clip** - the thing the eval set samples.
How a metric's number is built, and so how it is resampled, comes from its ``spec`` (summary.json):

- ``aggregate: mean`` (e.g. KLD, CLAP, chroma): the number is the mean of the per-clip column ``spec.value_column``
  of ``clips.parquet``, weighted by the per-clip column ``spec.weight`` when set (chroma: Σ per-frame cosine / total
  frames, weight ``chroma_frames``; KLD: mean over PaSST rows, weight ``kld_rows``). Each draw resamples the clips
  with replacement and takes ``Σ wᵢ·vᵢ / Σ wᵢ`` over the drawn clips - exactly what the metric computes on that set.
- ``aggregate: frechet`` (e.g. FAD): each draw resamples the clips (all of a clip's embedding windows go together -
  windows of one clip are not independent), rebuilds the generated side's :class:`GaussianStats` from per-clip sums
  (``Σx``, ``Σxxᵀ``, count) weighted by how often each clip was drawn, and measures the Fréchet distance to the fixed
  reference statistics. The per-clip arrays are ``spec.arrays``: the first is the generated side, the second (if
  any) the reference side (else ``stats/<metric>*.npz`` or the statistics file the run was scored against).
  A Fréchet distance is biased upwards at finite n (``tr Σ̂`` terms; the reason FAD∞ exists), and a resample -
  which repeats clips - is biased more: the bootstrap draws sit about one bias *above* the measured value, so a plain
  percentile interval may not even contain it. evalkit reports the *basic* (pivot) interval
  ``[F − (q_hi − F̄*), F + (F̄* − q_lo)]`` (F the measured distance, F̄* the draws' mean, q their percentiles): the
  sampling spread at this eval-set size, centred on the measured value. Its estimand is the distance this protocol
  would give, on average, for another eval set of the same size - the quantity a published FAD is a sample of.
  ``Interval.bias`` holds ``F̄* − F``. The lower bound is clamped at 0 (a distance is never negative). For the
  large-n limit use FAD∞.
- ``aggregate: none``: no per-clip decomposition, no interval.

Which of these a metric uses is its spec's ``aggregate``, looked up in :data:`evalkit.statistics.AGGREGATES`.

FAD∞ (:func:`fad_inf`) follows fadtk (``microsoft/fadtk: fadtk/fad.py, FrechetAudioDistance.score_inf``):
``steps=25`` subset sizes ``n = int(linspace(min_n=500, N, 25))`` where N is the number of embedding frames; for each
n ONE draw of n frames with replacement, mean and covariance (n−1), FAD against the reference; then a least-squares
line ``FAD = slope/n + intercept`` (``np.polyfit(1/n, fad, 1)``); FAD∞ is the intercept and
``R² = 1 − SS_res/SS_tot``. evalkit seeds the draws (fadtk uses the unseeded global RNG) and can also draw whole
clips (``unit="clips"``, n counts clips, x = 1/frames drawn) instead of frames.
Caveat, measured (tests/test_report_bootstrap.py): drawing *with* replacement from a finite pool of N frames, FAD(n)
extrapolates to the FAD of the pool's empirical distribution, i.e. the intercept keeps about the pool's own
finite-sample bias (≈ slope/N). Chong & Forsyth's original FID∞ (``mchong6/FID_IS_infinity: score_infinity.py``)
shuffles and takes the first n - *without* replacement - and its intercept removes that bias too.
``replace=False`` (``--fad-inf-without-replacement``) selects it; the default stays fadtk's.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from evalkit.statistics.frechet import GaussianStats, frechet_distance

#: Defaults: 1000 draws, 95 % two-sided percentile interval, seed 0.
N_BOOT = 1000
LEVEL = 0.95
SEED = 0
#: fadtk ``score_inf`` defaults.
FAD_INF_STEPS = 25
FAD_INF_MIN_N = 500
#: Memory for one block of FAD bootstrap draws' Σxxᵀ (bytes).
_BLOCK_BYTES = 256 << 20


@dataclass
class Interval:
    """A bootstrap interval. ``value`` is the statistic on all clips (recomputed from the per-clip data)."""

    metric: str
    value: float
    low: float
    high: float
    std: float
    level: float
    n_boot: int
    n_clips: int
    seed: int
    weighted: bool = False
    #: mean of the bootstrap draws minus ``value`` (FAD: the resamples' extra finite-sample bias; see module doc)
    bias: float = 0.0
    method: str = "percentile bootstrap over clips"
    #: why resampling clips gives no spread, so ``[low, high]`` has no width and is no interval: ``"1 clip"``,
    #: ``"identical values"`` (a mean over clips that all have one value) or ``"identical clips"`` (a Fréchet
    #: distance over clips with identical embeddings); empty when the interval has a width to report
    degenerate: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FadInf:
    """FAD∞ (fadtk): intercept of FAD vs 1/n, its slope, R², and the (n, FAD) points it was fitted on."""

    score: float
    slope: float
    r2: float
    points: list[tuple[int, float]] = field(default_factory=list)
    unit: str = "frames"
    seed: int = SEED
    replace: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rng(seed: int, metric: str) -> np.random.Generator:
    """One independent, reproducible stream per (seed, metric)."""
    return np.random.default_rng([int(seed), zlib.crc32(metric.encode())])


def _percentile(samples: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


def _counts(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """[draws, n] multiplicities of each clip in ``draws`` resamples of size n with replacement."""
    idx = rng.integers(0, n, size=(draws, n)) + (np.arange(draws) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=draws * n).reshape(draws, n).astype(np.float64)


def bootstrap_mean(
    values,
    weights=None,
    *,
    metric: str = "",
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = SEED,
) -> Interval:
    """Percentile interval of the (weighted) mean of per-clip ``values``; NaNs (skipped clips) are dropped."""
    v = np.asarray(values, np.float64).ravel()
    w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.shape != v.shape:
        raise ValueError(f"{metric}: {w.size} weights for {v.size} values")
    keep = np.isfinite(v) & np.isfinite(w)
    v, w = v[keep], w[keep]
    if v.size == 0:
        raise ValueError(f"{metric}: no finite per-clip values to bootstrap")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{metric}: weights must be non-negative with a positive sum")
    rng = _rng(seed, metric)
    n = v.size
    block = max(1, min(n_boot, (64 << 20) // (8 * n)))
    stats = np.empty(n_boot, np.float64)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        ws = w[idx]
        stats[start:stop] = (ws * v[idx]).sum(1) / ws.sum(1)
    lo, hi = _percentile(stats, level)
    return Interval(
        metric=metric,
        value=float((w * v).sum() / w.sum()),
        low=lo,
        high=hi,
        std=float(stats.std(ddof=1)) if n_boot > 1 else 0.0,
        level=level,
        n_boot=n_boot,
        n_clips=n,
        seed=seed,
        weighted=weights is not None,
        degenerate="1 clip" if n == 1 else ("identical values" if (v == v[0]).all() else ""),
    )


# -- FAD ------------------------------------------------------------------------------------------------------------
def _as_reference(reference) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(reference, GaussianStats) or hasattr(reference, "mean_cov"):
        return reference.mean_cov("reference embeddings")
    mu, sigma = reference
    return np.asarray(mu, np.float64), np.asarray(sigma, np.float64)


def _clip_list(gen, metric: str = "frechet") -> list[np.ndarray]:
    """Per-clip embeddings (a mapping, sorted by clip id, or a sequence) as ``[windows, dim]`` float64 arrays."""
    if isinstance(gen, Mapping):
        arrays = [gen[k] for k in sorted(gen)]
    else:
        arrays = list(gen)
    if not arrays:
        raise ValueError(f"{metric}: no per-clip generated embeddings")
    dim = np.asarray(arrays[0]).shape[-1]
    out = []
    for a in arrays:
        a = np.asarray(a, np.float64)
        if a.shape[-1] != dim:
            raise ValueError(f"{metric}: embeddings of dimension {a.shape[-1]} and {dim} mixed")
        out.append(a.reshape(-1, dim))
    return out


def fad_from_counts(gen, reference, counts) -> np.ndarray:
    """FAD of each weighted resample: row ``j`` of ``counts`` ([draws, clips]) says how often each clip is drawn.

    The generated side of draw j is the :class:`GaussianStats` of the drawn clips' windows, built from per-clip sums
    (``Σ_c count·n_c``, ``Σ_c count·Σx``, ``Σ_c count·Σxxᵀ``) - identical to stacking the drawn clips' windows.
    """
    clips = _clip_list(gen)
    dim = clips[0].shape[1]
    mu_r, sigma_r = _as_reference(reference)
    counts = np.atleast_2d(np.asarray(counts, np.float64))
    n_draws, n = counts.shape
    if n != len(clips):
        raise ValueError(f"counts for {n} clips, {len(clips)} clips given")
    k = np.array([c.shape[0] for c in clips], np.float64)
    sums = np.stack([c.sum(0) for c in clips])  # [n, dim]
    block = max(1, min(n_draws, _BLOCK_BYTES // (8 * dim * dim)))
    clip_chunk = max(1, (_BLOCK_BYTES // 2) // (8 * dim * dim))
    out = np.empty(n_draws, np.float64)
    for b0 in range(0, n_draws, block):
        b1 = min(n_draws, b0 + block)
        c = counts[b0:b1]
        outer = np.zeros((b1 - b0, dim * dim), np.float64)
        for s0 in range(0, n, clip_chunk):
            s1 = min(n, s0 + clip_chunk)
            per_clip = np.stack([(x.T @ x).ravel() for x in clips[s0:s1]])  # [chunk, dim²]
            outer += c[:, s0:s1] @ per_clip
        ns = c @ k
        ss = c @ sums
        for j in range(b1 - b0):
            g = GaussianStats(dim, n=int(round(ns[j])), sum=ss[j].copy(), sum_outer=outer[j].reshape(dim, dim))
            mu, sigma = g.mean_cov("generated embeddings (one bootstrap draw)")
            out[b0 + j] = frechet_distance(mu, sigma, mu_r, sigma_r)
    return out


def fad_bootstrap(
    gen,
    reference,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = SEED,
    metric: str = "frechet",
) -> Interval:
    """Bootstrap interval of a Fréchet distance (FAD) resampling clips (basic interval centred on the measured value;
    see the module doc). ``metric`` names the metric in messages and seeds its own random stream.

    ``gen``: per-clip generated embeddings (``{clip id: [windows, dim]}`` or a sequence of arrays);
    ``reference``: :class:`GaussianStats` or ``(mu, sigma)`` of the reference side, held fixed.
    Raises ValueError (FrechetError) when the dimensions disagree or a covariance cannot be estimated.
    """
    clips = _clip_list(gen, metric)
    dim = clips[0].shape[1]
    mu_r, sigma_r = _as_reference(reference)
    if mu_r.shape != (dim,):
        raise ValueError(f"{metric}: reference statistics have dimension {mu_r.shape}, embeddings {dim}")
    full = GaussianStats(dim)
    for c in clips:
        full.update(c)
    mu_g, sigma_g = full.mean_cov("generated embeddings")
    value = frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
    n = len(clips)
    stats = fad_from_counts(clips, (mu_r, sigma_r), _counts(_rng(seed, metric), n, n_boot))
    q_lo, q_hi = _percentile(stats, level)
    mean_star = float(stats.mean())
    return Interval(
        metric=metric,
        value=value,
        low=max(0.0, value - (q_hi - mean_star)),  # a Fréchet distance is never negative
        high=value + (mean_star - q_lo),
        std=float(stats.std(ddof=1)) if n_boot > 1 else 0.0,
        level=level,
        n_boot=n_boot,
        n_clips=n,
        seed=seed,
        bias=mean_star - value,
        method="basic bootstrap over clips, centred on the measured value (generated side resampled, reference fixed)",
        degenerate="1 clip" if n == 1 else (
            "identical clips" if all(np.array_equal(c, clips[0]) for c in clips[1:]) else ""),
    )


def fad_inf(
    gen,
    reference,
    *,
    steps: int = FAD_INF_STEPS,
    min_n: int = FAD_INF_MIN_N,
    seed: int = SEED,
    unit: str = "frames",
    replace: bool = True,
    metric: str = "frechet",
) -> FadInf:
    """FAD∞ by fadtk's recipe (see the module doc). ``gen``: per-clip embeddings or one ``[frames, dim]`` array.

    ``replace=True`` is fadtk's draw (with replacement); ``replace=False`` is Chong & Forsyth's original FID∞
    (``mchong6/FID_IS_infinity: score_infinity.py`` shuffles and takes the first n, i.e. without replacement).
    ``metric`` seeds the draws (stream ``"<metric>_inf"``). Raises ValueError when there are no more than ``min_n``
    units, fewer than 2 steps, or an unknown ``unit``.
    """
    if isinstance(gen, np.ndarray) and gen.ndim == 2:
        clips = [np.asarray(gen, np.float64)]
        if unit == "clips":
            raise ValueError("fad_inf(unit='clips') needs per-clip embeddings, not one stacked array")
    else:
        clips = _clip_list(gen, metric)
    dim = clips[0].shape[1]
    mu_r, sigma_r = _as_reference(reference)
    if unit not in ("frames", "clips"):
        raise ValueError(f"unit must be 'frames' or 'clips', got {unit!r}")
    max_n = sum(c.shape[0] for c in clips) if unit == "frames" else len(clips)
    if max_n <= min_n:
        raise ValueError(
            f"FAD∞ needs more than min_n={min_n} {unit}; this run has {max_n}. Lower min_n (it must stay above the "
            f"embedding dimension {dim}) or score more clips."
        )
    if steps < 2:
        raise ValueError("FAD∞ needs at least 2 subset sizes")
    ns = [int(x) for x in np.linspace(min_n, max_n, steps)]
    xs, ys = _inf_points(clips, (mu_r, sigma_r), ns, unit, replace, _rng(seed, f"{metric}_inf"))
    slope, intercept, r2 = _line_fit(np.asarray(xs), np.asarray(ys))
    return FadInf(score=intercept, slope=slope, r2=r2, points=[(int(n), float(v)) for n, v in zip(ns, ys)],
                  unit=unit, seed=seed, replace=replace)


def _inf_points(clips, reference, ns, unit: str, replace: bool, rng) -> tuple[list[float], list[float]]:
    """``(1/frames drawn, distance)`` for one draw of each subset size in ``ns`` (frames, or whole clips)."""
    mu_r, sigma_r = reference
    dim = clips[0].shape[1]
    pool = np.concatenate(clips, 0) if unit == "frames" else None
    max_n = pool.shape[0] if pool is not None else len(clips)
    xs, ys = [], []
    for n in ns:
        g = GaussianStats(dim)
        idx = rng.integers(0, max_n, size=n) if replace else rng.permutation(max_n)[:n]
        if pool is not None:
            g.update(pool[idx])
        else:
            for i in idx:
                g.update(clips[i])
        mu, sigma = g.mean_cov(f"FAD∞ subset of {n} {unit}")
        ys.append(frechet_distance(mu, sigma, mu_r, sigma_r))
        xs.append(1.0 / (n if pool is not None else g.n))
    return xs, ys


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = slope·x + intercept``: ``(slope, intercept, R²)`` (R² 1 when y is constant)."""
    slope, intercept = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float(slope), float(intercept), 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
