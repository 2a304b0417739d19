"""Prompt sets: MusicCaps (through ``datasets``, from the hub or a local csv), plain prompt files, the demo prompts.

A :class:`Prompt` is an id, a caption and the id of its reference clip (for MusicCaps, the YouTube id). Selection is
deterministic: ``limit=N`` keeps the N prompts whose ``sha1(id)`` sort first — the same N on every machine and run,
an unbiased spread over the set, and stable when rows are added or reordered.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from evalkit.errors import InputError

#: google/MusicCaps on the Hugging Face hub: musiccaps-public.csv, 5,521 rows (CC BY-SA 4.0).
MUSICCAPS_HUB_ID = "google/MusicCaps"
#: MusicCaps subsets by their boolean column (2,858 and 1,000 rows); `all` keeps every row.
MUSICCAPS_SUBSETS = {"all": None, "audioset_eval": "is_audioset_eval", "balanced": "is_balanced_subset"}
DEMO_PROMPTS = Path(__file__).with_name("demo_prompts.csv")
PROMPT_SUFFIXES = (".txt", ".csv", ".jsonl")


log = logging.getLogger("evalkit")


class PromptError(InputError, ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    id: str
    caption: str
    reference_id: str | None = None
    #: False when an earlier prompt of the run (in its sha1 order) has the same reference: a protocol that scores a
    #: folder of distinct reference files (``references: distinct``) counts that file once, with its first prompt
    #: (:func:`mark_reference_owners`; Song Describer: several captions of one track)
    owns_reference: bool = True

    @property
    def ref_key(self) -> str:
        return self.reference_id or self.id


def _order_key(pid: str) -> str:
    return hashlib.sha1(pid.encode("utf-8")).hexdigest()


def select(prompts: Sequence[Prompt], limit: int | None) -> list[Prompt]:
    """Deterministic selection of ``limit`` prompts (sha1 order of the id); returned in sha1 order."""
    ordered = sorted(prompts, key=lambda p: _order_key(p.id))
    if limit is None:
        return ordered
    if int(limit) < 1:
        raise PromptError(f"dataset.limit={limit}: must be a positive number of prompts (or null for all)")
    return ordered[: int(limit)]


def mark_reference_owners(prompts: Sequence[Prompt]) -> list[Prompt]:
    """The prompts, each reference's first prompt (in the given order: the run's sha1 order) marked as its owner and
    the others ``owns_reference=False``. Done once on the whole selection before it is split into batches and ranks,
    so which clip counts a shared reference does not depend on sharding or resuming."""
    from dataclasses import replace

    seen: set[str] = set()
    out = []
    for p in prompts:
        out.append(p if p.ref_key not in seen else replace(p, owns_reference=False))
        seen.add(p.ref_key)
    return out


def load_song_describer(path: str | None, subset: str = "all", subset_file: str | None = None) -> list[Prompt]:
    """Song Describer (:mod:`evalkit.data.song_describer`): one prompt per caption, id ``caption_id``, reference
    ``track_id``. :class:`PromptError` names the setting that cannot work."""
    from evalkit.data.song_describer import SongDescriberError, load_rows

    try:
        rows = load_rows(path, subset, subset_file)
    except SongDescriberError as exc:
        raise PromptError(str(exc)) from None
    return validate([Prompt(cid, cap, tid) for cid, tid, cap, _ in rows], f"dataset.path={path}",
                    where=[w for *_, w in rows])


def validate(prompts: Iterable[Prompt], source: str, lines: Sequence[int] | None = None,
             unit: str = "row", where: Sequence[str] | None = None) -> list[Prompt]:
    """The prompts, or a :class:`PromptError` naming ``source`` and the place of the first empty id, empty caption
    or duplicate id: ``where[i]`` (e.g. ``line 7``) when given, else ``line lines[i]`` (the file line of prompt i),
    else ``<unit> i+1``."""
    prompts = list(prompts)
    if where is not None:
        at = list(where)
    elif lines is not None:
        at = [f"line {n}" for n in lines]
    else:
        at = [f"{unit} {i + 1}" for i in range(len(prompts))]
    out, seen = [], {}
    for i, p in enumerate(prompts):
        if not p.id or not str(p.id).strip():
            raise PromptError(f"{source}: {at[i]} has an empty id")
        if p.caption is None or not str(p.caption).strip():
            raise PromptError(f"{source}: {at[i]} (id {p.id!r}) has an empty caption; fix or drop the row")
        if p.id in seen:
            raise PromptError(f"{source}: {at[i]} has a duplicate id {p.id!r} (first at {at[seen[p.id]]}); ids "
                              f"must be unique")
        seen[p.id] = i
        out.append(p)
    if not out:
        raise PromptError(f"{source}: no prompts")
    return out


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise PromptError(f"{path}: no such prompt file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); re-save it as UTF-8") from exc


def load_prompt_file(path: str | Path) -> list[Prompt]:
    """A plain prompts file, parsed strictly: ``.txt`` (one caption a line; ids ``prompt-0001``...), ``.csv`` or
    ``.jsonl`` with ``id`` and ``caption`` (and optional ``reference_id``). A malformed row (wrong number of fields,
    e.g. an unquoted comma in a caption; not JSON; empty or duplicate id; empty caption) raises
    :class:`PromptError` naming the file and the line."""
    path = Path(path)
    if path.suffix.lower() not in PROMPT_SUFFIXES:
        raise PromptError(f"{path}: a prompts file is .txt (one caption a line), .csv or .jsonl (id, caption); "
                          f"{path.suffix or 'no extension'} is none of them")
    text = _read_text(path)
    src = str(path)
    if path.suffix.lower() == ".txt":
        first = next((ln.strip().lower() for ln in text.splitlines() if ln.strip()), "")
        if re.match(r"^(y?t?id)\s*[,\t;]\s*caption", first):
            raise PromptError(f"{src}: line 1 looks like a table header ({first!r}), but a .txt file is one caption a "
                              f"line: save it as .csv (or .jsonl) to use its ids")
    if path.suffix == ".jsonl":
        rows, lines = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PromptError(f"{src}: line {n} is not JSON ({exc.msg})") from exc
            lines.append(n)
        prompts = [_row_prompt(r, src, n) for r, n in zip(rows, lines)]
    elif path.suffix == ".csv":
        prompts, lines = _read_csv(text, src)
    else:
        numbered = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        prompts = [Prompt(f"prompt-{i:04d}", ln) for i, (_, ln) in enumerate(numbered, 1)]
        lines = [n for n, _ in numbered]
    return validate(prompts, src, lines)


def _read_csv(text: str, src: str) -> tuple[list[Prompt], list[int]]:
    """``csv`` rows with exactly the header's number of fields (``csv.DictReader`` would keep a too-long row and
    silently drop its extra fields: ``c1,a soft piano, strings and pads`` would become the caption "a soft piano")."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise PromptError(f"{src}: empty file (expected a header line: id,caption)") from None
    if "caption" not in header or not ({"id", "ytid"} & set(header)):
        raise PromptError(f"{src}: line 1 (the header) is {', '.join(header)}; a prompts table needs the columns id "
                          f"and caption")
    prompts, lines = [], []
    for fields in reader:
        n = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise PromptError(
                f"{src}: line {n} has {len(fields)} fields, the header has {len(header)} ({', '.join(header)}). "
                f"A caption that contains a comma must be quoted: \"a soft piano, strings and pads\"")
        prompts.append(_row_prompt(dict(zip(header, fields)), src, n))
        lines.append(n)
    return prompts, lines


def _row_prompt(row: dict, src: str, line: int) -> Prompt:
    if not isinstance(row, dict) or "caption" not in row:
        raise PromptError(f"{src}: line {line} has no 'caption' field (need id and caption)")
    pid = row["id"] if "id" in row else row.get("ytid")
    if pid is None:
        raise PromptError(f"{src}: line {line} has no 'id' field")
    ref = row.get("reference_id") or None
    return Prompt(str(pid).strip(), str(row["caption"] or "").strip(), str(ref) if ref else None)


def load_musiccaps(path: str | None = None, subset: str = "all", split: str = "train", *,
                   subset_file: str | None = None, exclude=()) -> list[Prompt]:
    """MusicCaps through ``datasets``: the hub dataset, or a local copy of ``musiccaps-public.csv`` via
    ``load_dataset("csv", data_files=path)`` (the same parsing path). ``subset``: a boolean column's subset
    (:data:`MUSICCAPS_SUBSETS`) or one read from ``subset_file`` (``nosinging``: stable-audio-metrics'
    ``load/musiccaps-public-nosinging.csv``, :mod:`evalkit.data.stable_audio_metrics`); ``exclude``: named id lists
    dropped (``stable-audio-metrics-missing``: its 87 ``NOT_IN_MUSICCAPS`` ytids). :class:`PromptError` names the
    setting that cannot work."""
    from evalkit.data import stable_audio_metrics as sam

    try:
        drop = sam.excluded_ids(exclude)
        keep = sam.subset_ids(subset, subset_file) if subset in sam.FILE_SUBSETS else None
    except ValueError as exc:
        raise PromptError(str(exc)) from None
    if keep is None and subset_file:
        raise PromptError(f"dataset.subset_file={subset_file}: only read for dataset.subset="
                          f"{'|'.join(sam.FILE_SUBSETS)} (here subset={subset})")
    ds, src = load_musiccaps_dataset(path, "all" if keep is not None else subset, split)
    prompts = [Prompt(str(r["ytid"]), str(r["caption"] or "").strip(), str(r["ytid"])) for r in ds]
    if keep is not None:
        unknown = keep - {p.id for p in prompts}
        if unknown:
            raise PromptError(f"dataset.subset_file={subset_file}: {len(unknown)} ytids are not in {src} (e.g. "
                              f"{', '.join(sorted(unknown)[:3])}): not a subset of this MusicCaps table")
        prompts = [p for p in prompts if p.id in keep]
    return validate([p for p in prompts if p.id not in drop], src)


def load_folder_prompts(folder: str | None, captions: str | None = None) -> list[Prompt]:
    """``dataset=folder``: one prompt per clip of ``folder`` (``<id>.<ext>``), its caption from ``captions`` (a prompts
    file) or empty. A caption for an id that has no clip is ignored; a clip without a caption keeps an empty one
    (metrics that need captions skip it, naming the reason)."""
    from evalkit.data.references import list_audio_files
    from evalkit.io import folder_problem

    if not folder or str(folder) == "???":
        raise PromptError("model.dir is not set: model=folder / dataset=folder read the clips (and their ids) from "
                          "model.dir=DIR, a folder of <id>.wav|flac|mp3|ogg clips (or choose dataset=musiccaps / "
                          "dataset=prompts)")
    root = Path(str(folder)).expanduser()
    problem = folder_problem(root)
    if problem:
        raise PromptError(f"model.dir={folder}: {problem}")
    paths, _ = list_audio_files(root, "model.dir")
    if not paths:
        raise PromptError(f"model.dir={folder}: no audio files named <id>.wav|flac|mp3|ogg")
    if not captions:
        return [Prompt(i, "") for i in sorted(paths)]
    if Path(str(captions)).suffix.lower() == ".txt":
        raise PromptError(f"dataset.captions={captions}: a .txt file is one caption a line, without ids, so its "
                          f"captions cannot be matched to the clips of model.dir: save it as .csv (id,caption) or "
                          f".jsonl, with each clip's file name without its extension as the id")
    from evalkit.data.references import id_key

    table = {id_key(p.id): p.caption for p in load_prompt_file(captions)}  # ids match in NFC form
    lacking = [i for i in sorted(paths) if id_key(i) not in table]
    if lacking:
        raise PromptError(f"dataset.captions={captions}: no caption for {len(lacking)} of the {len(paths)} clips of "
                          f"model.dir (e.g. {', '.join(lacking[:3])}); give every clip its caption, or leave "
                          f"dataset.captions out (text consistency is then skipped)")
    orphans = sorted(set(table) - {id_key(i) for i in paths})
    if orphans:
        log.warning("dataset.captions=%s: %d captions have no clip in model.dir (e.g. %s)", captions, len(orphans),
                    ", ".join(orphans[:3]))
    return [Prompt(i, table[id_key(i)]) for i in sorted(paths)]


def load_musiccaps_dataset(path: str | None = None, subset: str = "all", split: str = "train"):
    """The MusicCaps table as a ``datasets.Dataset`` (every column, e.g. ``start_s``/``end_s``), filtered to
    ``subset``, and the name of its source (the file, or the hub id): the rows :func:`load_musiccaps` reads.

    Raises :class:`PromptError` naming the setting when the file is absent, the hub is unreachable, or the
    table lacks ``ytid``/``caption`` or the subset's column."""
    import datasets

    if subset not in MUSICCAPS_SUBSETS:
        raise PromptError(f"dataset.subset={subset!r}: expected one of {sorted(MUSICCAPS_SUBSETS)}")
    if path is not None:
        if not Path(path).is_file():
            raise PromptError(f"dataset.path={path}: no such file")
        ds = datasets.load_dataset("csv", data_files=str(path), split="train")
        src = str(path)
    else:
        try:
            ds = datasets.load_dataset(MUSICCAPS_HUB_ID, split=split)
        except Exception as exc:
            raise PromptError(
                f"could not load {MUSICCAPS_HUB_ID} from the hub ({type(exc).__name__}: {exc}). Offline, download "
                f"musiccaps-public.csv once and pass dataset.path=FILE.csv"
            ) from exc
        src = MUSICCAPS_HUB_ID
    missing = {"ytid", "caption"} - set(ds.column_names)
    if missing:
        raise PromptError(f"{src}: not a MusicCaps table (missing columns {sorted(missing)})")
    col = MUSICCAPS_SUBSETS[subset]
    if col is not None:
        if col not in ds.column_names:
            raise PromptError(f"{src}: dataset.subset={subset} needs the column {col!r}")
        ds = ds.filter(lambda r: _truthy(r[col]))
    return ds, src


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def load_prompts(cfg) -> list[Prompt]:
    """From the ``dataset`` config node: ``name`` musiccaps | prompts | demo; ``path``; ``subset``; ``limit``."""
    name = cfg.get("name")
    if name == "musiccaps":
        prompts = load_musiccaps(cfg.get("path"), cfg.get("subset", "all"), cfg.get("split", "train"),
                                 subset_file=cfg.get("subset_file"), exclude=list(cfg.get("exclude") or ()))
    elif name == "song-describer":
        prompts = load_song_describer(cfg.get("path"), cfg.get("subset", "all"), cfg.get("subset_file"))
    elif name == "prompts":
        if not cfg.get("path"):
            raise PromptError("dataset=prompts needs dataset.path=FILE (.txt, .csv or .jsonl)")
        prompts = load_prompt_file(cfg["path"])
    elif name == "demo":
        prompts = load_prompt_file(cfg.get("path") or DEMO_PROMPTS)
    elif name == "folder":
        prompts = load_folder_prompts(cfg.get("dir"), cfg.get("captions"))
    else:
        raise PromptError(f"dataset={name!r}: expected musiccaps, song-describer, prompts, folder or demo")
    return mark_reference_owners(select(prompts, cfg.get("limit")))
