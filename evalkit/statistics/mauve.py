"""MAUVE (Pillutla et al., NeurIPS 2021; JMLR 2023) between two sets of feature vectors, as ``mauve-text`` 0.4.0
computes it (``krishnap25/mauve: mauve/compute_mauve.py``, ``compute_mauve(p_features=P, q_features=Q)`` with its
defaults). numpy, scikit-learn and faiss only (no torch).

The recipe (:class:`MauveSettings`, every constant the package's default):

1. quantise both sets together (:func:`histograms`): rows ``[Q; P]`` (Q first), each L2-normalised
   (``sklearn.preprocessing.normalize``); ``sklearn.decomposition.PCA(whiten=False, random_state=seed + 1)`` fitted
   on all rows, keeping the first components that explain ``explained_variance`` = 0.9 of the variance
   (``argmax(cumsum >= 0.9) + 1``); float32; ``faiss.Kmeans(d, k, niter=500, nredo=5, seed=seed + 2)`` with
   ``k = max(2, round(min(n_p, n_q) / 10))`` (``num_buckets='auto'``) and each row's nearest centroid; the
   normalised cluster counts of P and of Q are the histograms p and q;
2. the divergence curve (:func:`divergence_curve`): for ``w`` in ``linspace(1e-6, 1 - 1e-6, 25)``, ``r = w p + (1 -
   w) q`` and the point ``(KL(q‖r), KL(p‖r))`` (KL infinite where the first has mass and the second none), plus the
   extremes ``(0, ∞)`` and ``(∞, 0)``, all mapped by ``exp(-5 ·)``;
3. MAUVE = the mean of the areas under the curve taken both ways (x sorted, then y sorted), trapezoids as
   ``sklearn.metrics.auc`` sums them. MAUVE* uses histograms with +0.5 (Krichevsky-Trofimov) smoothing; the frontier
   integral (scaling 2) is reported with both.

evalkit writes steps 2-3 itself (the package's arithmetic, in its order) and uses the package's own tools for step 1:
scikit-learn for the normalisation and PCA, faiss for k-means (its initialisation, empty-cluster splitting and
``nredo`` best-of are what make the histograms; no other k-means gives the same clusters). faiss is the optional
extra ``evalkit[mauve]`` (``pip install 'evalkit[mauve]'`` installs faiss-cpu). ``tests/test_mauve.py`` checks
every output against ``mauve.compute_mauve`` on the same features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from evalkit.errors import InputError


class MauveError(InputError, ValueError):
    """MAUVE cannot be computed here: too few vectors, or faiss is not installed (the message says how)."""


FAISS_MISSING = ("MAUVE's k-means is faiss's (mauve-text uses faiss.Kmeans; no other k-means gives its clusters), and "
                 "faiss is not installed: pip install 'evalkit[mauve]' (faiss-cpu)")


@dataclass(frozen=True)
class MauveSettings:
    """``compute_mauve``'s defaults (mauve-text 0.4.0). ``num_buckets``: ``"auto"`` or a number of clusters."""

    num_buckets: int | str = "auto"
    pca_max_data: int = -1
    explained_variance: float = 0.9
    num_redo: int = 5
    max_iter: int = 500
    seed: int = 25
    curve_points: int = 25
    scaling: float = 5.0

    @classmethod
    def from_recipe(cls, r: Mapping[str, Any]) -> "MauveSettings":
        nb = r["num_buckets"]
        return cls(num_buckets=nb if nb == "auto" else int(nb), pca_max_data=int(r["pca_max_data"]),
                   explained_variance=float(r["kmeans_explained_var"]), num_redo=int(r["kmeans_num_redo"]),
                   max_iter=int(r["kmeans_max_iter"]), seed=int(r["seed"]),
                   curve_points=int(r["divergence_curve_discretization_size"]),
                   scaling=float(r["mauve_scaling_factor"]))

    def buckets(self, n_p: int, n_q: int) -> int:
        """``num_buckets='auto'``: ``max(2, int(round(min(n_p, n_q) / 10)))``."""
        return max(2, int(round(min(n_p, n_q) / 10))) if self.num_buckets == "auto" else int(self.num_buckets)


@dataclass
class MauveResult:
    """What ``compute_mauve`` returns (its ``SimpleNamespace`` fields), and ``mad = -ln(mauve)``."""

    mauve: float
    mauve_star: float
    frontier_integral: float
    frontier_integral_star: float
    p_hist: np.ndarray = field(repr=False)
    q_hist: np.ndarray = field(repr=False)
    divergence_curve: np.ndarray = field(repr=False)
    num_buckets: int = 0

    @property
    def mad(self) -> float:
        """MAD's definition (mad-metric ``compute_mad``: ``-np.log(mauve)``): 0 for identical histograms."""
        return float(-np.log(self.mauve)) if self.mauve > 0 else math.inf


def require_faiss():
    """The ``faiss`` module; :class:`MauveError` naming the extra that installs it when it is missing."""
    try:
        import faiss
    except ImportError as exc:
        raise MauveError(FAISS_MISSING) from exc
    return faiss


def _kmeans_labels(data: np.ndarray, k: int, s: MauveSettings) -> np.ndarray:
    faiss = require_faiss()
    kmeans = faiss.Kmeans(data.shape[1], k, niter=s.max_iter, verbose=False, nredo=s.num_redo, update_index=True,
                          seed=s.seed + 2)
    kmeans.train(data)
    _, labels = kmeans.index.search(data, 1)
    return labels.reshape(-1)


def histograms(p: np.ndarray, q: np.ndarray, k: int, s: MauveSettings) -> tuple[np.ndarray, np.ndarray]:
    """``cluster_feats(p, q, k, norm='l2', whiten=False, ...)``: the cluster counts of P and of Q (float64, not yet
    normalised), in cluster order."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    data = normalize(np.vstack([q, p]), norm="l2", axis=1)
    pca = PCA(n_components=None, whiten=False, random_state=s.seed + 1)
    if s.pca_max_data < 0 or s.pca_max_data >= data.shape[0]:
        pca.fit(data)
    else:
        rng = np.random.RandomState(s.seed + 5)
        pca.fit(data[rng.choice(data.shape[0], size=s.pca_max_data, replace=False)])
    keep = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= s.explained_variance)) + 1
    labels = _kmeans_labels(pca.transform(data)[:, :keep].astype(np.float32), k, s)
    q_counts = np.histogram(labels[:len(q)], bins=k, range=[0, k], density=False)[0]
    p_counts = np.histogram(labels[len(q):], bins=k, range=[0, k], density=False)[0]
    return p_counts, q_counts


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """``kl_multinomial``: ``Σ p log(p / q)`` over the shared support, ``inf`` when p has mass where q has none."""
    if np.logical_and(p != 0, q == 0).any():
        return math.inf
    both = np.logical_and(p != 0, q != 0)
    return float(np.sum(p[both] * np.log(p[both] / q[both])))


def divergence_curve(p: np.ndarray, q: np.ndarray, points: int, scaling: float) -> np.ndarray:
    """``get_divergence_curve_for_multinomials``: ``[points + 2, 2]`` of ``exp(-scaling · (KL(q‖r), KL(p‖r)))``."""
    curve = [[0, np.inf]]
    for w in np.sort(np.linspace(1e-6, 1 - 1e-6, points)):
        r = w * p + (1 - w) * q
        curve.append([kl(q, r), kl(p, r)])
    curve.append([np.inf, 0])
    return np.exp(-scaling * np.asarray(curve))


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """``sklearn.metrics.auc`` of points already sorted by x: the trapezoid rule, summed as ``np.trapezoid``."""
    d = np.diff(x)
    return float((d * (y[1:] + y[:-1]) / 2.0).sum())


def curve_area(curve: np.ndarray) -> float:
    """MAUVE of a divergence curve: ``0.5 (auc(x by x, y) + auc(y by y, x))``."""
    x, y = curve.T
    by_x, by_y = np.argsort(x), np.argsort(y)
    return 0.5 * (_area(x[by_x], y[by_x]) + _area(y[by_y], x[by_y]))


def frontier_integral(p: np.ndarray, q: np.ndarray, scaling: float = 2.0) -> float:
    """``get_fronter_integral`` (sic): ``scaling · Σ`` of the per-bucket frontier terms."""
    total = 0.0
    for p1, q1 in zip(p, q):
        if p1 == 0 and q1 == 0:
            continue
        if p1 == 0:
            total += q1 / 4
        elif q1 == 0:
            total += p1 / 4
        elif abs(p1 - q1) > 1e-8:
            total += 0.25 * (p1 + q1) - 0.5 * (p1 * q1 * (math.log(p1) - math.log(q1)) / (p1 - q1))
    return total * scaling


def mauve(p_features, q_features, settings: MauveSettings = MauveSettings()) -> MauveResult:
    """MAUVE of P (``p_features``, ``[n_p, d]``: the generated side) against Q (``[n_q, d]``: the reference side),
    as ``mauve.compute_mauve(p_features=P, q_features=Q)`` with ``settings`` (default: its defaults). Raises
    :class:`MauveError` for an empty side, sides of different dimensions, or without faiss."""
    p, q = np.asarray(p_features), np.asarray(q_features)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1] or not len(p) or not len(q):
        raise MauveError(f"MAUVE needs two non-empty [n, d] sets of one dimension (got {p.shape} and {q.shape})")
    k = settings.buckets(len(p), len(q))
    if len(p) + len(q) < k:
        raise MauveError(f"{len(p) + len(q)} vectors cannot fill {k} k-means clusters")
    p_counts, q_counts = histograms(p, q, k, settings)
    p_hist, q_hist = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    p_star, q_star = (p_counts + 0.5) / (p_counts + 0.5).sum(), (q_counts + 0.5) / (q_counts + 0.5).sum()
    curve = divergence_curve(p_hist, q_hist, settings.curve_points, settings.scaling)
    star = divergence_curve(p_star, q_star, settings.curve_points, settings.scaling)
    return MauveResult(mauve=curve_area(curve), mauve_star=curve_area(star),
                       frontier_integral=frontier_integral(p_hist, q_hist),
                       frontier_integral_star=frontier_integral(p_star, q_star), p_hist=p_hist, q_hist=q_hist,
                       divergence_curve=curve, num_buckets=k)
