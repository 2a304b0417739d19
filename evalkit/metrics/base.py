"""The metric contract (the ``torchmetrics.Metric`` pattern, without the dependency).

A metric is a protocol (``conf/metrics/<metric>/<protocol>.yaml``: its embedding, its input path, its windows, its
statistic) run over the clips. It streams batches of :class:`Clip` (the files as decoded) through
:meth:`Metric.update`, where each clip first goes through its protocol's input path (:attr:`Metric.input`,
:mod:`evalkit.input_path`: the audit included), and keeps only **sufficient statistics**
(float64 sums in ``self.state``) and turns them into numbers in :meth:`Metric.compute`. Every state entry is a sum,
so states merge by addition (:meth:`Metric.merge`, :meth:`Metric.add_state_delta`): a sharded or resumed run gives the
one-process number bit for bit.

- ``spec`` (a :class:`~evalkit.metrics.spec.MetricSpec`) declares what the metric is, once.
- ``update(clips) -> {clip id: ClipResult}``: per-clip values (``clips.parquet`` columns), per-clip arrays
  (embeddings) and, for a clip it cannot score, the reason (``ClipResult.skipped``; counted in ``n_skipped``).
- ``compute() -> dict``: one rule when there is nothing to compute from: :class:`MetricUnavailable` with the reason
  (never NaN, never a number made of nothing). Every metric counts the clips it scored in ``state["n_clips"]``.
- A statistic that is not a sum (KAD: a kernel over every pair of embeddings; MAUVE: k-means over every clip's
  vector) keeps per-clip arrays instead: it names them in :meth:`Metric.kept_arrays`, returns them from ``update``
  (``ClipResult.arrays``, saved to ``embeddings/``), and the scoring stage reads every scored clip's back from the run
  folder - every rank's and every attempt's batches - and hands them over with :meth:`Metric.keep_arrays` (clip-id
  order) before ``compute``: a sharded or resumed run computes from the same arrays as one process. Per-clip values
  only the whole set can give (its per-clip KAD) go to ``Metric.clip_values`` during ``compute`` (``{clip id:
  {column: value}}``, merged into ``clips.parquet``).
- Hooks the run asks instead of checking metric names: :meth:`Metric.run_skip_reason` (not applicable to this run),
  :meth:`Metric.needs_reference_audio`, :meth:`Metric.write_reference_artifacts`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from evalkit.audit import AuditSettings
from evalkit.errors import InputError
from evalkit.input_path import InputPath, Prepared
from evalkit.metrics.spec import MetricSpec, RunContext, rename_key


class MetricUnavailable(ValueError):
    """The metric has no number for this run (nothing scored, too few clips for a covariance, ...): the message
    says why and what to do."""


@dataclass
class Clip:
    """One scored item as decoded: the generated audio, its caption and (if any) its reference audio, each ``[C, T]``
    float32 at its file's rate and channels. ``model_channels``: the generating model's channels (what the
    audiocraft path's ``channels: model`` converts references to; None in folder mode). ``memo``: the input paths'
    results on this clip (:meth:`~evalkit.input_path.InputPath.apply`); ``keep``: the path points worth keeping
    there (the scoring stage sets the ones its metrics share)."""

    id: str
    caption: str
    audio: torch.Tensor | None
    sample_rate: int | None
    reference: torch.Tensor | None = None
    reference_sr: int | None = None
    model_channels: int | None = None
    #: the files it was decoded from (named in skip reasons), when there are files
    path: str | None = None
    reference_path: str | None = None
    #: False when another clip of the run has the same reference file and counts it (``Prompt.owns_reference``): a
    #: protocol with ``references: distinct`` leaves this clip's reference out of its reference set
    #: (:meth:`Metric.counts_reference`); a paired metric still compares the clip with it
    reference_counted: bool = True
    memo: dict = field(default_factory=dict, repr=False, compare=False)
    keep: frozenset = field(default_factory=frozenset, repr=False, compare=False)

    @property
    def reference_only(self) -> bool:
        """No generated audio (``audio`` is None: the file is missing, unreadable, or kept from every metric by the
        file audit; a failed generation), kept for its reference: a protocol that reads a folder of reference files
        (:attr:`Metric.reads_reference_folder`) counts that file whatever became of the generated side, as the tool
        reading the folder does. No other metric sees such a clip."""
        return self.audio is None


@dataclass
class ClipResult:
    """What ``update`` says about one clip: ``values`` (columns of ``clips.parquet``, named ``<metric>...``),
    ``arrays`` (saved to ``embeddings/``, e.g. ``fad_gen_emb`` [windows, 128]), ``skipped`` (the reason this metric
    did not score the clip, or None) and ``flags`` (``{"generated"|"reference": {flag: reason}}``: what the audit
    found at this metric's audit point, merged into the clip's ``audit_flags``)."""

    values: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: str | None = None
    flags: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "skipped": self.skipped, "flags": self.flags}

    def renamed(self, base: str, name: str) -> "ClipResult":
        """The same result with the value and array keys of metric ``base`` as instance ``name`` writes them
        (:func:`~evalkit.metrics.spec.rename_key`)."""
        return ClipResult(values={rename_key(k, base, name): v for k, v in self.values.items()},
                          arrays={rename_key(k, base, name): v for k, v in self.arrays.items()},
                          skipped=self.skipped, flags=self.flags)


def clip_result_from_json(d: Mapping[str, Any]) -> "ClipResult":
    return ClipResult(values=dict(d["values"]), skipped=d.get("skipped"), flags=dict(d.get("flags") or {}))


def _flags(p: Prepared) -> dict[str, dict[str, str]]:
    return {side: {f: a.flags[f] for f in a.names} for side, a in p.audits.items() if a.names}


#: a recipe's ``references``: how prompts that share a reference file count it (:meth:`Metric.counts_reference`)
REFERENCE_SETS = ("per_prompt", "distinct")
#: a recipe's ``pairing``: ``paired`` (a clip and its reference together, or neither: audiocraft writes pairs) or
#: ``unpaired`` (each side counted on its own: a tool that scores two folders); only a metric comparing two sets of
#: clips (:attr:`Metric.set_distance`: FAD, KAD, MAUVE) takes ``unpaired``
PAIRINGS = ("paired", "unpaired")


class Metric:
    """Base class: state handling, merging, the empty-compute rule, the input path. Subclasses set ``spec`` and
    implement ``update`` and ``_compute``; one that reads audio builds its path with :meth:`build_input`.

    ``context``: the run's settings a metric needs (:class:`~evalkit.metrics.spec.RunContext`: channel view, audit
    policy, melody settings); the default is a plain run (mono view, the default audit)."""

    spec: ClassVar[MetricSpec]
    #: whether the metric compares a set of generated clips with a set of references (FAD, KAD, MAUVE): only such a
    #: metric can count each side on its own (``pairing: unpaired``, :meth:`counted_sides`)
    set_distance: ClassVar[bool] = False

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu",
                 context: RunContext | None = None) -> None:
        self.recipe = dict(recipe)
        if self.recipe.get("references", "per_prompt") not in REFERENCE_SETS:
            raise InputError(f"metrics.{self.spec.name}.references={self.recipe['references']!r}: expected one of "
                             f"{', '.join(REFERENCE_SETS)}")
        pairing = self.recipe.get("pairing", "paired")
        if pairing not in PAIRINGS or (pairing == "unpaired" and not self.set_distance):
            raise InputError(f"metrics.{self.spec.name}.pairing={pairing!r}: expected "
                             + ("one of " + ", ".join(PAIRINGS) if self.set_distance else
                                "paired (only a metric comparing two sets of clips - FAD, KAD, MAUVE - counts each "
                                "side on its own)"))
        self.device = torch.device(device)
        self.context = context or RunContext()
        self.audit = AuditSettings.from_config(self.context.audit)
        #: the protocol's input path (None for a metric that reads no audio)
        self.input: InputPath | None = None
        self.state: dict[str, np.ndarray] = {}
        #: what the last compute() found questionable about its number (summary.json ``warnings``)
        self.warnings: list[str] = []
        #: ``{array name: {clip id: array}}`` handed over by the scoring stage (:meth:`keep_arrays`), or None
        self.kept: dict[str, dict[str, np.ndarray]] | None = None
        #: per-clip values the last compute() found (``{clip id: {column: value}}``: clips.parquet columns)
        self.clip_values: dict[str, dict[str, Any]] = {}
        self.add_state("n_clips", ())
        self.add_state("n_skipped", ())

    @property
    def name(self) -> str:
        return self.spec.name

    # -- state -----------------------------------------------------------------------------------------------------
    def add_state(self, key: str, shape: tuple[int, ...] | int) -> None:
        self.state[key] = np.zeros(shape, np.float64)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in self.state.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        missing = set(self.state) - set(state)
        if missing:
            raise KeyError(f"{self.name}: saved state lacks {sorted(missing)}")
        for k in self.state:
            arr = np.asarray(state[k], np.float64)
            if arr.shape != self.state[k].shape:
                raise ValueError(f"{self.name}: state {k!r} has shape {arr.shape}, expected {self.state[k].shape}")
            self.state[k] = arr.copy()

    def add_state_delta(self, delta: Mapping[str, np.ndarray]) -> None:
        """Add another state (a batch's contribution, another rank's sums) to this one."""
        for k in self.state:
            self.state[k] = self.state[k] + np.asarray(delta[k], np.float64)

    def merge(self, other: "Metric") -> "Metric":
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        self.add_state_delta(other.state)
        return self

    def reset(self) -> None:
        for k in self.state:
            self.state[k] = np.zeros_like(self.state[k])

    def count(self, key: str) -> int:
        return int(round(float(self.state[key])))

    # -- the recipe --------------------------------------------------------------------------------------------------
    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metric's numbers (``spec.primary`` is the headline). Raises :class:`MetricUnavailable` when no clip
        was scored, or when the scored clips cannot give a number (the reason says which). Doubts about a number
        that exists (e.g. a rank-deficient covariance) go to ``self.warnings``."""
        self.warnings = []
        self.clip_values = {}
        if self.count("n_clips") <= 0:
            raise MetricUnavailable(
                f"no clip was scored: every clip was kept from it (the reasons: summary.json skip_reasons, "
                f"clips.parquet columns skip_reason and {self.spec.skip_column})")
        return self._compute()

    def _compute(self) -> dict[str, float]:
        raise NotImplementedError

    def kept_arrays(self) -> tuple[str, ...]:
        """The per-clip arrays ``compute`` needs for every scored clip (a statistic that is not a sum); the scoring
        stage hands them over with :meth:`keep_arrays`. Default: none (the state's sums say everything)."""
        return ()

    def keep_arrays(self, arrays: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """``{array name: {clip id: array}}`` of every clip this metric scored in the run (all ranks, all attempts):
        what ``compute`` uses, in clip-id order, instead of what this instance's own updates returned."""
        self.kept = {name: dict(sorted((arrays.get(name) or {}).items())) for name in self.kept_arrays()}

    def describe(self) -> dict[str, Any]:
        """What identifies the numbers: protocol, checkpoint name and sha256, random weights or not."""
        return {"protocol": self.recipe.get("protocol", "")}

    def skip(self, reason: str, flags: Mapping[str, Mapping[str, str]] | None = None) -> ClipResult:
        """A clip this metric cannot score: counted, and the reason kept for ``clips.parquet``."""
        self.state["n_skipped"] = self.state["n_skipped"] + 1
        return ClipResult(skipped=reason, flags=dict(flags or {}))

    # -- the input path ------------------------------------------------------------------------------------------------
    def build_input(self, rate: int | None, band_hz: float | None = None, channels: int = 1) -> InputPath:
        """The protocol's ``input`` node compiled for this run: ``rate`` is what ``resample: {rate: embedder}``
        means (the embedder's, or the front end's), ``band_hz`` the band it analyses (``low_sample_rate``),
        ``channels`` what ``channels: embedder`` means; the run's channel view applies when the metric scores it and
        its embedder takes one channel (a stereo embedder scores the clip's own channels)."""
        view = self.context.channel_view if self.applies_channel_view() and int(channels) == 1 else "mono"
        self.input = InputPath(self.recipe.get("input"), setting=f"metrics.{self.spec.name}.input",
                               embedder_rate=rate, band_hz=band_hz, channel_view=view,
                               uses_reference=self.uses_reference_audio, embedder_channels=int(channels))
        return self.input

    def prepare(self, clips: Sequence[Clip]) -> list[tuple[Clip, Prepared | None, ClipResult | None]]:
        """Each clip through the input path (side by side on the CPU, one intra-op thread each: small ops whose values
        do not depend on where they run), then the audit's verdict: ``(clip, prepared, None)`` for a clip to score,
        ``(clip, None, skipped result)`` for one this metric skips, with the reason (a missing or unusable side,
        named with its file and flag)."""
        from evalkit.cpu import cpu_threads, run_calls

        cpu = self.device.type == "cpu"
        with cpu_threads(1 if cpu else None):
            prepared = run_calls(lambda c: self.input.apply(c, self.audit), list(clips),
                                 torch.get_num_threads() if cpu else 1)
        out = []
        for clip, p in zip(clips, prepared):
            why = self.unusable(clip, p)
            out.append((clip, None, self.skip(why, _flags(p))) if why else (clip, p, None))
        return out

    def unusable(self, clip: Clip, p: Prepared) -> str | None:
        """Why this metric cannot score the pair (None when it can): no generated audio, no reference where one is
        needed, or a side that failed a step or carries a flag of the ``audit.skip`` policy."""
        if clip.reference_only or (self.set_distance and not self.requires_pairs):
            return None  # each side judged on its own (:meth:`counted_sides`)
        reasons = []
        if p.generated is None:
            return "no generated audio"
        if p.generated.error:
            reasons.append(f"generated{' ' + clip.path if clip.path else ''}: {p.generated.error}")
        if self.requires_pairs:
            if p.reference is None:
                reasons.append("no reference audio")
            elif p.reference.error:
                reasons.append(f"reference{' ' + clip.reference_path if clip.reference_path else ''}: "
                               f"{p.reference.error}")
        return "; ".join(reasons) or None

    def counted_sides(self, clip: Clip, p: Prepared) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str]]]:
        """A set distance's sides of one prepared clip: ``([(side, what, Side)], [(side, reason)])`` with ``side``
        ``"gen"`` / ``"ref"`` and ``what`` ``"generated"`` / ``"reference"``: the sides that join the sets, and why a
        side that would does not (a failed step or a blocking audit flag, named with its file; no generated audio).
        The generated side unless the clip is reference-only; the reference side when the metric uses reference
        audio, the clip has one and counts it (:meth:`counts_reference`)."""
        want = [] if clip.reference_only else [("gen", "generated", p.generated, clip.path)]
        if self.uses_reference_audio and p.reference is not None and self.counts_reference(clip):
            want.append(("ref", "reference", p.reference, clip.reference_path))
        ok, failed = [], []
        for side, what, s, path in want:
            if s is None or s.error:
                failed.append((side, f"{what}{' ' + path if path else ''}: {s.error if s else 'no audio'}"))
            else:
                ok.append((side, what, s))
        return ok, failed

    def result(self, p: Prepared, values: Mapping[str, Any]) -> ClipResult:
        """A scored clip's result, with the flags its audit found (listed, not blocking)."""
        return ClipResult(values=dict(values), flags=_flags(p))

    # -- hooks the run asks ------------------------------------------------------------------------------------------
    @classmethod
    def run_skip_reason(cls, recipe: Mapping[str, Any], ctx: RunContext) -> str | None:
        """Why this metric does not apply to the run at all (it is then listed as skipped), or None. Default: a
        metric that reads captions does not apply to a prompt set without them."""
        if cls.spec.needs_captions and not ctx.captions:
            return "no captions: the prompt set is the clips of model.dir; give dataset.captions=FILE (id,caption)"
        return None

    @classmethod
    def applies_channel_view(cls) -> bool:
        """Whether the metric scores the run's ``channel_view`` (the card's metrics) or the clip's own channels."""
        return True

    @classmethod
    def needs_reference_audio(cls, recipe: Mapping[str, Any]) -> bool:
        """Whether the run must provide reference audio for this metric (checked before any generation)."""
        return cls.spec.needs_reference

    @property
    def uses_reference_audio(self) -> bool:
        return type(self).needs_reference_audio(self.recipe)

    @property
    def requires_pairs(self) -> bool:
        """Whether a clip is scored only with its reference: every metric that uses reference audio, but a set
        distance with ``pairing: unpaired`` (a tool that scores two folders: a generated clip without its reference
        still counts, and the other way round)."""
        return self.uses_reference_audio and self.recipe.get("pairing", "paired") == "paired"

    @property
    def reads_reference_folder(self) -> bool:
        """Whether the reference set is the run's distinct reference files, each counted once whatever became of the
        generated clips (``references: distinct``: fadtk, kadtk, frechet-audio-distance, stable-audio-metrics, MAD
        read a folder of references); the scoring stage then hands it the reference-only clips
        (:attr:`Clip.reference_only`) of the prompts that own a reference."""
        return self.uses_reference_audio and self.recipe.get("references", "per_prompt") == "distinct"

    def counts_reference(self, clip: Clip) -> bool:
        """Whether the clip's reference joins this metric's reference set. ``references`` of the recipe:
        ``per_prompt`` (default; audiocraft writes each sample's reference: a file two prompts share counts twice) or
        ``distinct`` (a tool that scores a folder of reference files counts each file once: the clip whose prompt
        owns the reference counts it, :attr:`Clip.reference_counted`); checked when the metric is built."""
        return self.recipe.get("references", "per_prompt") == "per_prompt" or clip.reference_counted

    def write_reference_artifacts(self, folder: Path) -> list[Path]:
        """Files describing the reference side that later runs can reuse (FAD: its statistics). Default: none."""
        return []


# ----------------------------------------------------------------------------------------------------------------
# Instances: one metric class under another name, with its own protocol, beside the metric itself in one run
# ----------------------------------------------------------------------------------------------------------------
_INSTANCES: dict[tuple[type, str, str], type] = {}


def metric_instance(cls: type[Metric], name: str, section: str) -> type[Metric]:
    """``cls`` under the name ``name``: a subclass whose spec is ``cls.spec.renamed(name, section)`` and whose
    per-clip values, arrays and computed values carry ``name`` where ``cls`` writes its own name (``fad_windows`` ->
    ``fd_openl3_windows``; :func:`~evalkit.metrics.spec.rename_key`), so that both fit in one run's
    ``clips.parquet``, ``embeddings/`` and ``summary.json``. Its conf is ``conf/metrics/<name>.yaml`` with
    ``<name>: {metric: <cls name>, section: <its table>, ...}`` and its protocol chosen from ``cls``'s protocol files
    (``defaults: [<cls name>@<name>: <protocol>]``); its recipe's ``metric`` and ``section`` must say the same as the
    class (:class:`ValueError` otherwise). One class per (cls, name, section)."""
    key = (cls, str(name), str(section))
    if key in _INSTANCES:
        return _INSTANCES[key]
    base = cls.spec.name

    def __init__(self, recipe, device="cpu", context=None) -> None:
        cls.__init__(self, recipe, device, context)
        said = (self.recipe.get("metric"), self.recipe.get("section"))
        if said != (base, section):
            raise ValueError(f"metrics.{name}: metric={said[0]!r}, section={said[1]!r}, but this is the {base} metric "
                             f"as {name!r} in section {section!r} (conf/metrics/{name}.yaml)")

    def update(self, clips):
        return {cid: r.renamed(base, name) for cid, r in cls.update(self, clips).items()}

    def _compute(self):
        return {rename_key(k, base, name): v for k, v in cls._compute(self).items()}

    sub = type(f"{cls.__name__}[{name}]", (cls,), {
        "spec": cls.spec.renamed(name, section), "__init__": __init__, "update": update, "_compute": _compute,
        "__module__": cls.__module__,
        "__doc__": f"The {base} metric as {name!r} ({section}): {cls.__doc__ or ''}"})
    _INSTANCES[key] = sub
    return sub


def window_problem(recipe: Mapping[str, Any], setting: str) -> str | None:
    """What is wrong with a recipe's windows (``window_s``, ``hop_s``: seconds, set together or both null: the whole
    clip), or None. A window or hop must be a number of seconds > 0 (``hop_s=-1`` ran minutes before a traceback;
    ``0`` read as unset)."""
    given = {k: recipe.get(k) for k in ("window_s", "hop_s")}
    if (given["window_s"] is None) != (given["hop_s"] is None):
        return f"{setting}.window_s and hop_s are set together (or both null: the whole clip)"
    for k, v in given.items():
        if v is None:
            continue
        try:
            ok = float(v) > 0 and not isinstance(v, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return f"{setting}.{k}={v!r}: a window or hop is a number of seconds > 0 (or null for the whole clip)"
    return None


@dataclass(frozen=True)
class Windows:
    """A Fréchet or kernel protocol's windows (``window_s``, ``hop_s``, ``window_pad`` of its recipe) at its embedder's
    rate, in samples: ``window``/``hop`` (None: the whole clip is one input), ``pad`` (a window starting every hop until
    the end, the last ones zero-padded: fadtk's CLAP loaders) and ``min_samples`` (the fewest samples that give one
    embedding). FAD and KAD cut the same windows, so a run asking for both embeds them once."""

    window: int | None
    hop: int | None
    pad: bool
    min_samples: int

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], embedder, setting: str, error: type = InputError) -> "Windows":
        """``error`` (the metric's own) names ``setting`` for windows :func:`window_problem` refuses and for a window
        shorter than one input of ``embedder``."""
        problem = window_problem(recipe, setting)
        if problem:
            raise error(problem)
        rate = embedder.sample_rate
        window, hop = (int(round(float(recipe[k]) * rate)) if recipe.get(k) is not None else None
                       for k in ("window_s", "hop_s"))
        unit = int(getattr(embedder, "min_samples", 1))
        if window is not None and window < unit:
            raise error(f"{setting}.window_s={recipe['window_s']}: {window} samples at {rate} Hz, shorter than one "
                        f"{embedder.name} input ({unit} samples)")
        pad = bool(recipe.get("window_pad"))
        return cls(window, hop, pad, 1 if pad else (window or unit))

    @property
    def key(self) -> list:
        """The windows' part of the clip memo's embedding key (:func:`evalkit.embeddings.shared.embedding_key`)."""
        return [self.window, self.hop, self.pad]

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        """``[T]`` (or ``[C, T]``) -> ``[N, window]`` (``[N, C, window]``), or ``x`` itself without windows: full
        windows every ``hop`` (``range(0, T - window + 1, hop)``: Google's FAD), or with ``pad`` a window starting every
        ``hop`` until the end, the last ones zero-padded (``range(0, T, hop)``: fadtk's CLAP loaders)."""
        if not self.window:
            return x
        if not self.pad:
            return x.unfold(-1, self.window, self.hop).movedim(-2, 0)
        padded = torch.nn.functional.pad(x, (0, self.window))
        return torch.stack([padded[..., s:s + self.window] for s in range(0, x.shape[-1], self.hop)])

    def too_short(self, n: int, embedder, what: str) -> str | None:
        """Why ``n`` samples of ``what`` give no embedding, or None."""
        if n >= self.min_samples:
            return None
        return (f"{what} audio too short for one {embedder.name} {'window' if self.window else 'input'}: {n} samples "
                f"at {embedder.sample_rate} Hz, needs {self.min_samples}")
