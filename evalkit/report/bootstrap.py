"""Intervals and FAD∞ / KAD∞ of a run folder's metrics, as each metric's spec says (``spec.aggregate``, looked up in
:data:`evalkit.statistics.AGGREGATES`; the math is :mod:`evalkit.statistics.bootstrap`, re-exported here)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from evalkit.statistics import AGGREGATES, aggregate
from evalkit.statistics.bootstrap import (  # noqa: F401  (re-exported: the report's public API)
    FAD_INF_MIN_N, FAD_INF_STEPS, LEVEL, N_BOOT, SEED, FadInf, Interval, bootstrap_mean, fad_bootstrap,
    fad_from_counts, fad_inf)


def frechet_inputs(run, metric: str):
    """Per-clip generated embeddings (``{clip id: [frames, dim]}``) and the reference side of a Fréchet metric of a
    run: the arrays its spec names, else the run's statistics. Raises ValueError when either is missing."""
    spec = run.spec(metric)
    if spec is None or spec.aggregate not in AGGREGATES or not hasattr(AGGREGATES[spec.aggregate], "inputs"):
        raise ValueError(f"{metric}: not a Fréchet metric with per-clip arrays (spec.aggregate, spec.arrays)")
    return AGGREGATES[spec.aggregate].inputs(run, spec, metric)


def metric_interval(run, metric: str, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> Interval:
    """The bootstrap interval of one metric of a run, as its spec's ``aggregate`` says.

    Raises ValueError with the reason when there is none (no spec, ``aggregate: none``, no per-clip column, too few
    embeddings for a covariance, ...)."""
    spec = run.spec(metric)
    if spec is None:
        raise ValueError(f"no spec for {metric} in summary.json")
    return aggregate(spec.aggregate).interval(run, spec, metric, n_boot=n_boot, level=level, seed=seed)


def run_intervals(run, metrics: Sequence[str] | None = None, *, n_boot: int = N_BOOT, level: float = LEVEL,
                  seed: int = SEED) -> tuple[dict[str, Interval], dict[str, str]]:
    """Bootstrap intervals for a run's metrics (default: all with a value). Returns ``({metric: Interval},
    {metric: why none})``; metrics without a value (an error, skipped) get neither."""
    names = list(metrics) if metrics is not None else list(run.metrics)
    out: dict[str, Interval] = {}
    why: dict[str, str] = {}
    for m in names:
        if not np.isfinite(run.value(m)):
            continue
        try:
            out[m] = metric_interval(run, m, n_boot=n_boot, level=level, seed=seed)
        except ValueError as exc:  # FrechetError is a ValueError
            why[m] = str(exc)
    return out, why


def infinity_metrics(run) -> list[str]:
    """The run's metrics whose aggregate extrapolates in 1/n (FAD∞, KAD∞: ``Aggregate.extrapolates``)."""
    return [m for m, s in run.specs.items() if s.aggregate in AGGREGATES and AGGREGATES[s.aggregate].extrapolates]


def frechet_metrics(run) -> list[str]:
    """The run's Fréchet metrics (FAD∞ applies to them; :func:`infinity_metrics` lists every extrapolating one)."""
    return [m for m in infinity_metrics(run) if hasattr(AGGREGATES[run.spec(m).aggregate], "inputs")]


def run_infinity(run, metric: str, **kw) -> FadInf:
    """The 1/n extrapolation of one such metric of a run (FAD∞: :func:`~evalkit.statistics.bootstrap.fad_inf`;
    KAD∞: :func:`~evalkit.statistics.kernel.kad_inf`), as its spec's aggregate says. Raises ValueError."""
    return aggregate(run.spec(metric).aggregate).infinity(run, run.spec(metric), metric, **kw)


#: the former name of :func:`run_infinity`
run_fad_inf = run_infinity
