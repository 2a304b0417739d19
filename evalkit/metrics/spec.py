"""What a metric *is*, declared once, torch-free: :class:`MetricSpec`.

Each metric module declares ``spec = MetricSpec(...)`` on its class; the run writes it into ``summary.json``
(``metrics.<name>.spec``), and everything downstream reads it from there: the card table (column, decimals,
direction), ``compare`` (direction, default tolerance), the bootstrap (per-clip column, weights, how the number
aggregates) and the plots. So a new metric is its module, its conf files and its tests: nothing in ``report/``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

#: How a metric's number is built from its per-clip values (the bootstrap follows it):
#: ``mean`` - the mean of the per-clip value (weighted by ``weight`` when set: Σ w·v / Σ w);
#: ``frechet`` - a Fréchet distance between the pooled generated embeddings and the reference statistics;
#: ``kernel`` - a kernel distance (KAD) between every generated and reference embedding (per-clip arrays);
#: ``none`` - no per-clip decomposition (no interval).
AGGREGATES = ("mean", "frechet", "kernel", "none")


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
    label: the column name evalkit's own tables print for it (None: ``name``); FAD on another embedding than the
    card's says which (``FAD (clap-laion-music)``).
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
    label: str | None = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"{self.name}: aggregate={self.aggregate!r}, expected one of {AGGREGATES}")

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
