"""stable-audio-metrics' MusicCaps lists as named dataset settings, on the real MusicCaps table: its 87
``NOT_IN_MUSICCAPS`` ytids as ``dataset.exclude=[stable-audio-metrics-missing]`` (5,521 -> 5,434 prompts, as its
examples score), and its no-singing subset read from the user's copy of ``load/musiccaps-public-nosinging.csv``
(``dataset.subset=nosinging dataset.subset_file=...``), from the command line's settings to the prompts."""
from __future__ import annotations

import csv

import pytest

from evalkit.data.prompts import PromptError, load_musiccaps, load_prompts
from evalkit.data.stable_audio_metrics import NOT_IN_MUSICCAPS
from evalkit.spec import RunSpec


def _nosinging_copy(musiccaps_csv, path, n=40):
    """A file laid out as stable-audio-metrics' load/musiccaps-public-nosinging.csv: MusicCaps' header and rows (here
    every 50th row without 'vocal' or 'sing' in its caption, plus one NOT_IN_MUSICCAPS id)."""
    with open(musiccaps_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames
    chosen = [r for r in rows[::50] if not any(w in r["caption"].lower() for w in ("vocal", "sing"))][:n]
    chosen.append(next(r for r in rows if r["ytid"] == NOT_IN_MUSICCAPS[0]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(chosen)
    return [r["ytid"] for r in chosen]


def test_not_in_musiccaps_is_a_named_exclusion(musiccaps_csv):
    every = load_musiccaps(str(musiccaps_csv), "all")
    assert len(NOT_IN_MUSICCAPS) == len(set(NOT_IN_MUSICCAPS)) == 87
    assert set(NOT_IN_MUSICCAPS) <= {p.id for p in every}  # all 87 are MusicCaps ids: dropping them means something
    spec = RunSpec.from_overrides(["dataset=musiccaps", f"dataset.path={musiccaps_csv}",
                                   "dataset.exclude=[stable-audio-metrics-missing]"])
    kept = load_prompts(spec.dataset)
    plain = load_prompts(RunSpec.from_overrides(["dataset=musiccaps", f"dataset.path={musiccaps_csv}"]).dataset)
    assert len(every) == len(plain) == 5521 and len(kept) == 5434
    assert [p.id for p in kept] == [p.id for p in plain if p.id not in set(NOT_IN_MUSICCAPS)]
    balanced = load_musiccaps(str(musiccaps_csv), "balanced", exclude=["stable-audio-metrics-missing"])
    assert len(balanced) == 1000 - len(set(NOT_IN_MUSICCAPS) & {p.id for p in load_musiccaps(str(musiccaps_csv),
                                                                                               "balanced")})
    with pytest.raises(PromptError, match=r"'sam' is not a named exclusion; known: stable-audio-metrics-missing"):
        load_musiccaps(str(musiccaps_csv), exclude=["sam"])


def test_nosinging_subset_from_the_users_copy(musiccaps_csv, tmp_path):
    path = tmp_path / "musiccaps-public-nosinging.csv"
    ids = _nosinging_copy(musiccaps_csv, path)
    spec = RunSpec.from_overrides(["dataset=musiccaps", f"dataset.path={musiccaps_csv}", "dataset.subset=nosinging",
                                   f"dataset.subset_file={path}"])
    got = load_prompts(spec.dataset)
    plain = load_prompts(RunSpec.from_overrides(["dataset=musiccaps", f"dataset.path={musiccaps_csv}"]).dataset)
    assert [p for p in got] == [p for p in plain if p.id in set(ids)] and len(got) == len(ids)  # ids and captions
    order = [p.id for p in load_musiccaps(str(musiccaps_csv), "all")]
    both = load_musiccaps(str(musiccaps_csv), "nosinging", subset_file=str(path),
                          exclude=["stable-audio-metrics-missing"])
    assert [p.id for p in both] == [i for i in sorted(ids, key=order.index) if i != NOT_IN_MUSICCAPS[0]]


def test_nosinging_subset_errors(musiccaps_csv, tmp_path):
    with pytest.raises(PromptError, match=r"dataset\.subset=nosinging reads stable-audio-metrics' load/musiccaps-"
                                          r"public-nosinging\.csv.*set dataset\.subset_file=FILE\.csv"):
        load_musiccaps(str(musiccaps_csv), "nosinging")
    with pytest.raises(PromptError, match="no such file"):
        load_musiccaps(str(musiccaps_csv), "nosinging", subset_file=str(tmp_path / "none.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("ytid,caption\nnot-a-ytid,x\n-0Gj8-vB1q4,y\n")
    with pytest.raises(PromptError, match=r"1 ytids are not in .*not-a-ytid"):
        load_musiccaps(str(musiccaps_csv), "nosinging", subset_file=str(bad))
    (tmp_path / "noid.csv").write_text("caption_id,caption\n1,x\n")
    with pytest.raises(PromptError, match="no ytid column"):
        load_musiccaps(str(musiccaps_csv), "nosinging", subset_file=str(tmp_path / "noid.csv"))
    with pytest.raises(PromptError, match=r"subset_file=.*only read for dataset\.subset=nosinging"):
        load_musiccaps(str(musiccaps_csv), "balanced", subset_file=str(bad))
