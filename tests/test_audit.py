"""Every clip audited (issue 13): degenerate, mismatched or malformed input is flagged, counted, listed and never scored
silently - by every metric, on both sides, in folder mode and in generation."""
from __future__ import annotations

import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from evalkit import evaluate
from evalkit.audio import save_audio
from evalkit.data.prompts import PromptError, load_prompt_file
from evalkit.data.references import ReferenceSet, synth_clip
from evalkit.statistics.frechet import covariance_rank, frechet_distance

REPO = Path(__file__).resolve().parents[1]
SR = 32000
TINY = ["backbone_weights=random", "backbone_size=tiny", "progress=false"]
SKIP_FLAGS = {"non_finite", "silent", "constant", "unreadable"}
METRICS = ("fad", "kld", "clap", "chroma")


def tone(seconds: float = 10.0, key: str = "x") -> torch.Tensor:
    return synth_clip(key, SR, seconds)  # [1, T] chords, 0.3 peak


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Folder mode, all four metrics: 8 clean pairs (FAD needs >= 128 windows) and one pair per kind of bad input."""
    root = tmp_path_factory.mktemp("audit")
    gen, ref = root / "gen", root / "ref"
    gen.mkdir(), ref.mkdir()
    ids = []

    def pair(cid, g=None, r=None, write_gen=None, write_ref=None):
        ids.append(cid)
        r = tone(key=f"ref-{cid}") if r is None and write_ref is None else r
        if write_ref is not None:
            write_ref(ref / f"{cid}.wav")
        elif r is not None:
            save_audio(ref / f"{cid}.flac", r, SR)
        if write_gen is not None:
            write_gen(gen / f"{cid}.wav")
        else:
            g = g if g is not None else (0.9 * r if r is not None else tone(key=f"gen-{cid}"))
            save_audio(gen / f"{cid}.flac", g, SR)
        return r

    for k in range(8):
        pair(f"ok{k}")
    pair("silent", g=torch.zeros(1, 10 * SR))
    music = tone(key="anti")
    pair("antiphase", g=torch.cat([music, -music]))                   # right = -left: the mono mix is silent
    pair("dc", g=torch.full((1, 10 * SR), 0.25) + 1e-6 * torch.randn(1, 10 * SR))
    pair("stuck", write_gen=lambda p: sf.write(str(p), np.full((10 * SR, 1), -32768, np.int16), SR))  # NaN as int16
    pair("clipped", write_gen=lambda p: sf.write(str(p), 1.5 * tone(key="c").numpy().T / 0.3, SR, subtype="FLOAT"))
    r = tone(key="ref-short")
    pair("short", g=r[:, : 5 * SR], r=r)                               # the first 5 s of its own reference
    pair("long", g=tone(15.0, key="long"))
    pair("nangen", write_gen=lambda p: sf.write(str(p), np.full((SR, 1), np.nan, np.float32), SR, subtype="FLOAT"))
    pair("corruptgen", write_gen=lambda p: p.write_bytes(b"RIFF\x00\x00garbage"))
    pair("corruptref", write_ref=lambda p: p.write_bytes(b"RIFF\x00\x00garbage"))
    pair("emptyref", write_ref=lambda p: p.write_bytes(b""))
    pair("nanref", write_ref=lambda p: sf.write(str(p), np.full((10 * SR, 1), np.nan, np.float32), SR, subtype="FLOAT"))
    pair("silentref", r=torch.zeros(1, 10 * SR), g=tone(key="g-silentref"))
    (gen / "orphan.flac").write_bytes((gen / "ok0.flac").read_bytes())  # no prompt for it
    (ref / "notes.txt").write_text("not audio")
    (root / "p.csv").write_text("id,caption\n" + "".join(f"{i},\"a caption, for {i}\"\n" for i in ids), encoding="utf-8")
    out = root / "out"
    s = evaluate(["model=folder", f"model.dir={gen}", "dataset=prompts", f"dataset.path={root / 'p.csv'}",
                  f"reference.dir={ref}", "metrics=[fad,kld,clap,chroma]", *TINY], out_dir=out)
    return s, pd.read_parquet(out / "clips.parquet").set_index("id"), root


def flags(df, cid, side=""):
    return list(df.loc[cid, f"{side}audit_flags"])


def test_every_flag_lands_on_the_right_clip(audited):
    s, df, _ = audited
    # dc: 0.25 DC under a -120 dBFS hiss: the file has a DC offset; loudness normalisation ignores DC, adds ~28 dB,
    # and the clamp turns it into a full-scale constant (issue 26): clamped and constant where the metrics look.
    # stuck: NaN written to int16 (-1.0 throughout): the same, from full scale
    expect = {"silent": ["silent"], "antiphase": ["silent"], "dc": ["constant", "clamped", "dc_offset"],
              "stuck": ["constant", "clamped", "dc_offset"],
              "clipped": ["clipped"], "short": ["short"], "long": ["long"], "nangen": ["non_finite"],
              "corruptgen": ["unreadable"]}
    for cid, want in expect.items():
        assert flags(df, cid) == want, cid
    for k in range(8):
        assert flags(df, f"ok{k}") == [] and flags(df, f"ok{k}", "reference_") == []
    for cid, want in {"corruptref": ["unreadable"], "emptyref": ["unreadable"], "nanref": ["non_finite"],
                      "silentref": ["silent"]}.items():
        assert flags(df, cid, "reference_") == want, cid
    assert "cancel" in df.loc["antiphase", "skip_reason"]  # the channels are loud; their mix is not
    assert s["audit"] == {"non_finite": 1, "silent": 2, "constant": 2, "clipped": 1, "short": 1, "long": 1,
                          "unreadable": 1, "clamped": 2, "dc_offset": 2}
    assert s["audit_ids"]["silent"] == ["antiphase", "silent"] or sorted(s["audit_ids"]["silent"]) == ["antiphase", "silent"]
    assert s["reference_audit"] == {"non_finite": 1, "silent": 1, "unreadable": 2}


def test_durations_are_recorded_in_seconds(audited):
    _, df, _ = audited
    assert df.loc["short", "duration_s"] == 5.0 and df.loc["short", "reference_duration_s"] == 10.0
    assert df.loc["long", "duration_s"] == 15.0 and df.loc["ok0", "duration_s"] == 10.0
    assert (df.loc["ok0", "sample_rate"], df.loc["ok0", "channels"]) == (SR, 1)
    assert df.loc["antiphase", "channels"] == 2 and df.loc["nangen", "duration_s"] == 1.0


def test_one_policy_for_every_metric(audited):
    """Skip flags keep a clip from every metric, with a reason naming the file and the flag; clipped, short and long
    are scored (over the reference's length, the same way by every metric) and listed."""
    s, df, root = audited
    for cid in ("silent", "antiphase", "dc", "stuck", "nangen", "corruptgen"):
        reason = df.loc[cid, "skip_reason"]
        assert str(root / "gen" / cid) in reason and any(f in reason for f in SKIP_FLAGS), (cid, reason)
        for m in METRICS:
            assert pd.isna(df.loc[cid, m if m != "fad" else "fad_windows"]) or df.loc[cid, "fad_windows"] == 0, (cid, m)
    assert not math.isclose(df.loc["silent", "chroma"] if "chroma" in df else 0.0, 1.0)  # was 1.0: zeros map to C
    for cid in ("clipped", "short", "long"):
        assert pd.isna(df.loc[cid, "skip_reason"]) and not pd.isna(df.loc[cid, "kld"]) and not pd.isna(df.loc[cid, "clap"])
    # a short clip is compared over its reference's 10 s (zero-padded, as audiocraft's batches are) by every metric,
    # not with the reference cropped to 5 s (which gave KLD -5.27e-4, the value for identical audio)
    assert df.loc["short", "kld_rows"] == 1 and df.loc["short", "chroma_frames"] == math.ceil(10 * SR / 4096)
    assert df.loc["short", "fad_windows"] == df.loc["short", "fad_ref_windows"] == 19
    # KL(p || p) with the eps lies in (-527e-6, 0) (evalkit/metrics/kld.py): a positive value is two distributions
    assert df.loc["short", "kld"] > 0 and df.loc["long", "fad_windows"] == 19  # long: cropped to the reference
    assert s["metrics"]["fad"]["n_clips"] == s["metrics"]["kld"]["n_clips"] == 8 + 3 + 0  # clean + scored flags


def test_unusable_references_are_counted_listed_and_named(audited):
    s, df, root = audited
    assert s["n_unusable_reference"] == 4
    assert sorted(s["unusable_references"]) == ["corruptref", "emptyref", "nanref", "silentref"]
    for cid in s["unusable_references"]:
        for m in ("fad", "kld", "chroma"):
            reason = df.loc[cid, f"{m}_skipped"]
            assert str(root / "ref" / cid) in reason and ("unreadable" in reason or "non_finite" in reason
                                                          or "silent" in reason), (cid, m, reason)
        assert not pd.isna(df.loc[cid, "clap"])  # clap needs no reference: the generated clip is still scored
    from evalkit.run import format_summary

    text = format_summary(s)
    assert "unusable references: 4" in text and "audit: generated " in text and "silent 2" in text


def test_every_file_is_accounted_for(audited):
    s, _, root = audited
    got = {(Path(u["file"]).name, u["reason"].split(" (")[0]) for u in s["unused_files"]}
    assert ("orphan.flac", "no prompt id") in got and ("notes.txt", "unsupported format") in got
    assert ("corruptgen.wav", "unreadable") in got and ("corruptref.wav", "unreadable") in got


def test_prompt_file_with_an_unquoted_comma_is_a_named_error(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("id,caption\nok,fine\nc1,a soft piano, strings and pads\n", encoding="utf-8")
    with pytest.raises(PromptError, match=r"p\.csv: line 3 has 3 fields, the header has 2 \(id, caption\)"):
        load_prompt_file(p)
    p.write_text('id,caption\nc1,"a soft piano, strings and pads"\n', encoding="utf-8")
    assert load_prompt_file(p)[0].caption == "a soft piano, strings and pads"
    for body, err in (("id,caption\nc1,x\n,y\n", r"line 3 has an empty id"),
                      ("id,caption\nc1,x\nc1,y\n", r"line 3 has a duplicate id 'c1' \(first at line 2\)"),
                      ("id,caption\n\nc1,\n", r"line 3 \(id 'c1'\) has an empty caption")):
        p.write_text(body, encoding="utf-8")
        with pytest.raises(PromptError, match=err):
            load_prompt_file(p)
    j = tmp_path / "p.jsonl"
    j.write_text('{"id": "a", "caption": "x"}\n\n{"id": "a", "caption": "y"}\n', encoding="utf-8")
    with pytest.raises(PromptError, match="line 3 has a duplicate id 'a' \\(first at line 1\\)"):
        load_prompt_file(j)


def test_frechet_distance_is_never_negative_and_identical_sets_give_zero():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((19, 128))
    for scale in (1.0, 100.0):
        x = scale * rng.standard_normal((400, 19)) @ basis  # rank 19 in 128 dimensions
        mu, sigma = x.mean(0), np.cov(x, rowvar=False)
        assert covariance_rank(sigma) == 19
        assert frechet_distance(mu, sigma, mu, sigma) == 0.0  # was -2e-4 (scale 1) and -2.1 (scale 100)
        y = x[::-1]  # the same set summed in another order: equal up to round-off, not bit for bit
        mu2, sigma2 = y.mean(0), np.cov(y, rowvar=False)
        warnings: list = []
        d = frechet_distance(mu, sigma, mu2, sigma2, warnings=warnings)
        assert d >= 0.0
        assert d < 1e-6 * scale ** 2 * np.trace(sigma) or warnings


def test_identical_stationary_sets_give_fad_zero_with_a_rank_warning(tmp_path):
    """Eight identical stationary clip pairs: 152 windows but at most 8 distinct embeddings. FAD is exactly 0.0 (was
    -3.5e-11, printed -0.0000) and the summary names the rank-deficient side."""
    gen, ref = tmp_path / "g", tmp_path / "r"
    from tests.conftest import sine

    for i in range(8):
        wav = sine(220.0 * (i + 1), SR, 10.0, amp=0.3)
        save_audio(gen / f"c{i}.flac", wav, SR)
        save_audio(ref / f"c{i}.flac", wav, SR)
    s = evaluate(["model=folder", f"model.dir={gen}", "dataset=prompts", "postprocess=none",
                  f"dataset.path={_prompts(tmp_path, [f'c{i}' for i in range(8)])}", f"reference.dir={ref}",
                  "metrics=[fad]", *TINY], out_dir=tmp_path / "out")
    fad = s["metrics"]["fad"]
    assert fad["value"] == 0.0 and fad["values"]["n_gen_windows"] == 152
    assert any("generated side's covariance has rank" in w for w in fad["warnings"])
    assert any("reference side's covariance has rank" in w for w in fad["warnings"])


def _prompts(folder: Path, ids) -> Path:
    p = folder / "prompts.csv"
    p.write_text("id,caption\n" + "".join(f"{i},music {i}\n" for i in ids), encoding="utf-8")
    return p


def test_a_nan_clip_from_the_generator_is_skipped_and_the_run_finishes(tmp_path, monkeypatch):
    import evalkit.generate.musicgen as mg

    real = mg.MusicGenGenerator.generate_batch

    def nan_for_one(self, batch, melodies=None, **kw):
        clips = real(self, batch, melodies, **kw)
        for c in clips[:1]:
            c.audio[:, 100:200] = float("nan")  # a known fp16 failure
        return clips

    monkeypatch.setattr(mg.MusicGenGenerator, "generate_batch", nan_for_one)
    out = tmp_path / "run"
    s = evaluate(["generation.duration=1.0", "dataset.limit=3", "batch_size=3", "metrics=[clap]",
                  f"cache.dir={tmp_path / 'cache'}", "progress=false"], out_dir=out)
    df = pd.read_parquet(out / "clips.parquet").set_index("id")
    bad = df[df["generation_skipped"].notna()]
    assert len(bad) == 1 and "200 NaN or infinite samples" in bad.iloc[0]["generation_skipped"]
    assert s["n_skipped"] == 1 and s["metrics"]["clap"]["n_clips"] == 2 and s["n_generated"] == 2
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
    assert not (out / "audio" / f"{bad.index[0]}.flac").exists()


def test_a_failed_batch_is_skipped_and_retried_on_resume(tmp_path, monkeypatch):
    import evalkit.generate.musicgen as mg

    def boom(self, batch, melodies=None, **kw):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(mg.MusicGenGenerator, "generate_batch", boom)
    args = ["generation.duration=1.0", "dataset.limit=2", "metrics=[clap]", f"cache.dir={tmp_path / 'c'}",
            "progress=false"]
    s = evaluate(args, out_dir=tmp_path / "run")
    assert s["n_skipped"] == 2 and s["metrics"]["clap"]["value"] is None
    assert s["skip_reasons"] == {"generation failed: RuntimeError: CUDA error: an illegal memory access was "
                                 "encountered": 2}
    monkeypatch.undo()
    again = evaluate(args, out_dir=tmp_path / "run")  # the failed batch was not recorded as done: generated now
    assert again["n_skipped"] == 0 and again["metrics"]["clap"]["n_clips"] == 2


def test_temp_files_never_look_finished_and_a_killed_write_is_swept(tmp_path):
    from evalkit import io as eio

    assert eio.temp_name(tmp_path / "a.flac").name == f".a.flac.{os.getpid()}.tmp"
    args = ["generation.duration=1.0", "dataset.limit=3", "batch_size=3", "metrics=[]", "progress=false",
            "cache.generations=false"]
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EVALKIT_KILL_AT": "io:replace:7"}  # inside the 2nd clip's write
    # (atomic writes before it: config.yaml, manifest.json, 3 synthesised references, the 1st clip)
    p = subprocess.run([sys.executable, "-m", "evalkit", *args, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == -9, p.stderr[-2000:]
    left = [f.name for f in (out / "audio").iterdir()]
    assert any(n.endswith(".tmp") for n in left) and not any(n.endswith(".flac") and n.startswith(".") for n in left)
    # nothing that lists the folder reads the unfinished write as a clip
    assert all(not k.startswith(".") for k in ReferenceSet.from_dir(out / "audio").paths)
    (out / "audio" / ".zz.flac.tmp-4242.flac").write_bytes(b"a leftover of evalkit 0.1's naming")
    env.pop("EVALKIT_KILL_AT")
    p = subprocess.run([sys.executable, "-m", "evalkit", *args, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(f.name for f in (out / "audio").iterdir()) == sorted(
        f"{i}.flac" for i in pd.read_parquet(out / "clips.parquet")["id"])


@pytest.mark.parametrize("dc, noise_db, want", [
    (0.999, -80.0, ["constant"]),  # full-scale DC with a -80 dBFS hum: stuck (threshold -70 dBFS)
    (0.5, -60.0, []),             # DC under real signal at -60 dBFS: not constant
    (-0.99, -75.0, ["constant"]),
    (0.0, -80.0, ["silent"]),     # no DC, -80 dBFS noise: silent before constant
    (0.0, -60.0, []),
])
def test_level_flags_from_float64_sums_match_the_closed_form(dc, noise_db, want):
    """audit_scored's RMS and per-channel standard deviation come from float64 sums over float32 samples (no float64
    copy of the clip): a DC offset of up to full scale must not hide or invent an AC level 70 dB below it."""
    from evalkit.audit import AuditSettings, audit_scored

    n = 320000
    noise = np.sin(2 * np.pi * 440 * np.arange(n) / 32000) * math.sqrt(2) * 10 ** (noise_db / 20)  # RMS noise_db
    x = torch.from_numpy((dc + noise).astype(np.float32))[None].repeat(2, 1)
    a = audit_scored(x.mean(0, keepdim=True), 32000, AuditSettings.from_config({}), raw=x)
    assert a.names == want, a.flags
    if want == ["constant"]:
        ac = float(re.search(r"AC (-?[\d.]+) dBFS", a.flags["constant"]).group(1))
        assert abs(ac - noise_db) < 0.5
