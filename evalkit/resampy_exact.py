"""``resampy.resample(x, sr_orig, sr_new)`` (filter ``kaiser_best``) bit for bit, 5-10x faster: the resampling of
torchvggish's input (``vggish_input.waveform_to_examples``) and of the ``frechet-audio-distance`` protocol.

resampy's kernel (``resampy/interpn.py: _resample_loop``) computes each output sample ``y[t]`` as a float32 (the
input's dtype) accumulator updated in a fixed order, left wing taps ``i = 0..i_max-1`` then right wing taps
``k = 0..k_max-1``::

    weight = interp_win[offset + i * step] + eta * interp_delta[offset + i * step]     # float64
    y[t] = y[t] + weight * x[n - i]                                                   # float64 sum, stored as float32

one output at a time, so the loop-carried chain (convert, add, round) bounds its speed. Here the same operations run
in the same order for every ``y[t]``, but many outputs advance together (the loop over ``t`` is innermost and
vectorises), which changes no rounding: every ``y[t]`` sees the identical sequence of float64 products, float64 sums
and float32 roundings (no fused multiply-add: numba does not contract without ``fastmath``). The per-output
constants (``n``, offsets, ``eta``, tap counts) are computed by the same scalar code as resampy's.

* Integer decimation and any ratio whose offsets and ``eta`` are the same for every output (32 -> 16 kHz,
  48 -> 16 kHz, ...): the input is split into its ``c`` phases so each tap reads a contiguous run, weights are
  computed once per tap: ~10x.
* Any other ratio (44.1 -> 16 kHz): per-output weights, blocks of outputs advanced tap by tap: ~1.5x.

The first call for a (rates, dtype) checks the result against ``resampy.resample`` on a short random signal; a
mismatch (another numba/LLVM that contracts, a resampy whose kernel changed) logs a warning and hands every later call
to resampy itself. ``tests/test_resampy_exact.py`` checks bit identity on the shared music clips and random signals at
many rates. 1-D float input only; anything else goes to resampy.
"""
from __future__ import annotations

import functools
import logging
import threading

import numpy as np

log = logging.getLogger(__name__)

#: outputs advanced together per tap (both kernels); a multiple of the widest SIMD register in float64 lanes
BLOCK = 2048
_CHECKED: dict[tuple, bool] = {}
_LOCK = threading.Lock()
_KERNELS: dict[str, object] = {}


def _jit():
    """The numba kernels, compiled on first use (numba comes with resampy)."""
    if not _KERNELS:
        import numba

        jit = numba.njit(nogil=True, cache=False)
        _KERNELS.update(params=jit(_params), uniform=jit(_taps_uniform), general=jit(_taps_general),
                        weights=jit(_weights))
    return _KERNELS


def _params(t_out, nwin, n_orig, num_table, scale, n_arr, offl, etal, imax, offr, etar, kmax):
    """resampy's per-output constants, with its own scalar arithmetic."""
    index_step = int(scale * num_table)
    for t in range(t_out.shape[0]):
        time_register = t_out[t]
        n = int(time_register)
        frac = scale * (time_register - n)
        index_frac = frac * num_table
        offset = int(index_frac)
        n_arr[t] = n
        offl[t] = offset
        etal[t] = index_frac - offset
        imax[t] = min(n + 1, (nwin - offset) // index_step)
        frac = scale - frac
        index_frac = frac * num_table
        offset = int(index_frac)
        offr[t] = offset
        etar[t] = index_frac - offset
        kmax[t] = min(n_orig - n - 1, (nwin - offset) // index_step)


def _weights(win, delta, off, eta, step, count):
    w = np.empty(count)
    for i in range(count):
        idx = off + i * step
        w[i] = win[idx] + eta * delta[idx]
    return w


def _taps_uniform(xs, wl, wr, c, imax, kmax, y):
    """``n[t] = c t`` and the same weights for every output: tap i of output t reads phase ``(-i) mod c`` of the
    input at ``t - q``; taps every output of a block has run in the vectorised loop, the rest output by output."""
    n_out = y.shape[0]
    for t0 in range(0, n_out, BLOCK):
        t1 = min(n_out, t0 + BLOCK)
        lo = imax[t0:t1].min()
        for i in range(lo):
            r = (c - i % c) % c
            q = (i + r) // c
            w = wl[i]
            xv = xs[r, t0 - q:t1 - q]
            yv = y[t0:t1]
            for j in range(t1 - t0):
                yv[j] = yv[j] + w * xv[j]
        for t in range(t0, t1):
            for i in range(lo, imax[t]):
                r = (c - i % c) % c
                y[t] = y[t] + wl[i] * xs[r, t - (i + r) // c]
        lo = max(kmax[t0:t1].min(), 0)
        for k in range(lo):
            r = (k + 1) % c
            q = (k + 1 - r) // c
            w = wr[k]
            xv = xs[r, t0 + q:t1 + q]
            yv = y[t0:t1]
            for j in range(t1 - t0):
                yv[j] = yv[j] + w * xv[j]
        for t in range(t0, t1):
            for k in range(lo, kmax[t]):
                r = (k + 1) % c
                y[t] = y[t] + wr[k] * xs[r, t + (k + 1 - r) // c]


def _taps_general(x, win, delta, step, n_arr, offl, etal, imax, offr, etar, kmax, y):
    """Any ratio: per-output weights; blocks of 16 outputs advanced tap by tap, the rest output by output."""
    n_out = y.shape[0]
    acc = np.zeros(16, y.dtype)
    for t0 in range(0, n_out, 16):
        tb = min(16, n_out - t0)
        for j in range(tb):
            acc[j] = y[t0 + j]
        lo = imax[t0:t0 + tb].min() if tb == 16 else 0
        for i in range(lo):
            for j in range(16):
                idx = offl[t0 + j] + i * step
                acc[j] = acc[j] + (win[idx] + etal[t0 + j] * delta[idx]) * x[n_arr[t0 + j] - i]
        for j in range(tb):
            t = t0 + j
            for i in range(lo, imax[t]):
                idx = offl[t] + i * step
                acc[j] = acc[j] + (win[idx] + etal[t] * delta[idx]) * x[n_arr[t] - i]
        lo = max(kmax[t0:t0 + tb].min(), 0) if tb == 16 else 0
        for k in range(lo):
            for j in range(16):
                idx = offr[t0 + j] + k * step
                acc[j] = acc[j] + (win[idx] + etar[t0 + j] * delta[idx]) * x[n_arr[t0 + j] + k + 1]
        for j in range(tb):
            t = t0 + j
            for k in range(lo, kmax[t]):
                idx = offr[t] + k * step
                acc[j] = acc[j] + (win[idx] + etar[t] * delta[idx]) * x[n_arr[t] + k + 1]
        for j in range(tb):
            y[t0 + j] = acc[j]


@functools.lru_cache(maxsize=16)
def _plan(n_in: int, sr_orig: int, sr_new: int) -> tuple:
    """Everything of a resampling that does not depend on the samples (filter, per-output constants, weights),
    computed once per input length and rates: clips of one length share it."""
    from resampy.filters import get_filter

    k = _jit()
    sample_ratio = float(sr_new) / sr_orig
    n_out = int(n_in * float(sr_new) / float(sr_orig))
    if n_out < 1:
        raise ValueError(f"Input signal length={n_in} is too small to resample from {sr_orig}->{sr_new}")
    interp_win, precision, _ = get_filter("kaiser_best")
    if sample_ratio < 1:
        interp_win = sample_ratio * interp_win
    interp_delta = np.diff(interp_win, append=interp_win[-1])
    scale = min(1.0, sample_ratio)
    t_out = np.arange(n_out) * (1.0 / sample_ratio)
    p = [np.empty(n_out, np.int64), np.empty(n_out, np.int64), np.empty(n_out), np.empty(n_out, np.int64),
         np.empty(n_out, np.int64), np.empty(n_out), np.empty(n_out, np.int64)]
    k["params"](t_out, interp_win.shape[0], n_in, precision, scale, *p)
    n_arr, offl, etal, imax, offr, etar, kmax = p
    step = int(scale * precision)
    c = int(n_arr[1] - n_arr[0]) if n_out > 1 else 0
    if c >= 1 and all((a == a[0]).all() for a in (offl, etal, offr, etar)) and np.array_equal(
            n_arr, c * np.arange(n_out)):
        wl = k["weights"](interp_win, interp_delta, offl[0], etal[0], step, max(int(imax.max()), 0))
        wr = k["weights"](interp_win, interp_delta, offr[0], etar[0], step, max(int(kmax.max()), 0))
        return n_out, ("uniform", c, wl, wr, imax, kmax)
    return n_out, ("general", interp_win, interp_delta, step, *p)


def _resample(x: np.ndarray, sr_orig: int, sr_new: int) -> np.ndarray:
    """The computation of ``resampy.core.resample`` (kaiser_best, 1-D) with the kernels above."""
    n_out, plan = _plan(int(x.shape[0]), int(sr_orig), int(sr_new))
    y = np.zeros(n_out, dtype=x.dtype)
    k = _jit()
    if plan[0] == "uniform":
        _, c, wl, wr, imax, kmax = plan
        xs = np.zeros((c, -(-x.shape[0] // c)), x.dtype)
        for r in range(c):
            xs[r, :len(x[r::c])] = x[r::c]
        k["uniform"](xs, wl, wr, c, imax, kmax, y)
    else:
        k["general"](x, *plan[1:], y)
    return y


def _exact_here(sr_orig: int, sr_new: int, dtype) -> bool:
    """Whether this machine's kernels give resampy's bits for these rates (checked once, on a random signal)."""
    key = (int(sr_orig), int(sr_new), np.dtype(dtype).str)
    with _LOCK:
        if key not in _CHECKED:
            import resampy

            x = np.random.default_rng(0).standard_normal(max(4 * sr_orig // 100, 4000)).astype(dtype)
            ok = np.array_equal(_resample(x, sr_orig, sr_new).view(np.uint8),
                                resampy.resample(x, sr_orig, sr_new).view(np.uint8))
            if not ok:
                log.warning("resampy_exact: %s -> %s Hz (%s) differs from resampy on this machine; using resampy",
                            sr_orig, sr_new, np.dtype(dtype).name)
            _CHECKED[key] = ok
        return _CHECKED[key]


def resample(x: np.ndarray, sr_orig: int, sr_new: int) -> np.ndarray:
    """``resampy.resample(x, sr_orig, sr_new)`` (``filter="kaiser_best"``, last axis), bit for bit."""
    import resampy

    x = np.asarray(x)
    if int(sr_orig) == int(sr_new) or x.ndim != 1 or x.dtype not in (np.float32, np.float64) or sr_orig <= 0 \
            or sr_new <= 0 or x.shape[0] < 2 or not _exact_here(int(sr_orig), int(sr_new), x.dtype):
        return resampy.resample(x, sr_orig, sr_new)
    return _resample(np.ascontiguousarray(x), int(sr_orig), int(sr_new))


__all__ = ["resample"]
