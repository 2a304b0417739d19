"""The stereo image (issue 15): closed forms of the three statistics, their windows and bands, the metric's skips,
the card's metrics on another channel view, and the report's stereo section."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from evalkit import evaluate
from evalkit.audio import save_audio
from evalkit.data.references import synth_clip
from evalkit.metrics.base import Clip
from evalkit.metrics.stereo import StereoImage, band_statistics, stereo_statistics, windowed_spread
from evalkit.spec import metric_recipe

SR = 32000
BANDS = {"low": (20.0, 250.0), "mid": (250.0, 4000.0), "high": (4000.0, 16000.0)}


def noise(seed: int, n: int = 10 * SR) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_dual_mono_anti_phase_and_independent_noise():
    s = noise(0)
    dual = stereo_statistics(torch.stack([s, s]))
    assert dual == {"correlation": 1.0, "side_to_mid_db": -100.0, "downmix_loss_db": 0.0}
    anti = stereo_statistics(torch.stack([s, -s]))
    assert anti["correlation"] == -1.0 and anti["side_to_mid_db"] == 100.0
    assert anti["downmix_loss_db"] == math.inf  # total loss: reported as such, not as a finite number
    ind = stereo_statistics(torch.stack([s, noise(1)]))
    assert abs(ind["correlation"]) <= 0.05 and abs(ind["side_to_mid_db"]) <= 0.3
    assert ind["downmix_loss_db"] == pytest.approx(10 * math.log10(2), abs=0.05)  # 3.01 dB
    assert dual["downmix_loss_db"] == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("theta", [0.1, math.pi / 8, math.pi / 4 - 0.05, 1.2])
def test_constant_power_pan(theta):
    s = noise(2)
    st = stereo_statistics(torch.stack([math.cos(theta) * s, math.sin(theta) * s]))
    assert st["correlation"] == pytest.approx(1.0, abs=1e-9)
    want = 20 * math.log10(abs(math.cos(theta) - math.sin(theta)) / (math.cos(theta) + math.sin(theta)))
    assert st["side_to_mid_db"] == pytest.approx(want, abs=1e-6)
    assert st["downmix_loss_db"] == pytest.approx(10 * math.log10(2 / (1 + math.sin(2 * theta))), abs=1e-6)


def test_bands_and_windows():
    """A bass-only shared component with independent highs: the low band is correlated, the high band is not; the
    windowed spread of a stationary signal is small and of a signal that changes from mono to wide is large."""
    t = torch.arange(10 * SR, dtype=torch.float64) / SR
    bass = torch.sin(2 * math.pi * 80 * t)
    hp = lambda x: torch.fft.irfft(torch.fft.rfft(x) * (torch.fft.rfftfreq(x.numel(), 1 / SR) > 5000), n=x.numel())  # noqa: E731
    left, right = bass + 0.3 * hp(noise(3)), bass + 0.3 * hp(noise(4))
    b = band_statistics(torch.stack([left, right]), SR, 2048, BANDS, 100.0)
    assert b["correlation_low"] > 0.99 and abs(b["correlation_high"]) < 0.05
    assert b["side_to_mid_db_low"] < -40 and abs(b["side_to_mid_db_high"]) < 0.5
    steady = windowed_spread(torch.stack([noise(5), noise(6)]), SR, SR // 2, 100.0)
    s = noise(7)
    changing = torch.stack([s, torch.cat([s[: 5 * SR], noise(8)[5 * SR:]])])  # dual mono, then independent
    moving = windowed_spread(changing, SR, SR // 2, 100.0)
    assert steady["correlation_std"] < 0.05 and moving["correlation_std"] > 0.4


def test_metric_columns_skips_and_numbers():
    m = StereoImage(metric_recipe("stereo"))
    s = noise(9).float()
    clips = [Clip("dual", "", torch.stack([s, s]), SR, torch.stack([s, noise(10).float()]), SR),
             Clip("anti", "", torch.stack([s, -s]), SR, torch.stack([s, s]), SR),
             Clip("mono", "", s[None], SR, torch.stack([s, s]), SR),
             Clip("noref", "", torch.stack([s, s]), SR, None, None)]
    out = m.update(clips)
    assert out["mono"].skipped == "generated clip is mono (1 channel): the stereo image needs exactly 2 channels"
    assert out["noref"].skipped == "no reference audio"
    d = out["dual"].values
    assert (d["stereo_correlation"], d["stereo_side_to_mid_db"]) == (1.0, -100.0)
    assert abs(d["stereo_ref_correlation"]) < 0.05 and d["stereo_correlation_gap"] == pytest.approx(1.0, abs=0.05)
    assert out["anti"].values["stereo_downmix_loss_db"] == math.inf and out["anti"].values["stereo_correlation_gap"] == 2.0
    assert set(StereoImage.spec.per_clip) <= set(d)
    v = m.compute()
    assert v["n_clips"] == 2 and v["n_total_downmix_loss"] == 1 and v["correlation"] == 0.0  # (1 + -1) / 2
    assert v["correlation_gap"] == pytest.approx((d["stereo_correlation_gap"] + 2.0) / 2)
    assert m.state["n_skipped"] == 2


def _pairs(tmp_path, make_gen, n=3, ref_channels=2):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    ids = [f"c{i}" for i in range(n)]
    for i, cid in enumerate(ids):
        r = synth_clip(f"r{cid}", SR, 10.0)
        save_audio(ref / f"{cid}.flac", torch.cat([r, 0.8 * r + 0.05 * torch.randn_like(r)])[:ref_channels], SR)
        save_audio(gen / f"{cid}.flac", make_gen(i), SR)
    p = tmp_path / "p.csv"
    p.write_text("id,caption\n" + "".join(f"{c},music {c}\n" for c in ids), encoding="utf-8")
    return ["model=folder", f"model.dir={gen}", "dataset=prompts", f"dataset.path={p}", f"reference.dir={ref}",
            "backbone_weights=random", "backbone_size=tiny", "progress=false"]


def test_side_view_on_dual_mono_skips_every_clip_as_silent(tmp_path):
    dual = lambda i: synth_clip(f"g{i}", SR, 10.0).expand(2, -1).clone()  # noqa: E731
    s = evaluate([*_pairs(tmp_path, dual), "channel_view=side", "metrics=[kld,clap,chroma]"], out_dir=tmp_path / "o")
    df = pd.read_parquet(tmp_path / "o" / "clips.parquet")
    assert s["channel_view"] == "side" and s["audit"] == {"silent": 3} and s["n_skipped"] == 3
    assert all("silent" in r for r in df["skip_reason"])
    for m in ("kld", "clap", "chroma"):
        assert s["metrics"][m]["value"] is None and s["metrics"][m]["n_clips"] == 0


def test_card_metrics_on_the_left_view_equal_them_on_the_left_channel_alone(tmp_path):
    """channel_view=left of stereo files gives, bit for bit, the numbers of mono files holding the left channel."""
    wide = lambda i: torch.cat([synth_clip(f"L{i}", SR, 10.0), synth_clip(f"R{i}", SR, 10.0)])  # noqa: E731
    left = lambda i: synth_clip(f"L{i}", SR, 10.0)  # noqa: E731
    a = evaluate([*_pairs(tmp_path / "a", wide, ref_channels=2), "channel_view=left", "postprocess=none",
                  "metrics=[kld,clap,chroma]"], out_dir=tmp_path / "a" / "o")
    b = evaluate([*_pairs(tmp_path / "b", left, ref_channels=1), "postprocess=none", "metrics=[kld,clap,chroma]"],
                 out_dir=tmp_path / "b" / "o")
    for m in ("kld", "clap", "chroma"):
        assert a["metrics"][m]["values"] == b["metrics"][m]["values"], m
    mono = evaluate([*_pairs(tmp_path / "c", wide, ref_channels=2), "postprocess=none", "metrics=[kld]"],
                    out_dir=tmp_path / "c" / "o")
    assert mono["metrics"]["kld"]["values"] != a["metrics"]["kld"]["values"]  # the view really changes the input


def test_stereo_is_on_for_stereo_models_and_its_section_is_reported(tmp_path):
    from evalkit.report.__main__ import main as report_main

    s = evaluate(["generation.duration=2.0", "dataset.limit=3", "progress=false", f"cache.dir={tmp_path / 'c'}"],
                 out_dir=tmp_path / "run")
    st = s["metrics"]["stereo"]
    assert st["spec"]["section"] == "stereo" and st["spec"]["card_column"] is None and st["n_clips"] == 3
    pair = st["paired"]["correlation"]
    # the demo's references are synthesised mono, handed over as dual mono: correlation exactly 1 on that side
    assert pair["reference"]["value"] == 1.0 and pair["generated"]["low"] <= pair["generated"]["value"] <= \
        pair["generated"]["high"]
    assert pair["difference"]["value"] == pytest.approx(pair["generated"]["value"] - 1.0, abs=1e-12)
    assert report_main([str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--no-ci"]) == 0
    md = (tmp_path / "rep" / "stereo_paired.md").read_text()
    assert "evalkit's own measure" in md and "| correlation |" in md and (tmp_path / "rep" / "stereo_scatter.png").is_file()
    mono_model = evaluate(["model=tiny-mono", "generation.duration=1.0", "dataset.limit=2", "metrics=[clap]",
                           "progress=false", f"cache.dir={tmp_path / 'c'}"], out_dir=tmp_path / "mono")
    assert "stereo" not in mono_model["metrics"]


def test_stereo_against_mono_references_says_why_it_has_no_number(tmp_path):
    """A second new-user trial: the error pointed at summary.json skip_reasons, which were empty (the clips were
    kept from this metric only); the reason is now in the metric's error itself."""
    wide = lambda i: torch.cat([synth_clip(f"L{i}", SR, 10.0), synth_clip(f"R{i}", SR, 10.0)])  # noqa: E731
    s = evaluate([*_pairs(tmp_path, wide, n=2, ref_channels=1), "metrics=[stereo]", "allow_missing_metrics=true"],
                 out_dir=tmp_path / "o")
    err = s["metrics"]["stereo"]["error"]
    assert s["metrics"]["stereo"]["value"] is None
    assert err.endswith("; most common reasons: reference is mono (1 channel): the stereo image needs exactly 2 "
                        "channels (2 clips)"), err
