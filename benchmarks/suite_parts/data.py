"""The full-size suite's clip set: 32 pairs of 10 s music built from the 12 shared pieces (``shared/data/music``).

Every pair k (k = 0..31) takes piece ``i = k % 12`` and variant ``v = k // 12``:

* reference ``ref/<id>.wav`` (16-bit PCM, 32 kHz stereo: MusicCaps references are 16-bit wav files):
  v = 0 the piece's full arrangement; v = 1 the arrangement transposed up ``1 + i % 5`` semitones (played faster by
  resampling, then looped to 10 s); v = 2 (k = 24..31) a mix of piece i (0.6) and piece ``(i + 5) % 12`` (0.4).
* "generated" ``gen/<id>.flac`` (16-bit FLAC, 32 kHz stereo: what evalkit's generation stage writes): the piece's
  melody line (mono, panned left/right at 0.8/0.6) over its arrangement at -9 dB, the whole at a gain of
  ``-2 - (k % 7)`` dB; v = 1 transposed like its reference; v = 2 over the other piece's arrangement instead.
* caption: the piece's caption from ``metadata.csv``, plus the variant ("transposed up 3 semitones", "mixed with a
  church organ").

So the set has 32 different spectra and harmonies (CLAP, VGGish and PaSST see 32 different inputs), generated clips
that follow their reference's melody in 24 of 32 pairs (a chroma score that is not constant) and two file formats
to decode. Written once per suite run into a temporary folder; both contenders of every metric read these files.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

SR = 32000
SECONDS = 10.0
MUSIC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "music"


@dataclass(frozen=True)
class ClipSet:
    root: Path
    ids: list[str]
    captions: dict[str, str]
    seconds: float = 10.0  # each file's length

    @property
    def gen_dir(self) -> Path:
        return self.root / "gen"

    @property
    def ref_dir(self) -> Path:
        return self.root / "ref"

    def gen(self, cid: str) -> Path:
        return self.gen_dir / f"{cid}.flac"

    def ref(self, cid: str) -> Path:
        return self.ref_dir / f"{cid}.wav"


def _pieces(music: Path) -> list[dict]:
    with open(music / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) < 12:
        raise FileNotFoundError(f"{music}: expected the 12 shared pieces, found {len(rows)}")
    return rows[:12]


def _read(path: Path) -> torch.Tensor:
    from evalkit.audio import load_audio

    wav, sr = load_audio(path)
    if sr != SR:
        raise ValueError(f"{path}: {sr} Hz, expected {SR}")
    return wav


def _fit(wav: torch.Tensor, n: int) -> torch.Tensor:
    """Loop (tile) or cut to ``n`` samples."""
    reps = -(-n // wav.shape[-1])
    return wav.repeat(1, reps)[..., :n]


def _transpose(wav: torch.Tensor, semitones: int) -> torch.Tensor:
    """Up by ``semitones``: resample to ``SR / 2**(s/12)`` rounded to 100 Hz and play back at ``SR`` (faster and
    higher; the rounding is < 7 cents and keeps julius' polyphase filter small: 32000 -> 30204 Hz has 7,551 phases
    and took minutes and 7 GB to build the 32 pairs, 30200 Hz has 151)."""
    import julius

    new_sr = int(round(SR / 2 ** (semitones / 12) / 100)) * 100
    return julius.resample_frac(wav, SR, new_sr)


def _pair(k: int, pieces: list[dict], music: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    n = int(SR * SECONDS)
    i, v = k % 12, k // 12
    row = pieces[i]
    full, melody = _read(music / f"{row['id']}.flac"), _read(music / f"{row['id']}.melody.flac")
    caption = row["caption"]
    if v == 1:
        s = 1 + i % 5
        full, melody = _transpose(full, s), _transpose(melody, s)
        caption += f", transposed up {s} semitone{'s' if s > 1 else ''}"
    ref, backing = _fit(full, n), _fit(full, n)
    if v == 2:
        other = pieces[(i + 5) % 12]
        backing = _fit(_read(music / f"{other['id']}.flac"), n)
        ref = 0.6 * ref + 0.4 * backing
        caption += f", mixed with {other['instrument']}"
    mel = _fit(melody.mean(0, keepdim=True), n)
    gen = torch.cat([0.8 * mel, 0.6 * mel]) + 10 ** (-9 / 20) * backing
    gen = gen * 10 ** ((-2 - k % 7) / 20)
    return gen.clamp(-1, 1), ref.clamp(-1, 1), caption


def build_clip_set(root: Path, n_clips: int = 32, music: Path = MUSIC) -> ClipSet:
    """Write ``n_clips`` (<= 36) pairs under ``root`` (see the module doc) and return what was written."""
    from evalkit.audio import save_audio

    if not 1 <= n_clips <= 36:
        raise ValueError(f"n_clips={n_clips}: the recipe makes 1..36 pairs")
    pieces = _pieces(music)
    ids, captions = [], {}
    for k in range(n_clips):
        gen, ref, caption = _pair(k, pieces, music)
        cid = f"pair{k:02d}"
        save_audio(root / "gen" / f"{cid}.flac", gen, SR)
        save_audio(root / "ref" / f"{cid}.wav", ref, SR)
        ids.append(cid)
        captions[cid] = caption
    with open(root / "prompts.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "caption"])
        w.writerows([(cid, captions[cid]) for cid in ids])
    return ClipSet(root, ids, captions)


#: the circular shift of the j-th clip of a longer file: j x 0.37 s (no multiple of a window hop of 0.5 or 1 s for
#: j < 100), so that a clip that comes back (fewer clips than the file needs) gives new windows
SHIFT_S = 0.37


def longer_files(clips: ClipSet, root: Path, seconds: float) -> ClipSet:
    """The same ids, captions and formats with files of ``ceil(seconds / 10)`` clips each: file k of a side is clip k
    of that side followed by clips k+1, k+2, ... (cyclically), the j-th circularly shifted by ``j * SHIFT_S``; the
    pairs stay aligned (segment j of generated file k against segment j of reference file k). For the Fréchet
    distances on embeddings wider than the 10 s files give windows: evalkit refuses a covariance of fewer embeddings
    than dimensions (the full 32 pairs give 320 clap-laion-music windows for 512 dimensions and 672 OpenL3 frames
    for 1024). Returns ``clips`` itself when its files are long enough."""
    import math

    from evalkit.audio import save_audio

    per_file = math.ceil(seconds / SECONDS - 1e-9)
    if per_file <= 1:
        return clips
    n = len(clips.ids)
    for side, path in (("gen", clips.gen), ("ref", clips.ref)):
        wavs = [_read(path(cid)) for cid in clips.ids]
        for k, cid in enumerate(clips.ids):
            parts = [wavs[(k + j) % n].roll(int(round(j * SHIFT_S * SR)), dims=-1) for j in range(per_file)]
            save_audio(root / side / path(cid).name, torch.cat(parts, dim=-1), SR)
    return ClipSet(root, list(clips.ids), dict(clips.captions), per_file * SECONDS)


def describe() -> str:
    return __doc__.split("\n\n")[1].replace("\n", " ")


__all__ = ["ClipSet", "build_clip_set", "longer_files", "describe", "SR", "SECONDS"]
