"""Chroma cosine similarity on real music (../shared/data/music: 12 public-domain pieces rendered with FluidSynth).

Each piece's melody (top part alone, on piano) against its own full arrangement must score clearly higher than
against the other pieces' arrangements. Values measured with the audiocraft recipe (librosa 0.11.0, torch CPU):
over all 12 x 12 pairs, matching 0.4293 (407 of 948 frames) vs non-matching 0.1072, margin 0.3221; over the first
8 pieces 0.4873 vs 0.1187 (music/README.md: 0.49 vs 0.12). The counts are whole frames (79 per clip), so the
tolerances below allow a few frames to flip on a near-tie with another FFT backend.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.audio import convert_audio, load_audio
from evalkit.metrics.base import Clip
from evalkit.metrics.chroma import ChromaCosineSimilarity, ChromaFrontEnd

from references.audiocraft_chroma import ChromaCosineSimilarity as AudiocraftChroma

try:  # tests/ as a rootdir-relative folder (pytest's default "prepend" import mode) or as a package
    from test_chroma import RECIPE
except ImportError:  # pragma: no cover
    from tests.test_chroma import RECIPE

MUSIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "music"
if not (MUSIC / "metadata.csv").is_file():
    pytest.skip(f"shared music fixtures not found at {MUSIC}", allow_module_level=True)

with open(MUSIC / "metadata.csv", newline="") as fh:
    IDS = [row["id"] for row in csv.DictReader(fh)]

# decoded once per test session (module scope): id -> (full [2, T], melody [1, T]) at 32 kHz
_AUDIO = {i: (load_audio(MUSIC / f"{i}.flac"), load_audio(MUSIC / f"{i}.melody.flac")) for i in IDS}


@pytest.fixture(scope="module")
def chromagrams():
    fe = ChromaFrontEnd(RECIPE)
    full = torch.stack([convert_audio(w, sr, 32000, 1)[0] for (w, sr), _ in _AUDIO.values()])
    mel = torch.stack([convert_audio(w, sr, 32000, 1)[0] for _, (w, sr) in _AUDIO.values()])
    return fe(mel), fe(full)  # [12, 79, 12] one-hot each


@pytest.fixture(scope="module")
def similarity(chromagrams):
    mel, full = chromagrams
    n = _AUDIO[IDS[0]][0][0].shape[-1]
    t = math.ceil(n / 4096)
    # one-hot rows: the frame cosine is 1 where the dominant pitch classes agree, else 0
    return torch.einsum("itc,jtc->ij", mel[:, :t], full[:, :t]).double().numpy() / t  # [melody i, arrangement j]


def test_fixtures_are_what_the_readme_says():
    assert len(IDS) == 12
    for (full, sr), (mel, msr) in _AUDIO.values():
        assert sr == msr == 32000 and full.shape == (2, 320000) and mel.shape == (1, 320000)


def test_melody_matches_its_own_arrangement(similarity):
    S = similarity
    k = len(IDS)
    off = ~np.eye(k, dtype=bool)
    match, other = np.diag(S).mean(), S[off].mean()
    assert match == pytest.approx(0.4293, abs=0.006)
    assert other == pytest.approx(0.1072, abs=0.004)
    assert match - other > 0.30  # measured 0.3221
    # the README's figure over the first 8 pieces
    assert np.diag(S[:8, :8]).mean() == pytest.approx(0.49, abs=0.01)
    assert S[:8, :8][~np.eye(8, dtype=bool)].mean() == pytest.approx(0.12, abs=0.01)
    # per piece: its own arrangement beats the mean of the others by >= 0.10 for every melody (measured min 0.108,
    # the Mozart quartet) ...
    own_minus_rest = [S[i, i] - np.delete(S[i], i).mean() for i in range(k)]
    assert min(own_minus_rest) > 0.09
    # ... and is the best of the 12 arrangements for 10 melodies (bwv165.6 on nylon guitar ranks 3rd: its
    # melody matches arrangements 1 and 5 on 20 frames vs 19 for its own; Corelli ranks 2nd)
    assert sum(int(S[i].argmax() == i) for i in range(k)) >= 10


def test_clip_against_itself_is_one(chromagrams):
    mel, full = chromagrams
    for c in (mel, full):
        assert torch.equal(torch.einsum("itc,itc->i", c, c), torch.full((12,), 79.0))
    m = ChromaCosineSimilarity(RECIPE)
    (w, sr), _ = _AUDIO[IDS[0]]
    assert m.update([Clip("x", "", w, sr, w.clone(), sr)])["x"].values == {"chroma": 1.0, "chroma_frames": 79}


def test_metric_on_matching_pairs_equals_matrix_and_audiocraft(similarity):
    pytest.importorskip("torchaudio")
    m = ChromaCosineSimilarity(RECIPE)
    # the full arrangement plays the part of the generated audio, the melody that of the melody reference
    clips = [Clip(i, "", full, sr, mel, msr) for i, ((full, sr), (mel, msr)) in _AUDIO.items()]
    out = m.update(clips)
    np.testing.assert_allclose([out[i].values["chroma"] for i in IDS], np.diag(similarity), atol=1e-12)
    assert m.compute()["chroma"] == pytest.approx(np.diag(similarity).mean(), abs=1e-12)
    # audiocraft's own computation (torchaudio Spectrogram + librosa filter bank), first 3 arrangements vs the next pieces' melodies
    ref_impl = AudiocraftChroma()
    fulls = torch.stack([_AUDIO[i][0][0] for i in IDS[:3]])
    mels = torch.stack([_AUDIO[i][1][0].expand(2, -1) for i in IDS[1:4]])  # mean of the duplicated channel = itself
    expected = ref_impl.score(fulls, mels, torch.full((3,), 320000), 32000)
    got = ChromaCosineSimilarity(RECIPE).update(
        [Clip(str(j), "", fulls[j], 32000, _AUDIO[IDS[j + 1]][1][0], 32000) for j in range(3)])
    for j, (s, t) in enumerate(expected):
        assert got[str(j)].values == {"chroma": s / t, "chroma_frames": t}
        assert got[str(j)].values["chroma"] == pytest.approx(similarity[j + 1, j], abs=1e-12)
