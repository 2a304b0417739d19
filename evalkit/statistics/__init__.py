"""Statistics: how a metric's number is built from what it kept, and how it is resampled (numpy only, no torch).

- :mod:`~evalkit.statistics.frechet`: Gaussian statistics (float64 sums that merge by addition) and the Fréchet
  distance, for any embedding;
- :mod:`~evalkit.statistics.stats_file`: reference statistics files (one writer, one reader);
- :mod:`~evalkit.statistics.bootstrap`: bootstrap intervals over clips and FAD∞;
- :mod:`~evalkit.statistics.kernel`: the Kernel Audio Distance (kadtk's KAD, blocked), its bootstrap and KAD∞.

:data:`AGGREGATES` names each way a number is aggregated (a metric's spec says ``aggregate: <name>``); the report asks
it for an interval, never checks names itself. An aggregate reads a run through a small interface (:class:`Source`):
per-clip columns, per-clip arrays, reference statistics; the report's run records provide it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import numpy as np


class Source(Protocol):
    """What an aggregate may read of a run."""

    def column(self, name: str) -> np.ndarray | None:
        """A per-clip column of ``clips.parquet`` (float64, NaN where a clip has none), or None."""

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """``{clip id: array}`` of a per-clip array (``embeddings/``)."""

    def reference_stats(self, dim: int, metric: str) -> Any:
        """The reference side of a Fréchet metric (:class:`~evalkit.statistics.frechet.GaussianStats` or
        ``(mu, sigma)``) from the run's ``stats/`` or its ``reference.stats`` file, or None."""

    def entry(self, metric: str) -> Mapping[str, Any]:
        """The metric's block of ``summary.json`` (``values``, ``recipe``, ...), or ``{}``."""


class Aggregate:
    """How a number aggregates: ``interval(source, spec, metric, n_boot, level, seed) -> Interval`` (raises
    ValueError with the reason when there is none); ``extrapolates``: whether FAD∞-style extrapolation in 1/n applies
    (``infinity(source, spec, metric, **kw)``; ``infinity_title`` names it in reports)."""

    extrapolates = False
    infinity_title = ""

    def interval(self, source: Source, spec, metric: str, **kw):
        raise ValueError(f"{metric} has no per-clip decomposition (spec.aggregate: {spec.aggregate})")


class _Mean(Aggregate):
    """The (weighted) mean of a per-clip column: ``spec.value_column``, weighted by ``spec.weight``."""

    def interval(self, source, spec, metric, **kw):
        from evalkit.statistics.bootstrap import bootstrap_mean

        column = spec.value_column or spec.primary
        values = source.column(column)
        if values is None:
            raise ValueError(f"no per-clip '{column}' column in clips.parquet")
        weights = source.column(spec.weight) if spec.weight else None
        return bootstrap_mean(values, weights, metric=metric, **kw)


class _Frechet(Aggregate):
    """A Fréchet distance between the pooled per-clip embeddings (``spec.arrays[0]``) and the reference side
    (``spec.arrays[1]``, or the run's statistics)."""

    extrapolates = True
    infinity_title = "FAD∞ (fadtk: the Fréchet distance at {steps} subset sizes drawn {how} replacement, linear fit in 1/n)"

    def inputs(self, source, spec, metric):
        from evalkit.statistics.frechet import GaussianStats

        if not spec.arrays:
            raise ValueError(f"{metric}: a Fréchet metric without per-clip arrays (spec.arrays)")
        gen = source.arrays(spec.arrays[0])
        if not gen:
            raise ValueError(f"no per-clip {metric} embeddings ({spec.arrays[0]}) under embeddings/")
        dim = np.asarray(next(iter(gen.values()))).shape[-1]
        ref_arrays = source.arrays(spec.arrays[1]) if len(spec.arrays) > 1 else {}
        if ref_arrays:
            ref = GaussianStats(dim)
            for key in sorted(ref_arrays):
                ref.update(ref_arrays[key])
        else:
            ref = source.reference_stats(dim, metric)
            if ref is None:
                raise ValueError(f"no reference side for {metric} (no per-clip "
                                 f"{' '.join(spec.arrays[1:]) or 'reference'} arrays, no stats/*.npz)")
        return gen, ref

    def interval(self, source, spec, metric, **kw):
        from evalkit.statistics.bootstrap import fad_bootstrap

        gen, ref = self.inputs(source, spec, metric)
        return fad_bootstrap(gen, ref, metric=metric, **kw)

    def infinity(self, source, spec, metric, **kw):
        from evalkit.statistics.bootstrap import fad_inf

        gen, ref = self.inputs(source, spec, metric)
        return fad_inf(gen, ref, metric=metric, **kw)


class _Kernel(Aggregate):
    """A kernel distance (KAD, :mod:`evalkit.statistics.kernel`) between the per-clip embeddings ``spec.arrays[0]``
    (evaluated) and ``spec.arrays[1]`` (baseline), with the kernel constants of the run's recipe; the interval holds
    the measured bandwidth (summary ``values.bandwidth``) fixed, KAD∞ recomputes it per draw (kadtk ``score_inf``)."""

    extrapolates = True
    infinity_title = ("KAD∞ (kadtk score_inf: the KAD at {steps} subset sizes drawn {how} replacement, each with its "
                      "own bandwidth, linear fit in 1/n)")

    def kernel_inputs(self, source, spec, metric):
        from evalkit.statistics.kernel import KernelSettings

        if len(spec.arrays) < 2:
            raise ValueError(f"{metric}: a kernel metric names its evaluated and baseline arrays (spec.arrays)")
        gen, ref = source.arrays(spec.arrays[0]), source.arrays(spec.arrays[1])
        if not gen or not ref:
            raise ValueError(f"no per-clip {metric} embeddings ({spec.arrays[0]}, {spec.arrays[1]}) under embeddings/")
        entry = source.entry(metric) or {}
        return gen, ref, KernelSettings.from_recipe(entry.get("recipe") or {}), entry.get("values") or {}

    def interval(self, source, spec, metric, **kw):
        from evalkit.statistics.kernel import kad_bootstrap

        gen, ref, settings, values = self.kernel_inputs(source, spec, metric)
        if values.get("bandwidth") is None:
            raise ValueError(f"{metric}: summary.json holds no measured bandwidth (values.bandwidth)")
        return kad_bootstrap(ref, gen, settings, float(values["bandwidth"]), metric=metric, **kw)

    def infinity(self, source, spec, metric, **kw):
        from evalkit.statistics.kernel import kad_inf

        gen, ref, settings, _ = self.kernel_inputs(source, spec, metric)
        return kad_inf(ref, gen, settings, metric=metric, **kw)


#: ``spec.aggregate`` -> how the number is built and resampled (``none``: no per-clip decomposition, no interval)
AGGREGATES: dict[str, Aggregate] = {"mean": _Mean(), "frechet": _Frechet(), "kernel": _Kernel(), "none": Aggregate()}


def register_aggregate(name: str) -> Callable[[type], type]:
    """Class decorator: a new aggregate (a metric module declares ``aggregate=<name>`` in its spec)."""
    def deco(cls: type) -> type:
        AGGREGATES[name] = cls()
        return cls

    return deco


def aggregate(name: str) -> Aggregate:
    if name not in AGGREGATES:
        raise ValueError(f"aggregate {name!r}: unknown; known: {', '.join(sorted(AGGREGATES))}")
    return AGGREGATES[name]


__all__ = ["AGGREGATES", "Aggregate", "Source", "aggregate", "register_aggregate", "Mapping"]
