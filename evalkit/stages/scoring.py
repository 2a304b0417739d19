"""Stage 4: every metric over every prepared clip, in fixed batches, resumable, shardable, cached.

``Scorer(spec, metrics, out_dir, dist).score(inputs, gen_rows) -> {id: row}`` (the metric columns of
``clips.parquet``).

- Batches: ``metric_batch_size`` prompts in prompt order; rank r of N takes batches b with ``b % N == r``.
- After each batch, in this order: its per-clip arrays (``embeddings/batch-*.npz``), its rows
  (``scores/rows-*.parquet``), then the rank's summed state with the set of finished batches
  (``scores/state-<rank>-of-<world>.npz``). A restart reloads the state and continues with the next batch: the same
  sums in the same order, so the same numbers bit for bit. A state file that fails its checks is not trusted.
- Each batch's contribution is computed on a zeroed metric and then added (so the order of the sums never depends on
  the cache), and kept in the score cache (``cache.scores``) under a hash of the recipe, the backbone's identity and
  the exact clip contents: a later run scoring the same audio with the same recipe reads it back.
- Rank 0 merges every rank's states (sums) after a barrier: N processes give the one-process number. A metric whose
  statistic is not a sum (``Metric.kept_arrays``: KAD) then gets every scored clip's arrays, read back from
  ``embeddings/batch-*.npz`` (all ranks', all attempts'), in clip-id order (``Metric.keep_arrays``).
- Decoding (stage 3) of the next batches, and every metric's input path on them (the solver's post-processing,
  resampling, the audit: :mod:`evalkit.input_path`, each shared prefix computed once per clip), run in worker threads
  while the metrics compute on batch i (:class:`Prefetcher`: one task per clip, two batches ahead, one intra-op thread
  each; soundfile, julius and numpy release the GIL).
- What the audit finds at a metric's audit point is merged into the clip's ``audit_flags`` /
  ``reference_audit_flags``; a flag of the skip policy there names the clip's ``skip_reason`` (generated side) or
  ``reference_problem`` (reference side), with the metrics it kept the clip from.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evalkit import io as eio
from evalkit.audit import FLAGS
from evalkit.cache import cache_root
from evalkit.cpu import cpu_threads
from evalkit.input_path import shared_prefixes
from evalkit.metrics.base import Clip, ClipResult, Metric, clip_result_from_json
from evalkit.registry import get_metric
from evalkit.spec import RunSpec
from evalkit.stages import fault_point, progress_bar
from evalkit.stages.decode import DecodeSettings, decode_clip
from evalkit.stages.inputs import Inputs

log = logging.getLogger("evalkit")
#: bumped whenever the layout of a score-cache entry changes (older entries are then never read)
SCORE_CACHE_FORMAT = "evalkit.score-cache/3"


def build_metrics(spec: RunSpec, device) -> tuple[dict[str, Metric], dict[str, str]]:
    """The run's metrics (built on ``device``) and those that do not apply to it, with the reason."""
    ctx = spec.context()
    metrics: dict[str, Metric] = {}
    skipped: dict[str, str] = {}
    for name, recipe in spec.metrics.items():
        cls = get_metric(name, recipe)
        why = cls.run_skip_reason(recipe, ctx)
        if why:
            log.warning("metric %s is skipped: %s", name, why)
            skipped[name] = why
            continue
        metrics[name] = cls(dict(recipe), device=device, context=ctx)
    return metrics, skipped


@functools.lru_cache(maxsize=1)
def _evalkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evalkit")
    except PackageNotFoundError:
        return "unknown"


class ScoreCache:
    """Per-batch metric contributions by content (see the module doc). The cache is optional: a write it cannot make
    (a full or read-only cache disk) is warned about once and the run goes on without storing (reads go on)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: why the cache takes no more entries (its first failed write), or None
        self.write_failed: str | None = None

    def key(self, m: Metric, clips: list[Clip]) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"format": SCORE_CACHE_FORMAT, "metric": m.name, "recipe": m.recipe,
                             "backbone": m.describe(), "input": m.input.key if m.input else None,
                             "audit": vars(m.audit), "evalkit": _evalkit_version()}, sort_keys=True, default=str).encode())
        for c in clips:
            h.update(json.dumps([c.id, c.caption, c.sample_rate, c.reference_sr, c.model_channels,
                                 c.reference_counted]).encode())
            h.update(c.audio.detach().cpu().float().contiguous().numpy().tobytes() if c.audio is not None
                     else b"reference only")
            if c.reference is not None:
                h.update(c.reference.detach().cpu().float().contiguous().numpy().tobytes())
        return h.hexdigest()

    def path(self, m: Metric, key: str) -> Path:
        return self.root / m.name / key[:2] / f"{key}.npz"

    def get(self, m: Metric, key: str) -> tuple[dict[str, np.ndarray], dict[str, ClipResult]] | None:
        path = self.path(m, key)
        if not path.exists():
            return None
        try:
            entry = eio.read_npz(path)
            delta = {k[6:]: v for k, v in entry.items() if k.startswith("state/")}
            results = {cid: clip_result_from_json(r) for cid, r in json.loads(str(entry["results"])).items()}
            for k, v in entry.items():
                if k.startswith("array/"):
                    cid, col = k[6:].split("|", 1)
                    results[cid].arrays[col] = v
            if set(delta) != set(m.state):
                raise KeyError(f"state keys {sorted(delta)}")
            return delta, results
        except Exception as exc:  # an entry that fails its checks is recomputed, not trusted
            log.warning("%s: unusable score cache entry (%s); recomputing", path, exc)
            return None

    def put(self, m: Metric, key: str, delta: Mapping[str, np.ndarray], results: Mapping[str, ClipResult]) -> None:
        entry: dict[str, np.ndarray] = {f"state/{k}": v for k, v in delta.items()}
        entry["results"] = np.asarray(json.dumps({cid: r.to_json() for cid, r in results.items()}, default=float))
        for cid, r in results.items():
            for col, arr in r.arrays.items():
                entry[f"array/{cid}|{col}"] = np.asarray(arr)
        if self.write_failed:
            return
        try:
            eio.write_npz(self.path(m, key), **entry)
        except OSError as exc:
            self.write_failed = eio.disk_problem(exc) or f"cannot write {self.path(m, key)}: {exc}"
            log.warning("score cache: %s; the run goes on without storing scores in it (the numbers are the same; "
                        "free space there, move it with cache.dir=DIR or EVALKIT_CACHE, or turn it off with "
                        "cache.scores=false)", self.write_failed)


def file_sha256(path) -> str | None:
    """sha256 of a file's bytes (None for no file, "unreadable: <error>" when it cannot be read)."""
    if not path:
        return None
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return h.hexdigest()


def update_metric(m: Metric, clips: list[Clip], cache: ScoreCache | None) -> dict[str, ClipResult]:
    """One metric on one batch: its contribution computed on a zeroed state (or read from the cache), then added."""
    key = cache.key(m, clips) if cache is not None else None
    hit = cache.get(m, key) if key else None
    if hit is not None:
        delta, results = hit
    else:
        saved = m.state_dict()
        m.reset()
        results = m.update(clips)
        delta = m.state_dict()
        m.load_state_dict(saved)
        if key:
            cache.put(m, key, delta, results)
    m.add_state_delta(delta)
    return results


class Prefetcher:
    """Stage 3 for the batches to come, in worker threads, while the metrics score the current one: every clip is its
    own task (the clips of a batch are read side by side, so the first batch waits half as long on two workers), up
    to ``ahead`` batches ahead of the one being scored, each task on one intra-op thread (the metrics' forward passes
    own the others: evalkit/embeddings/base.py). ``get(i)`` returns batch i's clips (those that can be scored) and every
    prompt's row, in prompt order."""

    def __init__(self, prepare, batches: list, workers: int, ahead: int = 2) -> None:
        self.prepare, self.batches, self.ahead = prepare, batches, int(ahead)
        self.pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="evalkit-prepare")
        self.futures: dict[int, list] = {}
        self.submitted = 0

    def _one(self, prompt):
        with cpu_threads(1):
            return self.prepare(prompt)

    def get(self, i: int) -> tuple[list[Clip], dict[str, dict[str, Any]]]:
        while self.submitted < len(self.batches) and self.submitted <= i + self.ahead:
            self.futures[self.submitted] = [self.pool.submit(self._one, p) for p in self.batches[self.submitted]]
            self.submitted += 1
        clips, rows = [], {}
        for p, future in zip(self.batches[i], self.futures.pop(i)):
            clip, row = future.result()
            if clip is not None:
                clips.append(clip)
            rows[p.id] = row
        return clips, rows

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.futures.clear()


class _LazyFingerprints:
    """What scoring batch ``b`` was computed from: each prompt's id, caption, the sha256 of its clip file (or why it
    has none) and of its reference file. A resumed run rescores a batch when this changed: a failed generation retried
    since, or a clip or reference replaced in place under the same name (names and file times would not tell).
    Computed on first use (only finished batches need one); the prefetching workers hash each file right after
    reading it (:meth:`warm`), so the hashing overlaps the metrics' work."""

    def __init__(self, batches: list, gen_rows: Mapping[str, Mapping[str, Any]], inputs: Inputs) -> None:
        self.batches, self.gen_rows, self.inputs = batches, gen_rows, inputs
        self.files: dict[str, str | None] = {}
        self.known: dict[int, str] = {}

    def _sha(self, path) -> str | None:
        if path and str(path) not in self.files:
            self.files[str(path)] = file_sha256(path)
        return self.files.get(str(path)) if path else None

    def _item(self, p) -> list:
        row = self.gen_rows.get(p.id, {})  # none for a reference-only prompt (Inputs.reference_only)
        return [p.id, p.caption, self._sha(row.get("audio_path")), row.get("generation_skipped"),
                self._sha(self.inputs.references.get(p.ref_key))] + ([] if p.owns_reference else ["shared reference"])

    def warm(self, prompt) -> None:
        self._item(prompt)

    def __getitem__(self, b: int) -> str:
        if b not in self.known:
            items = [self._item(p) for p in self.batches[b]]
            self.known[b] = hashlib.sha256(json.dumps(items, default=str).encode()).hexdigest()
        return self.known[b]


class Scorer:
    def __init__(self, spec: RunSpec, metrics: dict[str, Metric], out_dir: Path, dist) -> None:
        self.spec, self.metrics, self.out, self.dist = spec, metrics, Path(out_dir), dist
        root = cache_root(spec.cache, "scores")
        self.cache = ScoreCache(root) if root is not None else None
        self.settings = DecodeSettings.from_spec(spec)
        self.scores_dir, self.emb_dir = self.out / "scores", self.out / "embeddings"
        #: input-path points two or more metrics pass through: computed once per clip
        self.keep = frozenset(shared_prefixes([m.input for m in metrics.values() if m.input is not None]))
        #: whether a metric counts every distinct reference whatever became of its generated clip (reference-only
        #: clips are then decoded for the prompts that own a reference)
        self.reference_folder = any(m.reads_reference_folder for m in metrics.values())

    def decode(self, prompt, gen_row, reference_path) -> tuple[Clip | None, dict[str, Any]]:
        """Stage 3 for one prompt, then every metric's input path on it (memoised on the clip), so the metrics find
        their inputs ready."""
        clip, row = decode_clip(prompt, gen_row, reference_path, self.settings,
                                reference_only=self.reference_folder and prompt.owns_reference)
        if clip is not None:
            clip.keep = self.keep
            for m in self.metrics.values():
                if m.input is not None and self.takes(m, clip):
                    m.input.apply(clip, m.audit)
        return clip, row

    @staticmethod
    def takes(m: Metric, clip: Clip) -> bool:
        """Whether metric ``m`` scores ``clip``: a paired metric needs the reference; a reference-only clip goes only
        to a metric that reads a folder of references (:attr:`Metric.reads_reference_folder`)."""
        if clip.reference_only:
            return m.reads_reference_folder
        return clip.reference is not None or not m.requires_pairs

    @property
    def state_path(self) -> Path:
        return self.scores_dir / f"state-{self.dist.rank:03d}-of-{self.dist.world:03d}.npz"

    def score(self, inputs: Inputs, gen_rows: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Score every batch this rank owns (see the module doc); returns every clip's row (all ranks)."""
        bs = int(self.spec.metric_batch_size)
        prompts = inputs.prompts + (inputs.reference_only if self.reference_folder else [])
        batches = [prompts[i:i + bs] for i in range(0, len(prompts), bs)]
        self.fingerprints = _LazyFingerprints(batches, gen_rows, inputs)
        done = self._load_state(len(batches))
        todo = [b for b in range(len(batches)) if b % self.dist.world == self.dist.rank
                and not (b in done and self._rows_path(b).exists())]
        def prepare(p):
            out = self.decode(p, gen_rows.get(p.id, {}), inputs.references.get(p.ref_key))
            self.fingerprints.warm(p)  # the files were just read: hash them here, beside the metrics' work
            return out

        prefetch = Prefetcher(prepare, [batches[b] for b in todo], max(1, int(self.spec.num_workers or 0) or 2))
        total = sum(len(batches[b]) for b in todo)
        try:
            with progress_bar(total, self.spec.progress and self.dist.rank == 0, "score", "clip") as bar:
                for i, b in enumerate(todo):
                    clips, rows = prefetch.get(i)
                    self._score_batch(b, clips, rows, done, len(batches))
                    bar.update(len(batches[b]))
        finally:
            prefetch.close()
        self.dist.barrier()
        if self.dist.world > 1:
            self._merge_ranks()
        if self.dist.rank == 0:
            self._hand_over_arrays(len(batches), {p.id for p in prompts})
        return self._read_rows(len(batches))

    def _hand_over_arrays(self, n_batches: int, ids: set[str]) -> None:
        """The arrays of every scored clip, from the run folder's batch files, to the metrics that compute from them."""
        wanted = {name: set(m.kept_arrays()) for name, m in self.metrics.items() if m.kept_arrays()}
        if not wanted:
            return
        columns = set().union(*wanted.values())
        found: dict[str, dict[str, np.ndarray]] = {c: {} for c in columns}
        for b in range(n_batches):
            path = self.emb_dir / f"batch-{b:05d}.npz"
            if not path.exists():
                continue
            with np.load(str(path), allow_pickle=False) as z:
                for key in z.files:
                    cid, _, col = key.rpartition("/")
                    if col in columns and cid in ids:
                        found[col][cid] = z[key]
        for name, cols in wanted.items():
            self.metrics[name].keep_arrays({c: found[c] for c in cols})

    def _score_batch(self, b: int, clips: list[Clip], rows: dict[str, dict[str, Any]], done: set[int],
                     n_batches: int) -> None:
        arrays: dict[str, np.ndarray] = {}
        found: dict[str, dict[str, dict[str, list]]] = {}  # clip id -> side -> flag -> [reason, metrics]
        verdicts: dict[str, list[str | None]] = {}  # clip id -> each metric's skip reason (None: scored)
        for name, m in self.metrics.items():
            mclips = [c for c in clips if self.takes(m, c)]
            for c in clips:
                if not c.reference_only and not self.takes(m, c):
                    rows[c.id][m.spec.skip_column] = rows[c.id].get("reference_problem") or "no reference clip"
            if not mclips:
                continue
            for cid, res in update_metric(m, mclips, self.cache).items():
                rows[cid].update(res.values)
                if res.skipped:
                    rows[cid][m.spec.skip_column] = res.skipped
                verdicts.setdefault(cid, []).append(res.skipped)
                for side, flags in res.flags.items():
                    for f, why in flags.items():
                        found.setdefault(cid, {}).setdefault(side, {}).setdefault(f, [why, []])[1].append(name)
                arrays.update({f"{cid}/{col}": np.asarray(a) for col, a in res.arrays.items()})
        for cid, sides in found.items():
            self._merge_flags(rows[cid], sides)
        for cid, reasons in verdicts.items():  # no metric scored it: the clip is skipped, with the first reason
            if all(reasons) and not rows[cid].get("skip_reason"):
                rows[cid]["skip_reason"] = reasons[0]
        if arrays:
            eio.write_npz(self.emb_dir / f"batch-{b:05d}.npz", **arrays)
        import pandas as pd

        eio.write_parquet(self._rows_path(b), pd.DataFrame(list(rows.values())))
        fault_point("score:rows")
        done.add(b)
        state = {"__done__": np.asarray(sorted(done), np.int64), "__n_batches__": np.asarray(n_batches),
                 "__inputs__": np.asarray([self.fingerprints[d] for d in sorted(done)])}
        for name, m in self.metrics.items():
            state.update({f"{name}/{k}": v for k, v in m.state_dict().items()})
        eio.write_npz(self.state_path, **state)

    def _merge_flags(self, row: dict[str, Any], sides: Mapping[str, Mapping[str, list]]) -> None:
        """What the metrics' audits found, into the clip's row: the flags (in :data:`FLAGS` order) and, for a flag of
        the skip policy, the clip's ``skip_reason`` / ``reference_problem`` naming the flag and the metrics."""
        policy = set(self.settings.audit.skip)
        for side, prefix, what in (("generated", "", "skip_reason"), ("reference", "reference_", "reference_problem")):
            flags = sides.get(side) or {}
            if not flags:
                continue
            have = set(row.get(f"{prefix}audit_flags") or []) | set(flags)
            row[f"{prefix}audit_flags"] = [f for f in FLAGS if f in have]
            blocking = [f for f in FLAGS if f in flags and f in policy]
            if blocking and not row.get(what):
                path = row.get("audio_path" if side == "generated" else "reference_path")
                row[what] = f"{side} {path}: " + "; ".join(
                    f"{f} ({flags[f][0]}) at the audit point of {', '.join(flags[f][1])}" for f in blocking)

    def _rows_path(self, b: int) -> Path:
        return self.scores_dir / f"rows-{b:05d}.parquet"

    def _load_state(self, n_batches: int) -> set[int]:
        """The finished batches of an earlier attempt, with their statistics loaded into the metrics."""
        path = self.state_path
        if not path.exists():
            return set()
        try:
            state = eio.read_npz(path)
            if int(state["__n_batches__"]) != n_batches:
                raise ValueError("the batch layout changed")
            finished = [int(b) for b in state["__done__"]]
            if [str(x) for x in state["__inputs__"]] != [self.fingerprints[b] for b in finished]:
                raise ValueError("the clips of a scored batch changed since (a generation was retried, or a clip or "
                                 "reference file was replaced)")
            for name, m in self.metrics.items():
                m.load_state_dict({k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(name + "/")})
            return {int(b) for b in state["__done__"]}
        except Exception as exc:
            log.warning("%s: unusable saved state (%s); scoring from the start", path, exc)
            for m in self.metrics.values():
                m.reset()
            return set()

    def _merge_ranks(self) -> None:
        """Rank 0: the sum of every rank's state."""
        for m in self.metrics.values():
            m.reset()
        for r in range(self.dist.world):
            st = eio.read_npz(self.scores_dir / f"state-{r:03d}-of-{self.dist.world:03d}.npz")
            for name, m in self.metrics.items():
                m.add_state_delta({k.split("/", 1)[1]: v for k, v in st.items() if k.startswith(name + "/")})

    def _read_rows(self, n_batches: int) -> dict[str, dict[str, Any]]:
        import pandas as pd

        rows: dict[str, dict[str, Any]] = {}
        for b in range(n_batches):
            for r in pd.read_parquet(self._rows_path(b)).to_dict("records"):
                rows[r["id"]] = r
        return rows
