"""Reference sets: a folder of clips named ``<id>.<ext>`` (for MusicCaps, ``<ytid>.wav|flac|mp3``), or, for the
offline demo only, reference audio synthesised on the spot (labelled as such everywhere it is used).

Clips without a reference are listed (``missing``) and counted in the summary, never silently dropped.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from evalkit.audio import AUDIO_EXTENSIONS, save_audio
from evalkit.errors import InputError


class ReferenceError(InputError, ValueError):
    pass


#: files a clip folder may hold that are not clips and not worth a mention (evalkit.data.musiccaps writes the first)
NOT_CLIPS = ("manifest.csv",)


def list_audio_files(root: Path, setting: str) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """``{id: path}`` of the clips in ``root`` (``<id>.<ext>``, ext in :data:`AUDIO_EXTENSIONS`; hidden files, i.e.
    unfinished writes, ignored) and the files that cannot be clips as ``(path, reason)``. Two files for one id raise
    :class:`ReferenceError` naming both and ``setting``. A link whose target is gone is listed like a file: its clip
    stays in the set, and reading it fails with the reason (:func:`evalkit.audio.load_audio`: "a dangling link to
    <target>"), so it is flagged unreadable and counted instead of vanishing."""
    paths: dict[str, Path] = {}
    unusable: list[tuple[Path, str]] = []
    for p in sorted(root.iterdir()):
        dangling = p.is_symlink() and not p.exists()
        if p.is_dir() and not p.name.startswith("."):
            n = sum(1 for q in p.iterdir() if q.suffix.lower() in AUDIO_EXTENSIONS)
            if n:  # never read, never silently: listed with the reason
                unusable.append((p, f"a subfolder with {n} audio files: evalkit reads <id>.<ext> directly in "
                                    f"{setting}, not in subfolders"))
            continue
        if p.name.startswith(".") or not (p.is_file() or dangling) or p.name in NOT_CLIPS:
            continue
        if p.suffix.lower() not in AUDIO_EXTENSIONS:
            unusable.append((p, f"unsupported format (evalkit reads {', '.join(AUDIO_EXTENSIONS)})"))
            continue
        if p.stem in paths:
            raise ReferenceError(f"{setting}: two files for id {p.stem!r}: {paths[p.stem].name} and {p.name}; keep one")
        paths[p.stem] = p
    return paths, unusable


#: the Song Describer release's suffix of a track file (``<track_id>.2min.mp3``, in two-digit subfolders)
RELEASE_SUFFIX = ".2min"


def flatten_command(root: Path, nested: bool = True) -> str:
    """A shell line that links the clips of ``root`` (``nested``: of its subfolders) as ``<root>-flat/<id>.<ext>``,
    the release's ``.2min`` suffix dropped."""
    files = f"{root}/*/*.*" if nested else f"{root}/*{RELEASE_SUFFIX}.*"
    return (f'mkdir -p "{root}-flat" && for f in "{root}"/{files[len(str(root)) + 1:]}; do b=$(basename "$f"); '
            f'ln -s "$f" "{root}-flat/${{b/{RELEASE_SUFFIX}./.}}"; done')


def nested_hint(root: Path) -> str:
    """Why a folder without clips at its top may still hold them: audio in subfolders (the Song Describer release's
    ``XX/<track_id>.2min.mp3``), with the line that lays them out flat; "" when there are none."""
    try:
        nested = next((p for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
                       for p in sorted(d.iterdir()) if p.suffix.lower() in AUDIO_EXTENSIONS), None)
    except OSError:
        return ""
    if nested is None:
        return ""
    return (f"; its audio is in subfolders (e.g. {nested.relative_to(root)}, as the Song Describer release lays out "
            f"XX/<track_id>.2min.mp3): evalkit reads <id>.<ext> directly in the folder, so link them flat "
            f"(`{flatten_command(root)}`) and pass that folder")


def id_key(clip_id: str) -> str:
    """The form in which clip ids are matched across files and tables: Unicode NFC. macOS writes file names
    decomposed (NFD: ``cafe\u0301``) while a typed caption table holds ``caf\u00e9``; both look the same."""
    import unicodedata

    return unicodedata.normalize("NFC", str(clip_id))


@dataclass
class ReferenceSet:
    root: Path | None
    paths: dict[str, Path] = field(default_factory=dict)
    synthetic: bool = False
    #: files of the folder that cannot be clips, with the reason
    unusable: list[tuple[Path, str]] = field(default_factory=list)

    @classmethod
    def from_dir(cls, root: str | Path, setting: str = "reference.dir") -> "ReferenceSet":
        from evalkit.io import folder_problem

        root = Path(root).expanduser()
        problem = folder_problem(root)
        if problem:
            raise ReferenceError(f"{setting}={root}: {problem}")
        paths, unusable = list_audio_files(root, setting)
        if not paths:
            raise ReferenceError(f"{setting}={root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) named <id>.<ext>"
                                 + nested_hint(root))
        return cls(root=root, paths=paths, unusable=unusable)

    @classmethod
    def empty(cls) -> "ReferenceSet":
        return cls(root=None)

    def get(self, key: str) -> Path | None:
        """The reference of clip id ``key``; ids match in Unicode NFC form (:func:`id_key`)."""
        return self.paths.get(key) or self._by_key().get(id_key(key))

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if self.get(k) is None]

    def extra(self, keys: Iterable[str]) -> list[str]:
        keys = {id_key(k) for k in keys}
        return sorted(k for k in self.paths if id_key(k) not in keys)

    def _by_key(self) -> dict[str, Path]:
        return {id_key(k): p for k, p in self.paths.items()}


# ----------------------------------------------------------------------------------------------------------------
# Synthesised references (offline demo)
# ----------------------------------------------------------------------------------------------------------------
_NOTE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _midi(name: str) -> float:
    return 12 * (int(name[-1]) + 1) + _NOTE[name[0]] + (1 if "#" in name else 0)


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


PROGRESSIONS = [
    [["C3", "E4", "G4", "C5"], ["A2", "E4", "A4", "C5"], ["F2", "F4", "A4", "C5"], ["G2", "D4", "G4", "B4"]],
    [["C4", "E4", "G4"], ["F4", "A4", "C5"], ["G4", "B4", "D5"], ["C4", "E4", "G4"]],
    [["A2", "C4", "E4"], ["F2", "A3", "C4"], ["C3", "E3", "G3"], ["G2", "B3", "D4"]],
]


def synth_clip(key: str, sample_rate: int = 32000, duration: float = 10.0, channels: int = 1) -> torch.Tensor:
    """A deterministic stand-in clip for ``key``: a chord progression of harmonic tones (or, for keys containing
    'noise', filtered noise over a drone). Same key -> same samples on every machine."""
    seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    n = int(round(sample_rate * duration))
    t = np.arange(n) / sample_rate
    if "noise" in key:
        x = 0.05 * np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
        x += 0.2 * np.sin(2 * math.pi * 55.0 * t)
    else:
        prog = PROGRESSIONS[(seed // 12) % len(PROGRESSIONS)]
        shift = seed % 12 - 5  # transpose by -5..+6 semitones: distinct keys give distinct clips
        x = np.zeros(n)
        seg = n // len(prog)
        env = np.minimum(1.0, np.minimum(np.arange(seg) / 400, (seg - np.arange(seg)) / 400))
        for i, chord in enumerate(prog):
            tt = t[:seg]
            s = sum(sum((0.5**h) * np.sin(2 * math.pi * _hz(_midi(nm) + shift) * (h + 1) * tt) for h in range(4)) for nm in chord)
            x[i * seg:(i + 1) * seg] = env * s
        x = 0.3 * x / np.abs(x).max()
    wav = torch.from_numpy(x.astype(np.float32))[None]
    return wav.expand(channels, n).clone()


def synthesize_references(keys: Iterable[str], out_dir: str | Path, sample_rate: int = 32000, duration: float = 10.0) -> ReferenceSet:
    out_dir = Path(out_dir)
    for key in keys:
        path = out_dir / f"{key}.flac"
        if not path.exists():
            save_audio(path, synth_clip(key, sample_rate, duration), sample_rate)
    ref = ReferenceSet.from_dir(out_dir)
    ref.synthetic = True
    return ref
