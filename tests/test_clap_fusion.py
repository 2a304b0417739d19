"""CLAP with feature fusion (HTSAT-tiny, ``630k-audioset-fusion-best.pt``: stable-audio-metrics' CLAP score) on
transformers' ClapModel: the fusion input rules in closed form, the checkpoint layout, and parity with laion_clap's
own ``CLAP(enable_fusion=True)`` + ``get_audio_features(data_truncating='fusion')`` on identical random weights
(reference environment), then the ``clap_score`` metric from the command line against stable-audio-metrics'
``clap_score`` loop (references/stable_audio_metrics.py).

Clips longer than 10 s: laion draws its three chunks from numpy's global generator (stable-audio-metrics never seeds
it); the laion side is seeded with ``np.random.seed(fusion_seed)`` before each clip, which evalkit's per-clip
``RandomState(fusion_seed)`` reproduces. MusicCaps' 10 s clips (480,000 samples at 48 kHz) take no random path."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import soundfile as sf
import torch

from evalkit.embeddings.clap import ClapEmbedder, build_clap_hf, convert_laion_state_dict
from evalkit.embeddings.clap_fusion import MAX_LEN, FusionMel, fusion_input
from tests.conftest import MUSIC_DIR, REPO, have, reference_test
from tests.test_clap_backbone import _music_48k, _randomise, _save_laion_checkpoint, to_laion_layout, tok  # noqa: F401

needs_laion = reference_test("laion_clap")
SR = 48000


def test_fusion_layout_round_trips_through_the_converter():
    """A fusion ClapModel (HTSAT-tiny) in laion's layout converts back to the same tensors under the same keys: the
    fusion block (mel_conv2d, fusion_model.local_att / global_att) included, every key mapped once."""
    model, _ = build_clap_hf("tiny", vocab_size=261, seed=3, amodel="HTSAT-tiny", enable_fusion=True)
    laion = {k[len("module."):]: v for k, v in to_laion_layout(model).items()}
    assert any(k.startswith("audio_branch.patch_embed.fusion_model.global_att.") for k in laion)
    back = convert_laion_state_dict(laion)
    own = model.state_dict()
    assert sorted(back) == sorted(own)
    assert all(torch.equal(back[k], own[k]) for k in own)
    plain, _ = build_clap_hf("tiny", vocab_size=261, seed=3, amodel="HTSAT-tiny")
    assert set(own) - set(plain.state_dict()) == {k for k in own if ".mel_conv2d." in k or ".fusion_model." in k}


@pytest.mark.parametrize("n, longer", [(MAX_LEN, False), (177600, False), (MAX_LEN + 200, False),
                                       (13 * SR, True), (60 * SR, True)])
def test_fusion_input_rules(n, longer):
    """laion's rules: up to 10 s (and the corner 480,000 < n < 480,480: still 1,001 frames) four copies of one mel
    of the repeat-padded clip; longer, the global mel resized plus three chunks of the clip's own mel, one from each
    third, the same for the same seed in any order."""
    g = torch.Generator().manual_seed(n)
    wav = torch.randn(n, generator=g) * 0.1
    mel = FusionMel()
    f, lg = fusion_input(wav, mel, seed=0, antialias=False)
    assert f.shape == (4, 1001, 64) and lg is longer
    if not longer:
        assert all(torch.equal(f[0], f[i]) for i in (1, 2, 3))
        if n < MAX_LEN:  # repeatpad: int(480000 / n) copies, then zeros
            reps = MAX_LEN // n
            tiled = torch.nn.functional.pad(wav.repeat(reps), (0, MAX_LEN - reps * n))
            assert torch.equal(f[0], mel(tiled[None])[0])
        return
    full = mel(wav[None])[0]
    starts = [next(s for s in range(full.shape[0] - 1000) if torch.equal(full[s:s + 1001], f[i])) for i in (1, 2, 3)]
    thirds = np.array_split(np.arange(full.shape[0] - 1001 + 1), 3)
    assert all(s in t for s, t in zip(starts, thirds))
    again, _ = fusion_input(wav, mel, seed=0, antialias=False)
    other, _ = fusion_input(wav, mel, seed=1, antialias=False)
    assert torch.equal(f, again) and not torch.equal(f[1:], other[1:])
    smooth, _ = fusion_input(wav, mel, seed=0, antialias=True)  # the global view is what antialiasing changes
    assert torch.equal(f[1:], smooth[1:]) and not torch.equal(f[0], smooth[0])


# ---------------------------------------------------------------------------------------------------------------
# Parity with laion_clap's classes
# ---------------------------------------------------------------------------------------------------------------
def laion_fusion(size: str, tmp_path, tok, seed: int):
    """laion_clap's CLAP(HTSAT-tiny, roberta, enable_fusion=True, fusion_type='aff_2d'), every tensor perturbed,
    saved as a released checkpoint is (``state_dict`` with ``module.``, ``position_ids``)."""
    from references.laion_clap_model import build_clap

    model, cfg = build_clap(size, "HTSAT-tiny", vocab_size=len(tok) if size == "tiny" else None, seed=seed,
                            enable_fusion=True)
    _randomise(model, seed + 100)
    path = tmp_path / f"laion-fusion-{size}.pt"
    _save_laion_checkpoint(model, path)
    return model, cfg, path


@pytest.fixture(scope="module")
def inputs():
    """10 s (MusicCaps' length), 3.7 s (repeat-padded), 13 s (fusion) of real music at 48 kHz."""
    ten = _music_48k("shared00_bach_bwv66-6")
    short = _music_48k("shared01_bach_bwv269")[: int(3.7 * SR)]
    long = torch.cat([_music_48k("shared02_bach_bwv347"), _music_48k("shared03_bach_bwv153-1")[: 3 * SR]])
    return {"10s": ten, "3.7s": short, "13s": long}


@needs_laion
@pytest.mark.parametrize("size", ["full", "tiny"])
@pytest.mark.parametrize("antialias", [True, False])
def test_audio_and_text_match_laion_fusion(size, antialias, inputs, tok, tmp_path):
    """Audio embeddings (10 s, 3.7 s, 13 s with seeded chunks) and text embeddings within 1e-5 of laion_clap's. The
    global mel's resize as torchvision >= 0.17 does it (antialias, this environment's laion_clap) and as
    stable-audio-metrics' pinned torchvision 0.16 did (no antialias: Resize patched for the laion side)."""
    import torchvision

    from references.laion_clap_model import LaionEmbedder
    from references.stable_audio_metrics import clap_audio_embedding

    model, cfg, path = laion_fusion(size, tmp_path, tok, seed=7)
    hf, info = build_clap_hf(size, checkpoint_path=path, amodel="HTSAT-tiny", enable_fusion=True)
    ours = ClapEmbedder(hf, info, tok)
    mel = FusionMel()
    real_resize = torchvision.transforms.Resize
    patched = (lambda *a, **k: real_resize(*a, **{**k, "antialias": False})) if not antialias else real_resize
    diffs = {}
    for name, wav in inputs.items():
        with mock.patch.object(torchvision.transforms, "Resize", patched):
            ref = clap_audio_embedding(model, cfg, wav.numpy()[None], seed=11)
        feats, longer = fusion_input(wav, mel, seed=11, antialias=antialias)
        assert longer is (name == "13s")
        mine = ours.embed_features(feats[None], [longer])
        diffs[name] = float((mine - ref).abs().max())
    captions = ["a solemn chorale for four voices", "a fast violin melody", "drums"]
    t_ref = LaionEmbedder(model, cfg, tok).embed_text(captions)
    diffs["text"] = float((ours.embed_text(captions) - t_ref).abs().max())
    print(json.dumps(diffs))
    assert max(diffs.values()) <= 1e-5, diffs


# ---------------------------------------------------------------------------------------------------------------
# clap_score from the command line, against stable-audio-metrics' clap_score
# ---------------------------------------------------------------------------------------------------------------
@needs_laion
def test_clap_score_from_the_command_line_equals_stable_audio_metrics(tmp_path, tok):
    """``metrics=[clap,clap_score]`` on files a user has (44.1 kHz stereo, 48 kHz mono, 32 kHz, 3 s, 13 s, a quiet
    one) with a laion fusion checkpoint: clap_score equals stable-audio-metrics' ``clap_score(id2text, folder)``
    (librosa.load(48 kHz, mono), peak -1 dB, int16 round trip, laion's fusion input, cosine with the caption, mean)
    on the same weights, numpy seeded per clip on the laion side."""
    from references.laion_clap_model import LaionEmbedder
    from references.stable_audio_metrics import clap_score

    model, cfg, path = laion_fusion("tiny", tmp_path, tok, seed=9)
    rng = np.random.default_rng(1)
    gen = tmp_path / "gen"
    gen.mkdir()
    kinds = [(44100, 2, 10.0, 0.7), (48000, 1, 3.0, 0.5), (32000, 1, 13.0, 0.4), (44100, 2, 12.5, 0.02)]
    music = [_music_48k(n).numpy() for n in ("shared00_bach_bwv66-6", "shared02_bach_bwv347")]
    captions = {}
    for i, (sr, ch, sec, gain) in enumerate(kinds):
        import librosa

        x = np.concatenate([music[i % 2], music[(i + 1) % 2]])[: int(sec * SR)]
        x = librosa.resample(x, orig_sr=SR, target_sr=sr) * gain
        x = np.stack([x * (1 - 0.3 * c) + 0.01 * rng.standard_normal(x.shape[0]) for c in range(ch)], 1)
        sf.write(gen / f"c{i}.wav", x.astype(np.float32), sr, subtype="FLOAT")
        captions[f"c{i}"] = ["a solemn chorale", "strings, slow", "a quiet organ piece, with reverb", "choir"][i]
    table = tmp_path / "captions.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "caption"])
        w.writerows(captions.items())
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "evalkit", "model=folder", f"model.dir={gen}",
                        f"dataset.captions={table}", "metrics=[clap,clap_score]", "backbone_weights=random",
                        "backbone_size=tiny", f"metrics.clap_score.checkpoint={path}", "metrics.clap_score.tokenizer=tiny",
                        f"hydra.run.dir={out}", "progress=false", f"cache.dir={tmp_path / 'cache'}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    got = summary["metrics"]["clap_score"]
    seed = 0  # conf/embeddings/clap-laion-audioset-fusion.yaml fusion_seed
    import torchvision

    real_resize = torchvision.transforms.Resize  # stable-audio-metrics' torchvision 0.16.0: no antialiasing
    with mock.patch.object(torchvision.transforms, "Resize", lambda *a, **k: real_resize(*a, **{**k, "antialias": False})):
        expected = clap_score(captions, str(gen), model, cfg, LaionEmbedder(model, cfg, tok).embed_text, seed=seed)
    assert abs(expected) > 1e-3
    print(f"clap_score CLI {got['value']!r} vs stable-audio-metrics {expected!r}: |diff| {abs(got['value'] - expected):.3g}")
    assert got["value"] == pytest.approx(expected, abs=2e-6)
    assert got["fusion"] == {"seed": 0, "resize_antialias": False} and got["spec"]["section"] == "stable-audio-metrics"
    assert summary["metrics"]["clap"]["value"] is not None  # the card's CLAP in the same run
