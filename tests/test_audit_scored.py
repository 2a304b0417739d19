"""The audit sees what each metric scores (issue 26, items 1-3 and 8): three kinds of bad input that gave silent wrong
numbers, each checked as a kind (both sides, every metric, folder and generation mode) with the right value.

1. A DC offset that loudness normalisation and the clamp turn into a constant is flagged (``dc_offset`` on the file,
   ``clamped`` and ``constant`` where the metrics look) and skipped: FAD and chroma equal those of the run without it.
2. The stereo metric audits the clip's own channels: a dead channel is a named flag and the clip is left out with the
   reason, so the headline's clip count is the number its mean covers; an anti-phase clip is scored by it.
3. A clip sampled below the band a metric analyses is flagged ``low_sample_rate`` and listed.
8. A 6-channel file is named as such by the stereo metric.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from evalkit import evaluate
from evalkit.audio import save_audio
from evalkit.data.references import synth_clip

SR = 32000
TINY = ["backbone_weights=random", "backbone_size=tiny", "progress=false"]


def _folder(root, pairs):
    """Write ``{id: (generated [C, T], reference [C, T])}`` as flac folders and a captions file."""
    gen, ref = root / "gen", root / "ref"
    gen.mkdir(parents=True), ref.mkdir(parents=True)
    for cid, (g, r) in pairs.items():
        save_audio(gen / f"{cid}.flac", g, SR)
        save_audio(ref / f"{cid}.flac", r, SR)
    (root / "p.csv").write_text("id,caption\n" + "".join(f"{c},music {c}\n" for c in pairs), encoding="utf-8")
    return ["model=folder", f"model.dir={gen}", f"reference.dir={ref}", f"dataset.captions={root / 'p.csv'}"]


def _clean(n):
    return {f"ok{i}": (0.8 * synth_clip(f"g{i}", SR, 10.0), synth_clip(f"r{i}", SR, 10.0)) for i in range(n)}


@pytest.fixture(scope="module")
def dc_runs(tmp_path_factory):
    """The same 8 pairs with and without a ninth whose generated clip is 0.05 x music + 0.3 (the report's case)."""
    root = tmp_path_factory.mktemp("dc")
    clean = _clean(8)
    music = synth_clip("dc-music", SR, 10.0) / 0.3
    with_dc = {**clean, "dc": (0.05 * music + 0.3, synth_clip("dc-ref", SR, 10.0))}
    out = {}
    for name, pairs in (("clean", clean), ("dc", with_dc)):
        s = evaluate([*_folder(root / name, pairs), "metrics=[fad,chroma,kld]", *TINY,
                      f"cache.dir={root / 'cache'}"], out_dir=root / name / "out")
        out[name] = (s, pd.read_parquet(root / name / "out" / "clips.parquet").set_index("id"))
    return out


def test_a_dc_offset_clamped_into_a_constant_is_flagged_and_skipped(dc_runs):
    s, df = dc_runs["dc"]
    assert list(df.loc["dc", "audit_flags"]) == ["constant", "clamped", "dc_offset"]
    assert "clamped" in df.loc["dc", "skip_reason"] and "% of the samples to ±1" in df.loc["dc", "skip_reason"]
    assert df.loc["dc", "skip_reason"].endswith("at the audit point of fad, chroma, kld")
    assert s["audit"]["dc_offset"] == 1 and s["audit_ids"]["clamped"] == ["dc"]
    clean, _ = dc_runs["clean"]
    for m in ("fad", "chroma", "kld"):  # the right value: the run without the broken clip's (to float32 batching:
        # the ninth clip moves the others into other batches of the networks' forward passes)
        assert s["metrics"][m]["value"] == pytest.approx(clean["metrics"][m]["value"], rel=1e-6, abs=1e-8), m
        assert s["metrics"][m]["n_clips"] == 8


def test_the_dc_clip_was_a_constant_where_the_metrics_look():
    """The mechanism, step by step, on the input path of the audiocraft protocols: loudness normalisation ignores
    the DC (K-weighting removes it), adds ~28 dB, and the clamp sets every sample to +1."""
    from evalkit.input_path import InputPath
    from evalkit.metrics.base import Clip
    from evalkit.spec import metric_recipe

    music = synth_clip("dc-music", SR, 10.0) / 0.3
    clip = Clip("dc", "", 0.05 * music + 0.3, SR, synth_clip("r", SR, 10.0), SR)
    path = InputPath(metric_recipe("chroma")["input"], setting="metrics.chroma.input", embedder_rate=SR)
    p = path.apply(clip)
    audit = p.audits["generated"]
    assert audit.names == ["constant", "clamped"]
    assert audit.flags["clamped"].startswith("the input path's clamp set 100.0 % of the samples to ±1")
    assert float(p.generated.wav.min()) == 1.0  # a full-scale constant is what every metric would have scored


@pytest.fixture(scope="module")
def stereo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stereo")
    wide = lambda k: torch.cat([synth_clip(f"L{k}", SR, 10.0), synth_clip(f"R{k}", SR, 10.0)])  # noqa: E731
    pairs = {f"w{i}": (0.8 * wide(i), wide(100 + i)) for i in range(4)}
    for i in range(4):  # four with a dead right channel: [x, 0]
        x = synth_clip(f"D{i}", SR, 10.0)
        pairs[f"dead{i}"] = (torch.cat([x, torch.zeros_like(x)]), wide(200 + i))
    music = synth_clip("anti", SR, 10.0)
    pairs["anti"] = (torch.cat([music, -music]), wide(300))
    s = evaluate([*_folder(root, pairs), "metrics=[stereo,kld]", *TINY,
                  f"cache.dir={root / 'cache'}"], out_dir=root / "out")
    return s, pd.read_parquet(root / "out" / "clips.parquet").set_index("id")


def test_dead_channels_are_named_counted_and_left_out_of_the_mean(stereo_run):
    s, df = stereo_run
    for i in range(4):
        assert "dead_channel" in list(df.loc[f"dead{i}", "audit_flags"])
        assert "dead_channel (channel 2 of 2 is silent" in df.loc[f"dead{i}", "stereo_skipped"]
        assert not math.isnan(df.loc[f"dead{i}", "kld"])  # its mono mix is music: the card's metrics score it
    assert s["audit"]["dead_channel"] == 4
    st = s["metrics"]["stereo"]
    assert st["n_clips"] == 5 and st["n_skipped"] == 4  # the mean covers the 4 wide clips and the anti-phase one
    gaps = df["stereo_correlation_gap"].dropna()
    assert sorted(gaps.index) == ["anti", "w0", "w1", "w2", "w3"]
    assert st["value"] == pytest.approx(float(gaps.mean()), rel=1e-12)


def test_an_anti_phase_clip_is_scored_by_the_stereo_metric_and_skipped_by_the_mono_ones(stereo_run):
    s, df = stereo_run
    assert df.loc["anti", "stereo_correlation"] == -1.0 and df.loc["anti", "stereo_downmix_loss_db"] == math.inf
    assert "cancel (anti-phase)" in df.loc["anti", "kld_skipped"]
    assert list(df.loc["anti", "audit_flags"]) == ["silent"]  # what the mono metrics saw


def test_the_headline_says_how_many_clips_each_mean_covers(stereo_run):
    from evalkit.run import format_summary

    s, _ = stereo_run
    line = next(x for x in format_summary(s).splitlines() if x.startswith("stereo"))
    assert line.split()[-1] == "5"


def test_a_band_limited_clip_is_flagged_for_the_metrics_that_look_above_its_band(tmp_path):
    """One 8 kHz clip among 32 kHz clips (FAD moved 35x): flagged low_sample_rate for FAD (VGGish analyses up to
    7.5 kHz: 8 kHz sampling has nothing above 4 kHz) and listed; a 16 kHz clip is not flagged for FAD (8 kHz > 7.5
    kHz) but is for KLD (PaSST analyses up to 15 kHz). The reference side too."""
    pairs = _clean(7)
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    cfg = _folder(tmp_path, pairs)
    save_audio(gen / "band8k.flac", synth_clip("b8", 8000, 10.0), 8000)
    save_audio(ref / "band8k.flac", synth_clip("b8r", SR, 10.0), SR)
    save_audio(gen / "band16k.flac", synth_clip("b16", 16000, 10.0), 16000)
    save_audio(ref / "band16k.flac", synth_clip("b16r", 16000, 10.0), 16000)  # the reference side as well
    (tmp_path / "p.csv").write_text("id,caption\n" + "".join(f"{c},music\n" for c in [*pairs, "band8k", "band16k"]))
    s = evaluate([*cfg, "metrics=[fad,kld]", *TINY, f"cache.dir={tmp_path / 'cache'}"], out_dir=tmp_path / "out")
    df = pd.read_parquet(tmp_path / "out" / "clips.parquet").set_index("id")
    assert list(df.loc["band8k", "audit_flags"]) == ["low_sample_rate"]
    assert list(df.loc["band16k", "audit_flags"]) == ["low_sample_rate"]
    assert list(df.loc["band16k", "reference_audit_flags"]) == ["low_sample_rate"]
    assert list(df.loc["band8k", "reference_audit_flags"]) == []
    assert sorted(s["audit_ids"]["low_sample_rate"]) == ["band16k", "band8k"]
    assert s["reference_audit_ids"]["low_sample_rate"] == ["band16k"]
    assert not df.loc["band8k", ["fad_windows", "kld"]].isna().any()  # listed, scored (the policy does not skip it)
    # the reason names the band
    from evalkit.audit import AuditSettings, audit_scored

    a = audit_scored(torch.ones(1, 10) * 0.1 + torch.randn(1, 10), 16000, AuditSettings(), file_sr=8000,
                     band_hz=7500.0)
    assert a.flags["low_sample_rate"] == ("sampled at 8000 Hz: nothing above 4000 Hz, where the metric analyses up "
                                          "to 7500 Hz")


def test_a_six_channel_file_is_named_as_such_by_the_stereo_metric():
    from evalkit.metrics.base import Clip
    from evalkit.metrics.stereo import StereoImage
    from evalkit.spec import metric_recipe

    g = torch.Generator().manual_seed(0)
    six = 0.1 * torch.randn(6, SR, generator=g)
    st = 0.1 * torch.randn(2, SR, generator=g)
    out = StereoImage(metric_recipe("stereo", ["postprocess=none"])).update([Clip("six", "", six, SR, st, SR)])
    assert out["six"].skipped == ("generated clip is 6-channel (6 channels): the stereo image needs exactly 2 "
                                  "channels")


def test_the_band_is_what_the_lowest_rate_of_the_path_keeps():
    """FD_openl3's path goes through 44.1 kHz (soxr) before OpenL3's 48 kHz: a 44.1 kHz file lacks nothing it
    analyses, a 32 kHz one does (the new user's run flagged every 44.1 kHz file as low_sample_rate)."""
    from evalkit.input_path import InputPath

    sam = InputPath({"both": [{"resample": {"rate": 44100, "with": "soxr_hq"}},
                              {"resample": {"rate": 48000, "with": "resampy"}}]}, setting="t", band_hz=24000)
    assert sam.band == 22050 and sam.final_rate == 48000
    card = InputPath({"both": [{"resample": {"rate": 16000, "with": "julius"}}]}, setting="t", band_hz=7500)
    assert card.band == 7500  # VGGish's mel top, under 16 kHz's Nyquist
    assert InputPath({}, setting="t", band_hz=24000).band == 24000  # no resampling: the front end's band

    from evalkit.audit import audit_scored, AuditSettings

    wav = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (1, 4800)).astype(np.float32))
    for file_sr, flagged in ((44100, False), (32000, True)):
        a = audit_scored(wav, 48000, AuditSettings(), file_sr=file_sr, band_hz=sam.band)
        assert ("low_sample_rate" in a.flags) is flagged, (file_sr, a.flags)
