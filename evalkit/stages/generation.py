"""Stage 2: the clips of every prompt, by id, with a content-keyed cache and batch-level resume.

``generate(spec, inputs, generator, out_dir, dist) -> {id: row}``, a row holding ``audio_path``, ``seed``,
``generation_batch`` and ``generation_skipped`` (why a prompt has no clip, else None).

Never loses work: batches are generated in plan order; a batch whose ``generation/batch-*.json`` exists and whose
clips are all on disk (with the generator's expected length) is skipped on restart, a partial one is generated again
with its recorded seed (bit for bit the same audio). Clip files are written atomically. Under torchrun rank r takes
the batches with ``index % world == r``.

Cache (``cache.generations``): a batch's audio is kept under ``<cache>/generations/<key[:2]>/<key>/`` where the key
hashes everything that decides the samples (the generator's identity and settings, the batch seed, its prompts and,
for melody conditioning, the bytes of each reference clip); a later run with the same inputs links the files instead
of generating them. Paths, metrics and run folders play no part in the key.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from evalkit import io as eio
from evalkit.audio import AudioError, load_audio, save_audio
from evalkit.cache import cache_root
from evalkit.generate.base import Batch, GeneratedClip, Generator
from evalkit.registry import get_generator
from evalkit.spec import RunSpec
from evalkit.stages import fault_point, progress_bar
from evalkit.stages.inputs import Inputs

log = logging.getLogger("evalkit")


def build_generator(spec: RunSpec, device: str) -> Generator:
    """The generator ``model.generator`` names, built from the spec (folder: nothing to load)."""
    cls = get_generator(spec.generator_name)
    return cls(dict(spec.model), dict(spec.generation), device=device, precision=str(spec.precision),
               seed=int(spec.seed), batch_size="auto" if str(spec.batch_size) == "auto" else int(spec.batch_size))


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (same file system) or copy, then an atomic rename onto ``dst``. A copy that fails (a full disk)
    leaves no temp file, and its OSError names ``dst``."""
    tmp = eio.temp_name(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(dst)) from exc


def audio_ok(path: Path, expected_samples: int | None) -> bool:
    """A clip file that exists, is readable and (when the generator says) has exactly ``expected_samples``."""
    if not path.exists():
        return False
    try:
        import soundfile as sf

        frames = sf.info(str(path)).frames
    except Exception:
        return False
    return expected_samples is None or frames == expected_samples


class GenerationCache:
    """Audio of finished batches, shared by every run on the machine (see the module doc). The cache is optional: a
    store it cannot make (a full or read-only cache disk) is warned about once and the run goes on without storing
    (fetches go on)."""

    def __init__(self, root: Path, generator: Generator, refs, melody: str) -> None:
        self.root, self.generator, self.refs, self.melody = root, generator, refs, melody
        #: why the cache takes no more batches (its first failed store), or None
        self.store_failed: str | None = None

    def key(self, batch: Batch) -> str:
        ident = {**(self.generator.cache_identity() or {}), "seed": batch.seed,
                 "prompts": [[p.id, p.caption] for p in batch.prompts], "melody": self.melody}
        if self.generator.melody and self.melody == "reference":
            # an unreadable reference (e.g. a dangling link) conditions on nothing: text only, like no reference
            ident["melody_audio"] = [eio.sha256_file(r) if r is not None and r.is_file() else None
                                     for r in (self.refs.get(p.ref_key) for p in batch.prompts)]
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def fetch(self, key: str, paths: dict[str, Path]) -> bool:
        src = self.root / key[:2] / key
        expected = self.generator.expected_samples
        if not all(audio_ok(src / p.name, expected) for p in paths.values()):
            return False
        for p in paths.values():
            link_or_copy(src / p.name, p)
        log.info("batch %s: audio reused from the generation cache", key[:12])
        return True

    def store(self, key: str, paths: dict[str, Path]) -> None:
        if self.store_failed:
            return
        dst = self.root / key[:2] / key
        try:
            for p in paths.values():
                if p.exists() and not (dst / p.name).exists():
                    link_or_copy(p, dst / p.name)
        except OSError as exc:
            self.store_failed = eio.disk_problem(exc) or f"cannot write {exc.filename or dst}: {exc}"
            log.warning("generation cache: %s; the run goes on without storing audio in it (the run's own clips are "
                        "written; free space there, move it with cache.dir=DIR or EVALKIT_CACHE, or turn it off "
                        "with cache.generations=false)", self.store_failed)


def generate(spec: RunSpec, inputs: Inputs, generator: Generator, out_dir: Path, dist) -> dict[str, dict[str, Any]]:
    """Every prompt's clip (see the module doc). Returns ``{id: row}`` in prompt order."""
    out_dir = Path(out_dir)
    _settle_batch_size(generator, inputs, out_dir / "generation" / "plan.json", dist)
    melody = spec.melody_source if generator.melody else "none"
    root = cache_root(spec.cache, "generations") if generator.writes_audio and generator.cache_identity() else None
    cache = GenerationCache(root, generator, inputs.references, melody) if root else None
    batches = generator.plan(inputs.prompts)
    mine = [b for b in batches if b.index % dist.world == dist.rank]
    metas: dict[int, dict] = {}
    units = [generator.progress_units(b) for b in mine]
    unit = units[0][1] if units else "clip"
    # no bar where nothing is generated (folder mode points at existing files)
    shown = spec.progress and dist.rank == 0 and generator.writes_audio
    with progress_bar(sum(n for n, _ in units), shown, "generate", unit) as bar:
        for batch, (n, _) in zip(mine, units):
            done = _Counter(bar, n)
            metas[batch.index] = _run_batch(batch, generator, inputs, out_dir, cache, melody, done)
            done(n)  # the rest: a batch found finished or cached, or fewer steps than planned
    dist.barrier()  # every rank's clips are on disk before anyone scores
    rows: dict[str, dict[str, Any]] = {}
    for batch in batches:
        meta = metas.get(batch.index) or _read_meta(out_dir, batch, dist)
        for p in batch.prompts:
            rows[p.id] = _row(batch, p.id, out_dir, generator, meta)
    return {p.id: rows[p.id] for p in inputs.prompts}


def _settle_batch_size(generator: Generator, inputs: Inputs, plan_path: Path, dist) -> None:
    """``batch_size=auto``: found once (rank 0) and kept in ``generation/plan.json`` so a resumed run keeps its
    batches."""
    if getattr(generator, "batch_size", None) != "auto":
        return
    if plan_path.exists():
        generator.batch_size = int(eio.read_json(plan_path)["batch_size"])
    else:
        n = generator.find_batch_size(inputs.prompts) if dist.rank == 0 else 0
        generator.batch_size = int(dist.broadcast(n))
        if dist.rank == 0:
            eio.write_json(plan_path, {"batch_size": generator.batch_size,
                                       "found_by": "auto (largest power of two that fits)"})
    log.info("batch_size=auto -> %d", generator.batch_size)


def _read_meta(out_dir: Path, batch: Batch, dist) -> dict:
    """Another rank's batch: its metadata file, or (when that rank's generation of it failed) a skip per clip."""
    path = _meta_path(out_dir, batch)
    if path.exists():
        return eio.read_json(path)
    why = f"generation failed on rank {batch.index % dist.world} (see its log)"
    return {"skipped": {p.id: why for p in batch.prompts}}


def _meta_path(out_dir: Path, batch: Batch) -> Path:
    return out_dir / "generation" / f"batch-{batch.index:05d}.json"


def _clip_paths(out_dir: Path, batch: Batch) -> dict[str, Path]:
    return {p.id: out_dir / "audio" / f"{p.id}.flac" for p in batch.prompts}


class _Counter:
    """Forwards a generator's progress to the bar and counts it, at most ``cap`` units (the batch's plan)."""

    def __init__(self, bar, cap: int) -> None:
        self.bar, self.n, self.cap = bar, 0, cap

    def __call__(self, k: int = 1) -> None:
        k = min(k, self.cap - self.n)
        if k > 0:
            self.n += k
            self.bar.update(k)


def _run_batch(batch: Batch, generator: Generator, inputs: Inputs, out_dir: Path, cache, melody: str,
               on_step=None) -> dict:
    """One batch: done already, from the cache, or generated now. Returns its metadata (``skipped`` ids)."""
    meta_path = _meta_path(out_dir, batch)
    paths = _clip_paths(out_dir, batch)
    if meta_path.exists():
        meta = eio.read_json(meta_path)
        skipped = meta.get("skipped") or {}
        if not generator.writes_audio or all(audio_ok(paths[i], generator.expected_samples)
                                             for i in paths if i not in skipped):
            return meta
    base = {"batch": batch.index, "seed": batch.seed, "ids": [p.id for p in batch.prompts], **generator.batch_meta(),
            "melody": melody if generator.melody else None}
    key = cache.key(batch) if cache else None
    if key and cache.fetch(key, paths):
        meta = {**base, "cache_key": key, "from_cache": True, "skipped": {}}
    else:
        try:
            clips = generator.generate_batch(batch, _melodies(batch, generator, inputs, melody), on_step=on_step)
        except RuntimeError as exc:  # a failed batch (CUDA error, OOM, ...) must not lose the run: its clips are skipped
            log.error("batch %d: generation failed (%s: %s); its %d clips are skipped", batch.index,
                      type(exc).__name__, exc, len(batch.prompts))
            why = f"generation failed: {type(exc).__name__}: {exc}"
            return {**base, "cache_key": key, "from_cache": False, "skipped": {p.id: why for p in batch.prompts},
                    "failed": True}  # not written to disk: a resumed run tries this batch again
        skipped = _write_clips(clips, paths, generator)
        if key and not skipped:
            cache.store(key, paths)
        meta = {**base, "cache_key": key, "from_cache": False, "skipped": skipped,
                "paths": {c.id: str(c.path) for c in clips if c.path is not None}}
    eio.write_json(meta_path, meta)
    return meta


def _melodies(batch: Batch, generator: Generator, inputs: Inputs, melody: str):
    """Per prompt ``(wav, rate)`` of its reference clip (melody conditioning), None for text only."""
    if not generator.melody:
        return None
    if melody != "reference":
        return [None] * len(batch.prompts)
    out = []
    for p in batch.prompts:
        rp = inputs.references.get(p.ref_key)
        try:
            out.append(load_audio(rp) if rp else None)
        except AudioError as exc:
            log.warning("%s: cannot condition on the reference melody (%s); generating from text only", p.id, exc)
            out.append(None)
    return out


def _write_clips(clips: list[GeneratedClip], paths: dict[str, Path], generator: Generator) -> dict[str, str]:
    """Write each new clip atomically; returns ``{id: reason}`` for the clips that were skipped."""
    skipped: dict[str, str] = {}
    for c in clips:
        if c.skipped:
            skipped[c.id] = c.skipped
            continue
        if c.audio is None:
            continue  # an existing file (folder generator)
        bad = int((~torch.isfinite(c.audio)).sum())
        if bad:
            skipped[c.id] = (f"the generated audio holds {bad} NaN or infinite samples of {c.audio.numel()} "
                             f"(not written; a known failure of fp16 generation: try precision=fp32)")
            continue
        if not audio_ok(paths[c.id], generator.expected_samples):
            save_audio(paths[c.id], c.audio, int(c.sample_rate))
            fault_point("generate:clip")
    return skipped


def _row(batch: Batch, pid: str, out_dir: Path, generator: Generator, meta: dict) -> dict[str, Any]:
    skipped = (meta.get("skipped") or {}).get(pid)
    if generator.writes_audio:
        path = None if skipped else str(_clip_paths(out_dir, batch)[pid])
    else:
        path = (meta.get("paths") or {}).get(pid)
    return {"audio_path": path, "seed": batch.seed, "generation_batch": batch.index, "generation_skipped": skipped}
