"""What a metric *is*, declared once, torch-free: :class:`MetricSpec`.

Each metric module declares ``spec = MetricSpec(...)`` on its class; the run writes it into ``summary.json``
(``metrics.<name>.spec``), and everything downstream reads it from there: the card table (column, decimals,
direction), ``compare`` (direction, default tolerance), the bootstrap (per-clip column, weights, how the number
aggregates) and the plots. So a new metric is its module, its conf files and its tests: nothing in ``report/``.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

#: How a metric's number is built from its per-clip values (the bootstrap follows it):
#: ``mean`` - the mean of the per-clip value (weighted by ``weight`` when set: Σ w·v / Σ w);
#: ``frechet`` - a Fréchet distance between the pooled generated embeddings and the reference statistics;
#: ``kernel`` - a kernel distance (KAD) between every generated and reference embedding (per-clip arrays);
#: ``none`` - no per-clip decomposition (no interval).
AGGREGATES = ("mean", "frechet", "kernel", "none")


def rename_key(key: str, base: str, name: str) -> str:
    """``key`` of metric ``base`` as instance ``name`` writes it: ``base`` itself or ``base_<rest>`` becomes ``name`` /
    ``name_<rest>``; any other key is unchanged (``kld_pq`` of ``kl_passt`` is ``kl_passt_pq``; ``n_rows`` stays)."""
    if key == base or key.startswith(base + "_"):
        return name + key[len(base):]
    return key


@dataclass(frozen=True)
class MetricSpec:
    """The facts of one metric.

    name: registry name, conf file name, prefix of its ``clips.parquet`` columns.
    primary: the key of ``compute()`` that is the headline number.
    higher_is_better: the direction of ``primary``.
    card_column: its column in the MusicGen model card's table, or None for evalkit's own metrics.
    decimals: digits printed for ``primary`` (the card prints 2; evalkit prints at least these).
    tolerance: the default regression tolerance of ``compare``: ``"5%"`` (relative) or ``"0.01"`` (absolute).
    per_clip: the columns its ``update`` writes per clip (``clips.parquet``).
    arrays: the per-clip arrays it can save (``embeddings/*.npz``), e.g. ``fad_gen_emb``.
    aggregate: one of :data:`AGGREGATES`.
    value_column: the per-clip column whose (weighted) mean is ``primary`` (``aggregate == "mean"``).
    weight: the per-clip column that weights the mean (chroma: frames), or None.
    needs_reference: whether it compares against reference audio (or reference statistics).
    needs_captions: whether it reads each clip's caption (text consistency).
    min_clips: the fewest 10 s clips that give a number (FAD's 128-d covariance needs 128 windows: 7 clips).
    section: ``card`` (a column of the model card) or the name of evalkit's own table (``stereo``).
    """

    name: str
    primary: str
    higher_is_better: bool
    card_column: str | None
    decimals: int
    tolerance: str
    per_clip: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    aggregate: str = "mean"
    value_column: str | None = None
    weight: str | None = None
    needs_reference: bool = True
    needs_captions: bool = False
    min_clips: int = 1
    section: str = "card"
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"{self.name}: aggregate={self.aggregate!r}, expected one of {AGGREGATES}")

    def renamed(self, name: str, section: str) -> "MetricSpec":
        """This spec for an *instance* of the metric under another name (``fd_openl3``: FAD with another protocol),
        listed in evalkit's own table ``section``: its name, and every column, array and value key that carries the
        metric's name as a prefix (``fad_windows`` -> ``fd_openl3_windows``), renamed with :func:`rename_key`; no
        card column (the card's column belongs to the metric under its own name)."""
        r = functools.partial(rename_key, base=self.name, name=name)
        return replace(self, name=name, primary=r(self.primary), per_clip=tuple(map(r, self.per_clip)),
                       arrays=tuple(map(r, self.arrays)), value_column=r(self.value_column) if self.value_column else None,
                       weight=r(self.weight) if self.weight else None, card_column=None, section=str(section),
                       description=f"{self.description} ({name}: the {self.name} metric with its own protocol)")

    @property
    def skip_column(self) -> str:
        """The ``clips.parquet`` column holding why a clip was not scored by this metric."""
        return f"{self.name}_skipped"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_clip"] = list(self.per_clip)
        d["arrays"] = list(self.arrays)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MetricSpec":
        d = dict(d)
        d["per_clip"] = tuple(d.get("per_clip") or ())
        d["arrays"] = tuple(d.get("arrays") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class RunContext:
    """What a metric may ask about the run (see :meth:`~evalkit.metrics.base.Metric.run_skip_reason`): the melody
    settings, whether the prompts have captions, the run's ``channel_view`` and its ``audit`` node."""

    melody_model: bool = False
    melody_source: str = "none"
    #: False when the prompt set has no captions (dataset=folder without dataset.captions)
    captions: bool = True
    channel_view: str = "mono"
    audit: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
