"""Fréchet Audio Distance on VGGish embeddings.

Two protocols (``conf/metrics/fad/*.yaml`` holds every constant with its source):

``audiocraft`` (the MusicGen model card): ``audiocraft/metrics/fad.py`` writes each pair as a 16 kHz mono int16 wav
(crop to the reference length, ``convert_audio``, peak normalisation to -1 dBFS, ``i16_pcm``) and runs Google's TF
FAD, whose reader keeps the raw int16 values and divides by ``max(0.1, max(x))`` (signed maximum), cuts 16,000-sample
windows every 8,000 samples (full windows only), turns each into one 96x64 log-mel example and embeds it with VGGish
(pre-activation). Statistics pool every window of every clip (float64, covariance n-1).

``frechet-audio-distance`` (PyPI 0.3.4): float32 audio, channel mean, ``resampy`` to 16 kHz, non-overlapping 0.96 s
examples over the whole clip, no normalisation, pre-activation embeddings, ``np.mean``/``np.cov`` statistics.

Both sides are embedded in one batched VGGish forward per :meth:`update`. The reference side can instead come from a
statistics file written by :meth:`export_reference_stats` (``recipe["reference_stats"]``), which is refused when its
protocol, checkpoint or front-end constants differ from this recipe's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from evalkit.audio import AudioError, convert_audio, i16_pcm, peak_normalize, resample, to_channels
from evalkit.backbones.base import all_finite, cpu_threads, run_calls
from evalkit.backbones.vggish import EMBEDDING_DIM, LogMel, VGGishBackbone, VGGishError
from evalkit.backbones.weights import CheckpointError, UnsafeCheckpointError, resolve_checkpoint
from evalkit.metrics.base import Clip, ClipResult, Metric, MetricUnavailable
from evalkit.metrics.frechet import FrechetError, GaussianStats, covariance_rank, frechet_distance
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric

#: Recipe keys that decide what a reference embedding is: a statistics file must agree on all of them.
EMBEDDING_KEYS = (
    "solver_sample_rate", "sample_rate", "resampler", "peak_normalize_db", "quantize_int16", "input_scale",
    "max_normalize_min_ratio", "window_samples", "window_step", "stft_window", "stft_hop", "fft_length", "mel_bins",
    "mel_min_hz", "mel_max_hz", "log_offset", "example_frames", "example_hop_frames", "use_activation", "use_pca",
    "model_size",
)
STATS_KIND = "evalkit.fad.reference_stats/1"


class FADError(ValueError):
    pass


def _resampy(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``resampy.resample(x, from_rate, to_rate)``, bit for bit, computed by :mod:`evalkit.backbones.resampy_exact`
    (5-10x faster: resampy's kernel was a third of this protocol's time next to a full VGGish)."""
    from evalkit.backbones import resampy_exact

    return resampy_exact.resample(x, int(from_rate), int(to_rate))


@register_metric("fad")
class FAD(Metric):
    spec = MetricSpec(
        name="fad", primary="fad", higher_is_better=False, card_column="Frechet Audio Distance", decimals=2,
        tolerance="5%", per_clip=("fad_windows", "fad_ref_windows"), arrays=("fad_gen_emb", "fad_ref_emb"),
        aggregate="frechet", needs_reference=True, min_clips=7,
        description="Fréchet distance between Gaussians fitted to VGGish embeddings of generated and reference audio "
                    "(needs >= 128 embeddings per side: 7 ten-second clips with the audiocraft protocol's 19 windows "
                    "each, 13 with the frechet-audio-distance protocol's 10)",
    )

    def __init__(self, recipe: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        super().__init__(recipe, device)
        r = self.recipe
        _check_recipe(r)
        self.sample_rate = int(r["sample_rate"])
        self.model_size = str(r.get("model_size") or "full")
        self.seed = int(r.get("random_seed") or 0)
        self.batch_size = int(r.get("batch_size") or 128)
        self.save_embeddings = bool(r.get("save_embeddings", True))
        self.checkpoint = resolve_checkpoint(
            r.get("checkpoint"), setting="metrics.fad.checkpoint", filename=r["checkpoint_file"],
            url=r["checkpoint_url"], expected_sha256=r.get("checkpoint_sha256"),
            policy=r.get("backbone_weights") or "released")
        self.backbone = VGGishBackbone(self.model_size, self.seed, activation=bool(r.get("use_activation")))
        try:
            self.model = self.backbone.load(self.checkpoint, setting="metrics.fad.checkpoint", device=self.device,
                                            trust=bool(r.get("trust_checkpoint", False)))
        except UnsafeCheckpointError:
            raise
        except (CheckpointError, VGGishError) as exc:
            raise FADError(str(exc)) from exc
        self.dim = self.model.embedding_dim
        self.front = _front_end(r)
        self.window = int(r["window_samples"]) if r.get("window_samples") else None
        self.step = int(r["window_step"]) if r.get("window_step") else None
        if self.window is not None and self.front.n_examples(self.window) < 1:
            raise FADError(f"window_samples={self.window} is too short for one {r['example_frames']}-frame example")
        # the minimum number of 16 kHz samples that yields one embedding
        self.min_samples = self.window if self.window else _min_samples(self.front)
        # the front end runs in float64 (Google and torchvggish compute it in float64 numpy), on the GPU if any
        self._fe_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        for side in ("gen", "ref"):
            self.add_state(f"{side}_n", ())
            self.add_state(f"{side}_sum", (self.dim,))
            self.add_state(f"{side}_sum_outer", (self.dim, self.dim))
            self.add_state(f"n_{side}_skipped", ())
        self.reference_stats_path: str | None = str(r["reference_stats"]) if r.get("reference_stats") else None
        self._ref_file: tuple[np.ndarray, np.ndarray, int] | None = None
        if self.reference_stats_path:
            self._ref_file = read_reference_stats(self.reference_stats_path, self._identity(), self.dim)

    @classmethod
    def needs_reference_audio(cls, recipe: Mapping[str, Any]) -> bool:
        """No reference audio is needed when the reference side comes from a statistics file (``reference.stats``)."""
        return not recipe.get("reference_stats")

    # -- audio -> 16 kHz samples as the protocol's reader sees them --------------------------------------------------
    def _samples(self, wav: torch.Tensor, sr: int, crop: int | None) -> torch.Tensor:
        """``[C, T]`` -> 1-D float64 samples at 16 kHz, ready to window. Raises :class:`AudioError`."""
        r = self.recipe
        if not all_finite(wav):
            raise AudioError("the audio holds NaN or infinite samples")
        wav = wav.detach().cpu().float()
        solver_sr = r.get("solver_sample_rate")
        if solver_sr and int(sr) != int(solver_sr):
            wav, sr = resample(wav, sr, int(solver_sr)), int(solver_sr)
        if crop is not None:
            wav = wav[..., :crop]
        if r.get("resampler", "julius") == "julius":
            x = convert_audio(wav, sr, self.sample_rate, 1)[0]
        else:  # frechet-audio-distance: np.mean over channels in float32, then resampy
            x = to_channels(wav, 1)[0]
            if int(sr) != self.sample_rate:
                x = torch.from_numpy(np.ascontiguousarray(_resampy(x.numpy(), sr, self.sample_rate)))
        if r.get("peak_normalize_db") is not None:
            x = peak_normalize(x, float(r["peak_normalize_db"]))  # silent -> AudioError
        if r.get("quantize_int16"):
            x = i16_pcm(x)
        x = x.to(torch.float64) * float(r.get("input_scale", 1.0))
        if r.get("max_normalize_min_ratio") is not None:
            x = x / max(float(r["max_normalize_min_ratio"]), float(x.max()))
        return x

    def _examples(self, x: torch.Tensor) -> torch.Tensor:
        """1-D samples -> ``[E, 96, 64]`` float64 examples (Google: one per 1 s window; package: per 0.96 s)."""
        x = x.to(self._fe_device)
        if self.window is not None:
            x = x.unfold(-1, self.window, self.step)  # [W, window]: range(0, n - window + 1, step)
        ex = self.front.examples(x)
        return ex.reshape(-1, ex.shape[-2], ex.shape[-1])

    def _prepare(self, wav: torch.Tensor, sr: int, crop: int | None, what: str) -> tuple[torch.Tensor | None, str | None]:
        try:
            x = self._samples(wav, sr, crop)
        except AudioError as exc:
            if "silent" in str(exc):
                return None, f"{what} audio is silent: peak normalisation (audio_write strategy=peak) is impossible"
            return None, f"{what} audio unusable: {exc}"
        if x.shape[-1] < self.min_samples:
            return None, (
                f"{what} audio too short for one VGGish window: {x.shape[-1]} samples at {self.sample_rate} Hz, "
                f"needs {self.min_samples}"
            )
        return self._examples(x), None

    # -- the metric --------------------------------------------------------------------------------------------------
    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Embed both sides of every pair and add them to the statistics.

        ``clip.audio``: generated ``[C, T]`` float32 at ``clip.sample_rate`` (any rate; converted to the protocol's
        ``solver_sample_rate`` then 16 kHz mono); ``clip.reference``: ``[C, T]`` at ``clip.reference_sr`` (None when the
        reference side comes from ``reference_stats``). The audiocraft protocol crops the generated side to the
        reference's length. Per clip: ``fad_windows`` / ``fad_ref_windows`` (VGGish examples embedded per side) and,
        with ``save_embeddings``, the arrays ``fad_gen_emb`` / ``fad_ref_emb`` (float32 ``[windows, 128]``).
        A side that cannot be embedded (silent audio cannot be peak-normalised, too short for one window, non-finite)
        is skipped with the reason; the other side still counts, as audiocraft writes each side's wav on its own.
        Raises :class:`FrechetError` if VGGish itself returns non-finite embeddings."""
        jobs: list[tuple[str, str, torch.Tensor]] = []  # (clip id, side, examples)
        results: dict[str, ClipResult] = {}
        prepared = iter(self._prepare_sides(clips))
        for clip in clips:
            results[clip.id] = self._prepare_pair(clip, jobs, prepared)
        if not jobs:
            return results
        emb = self.model.embed(torch.cat([e for _, _, e in jobs]), self.batch_size).cpu().numpy()
        if not np.isfinite(emb).all():
            raise FrechetError("VGGish produced NaN or infinite embeddings")
        start = 0
        for cid, side, ex in jobs:
            e = emb[start : start + ex.shape[0]]
            start += ex.shape[0]
            self._accumulate(side, e)
            results[cid].values["fad_windows" if side == "gen" else "fad_ref_windows"] = int(e.shape[0])
            if self.save_embeddings:
                results[cid].arrays[f"fad_{side}_emb"] = np.array(e, dtype=np.float32)
        return results

    def _prepare_sides(self, clips: Sequence[Clip]) -> list[tuple[torch.Tensor | None, str | None]]:
        """:meth:`_prepare` of every side to embed, in order (generated, then reference if any, per clip). On a CPU
        the sides are prepared side by side on the intra-op threads' count of workers, one thread each (resampling and
        log-mel are small ops; each side's result does not depend on where it was computed)."""
        tasks = []
        for clip in clips:
            crop = _crop_length(clip, self.recipe)
            tasks.append((clip.audio, clip.sample_rate, crop, "generated"))
            if self.uses_reference_audio and clip.reference is not None:
                tasks.append((clip.reference, int(clip.reference_sr or clip.sample_rate), crop, "reference"))
        cpu = self._fe_device.type == "cpu"
        workers = torch.get_num_threads() if cpu else 1
        with cpu_threads(1 if cpu else None):
            return run_calls(lambda t: self._prepare(*t), tasks, workers)

    def _prepare_pair(self, clip: Clip, jobs: list, prepared) -> ClipResult:
        """Both sides' examples (the next items of ``prepared``) appended to ``jobs``; the clip's result with the
        reasons of a skipped side. audiocraft writes each side's wav on its own: a failure on one side drops only that
        side."""
        res = ClipResult(values={"fad_windows": 0})
        reasons = []
        ex, why = next(prepared)
        if ex is None:
            reasons.append(why)
            self.state["n_gen_skipped"] += 1
        else:
            jobs.append((clip.id, "gen", ex))
            self.state["n_clips"] += 1
        if self.uses_reference_audio:
            res.values["fad_ref_windows"] = 0
            ex, why = (None, "no reference audio") if clip.reference is None else next(prepared)
            if ex is None:
                reasons.append(why)
                self.state["n_ref_skipped"] += 1
            else:
                jobs.append((clip.id, "ref", ex))
        if reasons:
            res.skipped = self.skip("; ".join(reasons)).skipped
        return res

    def _accumulate(self, side: str, e: np.ndarray) -> None:
        x = np.asarray(e, np.float64)
        self.state[f"{side}_n"] = self.state[f"{side}_n"] + x.shape[0]
        self.state[f"{side}_sum"] = self.state[f"{side}_sum"] + x.sum(0)
        self.state[f"{side}_sum_outer"] = self.state[f"{side}_sum_outer"] + x.T @ x

    def _stats(self, side: str) -> GaussianStats:
        return GaussianStats(
            dim=self.dim,
            n=int(round(float(self.state[f"{side}_n"]))),
            sum=self.state[f"{side}_sum"].copy(),
            sum_outer=self.state[f"{side}_sum_outer"].copy(),
        )

    def reference_mean_cov(self) -> tuple[np.ndarray, np.ndarray, int]:
        if self._ref_file is not None:
            return self._ref_file
        st = self._stats("ref")
        mu, sigma = st.mean_cov("reference windows (VGGish embeddings)")
        return mu, sigma, st.n

    def _compute(self) -> dict[str, float]:
        gen = self._stats("gen")
        try:
            mu_g, sigma_g = gen.mean_cov("generated windows (VGGish embeddings)")
            mu_r, sigma_r, n_ref = self.reference_mean_cov()
        except FrechetError as exc:
            raise MetricUnavailable(str(exc)) from exc
        for side, sigma, n in (("generated", sigma_g, gen.n), ("reference", sigma_r, n_ref)):
            rank = covariance_rank(sigma)
            if rank < self.dim:
                self.warnings.append(
                    f"the {side} side's covariance has rank {rank} < {self.dim} ({n} windows): its embeddings span too "
                    f"few directions (repeated or stationary audio?), so this FAD exists but is not comparable with "
                    f"FADs of full-rank sets")
        fad = frechet_distance(mu_g, sigma_g, mu_r, sigma_r, eps=float(self.recipe.get("fd_eps", 1e-7)),
                               warnings=self.warnings)
        skipped = {f"n_{s}_skipped": int(round(float(self.state[f"n_{s}_skipped"]))) for s in ("gen", "ref")}
        return {"fad": float(fad), "n_gen_windows": int(gen.n), "n_ref_windows": int(n_ref), **skipped}

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": self.recipe.get("protocol", ""),
            **self.checkpoint.describe(),
            "model_size": self.model_size,
            "reference_stats": self.reference_stats_path,
        }

    # -- reference statistics files ----------------------------------------------------------------------------------
    def write_reference_artifacts(self, folder: Path) -> list[Path]:
        """``<folder>/fad_reference.npz`` (see :meth:`export_reference_stats`) when the reference side was embedded
        here; nothing when it came from a statistics file."""
        if self._ref_file is not None:
            return []
        return [self.export_reference_stats(Path(folder) / "fad_reference.npz")]

    def _identity(self) -> dict[str, Any]:
        return {
            "protocol": str(self.recipe.get("protocol", "")),
            "checkpoint": self.checkpoint.name,
            "checkpoint_sha256": self.checkpoint.sha256 or "",
            "random_weights": bool(self.checkpoint.random),
            "random_seed": self.seed if self.checkpoint.random else -1,
            "embedding": {k: self.recipe.get(k) for k in EMBEDDING_KEYS},
        }

    def export_reference_stats(self, path) -> Path:
        """Write the reference side's statistics (mu, sigma, n and the sums) with what identifies them."""
        if self._ref_file is not None:
            raise FADError(f"the reference statistics came from {self.reference_stats_path}; nothing new to export")
        return write_reference_stats(path, self._stats("ref"), self._identity())


# ----------------------------------------------------------------------------------------------------------------
# Helpers: the recipe's checks, the front end, reference statistics files
# ----------------------------------------------------------------------------------------------------------------
def _check_recipe(r: Mapping[str, Any]) -> None:
    if r.get("use_pca"):
        raise FADError("metrics.fad.use_pca=true: the PCA/whitening postprocessor (torchvggish "
                       "vggish_pca_params-970ea276.pth) is not implemented; neither FAD protocol uses it")
    if r.get("stats", "pooled") != "pooled":
        raise FADError(f"metrics.fad.stats={r.get('stats')!r}: only 'pooled' (every window of every clip in one "
                       f"Gaussian, as both protocols do) is implemented")
    if r.get("resampler", "julius") not in ("julius", "resampy"):
        raise FADError(f"metrics.fad.resampler={r.get('resampler')!r}: expected julius or resampy")
    if r.get("window_samples") and not r.get("window_step"):
        raise FADError("metrics.fad.window_step must be set when window_samples is")


def _front_end(r: Mapping[str, Any]) -> LogMel:
    return LogMel(
        sample_rate=int(r["sample_rate"]), window_length=int(r["stft_window"]), hop_length=int(r["stft_hop"]),
        fft_length=int(r["fft_length"]), num_mel_bins=int(r["mel_bins"]), lower_edge_hertz=float(r["mel_min_hz"]),
        upper_edge_hertz=float(r["mel_max_hz"]), log_offset=float(r["log_offset"]),
        example_frames=int(r["example_frames"]), example_hop_frames=int(r["example_hop_frames"]),
    )


def write_reference_stats(path, st: GaussianStats, ident: Mapping[str, Any]) -> Path:
    """An evalkit FAD reference statistics file (``kind`` :data:`STATS_KIND`): mu, sigma, n, the sums, and the
    identity of the embeddings (protocol, checkpoint, front-end constants) that :func:`read_reference_stats` checks."""
    from evalkit.io import write_npz

    mu, sigma = st.mean_cov("reference windows (VGGish embeddings)")
    return write_npz(
        path, kind=np.asarray(STATS_KIND), mu=mu, sigma=sigma, n=np.asarray(st.n, np.int64),
        ref_n=np.asarray(st.n, np.int64), ref_sum=st.sum, ref_sum_outer=st.sum_outer,
        protocol=np.asarray(ident["protocol"]), checkpoint=np.asarray(ident["checkpoint"]),
        checkpoint_sha256=np.asarray(ident["checkpoint_sha256"]), random_weights=np.asarray(ident["random_weights"]),
        random_seed=np.asarray(ident["random_seed"], np.int64),
        embedding_json=np.asarray(json.dumps(ident["embedding"], sort_keys=True)),
    )


def read_reference_stats(path: str, mine: Mapping[str, Any], dim: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mu, sigma, n)`` of a statistics file, refused (naming ``reference.stats``) unless its protocol, weights
    and embedding settings are this run's."""
    from evalkit.io import read_npz

    p = Path(path).expanduser()
    setting = f"reference.stats={path}"
    if not p.is_file():
        raise FADError(f"{setting}: no such file")
    try:
        z = read_npz(p)
    except Exception as exc:
        raise FADError(f"{setting}: not a readable .npz ({type(exc).__name__}: {exc})") from exc
    if str(z.get("kind", "")) != STATS_KIND:
        raise FADError(f"{setting}: not an evalkit FAD reference statistics file (kind {z.get('kind')!r})")
    theirs = {
        "protocol": str(z["protocol"]), "checkpoint": str(z["checkpoint"]),
        "checkpoint_sha256": str(z["checkpoint_sha256"]), "random_weights": bool(z["random_weights"]),
        "random_seed": int(z["random_seed"]), "embedding": json.loads(str(z["embedding_json"])),
    }
    _check_same_embeddings(setting, theirs, mine)
    mu, sigma, n = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64), int(z["n"])
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise FADError(f"{setting}: mu {mu.shape} / sigma {sigma.shape} do not fit dimension {dim}")
    return mu, sigma, n


def _check_same_embeddings(setting: str, theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> None:
    if theirs["protocol"] != mine["protocol"]:
        raise FADError(f"{setting}: written for protocol {theirs['protocol']!r}, this run uses {mine['protocol']!r}")
    if theirs["random_weights"] != mine["random_weights"] or (
            mine["random_weights"] and theirs["random_seed"] != mine["random_seed"]):
        raise FADError(
            f"{setting}: written with {'random' if theirs['random_weights'] else 'released'} VGGish weights "
            f"(seed {theirs['random_seed']}), this run uses {'random' if mine['random_weights'] else 'released'} "
            f"(seed {mine['random_seed']})")
    if not mine["random_weights"] and theirs["checkpoint_sha256"] != mine["checkpoint_sha256"]:
        raise FADError(
            f"{setting}: written with checkpoint {theirs['checkpoint']} (sha256 {theirs['checkpoint_sha256']}), "
            f"this run uses {mine['checkpoint']} (sha256 {mine['checkpoint_sha256']})")
    diff = {k: (theirs["embedding"].get(k), v) for k, v in mine["embedding"].items() if theirs["embedding"].get(k) != v}
    if diff:
        raise FADError(f"{setting}: its embeddings were made with other settings (file vs this run): "
                       + ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in sorted(diff.items())))


def _crop_length(clip: Clip, recipe: Mapping[str, Any]) -> int | None:
    """The reference's length at the rate both sides are cut at (audiocraft protocol: ``crop_to_reference``), else
    None."""
    if not recipe.get("crop_to_reference") or clip.reference is None:
        return None
    solver_sr = recipe.get("solver_sample_rate")
    rsr = int(clip.reference_sr or clip.sample_rate)
    crop = clip.reference.shape[-1]
    if solver_sr and rsr != int(solver_sr):
        return _resampled_length(crop, rsr, int(solver_sr))
    if not solver_sr and rsr != clip.sample_rate:
        return int(round(crop * clip.sample_rate / rsr))
    return crop


def _min_samples(front: LogMel) -> int:
    """Fewest samples that give one example: ``window + (example_frames - 1) * hop``."""
    return front.window_length + (front.example_frames - 1) * front.hop_length


def _resampled_length(n: int, from_rate: int, to_rate: int) -> int:
    """Length of ``julius.resample_frac(x[n], from, to)`` (its default ``output_length``): ``floor(n * to / from)``
    after reducing the ratio by the gcd."""
    import math

    g = math.gcd(from_rate, to_rate)
    return (n * (to_rate // g)) // (from_rate // g)


__all__ = ["FAD", "FADError", "EMBEDDING_DIM"]
