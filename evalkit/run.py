"""One run: prompts -> generation -> post-processing -> metrics -> run folder. Hydra-free (``run(cfg, out_dir)``).

Never loses work:
- every file is written atomically (temp name, fsync, rename), so a file that exists is whole;
- generation goes batch by batch; a batch whose clips all exist is skipped on restart, a partial one is
  regenerated with its recorded seed (bit for bit the same audio);
- scoring goes in fixed batches of ``metric_batch_size`` clips in prompt order; after each batch the per-clip rows,
  the embeddings and then every metric's sufficient statistics are saved, so a restart reloads the statistics and
  continues with the next batch: the same sums in the same order -> the same numbers, bit for bit;
- the output folder's ``config.yaml`` is the run's identity: restarting with another config in the same folder is
  refused (``overwrite=true`` starts afresh).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from evalkit import io as eio
from evalkit.audio import AudioError, convert_audio, load_audio, loudness_normalize
from evalkit.data.prompts import Prompt, load_prompts
from evalkit.data.references import ReferenceSet, synthesize_references
from evalkit.metrics.base import Clip, Metric, resolve_recipe
from evalkit.registry import get_generator, get_metric

log = logging.getLogger("evalkit")

#: config keys that do not change any number (may differ between a run and its resumption)
VOLATILE_KEYS = ("progress", "num_workers", "overwrite", "device", "cache")

RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: the model and/or the metric backbones of this run have random weights. These numbers exercise "
    "the pipeline and say nothing about any released model."
)


class RunError(RuntimeError):
    pass


_FAULTS: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Crash testing: ``EVALKIT_KILL_AT=<point>:<n>`` SIGKILLs this process the n-th time it reaches ``point``
    (``generate:clip`` right after a clip file is written; ``score:rows`` after a batch's rows are written and
    before its statistics are saved - the worst moments to die). No effect when the variable is unset."""
    spec = os.environ.get("EVALKIT_KILL_AT")
    if not spec or not spec.startswith(point + ":"):
        return
    _FAULTS[point] = _FAULTS.get(point, 0) + 1
    if _FAULTS[point] == int(spec.rsplit(":", 1)[1]):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _tqdm(it, enabled: bool, **kw):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, **kw)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode == 0 and sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).resolve().parent,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except Exception:
        pass
    return "unknown"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("evalkit", "torch", "torchaudio", "transformers", "numpy", "scipy", "pandas", "datasets", "hydra-core",
                "julius", "soundfile", "frechet-audio-distance", "laion-clap", "hear21passt", "librosa"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(), "hostname": platform.node()}
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (same file system) or atomic copy."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _config_identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in VOLATILE_KEYS}


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------
class Run:
    def __init__(self, cfg: DictConfig, out_dir: str | Path) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = bool(cfg.get("progress", True))
        self.container = OmegaConf.to_container(cfg, resolve=True)
        self.container.pop("hydra", None)
        from evalkit import distributed

        self.dist = distributed.init()

    # -- identity ------------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Out-of-range settings stop the run before any work, naming the setting."""
        g = self.cfg.generation
        checks = [
            (float(g.duration) > 0, f"generation.duration={g.duration}: must be > 0 seconds"),
            (float(g.guidance_scale) >= 1 or float(g.guidance_scale) == 0,
             f"generation.guidance_scale={g.guidance_scale}: must be >= 1 (1 or 0 = no guidance)"),
            (int(g.top_k) >= 0, f"generation.top_k={g.top_k}: must be >= 0"),
            (0 <= float(g.top_p) <= 1, f"generation.top_p={g.top_p}: must be in [0, 1] (0 = off, audiocraft)"),
            (float(g.temperature) > 0, f"generation.temperature={g.temperature}: must be > 0"),
            (str(self.cfg.batch_size) == "auto" or int(self.cfg.batch_size) >= 1, f"batch_size={self.cfg.batch_size}: must be >= 1 or auto"),
            (int(self.cfg.metric_batch_size) >= 1, f"metric_batch_size={self.cfg.metric_batch_size}: must be >= 1"),
            (str(self.cfg.precision) in ("fp32", "fp16", "bf16"), f"precision={self.cfg.precision}: fp32, fp16 or bf16"),
            (str(self.cfg.backbone_weights) in ("released", "random"), f"backbone_weights={self.cfg.backbone_weights}: released or random"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def claim_folder(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.rank != 0:
            return
        cfg_path = self.out / "config.yaml"
        if cfg_path.exists():
            old = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
            if self.cfg.get("overwrite"):
                for sub in ("audio", "generation", "scores", "embeddings", "stats", "references"):
                    d = self.out / sub
                    if d.is_dir():
                        import shutil

                        shutil.rmtree(d)
            else:
                diff = _diff_keys(_config_identity(old), _config_identity(self.container))
                if diff:
                    raise RunError(
                        f"{self.out} holds a run of another config (differs in: {', '.join(diff[:8])}). Resuming would "
                        f"mix two runs. Use a new folder (hydra.run.dir=...) or overwrite=true to start afresh."
                    )
                log.info("resuming the run in %s", self.out)
        eio.write_text(cfg_path, OmegaConf.to_yaml(OmegaConf.create(self.container)))

    # -- inputs --------------------------------------------------------------------------------------------------------
    def load_inputs(self) -> None:
        self.prompts: list[Prompt] = load_prompts(self.cfg.dataset)
        rcfg = self.cfg.reference
        if rcfg.get("dir"):
            self.refs = ReferenceSet.from_dir(rcfg.dir)
        elif rcfg.get("synthesize"):
            self.refs = synthesize_references([p.ref_key for p in self.prompts], self.out / "references",
                                              duration=float(self.cfg.generation.duration))
        else:
            self.refs = ReferenceSet.empty()
        keys = [p.ref_key for p in self.prompts]
        if self.refs.root is None:
            # fail before hours of generation, not after: which selected metrics compare against reference audio?
            need = [n for n in (self.cfg.get("metrics") or {}) if get_metric(n).needs_reference
                    and not (n == "fad" and rcfg.get("stats"))
                    and not (n == "chroma" and self.cfg.model.get("melody") and self.melody_source() == "none")]
            if need:
                raise RunError(
                    f"metrics {', '.join(need)} compare with reference audio, and none was given: pass reference.dir=DIR "
                    f"(clips named <id>.wav|flac|mp3; for MusicCaps, <ytid>.wav), reference.stats=FILE for FAD, or "
                    f"leave them out (e.g. metrics=[clap])")
        self.missing_refs = [p.id for p in self.prompts if self.refs.get(p.ref_key) is None]
        self.extra_refs = self.refs.extra(keys) if self.refs.root is not None else []
        if self.refs.root is not None and len(self.missing_refs) == len(self.prompts):
            raise RunError(f"reference.dir={rcfg.get('dir')}: none of the {len(self.prompts)} prompt ids has a reference "
                           f"file (expected names like {keys[0]}.wav)")

    # -- generation ------------------------------------------------------------------------------------------------------
    def build_generator(self):
        mcfg = OmegaConf.to_container(self.cfg.model, resolve=True)
        gen_cls = get_generator(mcfg.get("generator", "musicgen"))
        if mcfg.get("generator") == "folder":
            return gen_cls(mcfg)
        return gen_cls(mcfg, OmegaConf.to_container(self.cfg.generation, resolve=True), device=self.device(),
                       precision=self.cfg.precision, seed=int(self.cfg.seed),
                       batch_size="auto" if str(self.cfg.batch_size) == "auto" else int(self.cfg.batch_size))

    def device(self) -> str:
        """``device`` from the config; under torchrun on GPUs each rank takes ``cuda:LOCAL_RANK``."""
        dev = str(self.cfg.device)
        if self.dist.world > 1 and dev in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.dist.local_rank}"
        return dev

    def melody_source(self) -> str:
        return str(self.cfg.get("melody", {}).get("source", "none")) if self.cfg.model.get("melody") else "none"

    def generate(self) -> dict[str, dict[str, Any]]:
        """-> {id: {audio_path, seed, ...}}. Skips finished batches."""
        gen = self.generator
        rows: dict[str, dict[str, Any]] = {}
        if getattr(gen, "name", "") == "folder":
            for p in self.prompts:
                path = gen.path(p.id)
                rows[p.id] = {"audio_path": str(path) if path else None, "seed": None,
                              "generation_skipped": None if path else f"no file {p.id}.<ext> in model.dir"}
            return rows
        melody = self.melody_source()
        if self.cfg.model.get("melody") and melody == "reference" and self.refs.root is None:
            raise RunError("a melody model conditions each prompt on its reference clip: give reference.dir=DIR, or set "
                           "melody.source=none for text-only generation (the chroma metric is then skipped)")
        audio_dir, meta_dir = self.out / "audio", self.out / "generation"
        if gen.batch_size == "auto":
            plan_path = meta_dir / "plan.json"
            if plan_path.exists():  # a resumed run keeps the batches it started with
                gen.batch_size = int(eio.read_json(plan_path)["batch_size"])
            else:
                n = gen.find_batch_size(self.prompts) if self.dist.rank == 0 else 0
                gen.batch_size = int(self.dist.broadcast(n))
                if self.dist.rank == 0:
                    eio.write_json(plan_path, {"batch_size": gen.batch_size, "found_by": "auto (largest power of two that fits)"})
            log.info("batch_size=auto -> %d", gen.batch_size)
        batches = gen.plan(self.prompts)
        expected = gen.num_samples
        rank, world = self.dist.rank, self.dist.world
        for batch in _tqdm(batches, self.progress and rank == 0, desc="generate", unit="batch"):
            paths = {p.id: audio_dir / f"{p.id}.flac" for p in batch.prompts}
            meta_path = meta_dir / f"batch-{batch.index:05d}.json"
            done = batch.index % world != rank or (meta_path.exists() and all(self._audio_ok(paths[i], expected) for i in paths))
            key = self._cache_key(batch, melody) if self.gen_cache else None
            if not done and key and self._from_cache(key, paths, expected):
                eio.write_json(meta_path, {"batch": batch.index, "seed": batch.seed, "ids": [p.id for p in batch.prompts],
                                           "max_new_tokens": gen.max_new_tokens, "melody": melody if gen.melody else None,
                                           "cache_key": key, "from_cache": True})
                done = True
            if not done:
                melodies = [None] * len(batch.prompts) if gen.melody else None  # melody.source=none: text only
                if gen.melody and melody == "reference":
                    melodies = []
                    for p in batch.prompts:
                        rp = self.refs.get(p.ref_key)
                        melodies.append(load_audio(rp) if rp else None)
                clips = gen.generate_batch(batch, melodies)
                for c in clips:
                    if not self._audio_ok(paths[c.id], expected):
                        from evalkit.audio import save_audio

                        save_audio(paths[c.id], c.audio, c.sample_rate)
                        fault_point("generate:clip")
                if key:
                    self._to_cache(key, paths)
                eio.write_json(meta_path, {"batch": batch.index, "seed": batch.seed, "ids": [p.id for p in batch.prompts],
                                           "max_new_tokens": gen.max_new_tokens, "melody": melody if gen.melody else None,
                                           "cache_key": key, "from_cache": False})
            for p in batch.prompts:
                rows[p.id] = {"audio_path": str(paths[p.id]), "seed": batch.seed, "generation_batch": batch.index,
                              "generation_skipped": None}
        self.dist.barrier()  # every rank's clips are on disk before anyone scores
        return rows

    # -- generation cache: audio reused across runs whose generation inputs are the same ---------------------------
    def _cache_root(self, kind: str) -> Path | None:
        """``<cache.dir or $EVALKIT_CACHE>/<kind>`` when ``cache.<kind>`` is on, else None."""
        c = self.cfg.get("cache") or {}
        if not c.get(kind, False):
            return None
        from evalkit.backbones.weights import cache_dir

        return Path(c.get("dir") or cache_dir()) / kind

    @property
    def gen_cache(self) -> Path | None:
        return self._cache_root("generations")

    def _cache_key(self, batch, melody: str) -> str:
        """A content hash of everything that decides a batch's samples: the model's identity, the generation
        protocol and speed settings, precision, the batch seed, its prompts (ids and captions, in order) and, for
        melody conditioning, the bytes of each reference clip. Paths, metrics and run folders play no part."""
        import hashlib

        m = self.cfg.model
        ident = {"model": {k: m.get(k) for k in ("name", "hub_id", "revision", "path", "tiny", "init_seed", "melody")},
                 "generation": OmegaConf.to_container(self.cfg.generation, resolve=True),
                 "precision": str(self.cfg.precision), "seed": batch.seed,
                 "prompts": [[p.id, p.caption] for p in batch.prompts], "melody": melody}
        if self.generator.melody and melody == "reference":
            ident["melody_audio"] = [eio.sha256_file(self.refs.get(p.ref_key)) if self.refs.get(p.ref_key) else None
                                     for p in batch.prompts]
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def _from_cache(self, key: str, paths: dict[str, Path], expected: int) -> bool:
        src = self.gen_cache / key[:2] / key
        if not all(self._audio_ok(src / p.name, expected) for p in paths.values()):
            return False
        for p in paths.values():
            _link_or_copy(src / p.name, p)
        log.info("batch %s: audio reused from the generation cache", key[:12])
        return True

    def _to_cache(self, key: str, paths: dict[str, Path]) -> None:
        dst = self.gen_cache / key[:2] / key
        for p in paths.values():
            if not (dst / p.name).exists():
                _link_or_copy(p, dst / p.name)

    @staticmethod
    def _audio_ok(path: Path, expected_samples: int) -> bool:
        if not path.exists():
            return False
        try:
            import soundfile as sf

            return sf.info(str(path)).frames == expected_samples
        except Exception:
            return False

    # -- scoring --------------------------------------------------------------------------------------------------------
    def build_metrics(self) -> dict[str, Metric]:
        from evalkit.generate.musicgen import resolve_device

        device = resolve_device(self.device())
        metrics: dict[str, Metric] = {}
        mnode = self.cfg.get("metrics") or {}
        for name in mnode:
            recipe = resolve_recipe(OmegaConf.to_container(mnode[name], resolve=True))
            recipe.setdefault("backbone_weights", self.cfg.backbone_weights)
            if recipe.get("backbone_weights") is None:
                recipe["backbone_weights"] = self.cfg.backbone_weights
            if name == "fad":
                recipe["reference_stats"] = self.cfg.reference.get("stats")
            if name == "chroma" and self.cfg.model.get("melody") and self.melody_source() == "none":
                log.warning("melody.source=none: the chroma metric is skipped")
                self.skipped_metrics["chroma"] = "melody.source=none (text-only generation)"
                continue
            metrics[name] = get_metric(name)(recipe, device=device)
        return metrics

    def _load_clip(self, p: Prompt, gen_row: dict[str, Any]) -> tuple[Clip | None, str | None]:
        path = gen_row.get("audio_path")
        if not path:
            return None, gen_row.get("generation_skipped") or "no generated audio"
        try:
            wav, sr = load_audio(path)
        except AudioError as exc:
            return None, f"generated audio unusable: {exc}"
        ref, rsr = None, None
        rpath = self.refs.get(p.ref_key)
        if rpath is not None:
            try:
                ref, rsr = load_audio(rpath)
            except AudioError as exc:
                ref, rsr = None, None
                gen_row["reference_error"] = str(exc)
        pp = self.cfg.postprocess
        if ref is not None and pp.get("reference_sample_rate"):
            # audiocraft's dataset loader hands references to the solver already at its rate and channel count
            # (audio_dataset.py: convert_audio(wav, sr, 32000, channels)); every metric then starts from that
            channels = int(self.cfg.model.get("channels") or ref.shape[0])
            ref = convert_audio(ref, rsr, int(pp.reference_sample_rate), channels)
            rsr = int(pp.reference_sample_rate)
        if pp.get("enabled"):
            if pp.get("crop_to_reference") and ref is not None:
                ref_len = int(round(ref.shape[-1] * sr / rsr))
                wav = wav[..., :ref_len]
            if pp.get("strategy") == "loudness":
                try:
                    wav = loudness_normalize(wav, sr, float(pp.loudness_headroom_db), float(pp.energy_floor), bool(pp.clamp))
                except AudioError as exc:
                    return None, f"post-processing (loudness) failed: {exc}"
                if not torch.isfinite(wav).all():
                    return None, "post-processing (loudness) produced non-finite samples"
        return Clip(p.id, p.caption, wav, sr, ref, rsr), None

    def score(self, gen_rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Score in fixed batches (prompt order). Rank r of N takes batches b with b % N == r and keeps its own
        state file; after every batch: rows, embeddings, then the state (with the set of finished batches).
        Rank 0 then merges every rank's sums (addition, so N processes give the one-process number)."""
        import pandas as pd

        bs = int(self.cfg.metric_batch_size)
        if bs < 1:
            raise RunError(f"metric_batch_size={bs}: must be >= 1")
        rank, world = self.dist.rank, self.dist.world
        scores_dir, emb_dir = self.out / "scores", self.out / "embeddings"
        state_path = scores_dir / f"state-{rank:03d}-of-{world:03d}.npz"
        batches = [self.prompts[i:i + bs] for i in range(0, len(self.prompts), bs)]
        done = self._load_state(state_path, self.metrics, len(batches))
        mine = [b for b in range(len(batches)) if b % world == rank]
        todo = [b for b in mine if not (b in done and (scores_dir / f"rows-{b:05d}.parquet").exists())]
        # audio decoding, resampling and post-processing of batch i+1 run in worker threads while the metrics
        # compute on batch i (soundfile, julius and numpy release the GIL)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=max(1, int(self.cfg.get("num_workers") or 0) or 2))
        futures = {}

        def prefetch(i: int) -> None:
            if i < len(todo) and todo[i] not in futures:
                futures[todo[i]] = pool.submit(self._load_batch, batches[todo[i]], gen_rows)

        prefetch(0)
        for i, b in enumerate(_tqdm(todo, self.progress and rank == 0, desc="score", unit="batch")):
            rows_path = scores_dir / f"rows-{b:05d}.parquet"
            prefetch(i + 1)
            loaded = futures.pop(b).result()
            brows, arrays = self._score_batch(loaded)
            if arrays:
                eio.write_npz(emb_dir / f"batch-{b:05d}.npz", **arrays)
            eio.write_parquet(rows_path, pd.DataFrame(list(brows.values())))
            fault_point("score:rows")
            done.add(b)
            state = {"__done__": np.asarray(sorted(done), np.int64), "__n_batches__": np.asarray(len(batches))}
            for name, m in self.metrics.items():
                state.update({f"{name}/{k}": v for k, v in m.state_dict().items()})
            eio.write_npz(state_path, **state)
        pool.shutdown()
        self.dist.barrier()
        if world > 1:  # rank 0: the merged statistics of every rank
            for name, m in self.metrics.items():
                m.reset()
            for r in range(world):
                st = eio.read_npz(scores_dir / f"state-{r:03d}-of-{world:03d}.npz")
                for name, m in self.metrics.items():
                    self._add_state(m, {k.split("/", 1)[1]: v for k, v in st.items() if k.startswith(name + "/")})
        rows: dict[str, dict[str, Any]] = {}
        for b in range(len(batches)):
            for r in pd.read_parquet(scores_dir / f"rows-{b:05d}.parquet").to_dict("records"):
                rows[r["id"]] = r
        return rows

    @staticmethod
    def _load_state(path: Path, metrics: dict[str, Metric], n_batches: int) -> set[int]:
        """The finished batches of an earlier attempt, with their statistics loaded into ``metrics``. A state file
        that fails its checks is not trusted: scoring starts again from the first batch."""
        if not path.exists():
            return set()
        try:
            state = eio.read_npz(path)
            if int(state["__n_batches__"]) != n_batches:
                raise ValueError("the batch layout changed")
            for name, m in metrics.items():
                m.load_state_dict({k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(name + "/")})
            return {int(b) for b in state["__done__"]}
        except Exception as exc:
            log.warning("%s: unusable saved state (%s); scoring from the start", path, exc)
            for m in metrics.values():
                m.reset()
            return set()

    def _load_batch(self, chunk: list[Prompt], gen_rows) -> tuple[list[Clip], dict[str, dict[str, Any]]]:
        clips, brows = [], {}
        for p in chunk:
            row = {"id": p.id, "skip_reason": None}
            clip, why = self._load_clip(p, gen_rows[p.id])
            if clip is None:
                row["skip_reason"] = why
            else:
                clips.append(clip)
            brows[p.id] = row
        return clips, brows

    def _score_batch(self, loaded) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
        clips, brows = loaded
        arrays: dict[str, np.ndarray] = {}
        for name, m in self.metrics.items():
            use_ref = m.needs_reference and getattr(m, "uses_reference_audio", True)
            mclips = [c for c in clips if not use_ref or c.reference is not None]
            for c in clips:
                if use_ref and c.reference is None:
                    brows[c.id][f"{name}_skipped"] = "no reference clip"
            if not mclips:
                continue
            for cid, vals in self._update_metric(name, m, mclips).items():
                for k, v in vals.items():
                    if k.startswith("_"):
                        arrays[f"{cid}/{k}"] = np.asarray(v)
                    else:
                        brows[cid][k] = v
        return brows, arrays

    def _update_metric(self, name: str, m: Metric, clips: list[Clip]) -> dict[str, dict[str, Any]]:
        """One metric on one batch. The batch's contribution is computed on a zeroed state and then added (so the
        order of the sums never depends on the cache), and kept in the score cache under a hash of the recipe, the
        backbone's identity and the exact clip contents: a later run that scores the same audio with the same
        recipe (say, after adding another metric) reads it back instead of running the backbone again."""
        key, path = None, None
        if self.score_cache is not None:
            key = self._score_key(name, m, clips)
            path = self.score_cache / name / key[:2] / f"{key}.npz"
            if path.exists():
                try:
                    cached = eio.read_npz(path)
                    delta = {k[6:]: v for k, v in cached.items() if k.startswith("state/")}
                    out = json.loads(str(cached["rows"]))
                    for k, v in cached.items():
                        if k.startswith("array/"):
                            cid, col = k[6:].split("|", 1)
                            out.setdefault(cid, {})[col] = v
                    self._add_state(m, delta)
                    return out
                except Exception as exc:  # a cache entry that fails its checks is recomputed, not trusted
                    log.warning("%s: unusable score cache entry (%s); recomputing", path, exc)
        saved = m.state_dict()
        m.reset()
        out = m.update(clips)
        delta = m.state_dict()
        m.load_state_dict(saved)
        self._add_state(m, delta)
        if path is not None:
            rows = {cid: {k: v for k, v in vals.items() if not k.startswith("_")} for cid, vals in out.items()}
            entry = {f"state/{k}": v for k, v in delta.items()}
            entry["rows"] = np.asarray(json.dumps(rows, default=float))
            for cid, vals in out.items():
                for k, v in vals.items():
                    if k.startswith("_"):
                        entry[f"array/{cid}|{k}"] = np.asarray(v)
            eio.write_npz(path, **entry)
        return out

    @staticmethod
    def _add_state(m: Metric, delta: dict[str, np.ndarray]) -> None:
        for k in m.state:
            m.state[k] = m.state[k] + np.asarray(delta[k], np.float64)

    @property
    def score_cache(self) -> Path | None:
        return self._cache_root("scores")

    def _score_key(self, name: str, m: Metric, clips: list[Clip]) -> str:
        import hashlib

        h = hashlib.sha256()
        from evalkit import __version__

        h.update(json.dumps({"metric": name, "recipe": m.recipe, "backbone": m.describe(), "evalkit": __version__},
                            sort_keys=True, default=str).encode())
        for c in clips:
            h.update(json.dumps([c.id, c.caption, c.sample_rate, c.reference_sr]).encode())
            h.update(c.audio.detach().cpu().float().contiguous().numpy().tobytes())
            if c.reference is not None:
                h.update(c.reference.detach().cpu().float().contiguous().numpy().tobytes())
        return h.hexdigest()

    # -- outputs --------------------------------------------------------------------------------------------------------
    def write_outputs(self, gen_rows, score_rows) -> dict[str, Any]:
        import pandas as pd

        table = []
        for p in self.prompts:
            rpath = self.refs.get(p.ref_key)
            row = {"id": p.id, "caption": p.caption, "reference_path": str(rpath) if rpath else None}
            row.update({k: v for k, v in gen_rows.get(p.id, {}).items()})
            row.update({k: v for k, v in score_rows.get(p.id, {}).items() if k != "id"})
            table.append(row)
        df = pd.DataFrame(table)
        eio.write_parquet(self.out / "clips.parquet", df)
        gdesc = self.generator.describe()
        metrics_out: dict[str, Any] = {}
        any_random = bool(gdesc.get("random_weights"))
        for name, m in self.metrics.items():
            desc = m.describe()
            try:
                values = m.compute()
            except Exception as exc:  # e.g. FAD with fewer windows than dimensions: report it, keep the others
                log.error("%s could not be computed: %s", name, exc)
                metrics_out[name] = {"value": None, "error": f"{type(exc).__name__}: {exc}", "card_column": m.card_column,
                                     "protocol": desc.get("protocol"), "higher_is_better": m.higher_is_better}
                any_random |= bool(desc.get("random_weights"))
                continue
            any_random |= bool(desc.get("random_weights"))
            col = f"{name}_skipped"  # the metric's own skips and the run's (no reference) - counted once, per clip
            n_scored = int(len(df) - df["skip_reason"].notna().sum() - (df[col].notna().sum() if col in df else 0))
            metrics_out[name] = {"value": values.get(m.primary), "primary": m.primary, "protocol": desc.get("protocol"),
                                 "higher_is_better": m.higher_is_better, "card_column": m.card_column,
                                 "n_clips": n_scored, "n_skipped": int(df[col].notna().sum()) if col in df else 0,
                                 **{k: v for k, v in desc.items() if k != "protocol"}, "values": values}
        for name, why in self.skipped_metrics.items():
            metrics_out[name] = {"value": None, "skipped": why}
        if self.refs.synthetic:
            any_random = True
        summary = {
            "evalkit_version": versions().get("evalkit"),
            "run_dir": str(self.out),
            "model": {k: gdesc.get(k) for k in ("name", "hub_id", "source", "random_weights")},
            "random_weights": any_random,
            "note": RANDOM_WEIGHTS_NOTE if any_random else None,
            "synthetic_references": bool(self.refs.synthetic),
            "dataset": OmegaConf.to_container(self.cfg.dataset, resolve=True),
            "n_clips": len(self.prompts),
            "n_generated": int(df["audio_path"].notna().sum()) if "audio_path" in df else 0,
            "n_missing_reference": len(self.missing_refs),
            "missing_reference_ids": self.missing_refs,
            "extra_reference_ids": self.extra_refs[:100],
            "n_skipped": int(df["skip_reason"].notna().sum()),
            "metrics": metrics_out,
        }
        eio.write_json(self.out / "summary.json", summary)
        if self.cfg.reference.get("write_stats", True):
            for name, m in self.metrics.items():
                if hasattr(m, "export_reference_stats") and getattr(m, "uses_reference_audio", True):
                    try:
                        m.export_reference_stats(self.out / "stats" / f"{name}_reference.npz")
                    except Exception as exc:  # too few clips for statistics: not a reason to lose the run
                        log.warning("could not write %s reference statistics: %s", name, exc)
        return summary

    def manifest(self, start: float, end: float | None, status: str) -> None:
        from evalkit.generate.musicgen import resolve_device

        eio.write_json(self.out / "manifest.json", {
            "status": status, "argv": sys.argv, "cwd": os.getcwd(),
            "start": _dt.datetime.fromtimestamp(start, _dt.timezone.utc).isoformat(),
            "end": _dt.datetime.fromtimestamp(end, _dt.timezone.utc).isoformat() if end else None,
            "seconds": round(end - start, 3) if end else None,
            "git_sha": git_sha(), "versions": versions(), **device_info(resolve_device(self.cfg.device)),
            "seed": int(self.cfg.seed), "world_size": self.dist.world, "config": self.container,
        })

    # -- all of it -----------------------------------------------------------------------------------------------------
    def __call__(self) -> dict[str, Any]:
        start = time.time()
        self.validate()
        self.claim_folder()
        self.dist.barrier()
        if self.dist.rank == 0:
            self.manifest(start, None, "running")
        self.skipped_metrics: dict[str, str] = {}
        self.load_inputs()
        self.generator = self.build_generator()
        gen_rows = self.generate()
        self.metrics = self.build_metrics()
        score_rows = self.score(gen_rows)
        if self.dist.rank != 0:
            return {}
        summary = self.write_outputs(gen_rows, score_rows)
        self.manifest(start, time.time(), "finished")
        return summary


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    return Run(cfg, out_dir)()


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text results table for the terminal (the report package writes the paper tables)."""
    lines = []
    if summary.get("random_weights"):
        lines += ["", "!! " + RANDOM_WEIGHTS_NOTE, ""]
    m = summary["model"]
    lines.append(f"model: {m.get('name')} ({m.get('hub_id') or m.get('source')})   clips: {summary['n_clips']}   "
                 f"missing references: {summary['n_missing_reference']}   skipped: {summary['n_skipped']}")
    lines.append(f"{'metric':<26}{'value':>12}  {'protocol':<24}{'clips':>7}")
    for name, v in summary["metrics"].items():
        if v.get("value") is None:
            lines.append(f"{v.get('card_column') or name:<26}{'–':>12}  {v.get('skipped') or v.get('error', '')}")
            continue
        lines.append(f"{v.get('card_column') or name:<26}{v['value']:>12.4f}  {str(v.get('protocol')):<24}{v.get('n_clips', 0):>7}")
    lines.append(f"run folder: {summary['run_dir']}")
    return "\n".join(lines)
