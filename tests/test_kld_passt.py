"""KLD with a (shrunken) PaSST: parity with hear21passt's own forward pass and with transcriptions of the two
reference recipes (audiocraft/metrics/kld.py before and after 2454f80, stable-audio-metrics src/passt_kld.py);
batching, merging, skips, checkpoints, config.

The network is the package's PaSST class with the protocol's patch grid (input_tdim 2000 for audiocraft, 998 for
stable-audio-metrics) and a one-block, 64-wide, one-head transformer; its classifier head is scaled up so that the label
distributions are far from uniform (random PaSST heads give near-uniform softmax outputs and KLs of ~1e-3). The
reference recipes are ``references/audiocraft_kld.py`` and ``references/stable_audio_metrics.py``."""
from __future__ import annotations

import functools

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit.audio import convert_audio, load_audio
from evalkit.embeddings.passt import MelConfig, PasstMel, build_passt_net, min_input_samples
from evalkit.embeddings.weights import CheckpointError
from evalkit.io import sha256_file
from evalkit.metrics.base import Clip
from evalkit.spec import metric_recipe
from evalkit.metrics.kld import KLD
from references.audiocraft_kld import audiocraft_kld, passt_wrapper
from references.stable_audio_metrics import probabilities_from_array as sam_probabilities

ROOT = Path(__file__).resolve().parents[1]
MUSIC = ROOT.parent / "shared" / "data" / "music"
PIECES = ["shared00_bach_bwv66-6", "shared01_bach_bwv269", "shared02_bach_bwv347", "shared09_mozart_k80",
          "shared13_corelli_opus3no1"]
TINY = {"embed_dim": 64, "depth": 1, "num_heads": 1}
ARCH = {"audiocraft": ("passt_20sec", 2000), "stable-audio-metrics": ("passt_s_swa_p16_128_ap476", 998)}


def recipe(protocol: str = "audiocraft", **overrides) -> dict:
    """conf/metrics/kld.yaml with the protocol's file, resolved the way the run resolves them (full-size model: what
    a run with released backbones resolves ${backbone_size} to)."""
    r = dict(_recipe(protocol))
    r.update(overrides)
    return r


@functools.lru_cache(maxsize=None)
def _recipe(protocol: str) -> dict:
    return metric_recipe("kld", [f"metrics.kld.protocol={protocol}", "backbone_size=full", "postprocess=none"])


def flat(results) -> dict:
    """``{id: ClipResult}`` -> ``{id: {**values, "_<array>": array}}`` (per-clip values and arrays side by side)."""
    return {cid: {**r.values, **{f"_{k}": v for k, v in r.arrays.items()}} for cid, r in results.items()}


def tiny_net(protocol: str, seed: int = 0) -> torch.nn.Module:
    arch, tdim = ARCH[protocol]
    return build_passt_net(arch, tdim, 527, tiny=TINY, seed=seed)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Tiny PaSST state dicts (head scaled x10) saved as the metric would read a released file."""
    out = {}
    for protocol in ARCH:
        net = tiny_net(protocol, seed=1)
        with torch.no_grad():
            net.head[1].weight.mul_(10.0)
            net.head_dist.weight.mul_(10.0)
        path = tmp_path_factory.mktemp("passt") / f"tiny-{protocol}.pt"
        torch.save(net.state_dict(), path)
        out[protocol] = path
    return out


def package_wrapper(module: str, path: Path, protocol: str):
    """hear21passt.<module>.get_basic_model(mode="logits") with get_model_passt swapped for our tiny net carrying the
    saved weights (loaded with plain load_state_dict, independent of evalkit's loader). Returns (wrapper, kwargs the
    package passed to get_model_passt)."""
    net = tiny_net(protocol, seed=7)
    net.load_state_dict(torch.load(path, weights_only=True))
    return passt_wrapper(module, net)


def music(i: int, melody: bool = False) -> torch.Tensor:
    wav, sr = load_audio(MUSIC / f"{PIECES[i]}{'.melody' if melody else ''}.flac")
    assert sr == 32000
    return wav


# ---------------------------------------------------------------------------------------------------------------
# front end and model construction
# ---------------------------------------------------------------------------------------------------------------
def test_front_end_and_model_arguments_are_the_packages(ckpt):
    """The recipe's mel constants and network arguments are what hear21passt's get_basic_model uses, and evalkit's
    mel equals the package's AugmentMelSTFT (eval mode) on real music."""
    for protocol, module in (("audiocraft", "base20sec"), ("stable-audio-metrics", "base")):
        wrapper, seen = package_wrapper(module, ckpt[protocol], protocol)
        r = recipe(protocol)["embedder"]
        assert seen["arch"] == r["arch"]
        assert seen.get("input_tdim", 998) == r["input_tdim"]  # base.py relies on get_model's default 998
        m = wrapper.mel
        assert (m.sr, m.n_fft, m.win_length, m.hopsize, m.n_mels, m.fmin, m.fmax) == (
            r["sample_rate"], r["n_fft"], r["win_length"], r["hop_length"], r["n_mels"], r["fmin"], r["fmax"])
        assert torch.equal(m.preemphasis_coefficient, torch.tensor([[[-r["preemphasis"], 1.0]]]))
        assert not m.training
    x = torch.stack([music(0).mean(0), music(3).mean(0)])
    ours = PasstMel(MelConfig.from_recipe(recipe()["embedder"]))(x)
    theirs = wrapper.mel(x)
    assert ours.shape == theirs.shape == (2, 128, 1000)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)


def test_patch_grid_follows_input_tdim():
    """Time positions: 200 for the 20 s model (input_tdim 2000 // stride 10), 99 for the 10 s one (998 // 10); 10 s
    of audio = 1000 frames -> 99 patches, 20 s -> 199 (the package cuts the time embedding to fit); the smallest
    input is 16 frames = 4,801 samples (audiocraft keeps chunks of more than 4,800)."""
    net20, net10 = tiny_net("audiocraft"), tiny_net("stable-audio-metrics")
    assert net20.patch_embed.grid_size == (12, 200) and net20.time_new_pos_embed.shape[-1] == 200
    assert net10.patch_embed.grid_size == (12, 99) and net10.time_new_pos_embed.shape[-1] == 99
    mel = PasstMel()
    for seconds, patches in ((10, 99), (20, 199)):
        spec = mel(torch.zeros(1, seconds * 32000)).unsqueeze(1)
        assert net20.patch_embed.proj(spec).shape[-1] == patches
    assert min_input_samples(MelConfig()) == 4801


# ---------------------------------------------------------------------------------------------------------------
# audiocraft protocol: parity with the package forward pass and audiocraft's code, before and after PR 213
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audiocraft_pairs():
    """(generated [C,T], reference [C,T], sr): a stereo mix vs another piece's mono melody, two mixes, 10 s each,
    plus one 25 s pair (two rows: 20 s + 5 s)."""
    pairs = [(music(0), music(1, melody=True), 32000), (music(3), music(4), 32000)]
    long_gen = torch.cat([music(1), music(2), music(4)[:, :160000]], dim=-1)
    long_ref = torch.cat([music(3), music(0), music(1)[:, :160000]], dim=-1)
    pairs.append((long_gen, long_ref, 32000))
    return pairs


def clips_from(pairs):
    return [Clip(id=f"c{i}", caption="", audio=g, sample_rate=sr, reference=r, reference_sr=sr)
            for i, (g, r, sr) in enumerate(pairs)]


@pytest.fixture(scope="module")
def audiocraft_results(ckpt, audiocraft_pairs):
    wrapper, _ = package_wrapper("base20sec", ckpt["audiocraft"], "audiocraft")
    out = {}
    for pad in (False, True):
        metric = KLD(recipe(checkpoint=str(ckpt["audiocraft"]), model_size="tiny", pad_chunks=pad, save_probs=True))
        per_clip = flat(metric.update(clips_from(audiocraft_pairs)))
        out[pad] = (metric, per_clip, *audiocraft_kld(wrapper, audiocraft_pairs, pad))
    return out


@pytest.mark.parametrize("pad", [False, True])
def test_audiocraft_parity(audiocraft_results, pad):
    metric, per_clip, ref_values, ref_clips = audiocraft_results[pad]
    values = metric.compute()
    for k in ("kld", "kld_pq", "kld_qp", "kld_both"):
        assert values[k] == pytest.approx(ref_values[k], rel=1e-5), k
    assert values["kld"] == values["kld_pq"]
    expected_rows = [1, 1, 1] if pad else [1, 1, 2]  # the 25 s clip: 20 s + 5 s chunks, or one padded mean
    assert values["n_rows"] == sum(expected_rows) and values["n_clips"] == 3
    for i, (pq, qp, p_pred, p_tgt) in enumerate(ref_clips):
        row = per_clip[f"c{i}"]
        assert row["kld_rows"] == expected_rows[i]
        assert row["kld"] == pytest.approx(pq, rel=1e-5) and row["kld_pq"] == row["kld"]
        assert row["kld_qp"] == pytest.approx(qp, rel=1e-5)
        assert row["kld_both"] == pytest.approx(pq + qp, rel=1e-5)
        # probabilities equal hear21passt's own forward pass (<= 1e-5)
        np.testing.assert_allclose(row["_kld_gen_probs"], p_pred.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(row["_kld_ref_probs"], p_tgt.numpy(), rtol=1e-5, atol=1e-7)
    # informative distributions, not near-uniform ones
    assert max(float(per_clip[f"c{i}"]["_kld_gen_probs"].max()) for i in range(3)) > 10 / 527  # 10x uniform
    assert 0.05 < values["kld"] < 50


def test_padding_changes_the_value(audiocraft_results):
    """PR 213 stopped zero-padding chunks to 20 s: a 10 s clip was half silence for the 20 s PaSST. The card's KLD
    moved (small 1.28 -> 1.42); here too, every clip's value moves."""
    new, old = audiocraft_results[False], audiocraft_results[True]
    assert new[0].compute()["kld"] != pytest.approx(old[0].compute()["kld"], rel=1e-2)
    for i in range(3):
        a, b = new[1][f"c{i}"], old[1][f"c{i}"]
        assert a["kld"] != pytest.approx(b["kld"], rel=1e-3)
        assert not np.allclose(a["_kld_gen_probs"][0], b["_kld_gen_probs"][0], rtol=1e-3)
    assert "zero-padded" in old[0].describe()["rows"] and old[0].describe()["pad_chunks"] is True


def test_batching_and_merge_match_one_clip_at_a_time(ckpt, audiocraft_pairs, audiocraft_results):
    """Clip-by-clip with batch_size 1 (audiocraft's loop) gives the batched values; two shards merged by adding
    their states give the one-process numbers."""
    batched, batched_clips = audiocraft_results[False][0], audiocraft_results[False][1]
    shards = [KLD(recipe(checkpoint=str(ckpt["audiocraft"]), model_size="tiny", batch_size=1)) for _ in range(2)]
    clips = clips_from(audiocraft_pairs)
    per_clip = {}
    for i, clip in enumerate(clips):
        per_clip.update(flat(shards[i % 2].update([clip])))
    for cid, row in per_clip.items():
        for k in ("kld", "kld_qp", "kld_both"):
            assert row[k] == pytest.approx(batched_clips[cid][k], rel=1e-5)
    merged = shards[0].merge(shards[1])
    for k, v in batched.compute().items():
        assert merged.compute()[k] == pytest.approx(v, rel=1e-5), k
    for k in ("n_rows", "n_clips", "n_skipped"):
        assert merged.state[k] == batched.state[k]
    assert all(v.dtype == np.float64 for v in merged.state.values())


def test_other_reference_rate_is_converted_first(ckpt):
    """A 48 kHz stereo reference is taken to 32 kHz mono (julius, then mean) before cropping, as audiocraft's
    dataset hands the metric 32 kHz references; the generated clip is cropped to the reference length."""
    gen = torch.cat([music(3), music(0)[:, :64000]], dim=-1)  # 12 s, longer than the reference
    ref48 = convert_audio(music(1), 32000, 48000, 2)
    metric = KLD(recipe(checkpoint=str(ckpt["audiocraft"]), model_size="tiny", save_probs=True))
    res = metric.update([Clip("x", "", gen, 32000, ref48, 48000)])["x"]
    row = {**res.values, **res.arrays}
    wrapper, _ = package_wrapper("base20sec", ckpt["audiocraft"], "audiocraft")
    ref32 = convert_audio(ref48, 48000, 32000, 1)
    values, per = audiocraft_kld(wrapper, [(gen[:, :ref32.shape[-1]], ref32, 32000)], pad=False)
    assert ref32.shape[-1] == 320000
    assert row["kld"] == pytest.approx(values["kld"], rel=1e-5)
    assert row["kld_qp"] == pytest.approx(values["kld_qp"], rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# stable-audio-metrics protocol
# ---------------------------------------------------------------------------------------------------------------
def test_stable_audio_metrics_parity(ckpt):
    """KL(generated ‖ reference) of mean-logit softmaxes over 10 s / 5 s windows, peak -1 dB, soxr_hq to 32 kHz;
    a 12 s generated clip (two windows, the second zero-padded) against a 48 kHz reference; no cropping."""
    gen = torch.cat([music(2), music(4)[:, :64000]], dim=-1) * 0.5
    ref48 = convert_audio(music(0), 32000, 48000, 2)
    short = music(3)[:, :40000]  # 1.25 s: one unpadded window
    metric = KLD(recipe("stable-audio-metrics", checkpoint=str(ckpt["stable-audio-metrics"]), model_size="tiny",
                        save_probs=True))
    rows = metric.update([Clip("a", "", gen, 32000, ref48, 48000), Clip("b", "", short, 32000, ref48, 48000)])
    wrapper, _ = package_wrapper("base", ckpt["stable-audio-metrics"], "stable-audio-metrics")
    ref_p = sam_probabilities(wrapper, ref48.numpy(), 48000)
    kls = []
    for cid, audio in (("a", gen), ("b", short)):
        eval_p = sam_probabilities(wrapper, audio.numpy(), 32000)
        kl = F.kl_div((ref_p + 1e-6).log(), eval_p, reduction="sum", log_target=False).item()
        kls.append(kl)
        np.testing.assert_allclose(rows[cid].arrays["kld_gen_probs"][0], eval_p.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(rows[cid].arrays["kld_ref_probs"][0], ref_p.numpy(), rtol=1e-5, atol=1e-7)
        assert rows[cid].values["kld"] == rows[cid].values["kld_qp"] == pytest.approx(kl, rel=1e-5)
        assert rows[cid].values["kld_rows"] == 1
    values = metric.compute()
    assert values["kld"] == pytest.approx(sum(kls) / 2, rel=1e-5)
    assert values["kld"] == values["kld_qp"] != pytest.approx(values["kld_pq"], rel=1e-3)
    d = metric.describe()
    assert d["direction"].startswith("KL(generated ‖ reference)") and d["protocol"] == "stable-audio-metrics"


def test_stable_audio_metrics_rejects_pad_chunks():
    with pytest.raises(ValueError, match="pad_chunks"):
        KLD(recipe("stable-audio-metrics", pad_chunks=True, checkpoint="random", model_size="tiny"))


# ---------------------------------------------------------------------------------------------------------------
# skips, checkpoints, registry
# ---------------------------------------------------------------------------------------------------------------
def test_skips_with_reasons(ckpt):
    metric = KLD(recipe(checkpoint=str(ckpt["audiocraft"]), model_size="tiny"))
    tone = torch.sin(torch.arange(320000) * 2 * math.pi * 440 / 32000)[None] * 0.3
    rows = metric.update([
        Clip("short", "", tone[:, :4800], 32000, tone[:, :4800], 32000),  # 0.15 s: no chunk > 4,800 samples
        Clip("noref", "", tone, 32000, None, None),
        Clip("nan", "", tone * float("nan"), 32000, tone, 32000),
        Clip("ok", "", tone, 32000, tone, 32000),
    ])
    assert "shorter than one kept chunk" in rows["short"].skipped
    assert rows["noref"].skipped == "no reference audio" and rows["noref"].values == {}
    assert "NaN" in rows["nan"].skipped
    # identical audio: KL(p ‖ p) = -sum p log(1 + 1e-6 / p), slightly below 0
    p = torch.softmax(torch.from_numpy(metric.embedder.embed([convert_audio(tone, 32000, 32000, 1)[0]])[0][0]).double(), -1)
    assert rows["ok"].values["kld"] == pytest.approx(-(p * torch.log1p(1e-6 / p)).sum().item(), rel=1e-4)
    assert -527e-6 < rows["ok"].values["kld"] < 0
    assert metric.state["n_skipped"] == 3 and metric.state["n_clips"] == 1
    empty = KLD(recipe(checkpoint="random", model_size="tiny"))
    from evalkit.metrics.base import MetricUnavailable

    with pytest.raises(MetricUnavailable, match="no clip was scored"):  # one rule for every metric: no NaN
        empty.compute()


def test_silence_is_skipped_under_peak_normalisation():
    metric = KLD(recipe("stable-audio-metrics", checkpoint="random", model_size="tiny"))
    z = torch.zeros(1, 320000)
    assert "silent" in metric.update([Clip("z", "", z, 32000, z + 0.1, 32000)])["z"].skipped


def test_describe_checkpoint_and_registry(ckpt):
    from evalkit.registry import get_metric

    cls = get_metric("kld")
    assert cls is KLD
    assert (cls.spec.name, cls.spec.primary, cls.spec.higher_is_better, cls.spec.card_column) == ("kld", "kld", False, "KLD")
    d = KLD(recipe(checkpoint=str(ckpt["audiocraft"]), model_size="tiny")).describe()
    assert d["checkpoint"] == ckpt["audiocraft"].name
    assert d["checkpoint_sha256"] == sha256_file(ckpt["audiocraft"])
    assert d["random_weights"] is False and d["protocol"] == "audiocraft" and d["pad_chunks"] is False
    assert d["direction"].startswith("KL(reference ‖ generated)") and "1e-06" in d["direction"]
    assert "passt_20sec" in d["backbone"] and "2000" in d["backbone"]
    r = KLD(recipe(checkpoint=None, backbone_weights="random", model_size="tiny")).describe()
    assert r["random_weights"] is True and r["checkpoint_sha256"] is None


def test_offline_without_the_released_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = KLD(recipe(backbone_weights="released"))
    with pytest.raises(CheckpointError, match="passt-s-f128-20sec-p16-s10-ap.474-swa.pt.*github.com/kkoutini"):
        metric.describe()
    with pytest.raises(CheckpointError, match="model_size=tiny has no released weights"):
        KLD(recipe(backbone_weights="released", model_size="tiny")).describe()
    # a state dict of another shape is refused with the setting named
    with pytest.raises(CheckpointError, match="does not fit"):
        bad = tmp_path / "bad.pt"
        torch.save({"cls_token": torch.zeros(1, 1, 3)}, bad)
        KLD(recipe(checkpoint=str(bad), model_size="tiny")).embedder.network


def test_kl_passt_from_the_command_line_equals_stable_audio_metrics(ckpt, tmp_path):
    """``python -m evalkit model=folder ... metrics=[kl_passt]`` as a user types it (files at 44.1/48/32 kHz, stereo
    and mono, other gains, a 12 s clip: two windows) against stable-audio-metrics' passt_kld transcription
    (:func:`sam_probabilities` on each file as librosa reads it, ``F.kl_div((ref_p + 1e-6).log(), eval_p, 'sum')``,
    the mean over ids) with the same tiny PaSST weights."""
    import json
    import os
    import subprocess
    import sys

    import soundfile as sf

    gen_dir, ref_dir = tmp_path / "gen", tmp_path / "ref"
    gen_dir.mkdir()
    ref_dir.mkdir()
    files = {"a": (convert_audio(torch.cat([music(2), music(4)[:, :64000]], -1), 32000, 44100, 2) * 0.5,
                   44100, convert_audio(music(0), 32000, 48000, 2), 48000),
             "b": (convert_audio(music(3), 32000, 48000, 1) * 1.7, 48000, music(1), 32000),
             "c": (music(1) * 0.3, 32000, convert_audio(music(2), 32000, 44100, 2), 44100)}
    for cid, (g, gsr, r, rsr) in files.items():
        sf.write(gen_dir / f"{cid}.wav", g.T.numpy(), gsr, subtype="FLOAT")
        sf.write(ref_dir / f"{cid}.wav", r.T.numpy(), rsr, subtype="FLOAT")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "evalkit", "model=folder", f"model.dir={gen_dir}",
                        f"reference.dir={ref_dir}", "metrics=[kl_passt]", "backbone_size=tiny", "progress=false",
                        f"metrics.kl_passt.checkpoint={ckpt['stable-audio-metrics']}",
                        "metrics.kl_passt.checkpoint_sha256=null", f"hydra.run.dir={out}",
                        f"cache.dir={tmp_path / 'cache'}"],
                       cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads((out / "summary.json").read_text())["metrics"]["kl_passt"]
    wrapper, _ = package_wrapper("base", ckpt["stable-audio-metrics"], "stable-audio-metrics")
    kls = []
    for cid in files:
        (g, gsr), (r, rsr) = (sf.read(d / f"{cid}.wav", dtype="float32", always_2d=True) for d in (gen_dir, ref_dir))
        eval_p, ref_p = sam_probabilities(wrapper, g.T, gsr), sam_probabilities(wrapper, r.T, rsr)
        kls.append(F.kl_div((ref_p + 1e-6).log(), eval_p, reduction="sum", log_target=False).item())
    assert got["n_clips"] == 3
    print(f"kl_passt CLI {got['value']!r} vs stable-audio-metrics {np.mean(kls)!r}: rel "
          f"{abs(got['value'] / np.mean(kls) - 1):.3g}")
    assert got["value"] == pytest.approx(float(np.mean(kls)), rel=1e-5), (got["value"], kls)
    assert got["value"] != pytest.approx(kls[0], rel=1e-2)  # three different clips: the mean is of all three
