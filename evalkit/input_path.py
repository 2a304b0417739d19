"""A protocol's input path: everything between the decoded file and what its embedder (or statistic) reads.

A protocol's conf file says it as ``input:``, three ordered lists of named steps, each with the reference that fixes
it::

    input:
      reference: [...]   # on the reference as read (audiocraft: to the solver's rate and the model's channels)
      generated: [...]   # on the generated clip as read (audiocraft: crop to the reference, loudness, clamp, pad)
      both: [...]        # then on both sides in lockstep, the reference first (rates, channels, peak, int16, ...)

and the run's ``channel_view`` (for the metrics that score it) comes between the side lists and ``both``. The
steps (:data:`STEPS`), each one function of :mod:`evalkit.audio`:

======================  =========================================================================================
``resample``            ``{rate: Hz | embedder, with: julius | resampy | soxr_hq | torchaudio_hann |
                        torchaudio_kaiser}``: every channel to ``rate`` (:func:`evalkit.audio.resample_with`)
``channels``            ``1`` (the mean over channels), ``N``, ``model`` (the generating model's channels;
                        folder mode: unchanged) or ``embedder`` (the channels the metric's embedder takes):
                        audiocraft's ``convert_audio_channels`` (mono to N by repetition, N to fewer: the first)
``crop``                ``reference``: the generated clip cut to the reference's length (at the clip's rate);
                        ``shorter``: both cut to the shorter one (``both`` only)
``pad``                 ``reference``: the generated clip zero-padded to the reference's length; ``{min_s: s}``:
                        zero-padded at the end to at least ``s`` seconds (fadtk's ``enforce_min_len``)
``truncate``            ``seconds``: keep the first ``seconds`` (fadtk's EnCodec loader keeps 3 minutes)
``loudness``            ``{lufs, energy_floor}``: gain to ``lufs`` (BS.1770), skipped below ``energy_floor`` RMS
``clamp``               ``limit``: clamp to [-limit, limit]; the share of samples it changed is audited
``peak``                ``dbfs`` or ``{dbfs, gain: audiocraft | pyloudnorm}``: gain so that the peak is at ``dbfs``
                        (-1.0 = 1 dB below full scale), rounded as that tool rounds it (:func:`~evalkit.audio.
                        peak_normalize`; default audiocraft)
``write_int16``         ``audiocraft``: ``audio_write`` to int16 (``i16_pcm``) read back as raw int16 values (float64);
                        ``pcm16``: ``torchaudio.save`` PCM_S16 read back as int16 / 32768 (fadtk, kadtk)
``quantize_int16``      ``laion``: ``int16_to_float32(float32_to_int16(x))``
``max_normalize``       ``floor``: Google's reader, ``x / max(floor, max x)`` (signed maximum)
======================  =========================================================================================

``peak``, ``write_int16``, ``quantize_int16`` and ``max_normalize`` are the *scale* steps: they come last, and the
audit (:mod:`evalkit.audit`) measures each side just before the first of them: the signal the protocol scores, at the
level it will be scored (after loudness normalisation and the channel view), before the final gain that would hide a
silent clip. Only ``resample`` and ``channels`` may follow a scale step (:data:`AFTER_SCALE`): both are linear, so
they keep what the audit saw, and a tool that normalises the peak of the file as read before it converts channels and
rates (stable-audio-metrics' OpenL3 FD: peak over all channels, then soxr to 44.1 kHz, then L and R) measures its
peak there, not after.

:meth:`InputPath.apply` keeps its results on the :class:`~evalkit.metrics.base.Clip` (``clip.memo``): two metrics
whose paths share a prefix (every audiocraft protocol starts with the solver's post-processing) compute it once, and
the scoring stage warms the paths in its prefetching workers, so all of it overlaps the networks' work.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from evalkit import audio as A
from evalkit.audit import Audit, AuditSettings, audit_scored

SIDE_LISTS = ("reference", "generated")
#: steps that change only the gain or the number format: last in a path, after the audit point
SCALE_STEPS = ("peak", "write_int16", "quantize_int16", "max_normalize")
#: ``resample.with``: one tool's resampler each (:func:`evalkit.audio.resample_with`); the two torchaudio sincs are
#: audiobox-aesthetics' (its defaults: Hann window) and fadtk's / kadtk's (Kaiser window, their constants)
RESAMPLERS = ("julius", "resampy", "soxr_hq", "torchaudio_hann", "torchaudio_kaiser")
#: steps that may follow a scale step: linear ones, which change neither what the audit measured nor the level
AFTER_SCALE = ("resample", "channels")
#: how a ``peak`` step rounds its gain (:func:`evalkit.audio.peak_normalize`)
PEAK_GAINS = ("audiocraft", "pyloudnorm")
#: ``write_int16`` arguments: audiocraft's ``audio_write`` + Google's reader | torchaudio.save + soundfile.read / 32768
INT16_WRITERS = ("audiocraft", "pcm16")


class InputPathError(ValueError):
    """A protocol's ``input`` node that cannot work; the message names the metric, the step and the fix."""


@dataclass
class Side:
    """One side of a pair at some point of its path: ``wav`` ``[C, T]`` at ``sr``; ``file_sr``: the rate of the
    file it came from; ``clamped``: the share of samples the last ``clamp`` step changed; ``error``: why it cannot
    go on (an :class:`~evalkit.audio.AudioError` of a step)."""

    wav: torch.Tensor | None
    sr: int | None
    file_sr: int | None
    clamped: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.wav is not None and self.error is None


@dataclass
class Prepared:
    """What a metric gets for one clip: each side as its protocol scores it (``None`` when absent), the reason a side
    cannot be scored (a failed step, or a blocking audit flag), and each side's audit at the audit point."""

    generated: Side | None
    reference: Side | None
    audits: dict[str, Audit] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# The steps
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What a step may read besides its own side: the reference at the same point of the path, the generating model's
    channels, the embedder's rate."""

    reference: Side | None
    model_channels: int | None


def _resample(s: Side, arg: Any, ctx: Context) -> Side:
    rate, method = int(arg["rate"]), str(arg.get("with", "julius"))
    if s.sr == rate:
        return s
    if s.wav.shape[-1] == 0:  # nothing to resample (the audit calls it silent)
        return Side(s.wav, rate, s.file_sr, s.clamped)
    return Side(A.resample_with(s.wav, s.sr, rate, method), rate, s.file_sr, s.clamped)


def _channels(s: Side, arg: Any, ctx: Context) -> Side:
    n = (ctx.model_channels or s.wav.shape[0]) if arg == "model" else int(arg)
    return Side(A.to_channels(s.wav, n), s.sr, s.file_sr, s.clamped)


def _target(s: Side, ctx: Context) -> int | None:
    """The reference's length at this side's rate (``round(n_ref * sr / sr_ref)``), or None without a reference."""
    ref = ctx.reference
    if ref is None or ref.wav is None:
        return None
    return int(round(ref.wav.shape[-1] * s.sr / ref.sr))


def _crop(s: Side, arg: Any, ctx: Context) -> Side:
    target = _target(s, ctx)
    if target is None or s.wav.shape[-1] <= target:
        return s
    return Side(s.wav[..., :target], s.sr, s.file_sr, s.clamped)


def _pad(s: Side, arg: Any, ctx: Context) -> Side:
    if isinstance(arg, Mapping):  # {min_s: seconds}: fadtk's ModelLoader.enforce_min_len, ceil(min_s * sr) samples
        target = int(math.ceil(float(arg["min_s"]) * s.sr))
        if s.wav.shape[-1] >= target:
            return s
        return Side(torch.nn.functional.pad(s.wav, (0, target - s.wav.shape[-1])), s.sr, s.file_sr, s.clamped)
    target = _target(s, ctx)
    if target is None or s.wav.shape[-1] >= target:
        return s
    return Side(torch.nn.functional.pad(s.wav, (0, target - s.wav.shape[-1])), s.sr, s.file_sr, s.clamped)


def _truncate(s: Side, arg: Any, ctx: Context) -> Side:
    n = int(round(float(arg) * s.sr))
    return s if s.wav.shape[-1] <= n else Side(s.wav[..., :n], s.sr, s.file_sr, s.clamped)


def _loudness(s: Side, arg: Any, ctx: Context) -> Side:
    try:
        wav = A.loudness_normalize(s.wav, s.sr, -float(arg["lufs"]), float(arg["energy_floor"]), clamp=False)
    except A.AudioError as exc:
        raise A.AudioError(f"loudness normalisation failed: {exc}") from exc
    if not torch.isfinite(wav).all():
        raise A.AudioError("loudness normalisation produced non-finite samples")
    return Side(wav, s.sr, s.file_sr, s.clamped)


def _clamp(s: Side, arg: Any, ctx: Context) -> Side:
    limit = float(arg)
    over = int((s.wav.abs() > limit).sum()) if s.wav.numel() else 0
    return Side(s.wav.clamp(-limit, limit), s.sr, s.file_sr, over / max(1, s.wav.numel()))


def _peak(s: Side, arg: Any, ctx: Context) -> Side:
    if isinstance(arg, Mapping):
        return Side(A.peak_normalize(s.wav, float(arg["dbfs"]), str(arg["gain"])), s.sr, s.file_sr, s.clamped)
    return Side(A.peak_normalize(s.wav, float(arg)), s.sr, s.file_sr, s.clamped)


def _write_int16(s: Side, arg: Any, ctx: Context) -> Side:
    if arg == "pcm16":
        return Side(A.pcm16_round_trip(s.wav), s.sr, s.file_sr, s.clamped)
    return Side(A.i16_pcm(s.wav).to(torch.float64), s.sr, s.file_sr, s.clamped)


def _quantize_int16(s: Side, arg: Any, ctx: Context) -> Side:
    return Side(A.quantize_int16_laion(s.wav), s.sr, s.file_sr, s.clamped)


def _max_normalize(s: Side, arg: Any, ctx: Context) -> Side:
    return Side(s.wav / max(float(arg), float(s.wav.max())), s.sr, s.file_sr, s.clamped)


StepFn = Callable[[Side, Any, Context], Side]
#: name -> (function, the lists it may appear in)
STEPS: dict[str, tuple[StepFn, tuple[str, ...]]] = {
    "resample": (_resample, ("reference", "generated", "both")),
    "channels": (_channels, ("reference", "generated", "both")),
    "crop": (_crop, ("generated", "both")),
    "pad": (_pad, ("generated", "both")),
    "truncate": (_truncate, ("reference", "generated", "both")),
    "loudness": (_loudness, ("reference", "generated", "both")),
    "clamp": (_clamp, ("reference", "generated", "both")),
    "peak": (_peak, ("reference", "generated", "both")),
    "write_int16": (_write_int16, ("both",)),
    "quantize_int16": (_quantize_int16, ("both",)),
    "max_normalize": (_max_normalize, ("both",)),
}


def _view(s: Side, view: str) -> Side:
    """``channel_view``: ``left``, ``right``, ``mid`` ((L+R)/2) or ``side`` ((L-R)/2) as one channel. A mono clip's
    left, right and mid are its one channel; its side is zero."""
    w = s.wav
    left, right = w[:1], w[1:2] if w.shape[0] > 1 else w[:1]
    return Side({"left": left, "right": right, "mid": (left + right) / 2, "side": (left - right) / 2}[view], s.sr,
                s.file_sr, s.clamped)


# ----------------------------------------------------------------------------------------------------------------
# A compiled path
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    scope: str  # reference | generated | view | both
    name: str
    arg: Any

    @property
    def key(self) -> str:
        return json.dumps([self.scope, self.name, self.arg], sort_keys=True, default=str)


def _parse(scope: str, item: Any, setting: str, embedder_rate: int | None, embedder_channels: int | None = None
           ) -> Step:
    if isinstance(item, str):
        name, arg = item, None
    elif isinstance(item, Mapping) and len(item) == 1:
        (name, arg), = item.items()
    else:
        raise InputPathError(f"{setting}.{scope}: {item!r} is not a step (write `- name: argument`); steps: "
                             f"{', '.join(STEPS)}")
    if name not in STEPS:
        raise InputPathError(f"{setting}.{scope}: unknown step {name!r}; steps: {', '.join(STEPS)}")
    if scope not in STEPS[name][1]:
        raise InputPathError(f"{setting}.{scope}: step {name!r} belongs in {' or '.join(STEPS[name][1])}")
    arg = _thaw(arg)
    if name == "resample":
        arg = dict(arg) if isinstance(arg, Mapping) else {"rate": arg}
        if arg.get("rate") == "embedder":
            if embedder_rate is None:
                raise InputPathError(f"{setting}.{scope}: resample to the embedder's rate, but this metric has none")
            arg["rate"] = int(embedder_rate)
        arg.setdefault("with", "julius")
        if arg["with"] not in RESAMPLERS:
            raise InputPathError(f"{setting}.{scope}: resample with {arg['with']!r}; known: {', '.join(RESAMPLERS)}")
        arg["rate"] = int(arg["rate"])
    elif name == "crop" and arg not in (("reference", "shorter") if scope == "both" else ("reference",)):
        raise InputPathError(f"{setting}.{scope}: crop: {arg!r}; expected reference" +
                             (" or shorter" if scope == "both" else ""))
    elif name == "write_int16" and arg not in INT16_WRITERS:
        raise InputPathError(f"{setting}.{scope}: write_int16: {arg!r}; expected {' or '.join(INT16_WRITERS)}")
    elif name == "pad" and arg != "reference" and not (
            isinstance(arg, Mapping) and set(arg) == {"min_s"} and isinstance(arg["min_s"], (int, float))):
        raise InputPathError(f"{setting}.{scope}: pad: {arg!r}; expected reference or {{min_s: seconds}}")
    elif name == "channels" and arg == "embedder":
        if embedder_channels is None:
            raise InputPathError(f"{setting}.{scope}: channels: embedder, but this metric has no embedder")
        arg = int(embedder_channels)
    elif name == "channels" and arg != "model" and not (isinstance(arg, int) and arg >= 1):
        raise InputPathError(f"{setting}.{scope}: channels: {arg!r}; expected a number of channels, model or embedder")
    elif name == "loudness" and not (isinstance(arg, Mapping) and {"lufs", "energy_floor"} <= set(arg)):
        raise InputPathError(f"{setting}.{scope}: loudness needs {{lufs, energy_floor}}, got {arg!r}")
    elif name == "truncate" and not (isinstance(arg, (int, float)) and not isinstance(arg, bool) and arg > 0):
        raise InputPathError(f"{setting}.{scope}: truncate: {arg!r}; expected a positive number of seconds")
    elif name == "peak" and isinstance(arg, Mapping):
        if set(arg) != {"dbfs", "gain"} or not isinstance(arg["dbfs"], (int, float)) or \
                arg["gain"] not in PEAK_GAINS:
            raise InputPathError(f"{setting}.{scope}: peak: {arg!r}; expected a number (dBFS) or {{dbfs: number, "
                                 f"gain: {' | '.join(PEAK_GAINS)}}}")
    elif name in ("clamp", "peak", "max_normalize") and not isinstance(arg, (int, float)):
        raise InputPathError(f"{setting}.{scope}: {name}: {arg!r} is not a number")
    return Step(scope, name, arg)


def _thaw(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _thaw(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_thaw(v) for v in x]
    return x


class InputPath:
    """A protocol's ``input`` node, compiled (see the module doc).

    ``node``: ``{reference: [...], generated: [...], both: [...]}``. ``setting``: where it lives
    (``metrics.fad.input``), named in errors. ``embedder_rate``: the rate ``resample: {rate: embedder}`` means.
    ``embedder_channels``: what ``channels: embedder`` means. ``channel_view``: the run's view for a metric that
    scores it (``mono``: no step). ``uses_reference``: False for a
    metric that compares with no reference (CLAP): the reference then only decides the generated clip's crop and pad.
    ``band_hz``: the highest frequency the metric's front end analyses (``low_sample_rate``).
    Raises :class:`InputPathError` for an unknown step, a step in the wrong list, a bad argument, or a scale step
    followed by another kind."""

    def __init__(self, node: Mapping[str, Any] | None, *, setting: str, embedder_rate: int | None = None,
                 channel_view: str = "mono", uses_reference: bool = True, band_hz: float | None = None,
                 embedder_channels: int | None = None) -> None:
        node = dict(node or {})
        unknown = sorted(set(node) - {"reference", "generated", "both"})
        if unknown:
            raise InputPathError(f"{setting}: unknown lists {unknown}; an input path has reference, generated, both")
        self.setting, self.uses_reference, self.band_hz = setting, bool(uses_reference), band_hz
        self.side_steps = {s: [_parse(s, x, setting, embedder_rate, embedder_channels) for x in (node.get(s) or [])]
                           for s in SIDE_LISTS}
        self.view = str(channel_view)
        both = [_parse("both", x, setting, embedder_rate, embedder_channels) for x in (node.get("both") or [])]
        kinds = [st.name in SCALE_STEPS for st in both]
        late = [st.name in SCALE_STEPS + AFTER_SCALE for st in both]
        if any(a and not b for a, b in zip(kinds, late[1:])):
            raise InputPathError(f"{setting}.both: the scale steps ({', '.join(SCALE_STEPS)}) come last, after every "
                                 f"other step but {', '.join(AFTER_SCALE)} (the audit measures the signal just before "
                                 f"them)")
        side_scale = [st for s in SIDE_LISTS for st in self.side_steps[s] if st.name in SCALE_STEPS]
        if side_scale:
            raise InputPathError(f"{setting}.{side_scale[0].scope}: {side_scale[0].name} is a scale step; put it in "
                                 f"both, after every other step")
        cut = kinds.index(True) if True in kinds else len(both)
        self.shared = both[:cut]
        self.scale = both[cut:]
        self.final_rate = next((st.arg["rate"] for st in reversed(both) if st.name == "resample"), None)
        #: the lowest rate the audio passes through: what is above its Nyquist is gone, whatever comes after
        self.lowest_rate = min((st.arg["rate"] for st in both if st.name == "resample"), default=None)

    # -- identity ----------------------------------------------------------------------------------------------------
    def _chain(self) -> list[Step]:
        view = [Step("view", "view", self.view)] if self.view != "mono" else []
        return [*self.side_steps["reference"], *self.side_steps["generated"], *view, *self.shared, *self.scale]

    @property
    def key(self) -> str:
        """What decides the audio a metric sees (for cache keys): every step in order, and the reference's use."""
        return self._key(self._chain())

    def describe(self) -> list[str]:
        return [f"{st.scope}: {st.name}" + ("" if st.arg is None else f" {st.arg}") for st in self._chain()]

    # -- running it --------------------------------------------------------------------------------------------------
    def apply(self, clip, audit: AuditSettings = AuditSettings()) -> Prepared:
        """``clip`` (a :class:`~evalkit.metrics.base.Clip`: the files as decoded) as this path scores it, with each
        side's audit at the audit point and, for a side with a flag of the ``audit.skip`` policy there, the reason
        as its ``error``. Results are kept on ``clip.memo``: the final one and the audits always, intermediate points
        whose key is in ``clip.keep`` (set by the scoring stage to the prefixes several metrics share)."""
        chain = self._chain()
        final_key = self._key(chain) + "|prepared"
        hit = clip.memo.get(final_key)
        if hit is not None:
            return hit
        n_pre = len(chain) - len(self.scale)
        state = self._advance(clip, chain, n_pre)
        audit_key = self._key(chain[:n_pre]) + f"|audit|{self.band}|{self.uses_reference}"
        audits = clip.memo.get(audit_key)
        if audits is None:
            audits = clip.memo[audit_key] = self._audit(clip, state, audit)
        state = self._advance(clip, chain, len(chain), (n_pre, state))
        ref, gen = state
        sides = {"generated": gen, "reference": ref if self.uses_reference else None}
        for name, side in sides.items():
            a = audits.get(name)
            blocking = a.blocking(audit) if a is not None else []
            if side is not None and blocking:  # the audit point comes before any step that failed; a copy: shared state
                sides[name] = Side(side.wav, side.sr, side.file_sr, side.clamped, error=a.reason(blocking))
        prepared = clip.memo[final_key] = Prepared(sides["generated"], sides["reference"], audits)
        return prepared

    def _key(self, chain: Sequence[Step]) -> str:
        """The memo key of a point of this path: its steps, and whether the reference goes past its own list."""
        past_sides = any(st.scope in ("view", "both") for st in chain)
        return json.dumps([st.key for st in chain] + ([self.uses_reference] if past_sides else []))

    def _advance(self, clip, chain: Sequence[Step], end: int, start: tuple[int, Any] | None = None):
        """The (reference, generated) state after ``chain[:end]``, from ``start`` or the longest prefix in the memo."""
        if start is None:
            start = (0, None)
            for i in range(end, 0, -1):
                got = clip.memo.get(self._key(chain[:i]))
                if got is not None:
                    start = (i, got)
                    break
        i, state = start
        if state is None:
            ref = Side(clip.reference, clip.reference_sr, clip.reference_sr) if clip.reference is not None else None
            gen = Side(clip.audio, clip.sample_rate, clip.sample_rate) if clip.audio is not None else None
            state = (ref, gen)
        for j in range(i, end):
            state = self._step(chain[j], state, clip)
            key = self._key(chain[:j + 1])
            if key in clip.keep:
                clip.memo[key] = state
        return state

    def prefixes(self) -> list[str]:
        """The memo keys of every point of this path (:meth:`apply` keeps a result at those in ``clip.keep``)."""
        chain = self._chain()
        return [self._key(chain[:i + 1]) for i in range(len(chain))]

    def _step(self, st: Step, state: tuple[Side | None, Side | None], clip) -> tuple[Side | None, Side | None]:
        ref, gen = state
        run_ref = ref is not None and ref.ok and (st.scope == "reference" or
                                                  (st.scope in ("view", "both") and self.uses_reference))
        run_gen = gen is not None and gen.ok and st.scope in ("generated", "view", "both")
        if st.name == "crop" and st.arg == "shorter":
            if ref is not None and gen is not None and ref.ok and gen.ok:
                n = min(ref.wav.shape[-1], gen.wav.shape[-1])
                ref = Side(ref.wav[..., :n], ref.sr, ref.file_sr, ref.clamped)
                gen = Side(gen.wav[..., :n], gen.sr, gen.file_sr, gen.clamped)
            return ref, gen
        if run_ref:
            ref = self._run(st, ref, Context(None, clip.model_channels))
        if run_gen:
            gen = self._run(st, gen, Context(ref if ref is not None and ref.wav is not None else None,
                                             clip.model_channels))
        return ref, gen

    @staticmethod
    def _run(st: Step, side: Side, ctx: Context) -> Side:
        if st.name == "view":
            return _view(side, st.arg)
        try:
            return STEPS[st.name][0](side, st.arg, ctx)
        except A.AudioError as exc:
            return Side(side.wav, side.sr, side.file_sr, side.clamped, error=f"{st.name}: {exc}")

    def _audit(self, clip, state, settings: AuditSettings) -> dict[str, Audit]:
        ref, gen = state
        out = {}
        for name, side, raw in (("generated", gen, clip.audio), ("reference", ref, clip.reference)):
            if side is None or side.wav is None:  # a side whose step failed is audited as it was before the step
                continue
            if name == "reference" and not self.uses_reference:
                continue
            out[name] = audit_scored(side.wav, side.sr, settings, raw=raw, view_name=self.view,
                                     clamped_share=side.clamped, file_sr=side.file_sr, band_hz=self.band)
        return out

    @property
    def band(self) -> float | None:
        """The band the metric analyses (Hz; ``low_sample_rate`` flags a file whose Nyquist is below it): its front
        end's top frequency, at most the Nyquist of the lowest rate the path resamples to (stable-audio-metrics'
        FD_openl3 goes through 44.1 kHz before OpenL3's 48 kHz: 22,050 Hz, so a 44.1 kHz file is not flagged)."""
        nyq = self.lowest_rate / 2 if self.lowest_rate else None
        if self.band_hz and nyq:
            return min(self.band_hz, nyq)
        return self.band_hz or nyq


def shared_prefixes(paths: Sequence[InputPath]) -> set[str]:
    """The memo keys where two or more of ``paths`` part ways: where :meth:`InputPath.apply` keeps its results, so
    the shared work is done once per clip (the scoring stage sets them as ``clip.keep``). A point whose next step all
    the same paths still share is not kept (the point after it serves them), so a clip holds one copy per branch."""
    seen: dict[str, int] = {}
    for p in paths:
        for k in p.prefixes():
            seen[k] = seen.get(k, 0) + 1
    keep = {k for k, n in seen.items() if n > 1}
    for p in paths:
        keys = p.prefixes()
        for here, after in zip(keys, keys[1:]):
            if seen[after] == seen[here]:  # every path through `here` takes the same next step
                keep.discard(here)
    return keep
