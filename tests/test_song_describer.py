"""``dataset=song-describer``: stable-audio-metrics' Song Describer layout (one prompt per ``caption_id``, its reference
the track, ``<track_id>.<ext>``), from the command line as a user types it (tiny random weights).

The numbers are checked against the folders stable-audio-metrics' examples score (examples/songdescriber.py): FD_openl3
against a folder with each track once (``reference_path_trackid``), KL_passt against a folder with each caption's
track under the caption's id (``reference_path_captionid``), both built here from the same files and scored as plain
folders: a track described by several captions counts once in FD_openl3, and with every caption in KL_passt. Shards and
a limit do not change which caption counts a shared track."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from evalkit.data.prompts import PromptError, load_prompts
from evalkit.spec import RunSpec
from tests.conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
#: caption_id -> track_id: track 1004034 has three captions, 1009671 two, 1007274 one (as in the real table, where
#: 706 tracks carry 1,106 captions)
CAPTIONS = {"859": "1004034", "233": "1009671", "810": "1009671", "990": "1007274", "17": "1004034", "4": "1004034"}
TEXT = {"859": "Electronic music with a constant melody, accompanying instruments",
        "233": 'A rock song with a country vibe,\nmale vocals, drums and "acoustic" guitar',  # spans two lines
        "810": "Upbeat fast tempo with a blues rock feel", "990": "acoustic guitar solo, repeating progression",
        "17": "ambient pads and a slow pulse", "4": "a drum machine groove with a bass line"}
NOSINGING = ["859", "990", "17"]
COLUMNS = ["caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id", "album_id", "path",
           "duration"]


def _table(path, ids):
    rows = [{"caption_id": int(c), "track_id": int(CAPTIONS[c]), "caption": TEXT[c], "is_valid_subset": True,
             "familiarity": 0, "artist_id": 1, "album_id": 2, "path": f"{CAPTIONS[c][-2:]}/{CAPTIONS[c]}.mp3",
             "duration": 120.0} for c in ids]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)  # pandas quotes the multi-line caption, as SAM's file
    return path


def _clip(path, seed, sr, ch, sec):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * sec)) / sr
    x = [sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(60, 4000) * t) for _ in range(3))
         + 0.05 * rng.standard_normal(t.size) for _ in range(ch)]
    sf.write(path, np.stack(x, 1).astype(np.float32), sr, subtype="FLOAT")


def _sha1_first(ids):
    return sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())


@pytest.fixture(scope="module")
def sdd(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdd")
    table = _table(root / "song_describer.csv", list(CAPTIONS))
    nosinging = _table(root / "song_describer-nosinging.csv", NOSINGING)
    gen, tracks, by_caption, by_owner = (root / n for n in ("gen", "tracks", "by_caption", "by_owner"))
    for d in (gen, tracks, by_caption, by_owner):
        d.mkdir()
    for i, c in enumerate(CAPTIONS):
        _clip(gen / f"{c}.wav", i, (44100, 48000)[i % 2], 1 + i % 2, 6.0 + i)
    for i, t in enumerate(sorted(set(CAPTIONS.values()))):
        _clip(tracks / f"{t}.wav", 100 + i, 44100, 2, 12.0)
    owners = {}
    for c in _sha1_first(CAPTIONS):  # the run's order: the first caption of a track counts it
        owners.setdefault(CAPTIONS[c], c)
        shutil.copy(tracks / f"{CAPTIONS[c]}.wav", by_caption / f"{c}.wav")  # SAM's reference_path_captionid
    for t, c in owners.items():
        shutil.copy(tracks / f"{t}.wav", by_owner / f"{c}.wav")  # each track once, under its first caption's id
    return root, table, nosinging, gen, tracks, by_caption, by_owner, owners


def _run(root, name, *args, nproc=1):
    out = root / name
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] \
        if nproc > 1 else [sys.executable]
    p = subprocess.run([*launcher, "-m", "evalkit", "model=folder", "backbone_weights=random", "backbone_size=tiny",
                        f"hydra.run.dir={out}", "progress=false", "cache.scores=false", *args], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), pd.read_parquet(out / "clips.parquet").set_index("id")


def _spec(*args):
    return RunSpec.from_overrides(["dataset=song-describer", *args]).dataset


def test_one_prompt_per_caption_its_track_the_reference(sdd):
    root, table, nosinging, *_ , owners = sdd
    prompts = load_prompts(_spec(f"dataset.path={table}"))
    assert [p.id for p in prompts] == _sha1_first(CAPTIONS)
    assert {p.id: p.reference_id for p in prompts} == CAPTIONS
    assert {p.id: p.caption for p in prompts} == TEXT  # the quoted two-line caption read whole
    assert {p.id for p in prompts if p.owns_reference} == set(owners.values())  # 3 tracks, 3 owners of 6 captions
    sub = load_prompts(_spec(f"dataset.path={table}", "dataset.subset=nosinging", f"dataset.subset_file={nosinging}"))
    assert sorted(p.id for p in sub) == sorted(NOSINGING)
    # a limit selects first, then decides the owners among what is left: every selected track is counted once
    for n in range(1, 7):
        lim = load_prompts(_spec(f"dataset.path={table}", f"dataset.limit={n}"))
        assert [p.id for p in lim] == _sha1_first(CAPTIONS)[:n]
        assert sorted(p.reference_id for p in lim if p.owns_reference) == sorted({p.reference_id for p in lim})


def test_bad_tables_and_settings_name_the_file_and_fix(sdd, tmp_path):
    root, table, nosinging, *_ = sdd
    files = {"mc.csv": "ytid,caption\nabc,a song\n", "other.csv": "caption_id,track_id,caption\n99999,1,x\n",
             "dup.csv": "caption_id,track_id,caption\n5,1,x\n5,2,y\n",
             "notrack.csv": "caption_id,track_id,caption\n5,,x\n",
             "zero.csv": "caption_id,track_id,caption\n5,1,x\n01001,2,y\n",
             "nan.csv": "caption_id,track_id,caption\n5,1,x\nNaN,2,y\n",
             "sci.csv": "caption_id,track_id,caption\n5,1.001e3,x\n",
             "float.csv": "caption_id,track_id,caption\n5.0,1001.0,x\n6,7,y\n",
             # a quoted caption over three lines and a blank line: errors name the line the row starts on
             "lines.csv": 'caption_id,track_id,caption\n5,1,"one\ntwo\nthree"\n\n6,,x\n',
             "duplines.csv": 'caption_id,track_id,caption\n5,1,"one\ntwo"\n6,2,y\n5,3,z\n'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1.csv").write_bytes("caption_id,track_id,caption\n5,1,caf\u00e9 jazz\n".encode("latin-1"))
    mine = f"dataset.path={table}"
    cases = [  # (overrides, what the error must say)
        ([f"dataset.path={tmp_path / 'nope.csv'}"], "no such file"),
        ([f"dataset.path={tmp_path / 'mc.csv'}"], r"mc.csv: no column caption_id, track_id"),
        ([mine, "dataset.subset=nosinging"], r"set dataset.subset_file=FILE.csv"),
        ([mine, f"dataset.subset_file={nosinging}"], r"only read for dataset.subset=nosinging"),
        ([mine, "dataset.subset=nosinging", f"dataset.subset_file={tmp_path / 'other.csv'}"],
         r"1 caption_ids are not in .*99999"),
        ([f"dataset.path={tmp_path / 'dup.csv'}"], r"line 3 has a duplicate id '5' \(first at line 2\)"),
        ([f"dataset.path={tmp_path / 'notrack.csv'}"], r"line 2 \(caption_id '5'\) has no track_id"),
        ([mine, "dataset.subset=balanced"], r"dataset=song-describer has all, nosinging"),
        ([f"dataset.path={tmp_path / 'zero.csv'}"], r"line 3 has caption_id '01001': .*whole numbers"),
        ([f"dataset.path={tmp_path / 'nan.csv'}"], r"line 3 has caption_id 'NaN'"),
        ([f"dataset.path={tmp_path / 'sci.csv'}"], r"line 2 has track_id '1.001e3'"),
        ([f"dataset.path={tmp_path / 'latin1.csv'}"], r"not UTF-8 text \(line 2, byte 35: b'\\xe9'\); re-save it as UTF-8"),
        ([f"dataset.path={tmp_path / 'lines.csv'}"], r"line 6 \(caption_id '6'\) has no track_id"),
        ([f"dataset.path={tmp_path / 'duplines.csv'}"], r"line 5 has a duplicate id '5' \(first at line 2\)"),
    ]
    # what pandas writes for an int column with a blank elsewhere (5.0, 1001.0) still names the files 5 and 1001
    assert {p.id: p.reference_id for p in load_prompts(_spec(f"dataset.path={tmp_path / 'float.csv'}"))} == {
        "5": "1001", "6": "7"}
    with pytest.raises(PromptError, match=r"set dataset.path=FILE.csv .*CC BY-SA"):
        load_prompts({"name": "song-describer", "path": None})
    for overrides, match in cases:
        with pytest.raises(PromptError, match=match):
            load_prompts(_spec(*overrides))


def test_fd_counts_each_track_once_kl_pairs_every_caption(sdd):
    """The user's command against stable-audio-metrics' two reference folders, scored as plain folders."""
    root, table, nosinging, gen, tracks, by_caption, by_owner, owners = sdd
    metrics = "metrics=[fd_openl3,kl_passt]"
    s, df = _run(root, "sdd", f"model.dir={gen}", "dataset=song-describer", f"dataset.path={table}",
                 f"reference.dir={tracks}", metrics)
    s_track, _ = _run(root, "trackid", f"model.dir={gen}", f"reference.dir={by_owner}", metrics)
    s_caption, _ = _run(root, "captionid", f"model.dir={gen}", f"reference.dir={by_caption}", metrics)
    fd, kl = s["metrics"]["fd_openl3"], s["metrics"]["kl_passt"]
    assert fd["n_clips"] == kl["n_clips"] == 6
    # FD_openl3: every caption's clip against each of the 3 tracks once = the track-id folder, bit for bit
    assert fd["value"] == s_track["metrics"]["fd_openl3"]["value"]
    assert fd["values"]["n_ref_windows"] == s_track["metrics"]["fd_openl3"]["values"]["n_ref_windows"]
    assert (df["fd_openl3_ref_windows"] > 0).sum() == 3 and set(df.index[df["fd_openl3_ref_windows"] > 0]) == \
        set(owners.values())
    # counting a track once per caption (the caption-id folder) is another number
    assert s_caption["metrics"]["fd_openl3"]["value"] != pytest.approx(fd["value"], rel=1e-6)
    # KL_passt: each caption against its track = the caption-id folder, bit for bit
    assert kl["value"] == s_caption["metrics"]["kl_passt"]["value"]


def test_shards_give_the_one_process_number(sdd):
    root, table, nosinging, gen, tracks, *_ = sdd
    args = [f"model.dir={gen}", "dataset=song-describer", f"dataset.path={table}", f"reference.dir={tracks}",
            "metrics=[fd_openl3]", "metric_batch_size=1"]
    one, _ = _run(root, "one", *args)
    two, _ = _run(root, "two", *args, nproc=2)
    a, b = one["metrics"]["fd_openl3"]["values"], two["metrics"]["fd_openl3"]["values"]
    # which caption counts a shared track does not depend on the shard: the same reference windows, exactly
    assert b["n_ref_windows"] == a["n_ref_windows"] and b["n_gen_windows"] == a["n_gen_windows"]
    # the value: each rank's float64 sums added at the end, in another order than one process adds them (measured
    # 8e-11 relative here), the tolerance of tests/test_sharding.py
    assert two["metrics"]["fd_openl3"]["value"] == pytest.approx(one["metrics"]["fd_openl3"]["value"], rel=1e-9)


def test_a_track_counts_whatever_became_of_the_clip_of_its_counting_caption(sdd, tmp_path):
    """stable-audio-metrics reads the whole track folder: when the caption that counts a track (its first in the run's
    order) has no clip, an unreadable one, or one the file audit keeps from scoring (a NaN sample), the track still
    counts in FD_openl3's reference set - the full run's reference windows - and only the generated side loses the
    clip. Before the fix these three tracks left the reference set (measured on other files: 247 -> 137 windows)."""
    root, table, nosinging, gen, tracks, by_caption, by_owner, owners = sdd
    gen2 = tmp_path / "gen"
    shutil.copytree(gen, gen2)
    first, second, third = (owners[t] for t in sorted(owners))
    (gen2 / f"{first}.wav").unlink()
    (gen2 / f"{second}.wav").write_bytes(b"RIFF, but not a wav file")
    x, sr = sf.read(str(gen2 / f"{third}.wav"), dtype="float32", always_2d=True)
    x[10, 0] = np.nan
    sf.write(str(gen2 / f"{third}.wav"), x, sr, subtype="FLOAT")
    args = ["dataset=song-describer", f"dataset.path={table}", f"reference.dir={tracks}", "metrics=[fd_openl3]"]
    full, dfa = _run(tmp_path, "full", f"model.dir={gen}", *args)
    part, df = _run(tmp_path, "part", f"model.dir={gen2}", *args)
    a, b = full["metrics"]["fd_openl3"], part["metrics"]["fd_openl3"]
    assert a["n_clips"] == 6 and b["n_clips"] == 3
    assert b["values"]["n_ref_windows"] == a["values"]["n_ref_windows"]
    for c in owners.values():
        assert isinstance(df.loc[c, "skip_reason"], str), c
        assert df.loc[c, "fd_openl3_ref_windows"] == dfa.loc[c, "fd_openl3_ref_windows"] > 0, c
    # the number is stable-audio-metrics' on two folders: the three scored clips against the track-id folder (no
    # name in common: every clip without its reference, every track a file no clip is named after)
    plain = tmp_path / "plain"
    plain.mkdir()
    for c in set(CAPTIONS) - set(owners.values()):
        shutil.copy(gen / f"{c}.wav", plain / f"{c}.wav")
    two, _ = _run(tmp_path, "two-folders", f"model.dir={plain}", f"reference.dir={by_owner}", "metrics=[fd_openl3]")
    c = two["metrics"]["fd_openl3"]
    assert c["n_clips"] == 3 and c["values"]["n_ref_windows"] == a["values"]["n_ref_windows"]
    assert b["value"] == pytest.approx(c["value"], rel=1e-9)


def test_a_reference_folder_in_another_layout_is_refused_with_the_fix(sdd, tmp_path):
    """The caption-id folder given for the track-id folder, the release's ``<track_id>.2min.<ext>`` names, its
    two-digit subfolders: each refused before any work, saying what the folder holds and the line that fixes it;
    the line given for the subfolders makes a folder the run reads."""
    from evalkit.data.references import flatten_command
    from evalkit.stages.inputs import load_inputs

    root, table, nosinging, gen, tracks, by_caption, by_owner, owners = sdd
    nested, release = tmp_path / "audio", tmp_path / "release"
    (nested / "34").mkdir(parents=True)
    release.mkdir()
    for t in set(CAPTIONS.values()):
        shutil.copy(tracks / f"{t}.wav", nested / "34" / f"{t}.2min.wav")
        shutil.copy(tracks / f"{t}.wav", release / f"{t}.2min.wav")

    def inputs(folder):
        spec = RunSpec.from_overrides(["model=folder", f"model.dir={gen}", "dataset=song-describer",
                                       f"dataset.path={table}", f"reference.dir={folder}", "metrics=[fd_openl3]"])
        return load_inputs(spec, tmp_path / "run")

    for folder, match in ((by_caption, r"6 files are named by prompt id .*track_id.* not the caption-id folder"),
                          (release, r"3 files are named <id>\.2min\.<ext> .*ln -s"),
                          (nested, r"in subfolders \(e\.g\. 34/100\d+\.2min\.wav.*ln -s")):
        with pytest.raises(Exception, match=match):
            inputs(folder)
    for folder, nest in ((nested, True), (release, False)):
        subprocess.run(["bash", "-c", flatten_command(folder, nested=nest)], check=True)
        ins = inputs(f"{folder}-flat")
        assert not ins.missing_reference_ids and len(ins.references.paths) == 3
