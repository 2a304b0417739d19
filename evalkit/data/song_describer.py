"""The Song Describer dataset (Manco et al. 2023, "The Song Describer Dataset: a Corpus of Audio Captions for
Music-and-Language Evaluation"; captions CC BY-SA 4.0, audio from MTG-Jamendo) as stable-audio-metrics lays it out
(Stability-AI/stable-audio-metrics, MIT, HEAD fd55536c: ``load/song_describer.csv``, ``examples/songdescriber*.py``),
for ``dataset=song-describer``. Stable Audio Open reports FD_openl3, KL_passt and CLAP score on it.

The table (``load/song_describer.csv``: 1,106 captions of 706 tracks; columns ``caption_id, track_id, caption,
is_valid_subset, familiarity, artist_id, album_id, path, duration``; captions may span lines, quoted) is read from the
user's copy (``dataset.path``: it is not shipped, its captions being CC BY-SA 4.0), with pandas as the examples read it
(``pd.read_csv``). One prompt per caption: its id is ``caption_id`` (the generated clip is ``<caption_id>.<ext>``, as
the examples name the generated folder) and its reference is the track (``reference.dir`` holds ``<track_id>.<ext>``,
the examples' ``reference_path_trackid`` folder). A track described by several captions is the reference of each of
them (KL_passt pairs every caption with its track: the examples' ``reference_path_captionid`` folder of copies), and a
protocol that scores a folder of distinct reference files (FD_openl3: ``openl3_fd(ref_path=reference_path_trackid)``,
706 files) counts it once (``references: distinct`` in the protocol;
:func:`evalkit.data.prompts.mark_reference_owners`).

``dataset.subset=nosinging`` keeps the captions of the user's copy of ``load/song_describer-nosinging.csv`` (586
captions, the same columns; its ``caption_id`` column is the subset).
"""
from __future__ import annotations

from pathlib import Path

#: the columns a prompt is made of (the table has more; they are ignored)
COLUMNS = ("caption_id", "track_id", "caption")
#: ``dataset.subset`` values: ``all``, or a subset read from the user's copy of a stable-audio-metrics table
SUBSETS: dict[str, str | None] = {
    "all": None,
    "nosinging": "stable-audio-metrics' load/song_describer-nosinging.csv (586 captions; column caption_id)"}


class SongDescriberError(ValueError):
    """A table or setting that cannot be used; the message names the file or setting and the fix."""


def _ids(value) -> str:
    """An id as a file name takes it: ``859`` for 859, 859.0 or " 859 " (pandas may read an int column as float)."""
    s = str(value).strip()
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    return s


def read_table(path, setting: str = "dataset.path", columns=COLUMNS):
    """The rows of a Song Describer table (a ``pandas.DataFrame`` of strings, ``columns`` checked), read as
    stable-audio-metrics' examples read it (``pd.read_csv``). :class:`SongDescriberError` names ``setting`` for a
    path that is not set, absent, unreadable, without the columns or without rows."""
    import pandas as pd

    if not path:
        raise SongDescriberError(f"dataset=song-describer reads the caption table from your copy of stable-audio-"
                                 f"metrics' load/song_describer.csv: set {setting}=FILE.csv (not shipped with evalkit: "
                                 f"its captions are CC BY-SA 4.0)")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise SongDescriberError(f"{setting}={path}: no such file")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except UnicodeDecodeError:  # a ValueError: before it
        raw = p.read_bytes()
        try:
            raw.decode("utf-8")
            where = ""
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            where = f" (line {line}, byte {exc.start}: {raw[exc.start:exc.start + 1]!r})"
        raise SongDescriberError(f"{setting}={path}: not UTF-8 text{where}; re-save it as UTF-8 (stable-audio-metrics' "
                                 f"table is UTF-8)") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise SongDescriberError(f"{setting}={path}: not a readable CSV table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SongDescriberError(f"{setting}={path}: no column {', '.join(missing)} (a Song Describer table has "
                                 f"{', '.join(COLUMNS)}, ...; found {', '.join(map(str, df.columns)) or 'none'})")
    if not len(df):
        raise SongDescriberError(f"{setting}={path}: no rows")
    return df


def record_lines(path, n_rows: int) -> list[int] | None:
    """The file line each of the table's ``n_rows`` data rows starts on (a quoted caption may span lines, blank lines
    are skipped as ``pd.read_csv`` skips them), read with the ``csv`` module; None when its records do not match the
    ``n_rows`` pandas read (errors then give the row's number instead)."""
    import csv

    starts, last = [], 0
    try:
        with open(Path(str(path)).expanduser(), newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for record in reader:
                start, last = last + 1, reader.line_num
                if record and any(cell.strip() for cell in record):
                    starts.append(start)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return starts[1:] if len(starts) == n_rows + 1 else None  # the header first


def load_rows(path, subset: str = "all", subset_file=None) -> list[tuple[str, str, str, str]]:
    """``(caption_id, track_id, caption, where)`` of every row of the table (``subset``: those whose ``caption_id``
    is in ``subset_file``), in the table's order; ``where`` is ``line N`` (the file line the row starts on) or, when
    the lines cannot be told, ``row N`` (data rows counted from 1). :class:`SongDescriberError` names the setting of
    an unknown subset, a subset file for ``all``, a row without a track or with an id that cannot name a file, and
    the line, or subset ids the table lacks."""
    if subset not in SUBSETS:
        raise SongDescriberError(f"dataset.subset={subset!r}: dataset=song-describer has {', '.join(SUBSETS)}")
    if SUBSETS[subset] is None and subset_file:
        raise SongDescriberError(f"dataset.subset_file={subset_file}: only read for dataset.subset="
                                 f"{'|'.join(k for k, v in SUBSETS.items() if v)} (here subset={subset})")
    df = read_table(path)
    lines = record_lines(path, len(df))
    where = [f"line {n}" for n in lines] if lines is not None else [f"row {i}" for i in range(1, len(df) + 1)]
    rows = [(_ids(c), _ids(t), str(cap).strip(), w) for c, t, cap, w in zip(df["caption_id"], df["track_id"],
                                                                           df["caption"], where)]
    for cid, tid, _, w in rows:
        if not tid:
            raise SongDescriberError(f"dataset.path={path}: {w} (caption_id {cid!r}) has no track_id: its "
                                     f"reference cannot be named")
        for column, value in (("caption_id", cid), ("track_id", tid)):
            if not value.isdigit() or value != str(int(value)):
                raise SongDescriberError(
                    f"dataset.path={path}: {w} has {column} {value!r}: Song Describer's ids are whole numbers "
                    f"without leading zeros (the files are named <caption_id>.<ext> and <track_id>.<ext>, as in "
                    f"stable-audio-metrics' load/song_describer.csv); fix that cell (a spreadsheet may have written "
                    f"it as text, a float or with a leading zero)")
    if SUBSETS[subset] is not None:
        if not subset_file:
            raise SongDescriberError(f"dataset.subset={subset} reads {SUBSETS[subset]}: set dataset.subset_file="
                                     f"FILE.csv (your copy of it; not shipped with evalkit: CC BY-SA 4.0 captions)")
        keep = {_ids(c) for c in read_table(subset_file, "dataset.subset_file", ("caption_id",))["caption_id"]}
        unknown = keep - {r[0] for r in rows}
        if unknown:
            raise SongDescriberError(f"dataset.subset_file={subset_file}: {len(unknown)} caption_ids are not in "
                                     f"{path} (e.g. {', '.join(sorted(unknown)[:3])}): not a subset of this table")
        rows = [r for r in rows if r[0] in keep]
    return rows


__all__ = ["COLUMNS", "SUBSETS", "SongDescriberError", "load_rows", "read_table"]
