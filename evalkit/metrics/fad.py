"""FAD: the Fréchet distance between Gaussians fitted to the embeddings of generated and reference audio.

A protocol (``conf/metrics/fad/<protocol>.yaml``) says everything between the file and the number: its embedding
(``embedding``, any of ``conf/embeddings/``), its input path (``input``), its windows (``window_s``/``hop_s``: cut
the input into full windows, each embedded on its own; null: the whole clip) and its statistic (``stats: pooled``:
every embedding of every clip in one Gaussian, float64 sums, covariance n-1; ``fd_eps``). The two shipped:

``audiocraft`` (the MusicGen model card): ``audiocraft/metrics/fad.py`` writes each pair as a 16 kHz mono int16 wav
(the solver's post-processing, crop to the reference, ``convert_audio``, peak normalisation to -1 dBFS, ``i16_pcm``)
and runs Google's TF FAD, whose reader keeps the raw int16 values and divides by ``max(0.1, max(x))`` (signed
maximum), cuts 1 s windows every 0.5 s (full windows only) and embeds each as one VGGish example.

``frechet-audio-distance`` (PyPI 0.3.4): each file as read, channel mean, ``resampy`` to 16 kHz, non-overlapping
0.96 s examples over the whole clip, no normalisation, pre-activation embeddings.

The fadtk protocols (``clap-laion-audio``, ``clap-laion-music``, ``encodec-emb``, ``vggish``; and kadtk's
``panns-cnn14-32k``): each file as read, the channel mean, torchaudio's Kaiser resampler, a 16-bit WAV round trip,
the embedding's own windows; embeddings stored as float16 (``embedding_dtype: float16``: fadtk's and kadtk's
``ModelLoader.get_embedding``); fadtk's statistics of a folder (``stats: online``: ``calculate_embd_statistics_online``,
each file's mean taken in float16 by ``np.mean``, merged by Chan's rule: here each file's embeddings are moved onto
that float16 mean before they enter the float64 sums, which is the same algebra).

All sides of an :meth:`~FAD.update` are embedded in one batched pass, once per clip side for every metric of the
run with the same embedder, input path and windows (KAD: :mod:`evalkit.embeddings.shared`). The reference side can
instead come from a statistics file (``reference.stats``, :mod:`evalkit.statistics.stats_file`) written by a run
with the same protocol, embedding, weights, input path and windows (anything else is refused, naming what differs),
or from a peer's shipped statistics (``reference.stats=fadtk:fma_pop``: fadtk's ``<model>.mu``/``<model>.cov``), accepted only
for the released weights and that tool's recipe of the same embedding (:meth:`FAD.peer_differences`).

A FAD on another embedding than the card's (VGGish) is not the card's "Frechet Audio Distance" column: its spec then
places it in evalkit's own table as ``FAD (<embedding>)``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from evalkit.embeddings import build_embedder
from evalkit.embeddings.shared import embed_shared, embedding_key
from evalkit.errors import InputError
from evalkit.metrics.base import (PAIRINGS, Clip, ClipResult, Metric, MetricUnavailable, RunContext, Windows,
                                  window_problem)
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric
from evalkit.statistics.frechet import FrechetError, GaussianStats, covariance_rank, frechet_distance
from evalkit.statistics.stats_file import PEER_KINDS, check_identity, read_stats_file, write_reference_stats

#: the FAD protocols' files (a peer's recipe is compared with its file)
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "conf" / "metrics" / "fad"
#: the embedding of the card's FAD column (audiocraft/metrics/fad.py: Google's TF FAD on VGGish)
CARD_EMBEDDING = "vggish"
#: how the statistics are built: ``pooled`` (every embedding of every clip in one Gaussian) or ``online`` (fadtk's
#: per-file merge with float16 file means)
STATS = ("pooled", "online")
#: how embeddings are stored before any statistic
EMBEDDING_DTYPES = {"float32": np.float32, "float16": np.float16}


class FADError(InputError, ValueError):
    """A FAD setting that cannot work; the message names it and the fix."""



def statistic_settings(r: Mapping[str, Any], name: str) -> tuple[str, type, float]:
    """``(stats, embedding dtype, fd_eps)`` of a FAD recipe, checked; the windows and pairing too. Raises
    :class:`FADError` naming the setting."""
    stats_mode = str(r.get("stats", "pooled"))
    if stats_mode not in STATS:
        raise FADError(f"metrics.{name}.stats={r.get('stats')!r}: expected pooled (every embedding of every clip "
                       f"in one Gaussian: Google's FAD, frechet-audio-distance, kadtk) or online (fadtk's "
                       f"calculate_embd_statistics_online: per-file float16 means merged by Chan's rule)")
    dtype = str(r.get("embedding_dtype") or "float32")
    if dtype not in EMBEDDING_DTYPES:
        raise FADError(f"metrics.{name}.embedding_dtype={dtype!r}: expected float32 or float16 (fadtk and kadtk "
                       f"store embeddings as float16)")
    fd_eps = float(r.get("fd_eps", 1e-7))
    if not fd_eps >= 0:
        raise FADError(f"metrics.{name}.fd_eps={r.get('fd_eps')!r}: the offset added to the covariances' diagonals "
                       f"when the trace term is not finite must be >= 0")
    problem = window_problem(r, f"metrics.{name}")
    if problem:
        raise FADError(problem)
    if r.get("pairing", "paired") not in PAIRINGS:
        raise FADError(f"metrics.{name}.pairing={r.get('pairing')!r}: expected one of {', '.join(PAIRINGS)}")
    return stats_mode, EMBEDDING_DTYPES[dtype], fd_eps


def stored_as(e: np.ndarray, dtype: type, embedding: str) -> np.ndarray:
    """``e`` as a protocol stores embeddings (``embedding_dtype``: float16 rounds them, as fadtk's and kadtk's
    ``get_embedding`` do before ``np.save``), as float32. Raises :class:`FrechetError` when float16 overflows
    (|x| > 65504: fadtk would then hold inf)."""
    if dtype is np.float32:
        return np.asarray(e, np.float32)
    with np.errstate(over="ignore"):  # overflow is checked below, with the reason
        low = np.asarray(e).astype(dtype)
    if not np.isfinite(low).all():
        raise FrechetError(f"{embedding} embeddings beyond float16's range (|x| > 65504): embedding_dtype=float16 "
                           f"(the protocol's storage) cannot hold them")
    return low.astype(np.float32)


@register_metric("fad")
class FAD(Metric):
    set_distance = True
    spec = MetricSpec(
        name="fad", primary="fad", higher_is_better=False, card_column="Frechet Audio Distance", decimals=2,
        tolerance="5%", per_clip=("fad_windows", "fad_ref_windows"), arrays=("fad_gen_emb", "fad_ref_emb"),
        aggregate="frechet", needs_reference=True, min_clips=7,
        description="Fréchet distance between Gaussians fitted to the embeddings of generated and reference audio "
                    "(VGGish by default: needs >= 128 embeddings per side, 7 ten-second clips with the audiocraft "
                    "protocol's 19 windows each, 13 with the frechet-audio-distance protocol's 10)",
    )

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu",
                 context: RunContext | None = None) -> None:
        super().__init__(recipe, device, context)
        r = self.recipe
        name = self.spec.name
        self.stats_mode, self.embedding_dtype, self.fd_eps = statistic_settings(r, name)
        self.save_embeddings = bool(r.get("save_embeddings", True))
        self.embedder = build_embedder(r, f"metrics.{name}", self.device)
        self.embedder.network  # noqa: B018  (load now: a broken checkpoint stops the run before any scoring)
        self.dim = self.embedder.dim
        self.win = Windows.from_recipe(r, self.embedder, f"metrics.{name}", FADError)
        self.build_input(self.embedder.sample_rate, self.embedder.band_hz, self.embedder.channels)
        #: the clip memo's key of these embeddings (another metric with the same embedder, path, windows reuses them)
        self.key = embedding_key(self.embedder, self.input.key, self.win.key)
        for side in ("gen", "ref"):
            self.add_state(f"{side}_n", ())
            self.add_state(f"{side}_sum", (self.dim,))
            self.add_state(f"{side}_sum_outer", (self.dim, self.dim))
            self.add_state(f"n_{side}_skipped", ())
            self.add_state(f"n_{side}_single", ())  # clips with one embedding (stats: online)
            self.add_state(f"n_{side}_copied", ())  # clips a multi-channel embedder saw with equal channels (mono)
        if self.embedder.name != CARD_EMBEDDING and type(self).spec.section == "card":  # own table, embedding named
            self.spec = dataclasses.replace(type(self).spec, card_column=None, section="beyond-the-card",
                                            label=f"FAD ({self.embedder.name})")
        self.reference_stats_path: str | None = str(r["reference_stats"]) if r.get("reference_stats") else None
        self._ref_file: tuple[np.ndarray, np.ndarray, int] | None = None
        if self.reference_stats_path:
            self._ref_file = self._read_reference_stats(self.reference_stats_path)

    def _read_reference_stats(self, where: str) -> tuple[np.ndarray, np.ndarray, int]:
        """The reference side from ``reference.stats``: an evalkit file whose identity is this run's, or a peer's
        shipped statistics (``fadtk:<name>`` or a path to fadtk's npz) when :meth:`peer_differences` finds none."""
        found = read_stats_file(where, embedding=self.embedder.name)
        if found.kind in PEER_KINDS:
            diff = self.peer_differences(found.kind)
            if diff:
                raise FADError(f"reference.stats={where}: {found.kind}'s statistics of {self.embedder.name} were made "
                               f"with the released weights and {found.kind}'s recipe; this run differs: "
                               + "; ".join(diff))
        else:
            check_identity(found, self.stats_identity())
        if found.mu.shape != (self.dim,) or found.sigma.shape != (self.dim, self.dim):
            raise FADError(f"reference.stats={where}: mu {found.mu.shape} / sigma {found.sigma.shape} do not fit "
                           f"dimension {self.dim}")
        return found.mu, found.sigma, int(found.n or 0)

    def peer_differences(self, tool: str) -> list[str]:
        """Why this run's reference embeddings would not be the ones ``tool`` (``fadtk``) made its shipped statistics
        from, each with its fix; empty when they would be (:func:`peer_differences`)."""
        return peer_differences(self, tool)

    @classmethod
    def needs_reference_audio(cls, recipe: Mapping[str, Any]) -> bool:
        """No reference audio is needed when the reference side comes from a statistics file (``reference.stats``)."""
        return not recipe.get("reference_stats")

    # -- the metric --------------------------------------------------------------------------------------------------
    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Embed both sides of every pair and add them to the statistics.

        Each clip goes through the protocol's input path (the audit included), then into the protocol's windows
        (or whole) to the embedder. Per clip: ``fad_windows`` / ``fad_ref_windows`` (embeddings per side) and, with
        ``save_embeddings``, the arrays ``fad_gen_emb`` / ``fad_ref_emb`` (float32 ``[frames, dim]``). A pair the
        audit or a missing reference keeps from the metric is skipped with the reason; a side too short for one
        embedding is skipped on its own (the other side still counts, as audiocraft writes each side's wav on its
        own). Unpaired (``pairing: unpaired``), each side is judged on its own; a reference-only clip
        (:attr:`~evalkit.metrics.base.Clip.reference_only`, ``references: distinct``) adds its reference. Raises
        :class:`FrechetError` if the embedder returns non-finite embeddings."""
        results: dict[str, ClipResult] = {}
        items: list[tuple[Clip, str, torch.Tensor]] = []  # (clip, side, input), generated before reference
        for clip, p, skipped in self.prepare(clips):
            if skipped is not None:  # the pair: counted in n_skipped
                results[clip.id] = skipped
                continue
            res = self.result(p, {**({} if clip.reference_only else {"fad_windows": 0}),
                                  **({"fad_ref_windows": 0} if self.uses_reference_audio else {})})
            sides, failed = self.counted_sides(clip, p)  # unpaired: a side may be missing or fail on its own
            reasons = [why for _, why in failed]
            for side, _ in failed:
                self.state[f"n_{side}_skipped"] += 1
            for side, what, s in sides:
                x = self.embedder_input(s.wav)
                short = self.win.too_short(x.shape[-1], self.embedder, what)
                if short:
                    reasons.append(short)
                    self.state[f"n_{side}_skipped"] += 1
                    continue
                items.append((clip, side, self.win.cut(x)))
                if x.dim() == 2 and x.shape[0] > 1 and bool((x == x[:1]).all()):
                    self.state[f"n_{side}_copied"] += 1
                if side == "gen":
                    self.state["n_clips"] += 1
            if reasons:
                res.skipped = self.skip("; ".join(reasons)).skipped
            results[clip.id] = res
        if not items:
            return results
        embs = embed_shared(self.embedder, self.key, items)  # computed once per clip side for every metric
        for (clip, side, _), e in zip(items, embs):
            if not np.isfinite(e).all():
                raise FrechetError(f"{self.embedder.name} produced NaN or infinite embeddings")
            e = self.stored(e)
            self._accumulate(side, e)
            results[clip.id].values["fad_windows" if side == "gen" else "fad_ref_windows"] = int(e.shape[0])
            if self.save_embeddings:
                results[clip.id].arrays[f"fad_{side}_emb"] = np.asarray(e, dtype=np.float32)
        return results

    def embedder_input(self, wav: torch.Tensor) -> torch.Tensor:
        """A side ``[C, T]`` as the embedder takes it: ``[T]`` for a one-channel embedder (the mean over channels
        when the input path left several), ``[C, T]`` for an embedder of ``C`` channels (which the protocol's input
        path must give it: ``channels: embedder``; anything else raises :class:`FADError`)."""
        c = self.embedder.channels
        if c == 1:
            return wav.reshape(-1) if wav.shape[0] == 1 else wav.mean(0)
        if wav.shape[0] != c:
            raise FADError(f"metrics.{self.name}: the {self.embedder.name} embedding takes {c} channels, the input "
                           f"path gives {wav.shape[0]}: add `channels: embedder` to the protocol's input path")
        return wav

    def stored(self, e: np.ndarray) -> np.ndarray:
        """The embeddings as the protocol stores them (:func:`stored_as`)."""
        return stored_as(e, self.embedding_dtype, self.embedder.name)

    def _accumulate(self, side: str, e: np.ndarray) -> None:
        """Add one clip's embeddings to the float64 sums. ``stats: online`` first moves them onto the clip's mean
        as fadtk takes it (``np.mean`` of the float16 array: float32 sums, rounded to float16), keeping their
        scatter: the sums then give fadtk's ``calculate_embd_statistics_online`` mean and covariance exactly (its
        Chan merge of per-file ``(mean, cov * (n - 1), n)`` is this algebra)."""
        x = np.asarray(e, np.float64)
        if self.stats_mode == "online" and x.shape[0]:
            file_mean = np.mean(np.asarray(e).astype(np.float16), axis=0).astype(np.float64)
            x = x - x.mean(0) + file_mean
            if x.shape[0] == 1:
                self.state[f"n_{side}_single"] = self.state[f"n_{side}_single"] + 1
        self.state[f"{side}_n"] = self.state[f"{side}_n"] + x.shape[0]
        self.state[f"{side}_sum"] = self.state[f"{side}_sum"] + x.sum(0)
        self.state[f"{side}_sum_outer"] = self.state[f"{side}_sum_outer"] + x.T @ x

    def _stats(self, side: str) -> GaussianStats:
        return GaussianStats(dim=self.dim, n=int(round(float(self.state[f"{side}_n"]))),
                             sum=self.state[f"{side}_sum"].copy(), sum_outer=self.state[f"{side}_sum_outer"].copy())

    def reference_mean_cov(self) -> tuple[np.ndarray, np.ndarray, int]:
        if self._ref_file is not None:
            return self._ref_file
        st = self._stats("ref")
        mu, sigma = st.mean_cov(f"reference embeddings ({self.embedder.name})")
        return mu, sigma, st.n

    def _compute(self) -> dict[str, float]:
        gen = self._stats("gen")
        try:
            mu_g, sigma_g = gen.mean_cov(f"generated embeddings ({self.embedder.name})")
            mu_r, sigma_r, n_ref = self.reference_mean_cov()
        except FrechetError as exc:
            raise MetricUnavailable(str(exc)) from exc
        single = {s: int(round(float(self.state[f"n_{s}_single"]))) for s in ("gen", "ref")}
        if any(single.values()):
            self.warnings.append(
                f"{single['gen']} generated and {single['ref']} reference clips gave one embedding each: fadtk's "
                f"calculate_embd_statistics_online makes its statistics NaN for such a file (np.cov of one frame); "
                f"evalkit counts its within-clip scatter as 0")
        self.warnings += rank_warnings(self, {"gen": (sigma_g, gen.n), "ref": (sigma_r, n_ref)})
        fad = frechet_distance(mu_g, sigma_g, mu_r, sigma_r, eps=self.fd_eps,
                               warnings=self.warnings)
        skipped = {f"n_{s}_skipped": int(round(float(self.state[f"n_{s}_skipped"]))) for s in ("gen", "ref")}
        return {"fad": float(fad), "n_gen_windows": int(gen.n), "n_ref_windows": int(n_ref), **skipped}

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.recipe.get("protocol", ""), **self.embedder.describe(),
                "reference_stats": self.reference_stats_path, "fadtk_model": self.recipe.get("fadtk_model")}

    # -- reference statistics files ----------------------------------------------------------------------------------
    def stats_identity(self) -> dict[str, Any]:
        """What decides the reference embeddings (a statistics file must say the same): the metric and protocol, the
        embedding's constants, weights (sha256, or random with its seed) and size, the input path, the windows."""
        e = self.embedder.identity()
        ident = {"metric": self.spec.name, "protocol": str(self.recipe.get("protocol", "")),
                 "embedding": {k: e.get(k) for k in ("embedding", "checkpoint_sha256", "random_weights", "random_seed",
                                                     "model_size", "constants")},
                 "input": self.input.describe(), "windows": [self.win.window, self.win.hop]}
        if self.recipe.get("window_pad"):  # (keys added only when set: files written before them stay readable)
            ident["window_pad"] = True
        if self.stats_mode != "pooled" or self.embedding_dtype is not np.float32:
            ident.update(stats=self.stats_mode, embedding_dtype=np.dtype(self.embedding_dtype).name)
        return ident

    def write_reference_artifacts(self, folder: Path) -> list[Path]:
        """``<folder>/<metric>_reference.npz`` (see :meth:`export_reference_stats`) when the reference side was
        embedded here; nothing when it came from a statistics file."""
        if self._ref_file is not None:
            return []
        return [self.export_reference_stats(Path(folder) / f"{self.spec.name}_reference.npz")]

    def export_reference_stats(self, path) -> Path:
        """Write the reference side's statistics (mu, sigma, n and the sums) with what identifies them."""
        if self._ref_file is not None:
            raise FADError(f"the reference statistics came from {self.reference_stats_path}; nothing new to export")
        return write_reference_stats(path, self._stats("ref"), self.stats_identity())


def rank_warnings(fad: "FAD", sides: Mapping[str, tuple[np.ndarray, int]]) -> list[str]:
    """A warning for each side (``{"gen"|"ref": (covariance, embeddings)}``) whose covariance is rank-deficient,
    with the likely cause: mono clips a multi-channel embedder saw as equal channels (each embedding's channel blocks
    equal: rank at most dim / channels; the ``n_<side>_copied`` count), else repeated or stationary audio."""
    out = []
    for side, (sigma, n) in sides.items():
        rank = covariance_rank(sigma)
        if rank >= fad.dim:
            continue
        copied, c = fad.count(f"n_{side}_copied"), int(fad.embedder.channels or 1)
        why = (f"{copied} of its clips are mono, given to the {c}-channel {fad.embedder.name} embedder as {c} equal "
               f"channels, as the protocol does: their embeddings' channel blocks are equal, so those clips span at "
               f"most {fad.dim // c} directions; score stereo clips, or expect this with mono ones") if copied else \
            "repeated or stationary audio?"
        out.append(f"the {'generated' if side == 'gen' else 'reference'} side's covariance has rank {rank} < "
                   f"{fad.dim} ({n} embeddings): its embeddings span too few directions ({why}), so this FAD exists "
                   f"but is not comparable with FADs of full-rank sets")
    return out


def peer_differences(fad: "FAD", tool: str) -> list[str]:
    """Why this run's reference embeddings would not be the ones ``tool`` (``fadtk``) made its shipped statistics
    from, each with its fix (empty: they would be): the embedding's released weights at full size (a checkpoint
    whose digest does not start with the conf's pinned sha256 is another file), and a protocol whose
    ``<tool>_model`` is this embedding, every constant as the shipped protocol file has it (a command-line
    override of it is a difference)."""
    import yaml

    from evalkit.spec import recipe_from_files

    e = fad.embedder
    out = []
    if e.checkpoint.random:
        out.append(f"random weights (backbone_weights=random): score with the released {e.name} weights")
    elif e.config.get("checkpoint_sha256") and not str(e.checkpoint.sha256).startswith(
            str(e.config["checkpoint_sha256"])):
        out.append(f"checkpoint {e.checkpoint.name} (sha256 {e.checkpoint.sha256}) is not the released file "
                   f"(sha256 {e.config['checkpoint_sha256']}...): leave metrics.fad.checkpoint unset")
    if e.weights.model_size != "full":
        out.append(f"model_size={e.weights.model_size}: use backbone_size=full")
    protocol = str(fad.recipe.get("protocol", ""))
    files = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) or {} for p in sorted(PROTOCOL_DIR.glob("*.yaml"))}
    if fad.recipe.get(f"{tool}_model") != e.name:
        theirs = [name for name, node in files.items() if node.get(f"{tool}_model") == e.name]
        return out + [f"protocol {protocol!r} is not {tool}'s recipe for {e.name}: " +
                      (f"set metrics.fad.protocol={theirs[0]}" if theirs else
                       f"evalkit has no {tool} protocol for {e.name}")]
    keys = sorted(set(files.get(protocol) or {}) | {"embedder"})
    shipped = recipe_from_files("fad", protocol)
    for key in keys:
        if shipped.get(key) != fad.recipe.get(key):
            out.append(f"metrics.fad.{key}={fad.recipe.get(key)!r}, {tool}'s recipe {shipped.get(key)!r} "
                       f"(conf/metrics/fad/{protocol}.yaml): drop the override")
    return out


__all__ = ["FAD", "FADError", "peer_differences"]
