"""Kernel Audio Distance (KAD): an unbiased MMD² between embedding sets, by kadtk's recipe, in blocks (numpy only).

The reference is ``kadtk`` 1.1.0 (YoonjinXD/kadtk, Chung et al. 2025, arXiv 2502.15602), ``kadtk/kad.py``:
``calc_kernel_audio_distance(x, y, cache_dirs, device, bandwidth=None, kernel='gaussian', precision=torch.float32,
eps=1e-8)`` with ``x`` the baseline (reference) set ``[m, d]`` and ``y`` the evaluated (generated) set ``[n, d]``:

- bandwidth ``h``: given, or ``median_pairwise_distance(y)`` = ``torch.median(torch.pdist(y))`` on float32 rows:
  the **lower** of the two middle values (``torch.median`` does not average them), of the **evaluated** set - so KAD is
  not symmetric; ``gamma = 1 / (2 h² + eps)`` (a Python float, cast to the precision as torch casts a scalar);
- squared distances by expansion, ``(‖a‖² + ‖b‖²) − 2 a·b`` in ``precision`` (float32 by default), not clamped;
- kernels on them: ``gaussian`` ``exp(−γ d²)``, ``iq`` ``1 / (1 + γ d²)``, ``imq`` ``1 / sqrt(1 + γ d²)``;
- ``KAD = (mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j)) · 100``: the within-set
  means exclude the diagonal (``m(m−1)`` terms), the cross term is a plain mean over ``m·n`` (``SCALE_FACTOR``).

kadtk holds the three ``m×m``, ``n×n``, ``m×n`` matrices at once (MusicCaps' 105,000 VGGish windows per side: 44 GB
each in float32). Here every sum runs over blocks of rows (:data:`BLOCK`), each block's kernel values summed in float64
(kadtk sums in float32), blocks in a fixed order, so the number never depends on the number of threads; the
within-set passes use the upper triangle only (both orders of a pair are the same distance). Memory: a few blocks per
thread (``BLOCK² ·`` 4 bytes each), whatever the set sizes.

The median of ``n(n−1)/2`` distances (5.5·10⁹ for MusicCaps) cannot be held either. :func:`median_pairwise_distance`
finds the **exact** value ``torch.median(torch.pdist(y))`` returns without holding them: a seeded sample of pairs
brackets the median's rank; one blocked float64 pass counts the pairs below the bracket and keeps those inside it;
the pairs within a rigorous error bound of the selected value are then measured exactly as the reference measures
them (``distances.pairs``: ``torch.pdist``'s own float32 arithmetic, from :mod:`evalkit.metrics.kad`; this module's
default, :class:`Float64Pairs`, rounds float64 distances to float32: within one float32 rounding of torch's) and the
rank is resolved among them (see :func:`_select` for the argument).

Per clip (kadtk's ``score_individual``): the KAD of one clip's frames against the whole baseline, with the bandwidth
of that clip's frames. Its baseline term ``mean k(x_i, x_j)`` at each clip's own ``γ`` comes from one pass:
:class:`Moments` keeps the count and sum of the baseline's squared distances in bins of relative width 2⁻¹⁴ (their
float32 value's sign, exponent and top 14 mantissa bits), and the kernel at each bin's mean value gives the term to
within ``(γw)²/8 · max|k''|`` ≈ 3·10⁻¹⁰ relative, far below float32's 6·10⁻⁸.

Bootstrap (:func:`kad_bootstrap`): clips resampled with replacement, the bandwidth held at the measured set's (a
draw that recomputed its median would need a pass over all pairs per draw), from per-clip block sums of the kernel
matrix; basic interval centred on the measured value (as FAD's; KAD may be negative, so no clamp at 0).
KAD∞ (:func:`kad_inf`): kadtk's ``score_inf`` (``steps=25``, ``min_n=500``, ``n = int(linspace(min_n, N, steps))``,
one with-replacement draw of n frames per step, the bandwidth recomputed from each draw, ``np.polyfit(1/n, KAD, 1)``;
seeded here, unseeded in kadtk).
"""
from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

#: kadtk/kad.py SCALE_FACTOR
SCALE_FACTOR = 100.0
#: calc_kernel_audio_distance(eps=1e-8): gamma = 1 / (2 h² + eps)
EPS = 1e-8
KERNELS = ("gaussian", "iq", "imq")
#: calc_kernel_audio_distance(precision=torch.float32); float64 is kadtk's other choice
PRECISIONS = ("float32", "float64")
#: rows per block of a pairwise pass (each temporary is BLOCK² values)
BLOCK = 2048
#: a set with at most this many pairs has its median taken over all of them at once
SMALL_PAIRS = 1 << 22
#: pairs drawn to bracket the median's rank in a larger set
SAMPLE_PAIRS = 1 << 21
#: the most pairs the median's bracket may hold (16 bytes each)
MAX_BRACKET = 1 << 27
_U32, _U64 = 2.0 ** -24, 2.0 ** -53


@dataclass(frozen=True)
class KernelSettings:
    """kadtk's constants: ``kernel`` (gaussian | iq | imq), ``bandwidth`` (None: the evaluated set's median pairwise
    distance), ``eps``, ``precision`` of the distances and kernel values (float32 | float64), ``scale`` (×100)."""

    kernel: str = "gaussian"
    bandwidth: float | None = None
    eps: float = EPS
    precision: str = "float32"
    scale: float = SCALE_FACTOR

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel {self.kernel!r}: expected one of {', '.join(KERNELS)} (kadtk/kad.py)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.bandwidth is not None and not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise ValueError(f"bandwidth {self.bandwidth!r}: a positive number, or null (the median pairwise "
                             f"distance of the evaluated set)")

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any]) -> "KernelSettings":
        bw = recipe.get("bandwidth")
        return cls(kernel=str(recipe.get("kernel", "gaussian")), bandwidth=None if bw is None else float(bw),
                   eps=float(recipe.get("eps", EPS)), precision=str(recipe.get("precision", "float32")),
                   scale=float(recipe.get("scale", SCALE_FACTOR)))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.precision)

    def gamma(self, bandwidth: float) -> float:
        """``1 / (2 h² + eps)`` in Python floats, as kadtk computes it."""
        return 1.0 / (2.0 * float(bandwidth) ** 2 + self.eps)


# ----------------------------------------------------------------------------------------------------------------
# Kernels, squared distances, blocks
# ----------------------------------------------------------------------------------------------------------------
def kernel_inplace(a: np.ndarray, gamma, kernel: str) -> np.ndarray:
    """kadtk's kernel of squared distances ``a``, in place and in ``a``'s dtype (``gamma``, a number or an array
    broadcasting against ``a``, is cast to it first, as torch casts a Python scalar): ``gaussian`` ``exp(−γa)``,
    ``iq`` ``1/(1+γa)``, ``imq`` ``1/sqrt(1+γa)``."""
    g = np.asarray(gamma, dtype=a.dtype)
    if kernel == "gaussian":
        np.multiply(a, -g, out=a)
        return np.exp(a, out=a)
    np.multiply(a, g, out=a)
    a += a.dtype.type(1)
    if kernel == "imq":
        np.sqrt(a, out=a)
    elif kernel != "iq":
        raise ValueError(f"kernel {kernel!r}: expected one of {', '.join(KERNELS)}")
    return np.divide(a.dtype.type(1), a, out=a)


def sqnorms(x: np.ndarray) -> np.ndarray:
    """``‖x_i‖²`` per row, in x's dtype."""
    return np.einsum("ij,ij->i", x, x)


def sq_dists(a: np.ndarray, b: np.ndarray, na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` squared distances as kadtk forms them: ``(‖a_i‖² + ‖b_j‖²) − 2 a_i·b_j`` (not clamped)."""
    d = np.add.outer(na, nb)
    g = a @ b.T
    g *= 2
    d -= g
    return d


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _spans(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + block)) for s in range(0, n, block)]


def _upper(n: int, block: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Block pairs (rows, cols) of the upper triangle, diagonal blocks included, in a fixed order."""
    spans = _spans(n, block)
    return [(r, c) for i, r in enumerate(spans) for c in spans[i:]]


def _ordered_map(fn: Callable, tasks: Sequence, threads: int | None) -> Iterator:
    """``map(fn, tasks)`` on ``threads`` threads, results in task order, at most ``2·threads`` pending, BLAS on one
    thread (OpenBLAS' products differ in the last bits between thread counts): the caller's reduction order, and so
    its result, never depends on the threads."""
    from threadpoolctl import threadpool_limits

    threads = default_threads() if threads is None else int(threads)
    if threads <= 1 or len(tasks) <= 1:
        with threadpool_limits(1, user_api="blas"):
            yield from map(fn, tasks)
        return
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads, "evalkit-kernel") as pool:
        it = iter(tasks)
        pending = deque(pool.submit(fn, t) for t in islice(it, 2 * threads))
        while pending:
            done = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield done


def _as(x, dtype) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [frames, dim], got shape {x.shape}")
    return x


# ----------------------------------------------------------------------------------------------------------------
# Binned moments of squared distances: the kernel mean at any gamma from one pass
# ----------------------------------------------------------------------------------------------------------------
class Moments:
    """Count and sum of squared distances per bin of relative width 2⁻¹⁴ (the float32 value's top 18 bits: sign,
    exponent, 14 mantissa bits), over the ordered pairs ``i ≠ j`` of one set. :meth:`kernel_means` gives
    ``mean_{i≠j} k(d²_ij)`` at any gammas from them (the kernel at each bin's mean; see the module doc)."""

    SHIFT, OFFSET, SIZE = 9, 1 << 22, 1 << 23

    def __init__(self) -> None:
        self.count = np.zeros(self.SIZE, np.float64)
        self.total = np.zeros(self.SIZE, np.float64)

    @classmethod
    def block(cls, d2: np.ndarray, diag: bool) -> tuple[int, np.ndarray, np.ndarray]:
        """One block's ``(first bin, counts, sums)``; an off-diagonal block counts twice (both orders), a diagonal
        block's diagonal not at all."""
        v = d2 if d2.dtype == np.float32 else d2.astype(np.float32)
        keys = (v.view(np.int32) >> cls.SHIFT) + cls.OFFSET
        lo = int(keys.min())
        idx = (keys - lo).ravel()
        size = int(idx.max()) + 1
        c = np.bincount(idx, minlength=size).astype(np.float64)
        t = np.bincount(idx, weights=d2.ravel(), minlength=size)
        if diag:
            di = np.diagonal(keys) - lo
            np.add.at(c, di, -1.0)
            np.add.at(t, di, -np.diagonal(d2).astype(np.float64))
        else:
            c *= 2
            t *= 2
        return lo, c, t

    def merge(self, part: tuple[int, np.ndarray, np.ndarray]) -> None:
        lo, c, t = part
        self.count[lo:lo + c.size] += c
        self.total[lo:lo + t.size] += t

    def kernel_means(self, gammas, kernel: str) -> np.ndarray:
        """``mean_{i≠j} k(γ d²_ij)`` for each of ``gammas`` (float64)."""
        g = np.atleast_1d(np.asarray(gammas, np.float64))
        nz = np.flatnonzero(self.count)
        cnt = self.count[nz]
        mean = self.total[nz] / cnt
        n_pairs = cnt.sum()
        out = np.full(g.shape, np.nan)
        ok = np.flatnonzero(np.isfinite(g))
        step = max(1, (1 << 24) // max(1, nz.size))
        for s in range(0, ok.size, step):
            rows = ok[s:s + step]
            a = np.multiply.outer(g[rows], mean)
            out[rows] = (kernel_inplace(a, 1.0, kernel) @ cnt) / n_pairs
        return out


# ----------------------------------------------------------------------------------------------------------------
# Blocked kernel sums
# ----------------------------------------------------------------------------------------------------------------
def within_sum(x: np.ndarray, gamma: float | None, kernel: str, *, moments: Moments | None = None,
               block: int = BLOCK, threads: int | None = None) -> float:
    """``Σ_{i≠j} k(x_i, x_j)`` (float64 sum of kernel values in x's dtype) over the upper triangle's blocks; with
    ``moments``, the squared distances are also binned into it (``gamma=None``: only that; returns 0)."""
    n = sqnorms(x)

    def one(task):
        (r0, r1), (c0, c1) = task
        d2 = sq_dists(x[r0:r1], x[c0:c1], n[r0:r1], n[c0:c1])
        diag = r0 == c0
        part = Moments.block(d2, diag) if moments is not None else None
        if gamma is None:
            return 0.0, part
        k = kernel_inplace(d2, gamma, kernel)
        s = float(k.sum(dtype=np.float64))
        s = s - float(np.trace(k, dtype=np.float64)) if diag else 2.0 * s
        return s, part

    total = 0.0
    for s, part in _ordered_map(one, _upper(len(x), block), threads):
        total += s
        if part is not None:
            moments.merge(part)
    return total


def cross_sums(y: np.ndarray, x: np.ndarray, gamma: float, kernel: str, *, row_gammas: np.ndarray | None = None,
               per_row: bool = False, block: int = BLOCK, threads: int | None = None
               ) -> tuple[float, np.ndarray | None]:
    """``Σ_{i,j} k(y_i, x_j)`` and each row's ``Σ_j k(y_i, x_j)``: with ``row_gammas`` (one per row of y) at the
    row's own gamma, with ``per_row`` at ``gamma`` (None without either)."""
    ny, nx = sqnorms(y), sqnorms(x)
    rows = None if row_gammas is None and not per_row else np.zeros(len(y), np.float64)
    tasks = [(r, c) for r in _spans(len(y), block) for c in _spans(len(x), block)]

    def one(task):
        (r0, r1), (c0, c1) = task
        d2 = sq_dists(y[r0:r1], x[c0:c1], ny[r0:r1], nx[c0:c1])
        own = None
        if row_gammas is not None:
            own = kernel_inplace(d2.copy(), row_gammas[r0:r1, None], kernel).sum(1, dtype=np.float64)
        k = kernel_inplace(d2, gamma, kernel)
        if per_row:
            own = k.sum(1, dtype=np.float64)
            return r0, float(own.sum()), own
        return r0, float(k.sum(dtype=np.float64)), own

    total = 0.0
    for r0, s, own in _ordered_map(one, tasks, threads):
        total += s
        if own is not None:
            rows[r0:r0 + own.size] += own
    return total, rows


# ----------------------------------------------------------------------------------------------------------------
# The median pairwise distance, exactly
# ----------------------------------------------------------------------------------------------------------------
class PairDistances(Protocol):
    """How the reference measures a pair: ``pairs(y, i, j)`` -> float32 distances of rows ``i[k], j[k]``;
    ``all(y)`` -> every ``i < j`` distance (pdist order), for small sets."""

    def pairs(self, y: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray: ...

    def all(self, y: np.ndarray) -> np.ndarray: ...


class Float64Pairs:
    """Euclidean distances in float64 rounded to float32 (torch.pdist sums float32 squares: its value is within a
    float32 rounding or two of this one)."""

    def pairs(self, y: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.sqrt(_t2(y, i, j)).astype(np.float32)

    def all(self, y: np.ndarray) -> np.ndarray:
        i, j = np.triu_indices(len(y), 1)
        return self.pairs(y, i, j)


def _t2(y: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Squared distances of row pairs in float64 from the differences (not the expansion): exact to ~d·2⁻⁵³."""
    out = np.empty(len(i), np.float64)
    for s in range(0, len(i), chunk):
        d = y[i[s:s + chunk]].astype(np.float64) - y[j[s:s + chunk]]
        out[s:s + chunk] = np.einsum("ij,ij->i", d, d)
    return out


def lower_median(values: np.ndarray) -> float:
    """``torch.median``: the lower of the two middle values when there is an even number of them."""
    v = np.asarray(values).ravel()
    if v.size == 0:
        raise ValueError("the median of no values")
    k = (v.size - 1) // 2
    return float(np.partition(v, k)[k])


def median_pairwise_distance(y, distances: PairDistances | None = None, *, block: int = BLOCK,
                             threads: int | None = None, seed: int = 0) -> float:
    """kadtk's ``median_pairwise_distance(y)`` = ``torch.median(torch.pdist(float32 y))``, exactly, in bounded
    memory (see the module doc). ``distances`` measures pairs as the reference does (default :class:`Float64Pairs`).
    ``seed`` only decides which pairs bracket the rank, never the value. Raises ValueError for fewer than 2 rows."""
    y = _as(y, np.float32)
    n = len(y)
    if n < 2:
        raise ValueError(f"the median pairwise distance needs at least 2 embeddings, got {n}")
    distances = distances or Float64Pairs()
    n_pairs = n * (n - 1) // 2
    if n_pairs <= SMALL_PAIRS:
        return lower_median(distances.all(y))
    k = (n_pairs - 1) // 2
    yc = y.astype(np.float64) - y.mean(0, dtype=np.float64)
    norms = sqnorms(yc)
    sample = _sample_pairs(y, np.random.default_rng(seed))
    for width in (10.0, 40.0, None):
        lo, hi = _bracket(sample, k, n_pairs, width)
        below, ii, jj, a = _collect(yc, norms, lo, hi, block, threads)
        got = _select(y, distances, k, below, ii, jj, a, lo, hi, 2 * float(norms.max()))
        if got is not None:
            return got
    raise RuntimeError("median_pairwise_distance: the full bracket did not resolve the rank (a bug)")


def _sample_pairs(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Squared distances (float32: they only place the bracket) of :data:`SAMPLE_PAIRS` random pairs: the disjoint
    pairs ``(π(2k), π(2k+1))`` of seeded random permutations π of the rows (one gather per permutation, each pair's
    two rows distinct)."""
    n, out, got = len(y), [], 0
    while got < SAMPLE_PAIRS:
        p = rng.permutation(n)
        d = y[p[0:n - 1:2]] - y[p[1::2]]
        out.append(np.einsum("ij,ij->i", d, d))
        got += len(out[-1])
    return np.concatenate(out)[:SAMPLE_PAIRS]


def _bracket(sample: np.ndarray, k: int, n_pairs: int, width: float | None) -> tuple[float, float]:
    """Squared-distance bounds around the k-th pair's, from the sample's quantiles ± ``width`` standard errors of a
    quantile (None: everything)."""
    if width is None:
        if n_pairs > MAX_BRACKET:
            raise ValueError(f"the median of {n_pairs} pairwise distances: its bracket would hold every pair; too "
                             f"many ties near the median (identical embeddings?)")
        return -math.inf, math.inf
    s = sample.size
    q = k / n_pairs
    sd = math.sqrt(q * (1 - q) / s) + 1.0 / s
    return (float(np.quantile(sample, max(0.0, q - width * sd))),
            float(np.quantile(sample, min(1.0, q + width * sd))))


def _collect(yc: np.ndarray, norms: np.ndarray, lo: float, hi: float, block: int, threads: int | None):
    """One float64 pass over the pairs ``i < j`` (centred rows): how many lie surely below ``lo``, and ``(i, j, d²)``
    of those that may lie in ``[lo, hi]`` (each block widened by its rigorous error bound)."""
    d = yc.shape[1]

    def one(task):
        (r0, r1), (c0, c1) = task
        a = sq_dists(yc[r0:r1], yc[c0:c1], norms[r0:r1], norms[c0:c1])
        if r0 == c0:
            a[np.tril_indices(r1 - r0)] = np.nan  # i >= j: neither below nor kept
        b = 4 * (d + 6) * _U64 * (float(norms[r0:r1].max()) + float(norms[c0:c1].max()))
        below = int(np.count_nonzero(a < lo - b))
        r, c = np.nonzero((a >= lo - b) & (a <= hi + b))
        return below, (r + r0).astype(np.int32), (c + c0).astype(np.int32), a[r, c]

    below, parts, kept = 0, [], 0
    for nb, r, c, v in _ordered_map(one, _upper(len(yc), block), threads):
        below += nb
        kept += v.size
        if kept > MAX_BRACKET:
            raise ValueError(f"the median's bracket holds over {MAX_BRACKET} pairwise distances (too many ties)")
        parts.append((r, c, v))
    cat = [np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in range(3)]
    return below, cat[0], cat[1], cat[2]


def _select(y, distances, k, below, ii, jj, a, lo, hi, norm_bound) -> float | None:
    """The k-th smallest reference distance (None: the bracket missed; widen it).

    ``a`` approximates each kept pair's squared reference distance e² to within
    ``β = 1.01 (c v + 2b) `` near v, with ``c = 2 (d + 6) 2⁻²⁴`` (float32 sums of d squares, a square root) and ``b``
    the float64 pass's bound. With ``v`` the (k − below)-th smallest ``a``: at least k+1 pairs have ``a ≤ v`` and
    N−k have ``a ≥ v``, so the k-th e² lies in ``I = [v−β, v+β]``; every pair with e² in I has ``|a − v| ≤ 3β`` and
    is measured exactly; pairs with ``a < v − 3β`` have e² below I. The answer is the r-th smallest measured e in I,
    r = k − (pairs with e² below I)."""
    r = k - below
    if not 0 <= r < a.size:
        return None
    v = float(np.partition(a, r)[r])
    c = 2 * (y.shape[1] + 6) * _U32
    beta = 1.01 * (c * max(v, 0.0) + 2 * 4 * (y.shape[1] + 6) * _U64 * norm_bound) + 1e-300
    if v - 3 * beta < lo or v + 3 * beta > hi:
        return None
    cand = np.flatnonzero(np.abs(a - v) <= 3 * beta)
    e = np.asarray(distances.pairs(y, ii[cand].astype(np.int64), jj[cand].astype(np.int64)), np.float32)
    e2 = e.astype(np.float64) ** 2
    under = below + int(np.count_nonzero(a < v - 3 * beta)) + int(np.count_nonzero(e2 < v - beta))
    inside = e[(e2 >= v - beta) & (e2 <= v + beta)]
    rr = k - under
    if not 0 <= rr < inside.size:
        raise RuntimeError(f"median_pairwise_distance: rank {rr} outside the {inside.size} exact candidates (an "
                           f"error bound was violated)")
    return float(np.partition(inside, rr)[rr])


# ----------------------------------------------------------------------------------------------------------------
# KAD
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class KadResult:
    """One KAD: ``value`` (×scale), the ``bandwidth`` and ``gamma`` used, the kernel means ``xx`` (baseline pairs),
    ``yy`` (evaluated pairs), ``xy`` (cross), the set sizes; per clip (kadtk ``score_individual``): ``clip_values``
    and ``clip_bandwidths`` (NaN for a clip with fewer than 2 frames), when asked for."""

    value: float
    bandwidth: float
    gamma: float
    xx: float
    yy: float
    xy: float
    m: int
    n: int
    clip_values: np.ndarray | None = None
    clip_bandwidths: np.ndarray | None = None


def kad(x, y, settings: KernelSettings = KernelSettings(), *, distances: PairDistances | None = None,
        block: int = BLOCK, threads: int | None = None) -> KadResult:
    """kadtk's ``calc_kernel_audio_distance(x, y)`` (x: baseline ``[m, d]``, y: evaluated ``[n, d]``), blocked.
    Raises ValueError when either side has fewer than 2 rows or the dimensions differ."""
    return kad_with_clips(x, [y], settings, distances=distances, per_clip=False, block=block, threads=threads)


def kad_with_clips(x, clips: Sequence[np.ndarray], settings: KernelSettings = KernelSettings(), *,
                   distances: PairDistances | None = None, per_clip: bool = True, block: int = BLOCK,
                   threads: int | None = None) -> KadResult:
    """The KAD of the evaluated set (every clip's frames, in the order given) against ``x``, and with ``per_clip``
    each clip's own KAD against ``x`` (kadtk ``score_individual``: that clip's frames, its own bandwidth)."""
    dt = settings.dtype
    x = _as(x, dt)
    parts = [_as(c, dt) for c in clips]
    y = np.concatenate(parts) if len(parts) > 1 else parts[0]
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"KAD needs at least 2 embeddings per side, got {m} baseline and {n} evaluated")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"KAD of {x.shape[1]}- and {y.shape[1]}-dimensional embeddings")
    bw = settings.bandwidth if settings.bandwidth is not None else \
        median_pairwise_distance(y, distances, block=block, threads=threads)
    gamma = settings.gamma(bw)
    clip_bw = clip_gamma = moments = None
    if per_clip:
        clip_bw = np.array([_clip_bandwidth(c, settings, distances) for c in parts])
        clip_gamma = np.array([settings.gamma(b) if np.isfinite(b) else np.nan for b in clip_bw])
        moments = Moments() if settings.bandwidth is None else None
    sxx = within_sum(x, gamma, settings.kernel, moments=moments, block=block, threads=threads)
    syy = within_sum(y, gamma, settings.kernel, block=block, threads=threads)
    rows_gamma = None if clip_gamma is None else np.repeat(clip_gamma, [len(c) for c in parts])
    sxy, rows = cross_sums(y, x, gamma, settings.kernel, row_gammas=rows_gamma, block=block, threads=threads)
    xx, yy, xy = sxx / (m * (m - 1)), syy / (n * (n - 1)), sxy / (m * n)
    out = KadResult((xx + yy - 2 * xy) * settings.scale, float(bw), gamma, xx, yy, xy, m, n)
    if per_clip:
        out.clip_bandwidths = clip_bw
        out.clip_values = _clip_values(parts, rows, clip_gamma, moments, xx, settings, m)
    return out


def _clip_bandwidth(c: np.ndarray, settings: KernelSettings, distances) -> float:
    if settings.bandwidth is not None:
        return float(settings.bandwidth)
    return median_pairwise_distance(c, distances) if len(c) >= 2 else math.nan


def _clip_values(parts, rows, gammas, moments: Moments | None, xx: float, settings: KernelSettings, m: int):
    """Each clip's KAD against the baseline (``score_individual``); NaN for a clip with fewer than 2 frames."""
    # the gammas as the precision holds them (torch casts the scalar): the kernel values' one systematic rounding
    g = np.asarray(gammas, settings.dtype).astype(np.float64)
    xx_c = moments.kernel_means(g, settings.kernel) if moments is not None else np.full(len(parts), xx)
    out = np.full(len(parts), np.nan)
    start = 0
    for i, c in enumerate(parts):
        stop = start + len(c)
        if len(c) >= 2 and np.isfinite(gammas[i]):
            n = sqnorms(c)
            k = kernel_inplace(sq_dists(c, c, n, n), gammas[i], settings.kernel)  # one small block
            yy = (float(k.sum(dtype=np.float64)) - float(np.trace(k, dtype=np.float64))) / (len(c) * (len(c) - 1))
            xy = float(rows[start:stop].sum()) / (m * len(c))
            out[i] = (xx_c[i] + yy - 2 * xy) * settings.scale
        start = stop
    return out


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap over clips, KAD∞
# ----------------------------------------------------------------------------------------------------------------
def _clips(gen, dtype) -> list[np.ndarray]:
    """Per-clip embeddings (a mapping: sorted by clip id; or a sequence) as ``[frames, dim]`` arrays."""
    arrays = [gen[k] for k in sorted(gen)] if isinstance(gen, Mapping) else list(gen)
    if not arrays:
        raise ValueError("no per-clip evaluated embeddings")
    return [_as(np.asarray(a).reshape(-1, np.asarray(a).shape[-1]), dtype) for a in arrays]


def _baseline(ref, dtype) -> np.ndarray:
    return np.concatenate(_clips(ref, dtype)) if isinstance(ref, Mapping) or not hasattr(ref, "ndim") \
        else _as(ref, dtype)


def _cuts(seg: np.ndarray, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The clips of rows ``a:b`` (``seg``: each row's clip) and where each starts, relative to a."""
    s = seg[a:b]
    cut = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return s[cut], cut


def clip_block_sums(parts: Sequence[np.ndarray], gamma: float, kernel: str, *, block: int = BLOCK,
                    threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``S[c, c'] = Σ_{i∈c, j∈c'} k(y_i, y_j)`` over clips (pairs ``i = j`` included) and ``D[c] = Σ_{i∈c}
    k(y_i, y_i)``: a resample's within-set sum is ``wᵀSw − w·D`` for clip multiplicities w."""
    y = np.concatenate(parts)
    seg = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    n = sqnorms(y)
    S, D = np.zeros((len(parts), len(parts))), np.zeros(len(parts))

    def one(task):
        (r0, r1), (c0, c1) = task
        k = kernel_inplace(sq_dists(y[r0:r1], y[c0:c1], n[r0:r1], n[c0:c1]), gamma, kernel)
        rs, rcut = _cuts(seg, r0, r1)
        cs, ccut = _cuts(seg, c0, c1)
        b = np.add.reduceat(np.add.reduceat(k, ccut, axis=1, dtype=np.float64), rcut, axis=0)
        return r0, c0, rs, cs, b, np.diagonal(k).astype(np.float64) if r0 == c0 else None

    for r0, c0, rs, cs, b, dk in _ordered_map(one, _upper(len(y), block), threads):
        S[np.ix_(rs, cs)] += b
        if r0 != c0:
            S[np.ix_(cs, rs)] += b.T
        else:
            np.add.at(D, seg[r0:r0 + dk.size], dk)
    return S, D


def kad_bootstrap(ref, gen, settings: KernelSettings, bandwidth: float, *, n_boot: int = 1000, level: float = 0.95,
                  seed: int = 0, metric: str = "kad", block: int = BLOCK, threads: int | None = None):
    """Bootstrap interval of a KAD resampling the evaluated set's clips (see the module doc): ``gen`` per-clip
    ``[frames, dim]`` (``{clip id: array}``, sorted by id, or a sequence), ``ref`` the baseline (one array, or per
    clip), ``bandwidth`` the measured set's, held fixed. Returns a :class:`~evalkit.statistics.bootstrap.Interval`."""
    from evalkit.statistics.bootstrap import Interval, _counts, _percentile, _rng

    dt = settings.dtype
    parts, x = _clips(gen, dt), _baseline(ref, dt)
    m, gamma = len(x), settings.gamma(bandwidth)
    S, D = clip_block_sums(parts, gamma, settings.kernel, block=block, threads=threads)
    y = np.concatenate(parts)
    _, rows = cross_sums(y, x, gamma, settings.kernel, per_row=True, block=block, threads=threads)
    sizes = np.array([len(p) for p in parts], np.float64)
    T = np.add.reduceat(rows, np.r_[0, np.cumsum(sizes[:-1])].astype(np.int64))
    xx = within_sum(x, gamma, settings.kernel, block=block, threads=threads) / (m * (m - 1))

    def draws(w: np.ndarray) -> np.ndarray:
        nn = w @ sizes
        yy = (np.einsum("bi,bi->b", w @ S, w) - w @ D) / (nn * (nn - 1))
        return (xx + yy - 2 * (w @ T) / (m * nn)) * settings.scale

    value = float(draws(np.ones((1, len(parts))))[0])
    counts = _counts(_rng(seed, metric), len(parts), n_boot)
    stats = np.concatenate([draws(counts[s:s + 256]) for s in range(0, n_boot, 256)])
    q_lo, q_hi = _percentile(stats, level)
    mean_star = float(stats.mean())
    return Interval(
        metric=metric, value=value, low=value - (q_hi - mean_star), high=value + (mean_star - q_lo),
        std=float(stats.std(ddof=1)) if n_boot > 1 else 0.0, level=level, n_boot=n_boot, n_clips=len(parts),
        seed=seed, bias=mean_star - value,
        method="basic bootstrap over clips, centred on the measured value (evaluated clips resampled, baseline "
               "fixed, bandwidth fixed at the measured set's)",
        degenerate="1 clip" if len(parts) == 1 else (
            "identical clips" if all(np.array_equal(p, parts[0]) for p in parts[1:]) else ""))


def kad_inf(ref, gen, settings: KernelSettings, *, steps: int = 25, min_n: int = 500, seed: int = 0,
            unit: str = "frames", replace: bool = True, metric: str = "kad", distances: PairDistances | None = None,
            block: int = BLOCK, threads: int | None = None):
    """KAD∞ by kadtk's ``score_inf`` (see the module doc), seeded (stream ``"<metric>_inf"``); ``unit="clips"`` draws
    whole clips, ``replace=False`` draws without replacement. Each draw's bandwidth is its own median pairwise
    distance (unless the settings fix one); the baseline term at each draw's gamma comes from one binned pass over
    the baseline (:class:`Moments`). Returns a :class:`~evalkit.statistics.bootstrap.FadInf`. Raises ValueError when
    there are no more than ``min_n`` units, fewer than 2 steps or an unknown unit."""
    from evalkit.statistics.bootstrap import FadInf, _line_fit, _rng

    if unit not in ("frames", "clips"):
        raise ValueError(f"unit must be 'frames' or 'clips', got {unit!r}")
    if steps < 2:
        raise ValueError("KAD∞ needs at least 2 subset sizes")
    dt = settings.dtype
    parts, x = _clips(gen, dt), _baseline(ref, dt)
    pool = np.concatenate(parts)
    max_n = len(pool) if unit == "frames" else len(parts)
    if max_n <= min_n:
        raise ValueError(f"KAD∞ needs more than min_n={min_n} {unit}; this run has {max_n}. Lower min_n or score "
                         f"more clips.")
    m = len(x)
    moments, xx_fixed = None, None
    if settings.bandwidth is None:
        moments = Moments()
        within_sum(x, None, settings.kernel, moments=moments, block=block, threads=threads)
    else:
        xx_fixed = within_sum(x, settings.gamma(settings.bandwidth), settings.kernel, block=block,
                              threads=threads) / (m * (m - 1))
    rng = _rng(seed, f"{metric}_inf")
    ns = [int(v) for v in np.linspace(min_n, max_n, steps)]
    xs, ys = [], []
    for n in ns:
        idx = rng.integers(0, max_n, size=n) if replace else rng.permutation(max_n)[:n]
        sub = pool[idx] if unit == "frames" else np.concatenate([parts[i] for i in idx])
        bw = settings.bandwidth or median_pairwise_distance(sub, distances, block=block, threads=threads)
        g = settings.gamma(bw)
        k = len(sub)
        yy = within_sum(sub, g, settings.kernel, block=block, threads=threads) / (k * (k - 1))
        xy = cross_sums(sub, x, g, settings.kernel, block=block, threads=threads)[0] / (m * k)
        xx = xx_fixed if moments is None else float(moments.kernel_means([float(dt.type(g))], settings.kernel)[0])
        ys.append((xx + yy - 2 * xy) * settings.scale)
        xs.append(1.0 / k)
    slope, intercept, r2 = _line_fit(np.asarray(xs), np.asarray(ys))
    return FadInf(score=intercept, slope=slope, r2=r2, points=[(int(n), float(v)) for n, v in zip(ns, ys)],
                  unit=unit, seed=seed, replace=replace)
