"""Melody variants end to end on real music: each prompt conditioned on its own reference clip (two pieces from
../shared/data/music), scored with chroma; melody.source=none generates from text and reports chroma as skipped."""
import csv
import shutil

import pandas as pd
import pytest
import soundfile as sf

from evalkit.run import run
from tests.test_run import cfg

PIECES = ["shared00_bach_bwv66-6", "shared09_mozart_k80"]


@pytest.fixture(scope="module")
def music_inputs(music_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("melody")
    (root / "ref").mkdir()
    meta = {r["id"]: r for r in csv.DictReader(open(music_dir / "metadata.csv", encoding="utf-8"))}
    for pid in PIECES:
        shutil.copyfile(music_dir / f"{pid}.flac", root / "ref" / f"{pid}.flac")
    with open(root / "prompts.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "caption"])
        for pid in PIECES:
            w.writerow([pid, meta[pid]["caption"]])
    return root


@pytest.mark.parametrize("model, channels", [("tiny-melody", 1), ("tiny-stereo-melody", 2)])
def test_tiny_melody_models_on_real_music(music_inputs, tmp_path, model, channels):
    c = cfg(f"model={model}", "dataset=prompts", f"dataset.path={music_inputs / 'prompts.csv'}",
            f"reference.dir={music_inputs / 'ref'}", "generation.duration=2.0", "metrics=[chroma]", "progress=false",
            "cache.generations=false")
    assert c.melody.source == "reference"
    s = run(c, tmp_path)
    assert s["n_clips"] == 2 and s["n_missing_reference"] == 0 and s["random_weights"] is True
    ch = s["metrics"]["chroma"]
    assert ch["n_clips"] == 2 and 0.0 <= ch["value"] <= 1.0
    df = pd.read_parquet(tmp_path / "clips.parquet")
    for path in df.audio_path:
        info = sf.info(path)
        assert (info.channels, info.frames) == (channels, 64000)
    # frame-weighted: each 10 s reference has ceil(320000 / 4096) = 79 chroma frames
    assert list(df.chroma_frames) == [79, 79]
    metas = list((tmp_path / "generation").glob("batch-*.json"))
    assert metas and all('"melody": "reference"' in m.read_text() for m in metas)


def test_melody_source_none_skips_chroma(music_inputs, tmp_path):
    c = cfg("model=tiny-melody", "dataset=prompts", f"dataset.path={music_inputs / 'prompts.csv'}",
            f"reference.dir={music_inputs / 'ref'}", "generation.duration=1.0", "metrics=[chroma]", "melody.source=none",
            "progress=false")
    s = run(c, tmp_path)
    assert s["metrics"]["chroma"]["value"] is None
    assert "melody.source=none" in s["metrics"]["chroma"]["skipped"]
