"""A protocol whose tool scores two folders (``references: distinct``, ``pairing: unpaired``: fadtk, kadtk,
frechet-audio-distance, stable-audio-metrics' FD_openl3, MAD) counts every reference file whatever became of the
generated clip of its name, and every generated clip whatever became of its reference - from the command line, on
files a user has.

The right value: a generated folder with missing, unreadable, non-finite and silent clips, a reference folder with
files no clip is named after and a clip without its reference, gives for FAD (fadtk's VGGish recipe), KAD (kadtk),
MAUVE and FD_openl3 the numbers of the same two folders with the unusable generated files taken out - the sets the tool
reads. Before the fix, a reference whose clip was missing, unreadable or skipped left the reference set (the same
folders gave another FAD), and a reference file no clip was named after was never counted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from evalkit.report.rundir import load_clip_arrays

REPO = Path(__file__).resolve().parents[1]
METRICS = ("fad", "kad", "mauve", "fd_openl3")
N = 24


def _clip(path: Path, seed: int, sr: int, ch: int, seconds: float, subtype: str = "PCM_16") -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = [sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(3))
         + 0.02 * rng.standard_normal(t.size) for _ in range(ch)]
    sf.write(str(path), np.stack(x, 1).astype(np.float32), sr, subtype=subtype)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """GEN: c00..c23 minus c00, c01 (missing), c02 unreadable, c03 with a NaN sample (the file audit keeps it from
    every metric), c04 silent (each metric's audit keeps it); 44.1 kHz stereo, 8-9 s (FAD's 128-d VGGish needs 128
    embeddings a side). REF: c00..c23 minus c05 (a
    clip without its reference), plus x01, x02 (no clip of that name); 48 kHz mono. CLEAN: GEN without c02..c04."""
    root = tmp_path_factory.mktemp("two-folders")
    gen, ref, clean = (root / n for n in ("gen", "ref", "clean"))
    for d in (gen, ref, clean):
        d.mkdir()
    for i in range(N):
        _clip(ref / f"c{i:02d}.wav", 1000 + i, 48000, 1, 8.0 + 0.05 * i)
        if i >= 2:
            _clip(gen / f"c{i:02d}.wav", i, 44100, 2, 8.0 + 0.04 * i, subtype="FLOAT")
    for seed, extra in enumerate(("x01", "x02")):
        _clip(ref / f"{extra}.wav", 2000 + seed, 48000, 1, 8.5)
    (ref / "c05.wav").unlink()
    (gen / "c02.wav").write_bytes(b"RIFF, but not a wav file")
    x, sr = sf.read(str(gen / "c03.wav"), dtype="float32")
    x[100, 0] = np.nan
    sf.write(str(gen / "c03.wav"), x, sr, subtype="FLOAT")
    sf.write(str(gen / "c04.wav"), np.zeros((sr * 8, 2), np.float32), sr, subtype="FLOAT")
    for f in sorted(gen.iterdir()):
        if f.stem not in ("c02", "c03", "c04"):
            shutil.copy(f, clean / f.name)
    return root


def _not_json(name: str):
    raise ValueError(f"summary.json holds {name}, which is not JSON")


def _run(root: Path, name: str, gen: Path, metrics=METRICS, fad: str = "vggish",
         ref: Path | None = None) -> tuple[dict, pd.DataFrame]:
    out = root / name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    kad = ["metrics.kad.protocol=kadtk"] if "kad" in metrics else []
    p = subprocess.run([sys.executable, "-m", "evalkit", "model=folder", f"model.dir={gen}",
                        f"reference.dir={ref or root / 'ref'}", f"metrics=[{','.join(metrics)}]",
                        *([f"metrics.fad.protocol={fad}"] if "fad" in metrics else []), *kad, "backbone_weights=random", "backbone_size=tiny", "progress=false", "cache.scores=false",
                        "metric_batch_size=5", f"hydra.run.dir={out}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads((out / "summary.json").read_text(), parse_constant=_not_json), pd.read_parquet(out / "clips.parquet").set_index("id")


def test_each_side_is_its_folder_whatever_became_of_the_other(folders):
    dirty, df = _run(folders, "dirty", folders / "gen")
    clean, _ = _run(folders, "clean", folders / "clean")
    for m in METRICS:
        a, b = dirty["metrics"][m], clean["metrics"][m]
        assert a["n_clips"] == b["n_clips"] == 19, (m, a["n_clips"], b["n_clips"])  # c05..c23 (c05: no reference)
        va, vb = a["values"], b["values"]
        # the sizes of both sets (the skip counters differ: the dirty run names the silent c04 it skipped)
        counts = [k for k in va if k.startswith("n_") and ("ref" in k or "gen" in k) and not k.endswith("_skipped")]
        assert counts and {k: va[k] for k in counts} == {k: vb[k] for k in counts}, m
        # the same embeddings of the same files, bit for bit, under the same clip ids
        for side in ("gen", "ref"):
            col = f"{m}_{side}_emb"
            x, y = (load_clip_arrays(folders / run / "embeddings", col) for run in ("dirty", "clean"))
            assert sorted(x) == sorted(y) and len(x) == (19 if side == "gen" else 25), (col, sorted(x), sorted(y))
            assert all(np.array_equal(x[k], y[k]) for k in x), col
        # KAD and MAUVE compute from those arrays in clip-id order: the same number. FAD and FD_openl3 add float64
        # sums in another order (the clean run meets c02..c04's references as files no clip is named after, after
        # the clips): FAD to 1e-9 as tests/test_sharding.py; FD_openl3's covariances here are rank-deficient (tiny
        # OpenL3, mono references: rank 16 of 32), so its matrix square root moves that last-bit difference to
        # 1.4e-7 relative (measured, on identical embeddings); the references lost before the fix moved these
        # four numbers by 1 to 10 % (measured)
        tol = {"fad": 1e-9, "fd_openl3": 1e-6}.get(m, 0)
        assert a["value"] == pytest.approx(b["value"], rel=tol, abs=0), m
    # 25 reference files (c00..c23 without c05, x01, x02), each counted once whatever became of its clip: one MAUVE
    # vector each (max-pooled), and FD_openl3's reference windows are those of the 25 files
    ro = dirty["reference_only"]
    assert ro["n_files"] == 4 and sorted(ro["files"]) == ["c00", "c01", "x01", "x02"]
    assert sorted(ro["metrics"]) == sorted(METRICS)
    assert dirty["metrics"]["mauve"]["values"]["n_ref_vectors"] == 25
    per_file = [w for w in df["fd_openl3_ref_windows"].dropna() if w > 0] + [f["fd_openl3_ref_windows"]
                                                                           for f in ro["files"].values()]
    assert len(per_file) == 25 and sum(per_file) == dirty["metrics"]["fd_openl3"]["values"]["n_ref_windows"]
    assert all(f["kad_ref_windows"] > 0 and f["fad_ref_windows"] > 0 for f in ro["files"].values())
    for cid in ("c02", "c03", "c04"):  # not scored, named, and their references counted
        assert isinstance(df.loc[cid, "skip_reason"], str) and df.loc[cid, "fd_openl3_ref_windows"] > 0, cid
    assert "c05" in dirty["missing_reference_ids"] and df.loc["c05", "fd_openl3_windows"] > 0
    assert not [u for u in dirty["unused_files"] if "/ref/" in u["file"]]  # every reference file is used


def test_a_card_protocol_still_pairs_each_clip_with_its_reference(folders):
    """The audiocraft protocol writes pairs: a clip without its reference, or a reference without its clip, adds
    nothing (c06..c23: 18 pairs); the references no clip is named after stay unused and are listed."""
    s, df = _run(folders, "card", folders / "gen", metrics=("fad",), fad="audiocraft")
    assert s["metrics"]["fad"]["n_clips"] == 18
    assert "reference_only" not in s
    assert sorted(Path(u["file"]).stem for u in s["unused_files"] if "/ref/" in u["file"]) == ["c00", "c01", "x01",
                                                                                              "x02"]


def test_a_failed_generation_keeps_its_reference_for_a_folder_protocol(tmp_path):
    """Generation mode: a prompt whose generation failed (no file) still gives its reference to a protocol that reads
    a folder of references, and to no other; an unreadable reference gives nothing."""
    from evalkit.data.prompts import Prompt
    from evalkit.registry import get_metric
    from evalkit.spec import metric_recipe
    from evalkit.stages.decode import DecodeSettings, decode_clip
    from evalkit.stages.scoring import Scorer

    ref, bad = tmp_path / "r.wav", tmp_path / "bad.wav"
    _clip(ref, 1, 48000, 1, 2.0)  # 2 VGGish examples of 0.96 s
    bad.write_bytes(b"not audio")
    p, failed = Prompt("a", "a caption", "r"), {"generation_skipped": "generation failed: CUDA out of memory"}
    clip, row = decode_clip(p, failed, ref, DecodeSettings(), reference_only=True)
    assert clip.reference_only and tuple(clip.reference.shape) == (1, 96000) and clip.reference_sr == 48000
    assert row["skip_reason"] == failed["generation_skipped"]
    assert decode_clip(p, failed, ref, DecodeSettings())[0] is None
    assert decode_clip(p, failed, bad, DecodeSettings(), reference_only=True)[0] is None

    def fad(protocol):
        return get_metric("fad")(metric_recipe("fad", [f"metrics.fad.protocol={protocol}", "backbone_weights=random",
                                                       "backbone_size=tiny"]))

    folder, card = fad("vggish"), fad("audiocraft")
    assert folder.reads_reference_folder and not card.reads_reference_folder
    assert Scorer.takes(folder, clip) and not Scorer.takes(card, clip)
    res = folder.update([clip])["a"]
    assert res.skipped is None and set(res.values) == {"fad_ref_windows"} and res.values["fad_ref_windows"] == 2
    assert folder.count("n_clips") == 0 and folder.count("ref_n") == 2 and folder.count("n_skipped") == 0


def test_an_unusable_or_nested_reference_file_is_named_and_not_counted(folders, tmp_path):
    """An unreadable reference no clip is named after is listed as unusable, neither counted nor said to be; audio in
    a subfolder is listed as unused with the reason; summary.json stays strict JSON (no NaN; counts as integers)."""
    from evalkit.stages.outputs import format_summary

    ref = tmp_path / "ref"
    shutil.copytree(folders / "ref", ref)
    (ref / "x03.wav").write_bytes(b"RIFF, but not a wav file")
    (ref / "sub").mkdir()
    shutil.copy(ref / "x01.wav", ref / "sub" / "x04.wav")
    s, _ = _run(tmp_path, "bad-ref", folders / "clean", metrics=("fd_openl3",), ref=ref)
    want, _ = _run(tmp_path, "good-ref", folders / "clean", metrics=("fd_openl3",))
    assert s["metrics"]["fd_openl3"]["values"]["n_ref_windows"] == want["metrics"]["fd_openl3"]["values"][
        "n_ref_windows"]
    ro = s["reference_only"]
    assert ro["n_files"] == 8 and ro["n_counted"] == 7  # c00..c04, x01, x02 counted; x03 not
    assert "unreadable" in ro["files"]["x03"]["reference_problem"] and "x03" in s["unusable_references"]
    assert all(type(f["fd_openl3_ref_windows"]) is int for i, f in ro["files"].items() if i != "x03")
    assert all(f["reference_problem"] is None for i, f in ro["files"].items() if i != "x03")
    assert "7 counted in the reference set of fd_openl3" in format_summary(s) and "1 unusable" in format_summary(s)
    assert [u["reason"] for u in s["unused_files"] if u["file"].endswith("/sub")] == [
        "a subfolder with 1 audio files: evalkit reads <id>.<ext> directly in reference.dir, not in subfolders"]
