"""A resumed run rescores a batch whose clip or reference file was replaced in place under the same name: the
scoring state's fingerprint is the files' sha256, not their names (a new user's report: editing a clip and rerunning
the same command kept the old numbers)."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import evalkit

SR = 32000
COMMON = dict(metrics=["kld"], backbone_weights="random", backbone_size="tiny", progress=False)


def _tone(path, freq: float, seed: int) -> None:
    t = np.arange(2 * SR) / SR
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.05
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), SR)


@pytest.fixture()
def folders(tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i, f in enumerate((220.0, 330.0, 440.0)):
        _tone(gen / f"c{i}.wav", f, i)
        _tone(ref / f"c{i}.wav", f * 1.5, 10 + i)
    return gen, ref


def _per_clip(out) -> dict[str, float]:
    df = pd.read_parquet(out / "clips.parquet")
    return dict(zip(df["id"], df["kld"]))


@pytest.mark.parametrize("side", ["gen", "ref"])
def test_a_file_replaced_in_place_is_rescored(folders, tmp_path, side):
    gen, ref = folders
    out = tmp_path / "run"
    evalkit.score(gen, reference=ref, out_dir=out, **COMMON)
    first = _per_clip(out)
    target = (gen if side == "gen" else ref) / "c1.wav"
    mtime = target.stat().st_mtime_ns
    _tone(target, 97.0, 99)  # new content, same name; same size and time, as `cp -p` would leave it
    os.utime(target, ns=(mtime, mtime))
    again = evalkit.score(gen, reference=ref, out_dir=out, **COMMON)
    fresh = evalkit.score(gen, reference=ref, out_dir=tmp_path / "fresh", **COMMON)
    got, want = _per_clip(out), _per_clip(tmp_path / "fresh")
    assert got == want  # the resumed folder holds what a fresh run computes
    assert got["c1"] != first["c1"] and got["c0"] == first["c0"]
    assert again["metrics"]["kld"]["value"] == fresh["metrics"]["kld"]["value"]
    assert json.loads((out / "summary.json").read_text())["metrics"]["kld"]["value"] == fresh["metrics"]["kld"]["value"]
