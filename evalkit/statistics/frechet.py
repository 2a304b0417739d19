"""The Fréchet distance between two Gaussians, once, for every Fréchet metric (FAD today).

Sufficient statistics: ``n``, ``Σx`` and ``Σxxᵀ`` in float64 (google-research ``frechet_audio_distance/
create_embeddings_beam.py: ComputeMeanAndCovariance``), which merge by addition across batches and processes.
Covariance uses n−1: ``Σ = Σxxᵀ/(n−1) − μμᵀ·n/(n−1)``.

Distance (``frechet_audio_distance/fad_utils.py: frechet_distance``):
``|μ₁−μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr sqrtm(Σ₁Σ₂)``. ``tr sqrtm(Σ₁Σ₂)`` equals ``Σᵢ sqrt(λᵢ)`` for the eigenvalues λ
of the symmetric PSD matrix ``sqrt(Σ₁)·Σ₂·sqrt(Σ₁)`` (similar to Σ₁Σ₂), which we compute with ``eigh`` and clip at
0: no complex parts, no ``scipy.linalg.sqrtm`` instability on rank-deficient covariances. Google's fallback is kept:
if the result is not finite, retry with ``eps`` added to both diagonals.

That step runs with one BLAS thread: OpenBLAS's ``eigh`` can split its work by the number of threads, and with the
OpenBLAS of numpy 1.26 (0.3.23) one thread and two gave FADs that differ in the 13th digit (the demo's
0.0023589689915101118 vs ...098663), so the number depended on the machine's core count. One thread gives the
same bits under numpy 1.26 and numpy 2.x here, at any core count; a 128x128 eigendecomposition takes milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

#: google-research frechet_audio_distance/fad_utils.py: offset added to the diagonals when sqrtm is not finite.
GOOGLE_FALLBACK_EPS = 1e-7


class FrechetError(ValueError):
    pass


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


@lru_cache(maxsize=1)
def _blas():
    """The BLAS libraries loaded in this process (numpy's, and scipy's/torch's if loaded), found once."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrtm(sigma1 @ sigma2)`` for symmetric PSD inputs, in float64, with one BLAS thread (the result must not
    depend on the core count; see the module docstring)."""
    with _blas().limit(limits=1, user_api="blas"):
        s1 = _sym_sqrt(np.asarray(sigma1, dtype=np.float64))
        m = s1 @ np.asarray(sigma2, dtype=np.float64) @ s1
        ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


#: A negative result larger than this fraction of ``tr Σ₁ + tr Σ₂`` is not round-off: the trace term is unstable.
NEGATIVE_TOLERANCE = 1e-9


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = GOOGLE_FALLBACK_EPS, warnings: list | None = None) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64, never negative.

    Identical statistics give exactly 0.0. A distance is >= 0 in exact arithmetic; a negative result is round-off in
    ``tr Σ₁ + tr Σ₂ - 2 tr sqrtm(Σ₁Σ₂)`` (large when the covariances are rank-deficient) and is clamped to 0.0; when it
    exceeds :data:`NEGATIVE_TOLERANCE` of the traces a line saying so is appended to ``warnings``."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise FrechetError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise FrechetError(f"{name} holds NaN or inf: the embeddings behind it are not finite")
    if np.array_equal(mu1, mu2) and np.array_equal(sigma1, sigma2):
        return 0.0
    diff = mu1 - mu2
    tr = trace_sqrt_product(sigma1, sigma2)
    if not np.isfinite(tr):
        off = np.eye(sigma1.shape[0]) * eps
        tr = trace_sqrt_product(sigma1 + off, sigma2 + off)
    traces = float(np.trace(sigma1) + np.trace(sigma2))
    d = float(diff @ diff + traces - 2.0 * tr)
    if d < 0:
        if warnings is not None and -d > NEGATIVE_TOLERANCE * max(traces, 1e-300):
            warnings.append(f"the trace term tr sqrtm(Σ₁Σ₂) = {tr:.6g} is unstable: the distance came out {d:.3g} "
                            f"(traces {traces:.6g}); reported as 0.0. The covariances are probably rank-deficient.")
        return 0.0
    return d


def covariance_rank(sigma, rtol: float = 1e-10) -> int:
    """Numerical rank of a symmetric PSD covariance: eigenvalues above ``rtol`` times the largest."""
    w = np.linalg.eigvalsh(np.asarray(sigma, np.float64))
    top = float(w.max()) if w.size else 0.0
    return int((w > rtol * top).sum()) if top > 0 else 0


@dataclass
class GaussianStats:
    """Streaming float64 sufficient statistics of a set of embeddings (one side of a Fréchet distance)."""

    dim: int
    n: int = 0
    sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    sum_outer: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.sum is None:
            self.sum = np.zeros(self.dim, np.float64)
        if self.sum_outer is None:
            self.sum_outer = np.zeros((self.dim, self.dim), np.float64)

    def update(self, x) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        if not np.isfinite(x).all():
            raise FrechetError("embeddings hold NaN or inf")
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.sum_outer += x.T @ x

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        if other.dim != self.dim:
            raise FrechetError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.n += other.n
        self.sum += other.sum
        self.sum_outer += other.sum_outer
        return self

    def mean_cov(self, what: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
        if self.n < self.dim:
            raise FrechetError(
                f"{what}: {self.n} embeddings for dimension {self.dim}; the covariance needs at least {self.dim} "
                f"(it would be singular and the distance meaningless). Score more clips or longer audio."
            )
        mu = self.sum / self.n
        sigma = self.sum_outer / (self.n - 1) - np.outer(mu, mu) * (self.n / (self.n - 1))
        return mu, sigma

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}n": np.asarray(self.n, np.int64), f"{prefix}sum": self.sum, f"{prefix}sum_outer": self.sum_outer}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str) -> "GaussianStats":
        s = np.asarray(state[f"{prefix}sum"], np.float64)
        return cls(dim=s.shape[0], n=int(state[f"{prefix}n"]), sum=s.copy(), sum_outer=np.asarray(state[f"{prefix}sum_outer"], np.float64).copy())
