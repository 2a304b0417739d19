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
    label: its column's title in evalkit's own table (default: ``name``); FAD on another embedding than the
        card's says which (``FAD (clap-laion-music)``).
    also: the other numbers of ``compute()`` reported as columns of their own, beside the headline (a metric with
        several headline numbers: aesthetics' four axes, MAUVE's ``-ln``): each ``{"key": <compute() key>, "name":
        <column name>, ...}`` and any field to override (``value_column``, ``label``, ``higher_is_better``,
        ``decimals``, ``tolerance``); :meth:`parts` turns each into a spec of its own, which the report reads as it
        reads a metric (its own interval, compare verdict and column).
    part_of: set on such a part: the metric whose ``compute()`` it comes from (whose per-clip columns, skip column
        and recipe it shares).
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
    label: str | None = None
    also: tuple[Mapping[str, Any], ...] = ()
    part_of: str | None = None

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"{self.name}: aggregate={self.aggregate!r}, expected one of {AGGREGATES}")
        bad = [dict(a) for a in self.also if not {"key", "name"} <= set(a) or set(a) - PART_FIELDS]
        if bad:
            raise ValueError(f"{self.name}: also={bad}: each needs key and name, and may set {sorted(PART_FIELDS)}")

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
        return f"{self.part_of or self.name}_skipped"

    def parts(self) -> dict[str, "MetricSpec"]:
        """``{name: spec}`` of the numbers in :attr:`also`: this spec with the item's ``key`` as ``primary``, its
        other fields replaced, ``part_of`` this metric, and no per-clip columns, arrays or parts of its own."""
        out = {}
        for item in self.also:
            item = dict(item)
            key, name = item.pop("key"), item.pop("name")
            out[name] = replace(self, name=name, primary=key, per_clip=(), also=(), part_of=self.name, extra={},
                                **item)
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_clip"] = list(self.per_clip)
        d["arrays"] = list(self.arrays)
        d["extra"] = dict(self.extra)
        d["also"] = [dict(a) for a in self.also]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MetricSpec":
        d = dict(d)
        d["per_clip"] = tuple(d.get("per_clip") or ())
        d["arrays"] = tuple(d.get("arrays") or ())
        d["also"] = tuple(dict(a) for a in d.get("also") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


#: what an item of ``MetricSpec.also`` may set
PART_FIELDS = {"key", "name", "value_column", "label", "higher_is_better", "decimals", "tolerance", "description"}


def metric_entries(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A summary's ``metrics`` block with each metric's parts (:meth:`MetricSpec.parts`) as entries of their own,
    right after it: the entry's own fields, ``value`` = ``values[<part's key>]`` and the part's ``spec``. Entries
    that are not objects are dropped."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        out[name] = entry
        spec = entry.get("spec")
        if not isinstance(spec, dict) or not spec.get("also"):
            continue
        for part_name, part in MetricSpec.from_dict(spec).parts().items():
            value = (entry.get("values") or {}).get(part.primary) if entry.get("value") is not None else None
            out.setdefault(part_name, {**entry, "value": value, "spec": part.as_dict()})
    return out


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
