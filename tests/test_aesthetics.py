"""Audiobox Aesthetics: evalkit's network is the package's ``AesMultiOutput`` on identical weights, its whole path is
``AesPredictor.forward`` (audiobox-aesthetics 0.0.4) on the same files - in memory and through the command line on
files a user has (44.1/48 kHz, stereo and mono, lengths that are not multiples of 10 s) -, its layout is the released
file's, and a checkpoint's own config is checked against the conf."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from evalkit.embeddings import build_embedder
from evalkit.embeddings.aesthetics import AXES, AesShape, AestheticsError, AestheticsNet, chunks
from evalkit.embeddings.weights import CheckpointError
from evalkit.metrics.base import Clip
from evalkit.registry import get_metric
from evalkit.spec import metric_recipe
from tests.conftest import reference_test

REPO = Path(__file__).resolve().parents[1]
#: user files: (name, rate, channels, seconds)
FILES = (("a", 44100, 2, 12.3), ("b", 48000, 1, 7.9), ("c", 44100, 1, 21.0), ("d", 32000, 2, 0.6))


def recipe(size: str, *extra: str) -> dict:
    return metric_recipe("aesthetics", ["backbone_weights=random", f"backbone_size={size}", *extra])


def embedder(size: str, *extra: str):
    return build_embedder(recipe(size, *extra), "metrics.aesthetics")


def write_files(folder: Path, files=FILES) -> dict[str, tuple[np.ndarray, int]]:
    """Tones and noise as 16-bit wav files; returns ``{id: ([T, C] float32 as soundfile reads it, rate)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, sr, ch, sec) in enumerate(files):
        rng = np.random.default_rng(i)
        t = np.arange(int(sr * sec)) / sr
        x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) for _ in range(3))
        x = 0.5 * (x + 0.05 * rng.standard_normal(t.size))
        sf.write(str(folder / f"{name}.wav"), np.stack([x * (1 - 0.3 * c) for c in range(ch)], 1), sr, subtype="PCM_16")
        out[name] = (sf.read(str(folder / f"{name}.wav"), dtype="float32", always_2d=True)[0], sr)
    return out


def test_chunks_are_make_inference_batch():
    """10 s chunks every 10 s, the last zero-padded, weight = valid share: 25 s -> [1, 1, 0.5]."""
    x = torch.arange(25 * 16000, dtype=torch.float32)
    wav, mask, w = chunks(x, 160000, 160000)
    assert wav.shape == (3, 160000) and w.tolist() == [1.0, 1.0, 0.5]
    assert mask.sum(1).tolist() == [160000, 160000, 80000] and bool((wav[2, 80000:] == 0).all())
    assert torch.equal(wav[1], x[160000:320000])
    wav, mask, w = chunks(x[:320000], 160000, 160000)
    assert wav.shape[0] == 2 and w.tolist() == [1.0, 1.0]
    _, mask, w = chunks(x[:1], 160000, 160000)
    assert w.tolist() == [pytest.approx(1 / 160000)] and int(mask.sum()) == 1


def test_the_state_dict_is_the_released_files_layout(tmp_path):
    """324 tensors, 103,859,112 parameters, and safetensors writes exactly the 415,472,992 bytes of the hub's
    model.safetensors at the pinned revision (the size a third-party manifest records): the key names, shapes and
    the heads' layout (proj_num_layer 5 with LayerNorms, 13 layer weights) are the released model's."""
    from safetensors.torch import save_file

    conf = embedder("full").config
    net = AestheticsNet(AesShape.from_config(conf, "full"))
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    assert len(state) == 324 and sum(v.numel() for v in state.values()) == 103_859_112
    assert state["proj_layer.PQ.12.weight"].shape == (1, 768) and state["layer_weights.CE"].shape == (13,)
    save_file(state, str(tmp_path / "model.safetensors"))
    assert (tmp_path / "model.safetensors").stat().st_size == 415_472_992


def package_checkpoint(path: Path, size: str, target_transform=None, **cfg) -> dict:
    """evalkit's random weights (seed 0) as the package's checkpoint.pt: ``state_dict`` with ``model.`` keys,
    ``model_cfg`` and ``target_transform`` (infer.py AesPredictor.setup_model reads these). Returns the latter."""
    emb = embedder(size)
    s = emb.shape
    tt = target_transform or {a: {"mean": m, "std": d} for a, (m, d) in zip(AXES, s.target_transform)}
    model_cfg = {"proj_num_layer": s.proj_num_layer, "proj_ln": s.proj_ln, "proj_act_fn": "gelu", "proj_dropout": 0.0,
                 "nth_layer": s.nth_layer, "use_weighted_layer_sum": True, "precision": "32",
                 "normalize_embed": s.normalize_embed, "output_dim": 1, **cfg}
    torch.save({"state_dict": {f"model.{k}": v for k, v in emb.network.state_dict().items()}, "model_cfg": model_cfg,
                "target_transform": tt}, path)
    return tt


def test_a_checkpoint_carries_its_config_which_must_agree_with_the_conf(tmp_path):
    """The package's checkpoint.pt loads (``model.`` prefix); its target transform (full precision) replaces the
    conf's 6-digit one; a model_cfg or target transform that differs is refused, naming the key."""
    random = embedder("tiny").embed([torch.linspace(-0.5, 0.5, 30000)])[0]
    exact = {a: {"mean": m + 3e-6, "std": d} for a, (m, d) in zip(AXES, embedder("tiny").shape.target_transform)}
    package_checkpoint(tmp_path / "checkpoint.pt", "tiny", exact)
    loaded = embedder("tiny", f"metrics.aesthetics.checkpoint={tmp_path / 'checkpoint.pt'}",
                      "metrics.aesthetics.checkpoint_sha256=null").embed([torch.linspace(-0.5, 0.5, 30000)])[0]
    np.testing.assert_allclose(loaded - random, 3e-6, atol=2e-6)  # the file's means, not the conf's
    package_checkpoint(tmp_path / "other.pt", "tiny", {**exact, "PQ": {"mean": 6.6, "std": 1.5}}, proj_num_layer=3)
    emb = embedder("tiny", f"metrics.aesthetics.checkpoint={tmp_path / 'other.pt'}",
                   "metrics.aesthetics.checkpoint_sha256=null")
    with pytest.raises(AestheticsError, match=r"proj_num_layer: file 3, conf 2.*target_transform\.PQ"):
        emb.network  # noqa: B018


def test_released_weights_offline_name_both_hub_files(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    emb = build_embedder(metric_recipe("aesthetics", ["backbone_weights=released", "backbone_size=full"]),
                         "metrics.aesthetics")
    with pytest.raises(CheckpointError, match=r"config\.json model\.safetensors of facebook/audiobox-aesthetics at "
                                              r"revision 9b1dd8e5df9af7216e836a98974fe3b82c56ded6"):
        emb.checkpoint  # noqa: B018


def test_an_empty_clip_is_skipped_not_scored():
    m = get_metric("aesthetics")(recipe("tiny"))
    res = m.update([Clip("e", "", torch.zeros(1, 0), 16000)])
    assert res["e"].skipped and m.count("n_clips") == 0


# ----------------------------------------------------------------------------------------------------------------
# Parity with the package (audiobox-aesthetics 0.0.4)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def package(monkeypatch):
    """The package, its WavLM config set to the embedder's size when a test asks for tiny (``AesMultiOutput`` reads
    the module's DEFAULT_AUDIO_CFG)."""
    import audiobox_aesthetics.model.aes as aes
    from audiobox_aesthetics.model.wavlm import WavLMConfig

    def use(size: str):
        s = embedder(size).shape
        cfg = dict(aes.DEFAULT_AUDIO_CFG.__dict__)
        cfg.update(conv_feature_layers=repr([tuple(layer) for layer in s.conv_layers]), encoder_layers=s.layers,
                   encoder_embed_dim=s.dim, encoder_ffn_embed_dim=s.ffn_dim, encoder_attention_heads=s.heads,
                   conv_pos=s.conv_pos, conv_pos_groups=s.conv_pos_groups, num_buckets=s.num_buckets,
                   max_distance=s.max_distance)
        monkeypatch.setattr(aes, "DEFAULT_AUDIO_CFG", WavLMConfig(cfg))
        return aes

    return use


@pytest.mark.parametrize("size", ["tiny", "full"])
@reference_test("audiobox_aesthetics")
def test_the_network_is_AesMultiOutput(package, size):
    """Identical weights, a batch of two full chunks and one padded (a third valid): the package's four normalised
    outputs, to float32 rounding."""
    aes = package(size)
    emb = embedder(size)
    s = emb.shape
    ref = aes.AesMultiOutput(proj_num_layer=s.proj_num_layer, proj_ln=s.proj_ln, proj_act_fn="gelu", proj_dropout=0.0,
                             nth_layer=s.nth_layer, use_weighted_layer_sum=True, precision="32",
                             normalize_embed=s.normalize_embed, output_dim=1, target_transform=None)
    ref.load_state_dict(emb.network.state_dict(), strict=True)
    ref.eval()
    g = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn(3, 160000, generator=g)
    mask = torch.ones(3, 160000, dtype=torch.bool)
    mask[2, 53000:] = False
    wav[2, 53000:] = 0
    with torch.inference_mode():
        want = ref({"wav": wav[:, None], "mask": mask[:, None]})
        got = emb.network.normalized(wav, mask)
    torch.testing.assert_close(got, torch.stack([want[a] for a in AXES], -1), rtol=0, atol=2e-6)


@reference_test("audiobox_aesthetics")
def test_full_size_path_is_AesPredictor_forward(tmp_path, package):
    """The full-size network, end to end: AesPredictor.forward (a random checkpoint.pt holding evalkit's weights) on
    a 44.1 kHz stereo 12.3 s clip and a 48 kHz mono 7.9 s clip vs the metric's per-clip values (its input path:
    torchaudio's resampler per channel, then the channel mean)."""
    from audiobox_aesthetics.infer import AesPredictor

    package("full")
    files = write_files(tmp_path / "gen", FILES[:2])
    package_checkpoint(tmp_path / "checkpoint.pt", "full")
    predictor = AesPredictor(checkpoint_pth=str(tmp_path / "checkpoint.pt"))
    want = predictor.forward([{"path": torch.from_numpy(x.T.copy()), "sample_rate": sr} for x, sr in files.values()])
    m = get_metric("aesthetics")(recipe("full"))
    got = m.update([Clip(k, "", torch.from_numpy(x.T.copy()), sr) for k, (x, sr) in files.items()])
    for k, row in zip(files, want):
        for a in AXES:
            assert got[k].values[f"aesthetics_{a.lower()}"] == pytest.approx(row[a], abs=1e-5), (k, a)


def run_cli(out: Path, gen: Path, size: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "evalkit", "model=folder", f"model.dir={gen}", "metrics=[aesthetics]",
                        "backbone_weights=random", f"backbone_size={size}", f"hydra.run.dir={out}",
                        f"cache.dir={out.parent / 'cache'}", "progress=false"], cwd=REPO, capture_output=True,
                       text=True, timeout=900, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "PQ (production quality)" in p.stdout and "CE (content enjoyment)" in p.stdout  # evalkit's own table
    return json.loads((out / "summary.json").read_text())


def cli_parity(tmp_path, package, size: str, files) -> None:
    from audiobox_aesthetics.infer import AesPredictor

    package(size)
    data = write_files(tmp_path / "gen", files)
    summary = run_cli(tmp_path / "run", tmp_path / "gen", size)
    package_checkpoint(tmp_path / "checkpoint.pt", size)
    want = AesPredictor(checkpoint_pth=str(tmp_path / "checkpoint.pt")).forward(
        [{"path": torch.from_numpy(x.T.copy()), "sample_rate": sr} for x, sr in data.values()])
    clips = pd.read_parquet(tmp_path / "run" / "clips.parquet").set_index("id")
    for k, row in zip(data, want):
        for a in AXES:
            assert clips.loc[k, f"aesthetics_{a.lower()}"] == pytest.approx(row[a], abs=1e-5), (k, a)
    entry = summary["metrics"]["aesthetics"]
    assert entry["n_clips"] == len(files) and entry["random_weights"] is True
    for a in AXES:
        assert entry["values"][a.lower()] == pytest.approx(np.mean([r[a] for r in want]), abs=1e-5)
    assert entry["value"] == entry["values"]["pq"]


@reference_test("audiobox_aesthetics")
def test_cli_on_user_files_is_AesPredictor(tmp_path, package):
    """`python -m evalkit model=folder model.dir=... metrics=[aesthetics] backbone_weights=random
    backbone_size=tiny` on 44.1/48/32 kHz, stereo and mono files of 12.3, 7.9, 21 and 0.6 s: every clip's four
    scores are AesPredictor.forward's on the same files (same random weights), the means are the summary's."""
    cli_parity(tmp_path, package, "tiny", FILES)


@pytest.mark.slow
@reference_test("audiobox_aesthetics")
def test_cli_full_size_is_AesPredictor(tmp_path, package):
    """The same at full size (WavLM Base+), on a stereo 44.1 kHz and a mono 48 kHz file."""
    cli_parity(tmp_path, package, "full", FILES[:2])
