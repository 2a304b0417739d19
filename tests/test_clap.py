"""CLAP text consistency: parity with laion_clap's own CLAP_Module methods on the same (shrunken, random) weights,
the deterministic crop, laion_clap's repeat-pad rule, pairing by id, silent audio, checkpoint loading, state."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from evalkit.metrics.base import Clip
from evalkit.spec import metric_recipe
from tests.conftest import chord, noise, reference_test, sine

SR = 48000
N = 480000


def clap_recipe(*extra: str, **over) -> dict:
    """conf/metrics/clap.yaml with its audiocraft protocol file, resolved as the run does, shrunken random model; the
    metric alone (``postprocess=none``: the solver's post-processing is tested through the command line)."""
    over = {"model_size": "tiny", "checkpoint": "random", **over}
    if over["checkpoint"] != "random":  # the tests' own files, not the released one whose sha256 the embedding pins
        over.setdefault("checkpoint_sha256", None)
    recipe = metric_recipe("clap", [f"metrics.clap.{k}={'null' if v is None else v}" for k, v in over.items()]
                           + ["postprocess=none", *extra])
    recipe["backbone_weights"] = "random" if recipe["checkpoint"] == "random" else "released"
    return recipe


@pytest.fixture(scope="module")
def metric():
    from evalkit.metrics.clap import ClapScore

    return ClapScore(clap_recipe())


# parity with laion_clap's own CLAP_Module: the extra evalkit[reference]
needs_laion = reference_test("laion_clap")


@pytest.fixture(scope="module")
def laion_pair(tmp_path_factory):
    """laion_clap's CLAP_Module around a tiny laion model (its __init__ would fetch roberta-base), and evalkit's
    metric loading the *same* weights from a laion-format checkpoint file (the released file's layout)."""
    from evalkit.embeddings.tokenizers import tiny_roberta_tokenizer
    from evalkit.metrics.clap import ClapScore
    from references.laion_clap_model import build_clap, clap_module

    tok = tiny_roberta_tokenizer()
    model, cfg = build_clap("tiny", vocab_size=len(tok), seed=0)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.text_branch.embeddings.position_ids"] = torch.arange(80)[None]
    path = tmp_path_factory.mktemp("clap") / "tiny_clap.pt"
    torch.save({"epoch": 15, "state_dict": sd}, path)
    mod = clap_module(model, cfg, tok)
    return ClapScore(clap_recipe(checkpoint=str(path), tokenizer="tiny")), mod


def prepare(metric, clip):
    """The metric's input path, then its embedding's 10 s rule: ``(wave, longer)`` as the model gets it."""
    return metric.embedder.fit(metric.input.apply(clip).generated.wav[0])


def ours(metric, waves_48k):
    prepared = [prepare(metric, Clip(id=str(i), caption="x", audio=w[None], sample_rate=SR))
                for i, w in enumerate(waves_48k)]
    return metric.embedder.clap.embed_audio([p[0] for p in prepared], [p[1] for p in prepared])


# ---------------------------------------------------------------------------------------------------------------
def test_recipe_is_audiocrafts(metric):
    from evalkit.embeddings.clap import AUDIO_CFG, ROBERTA_BASE
    from evalkit.registry import get_metric

    r = clap_recipe(model_size="full", checkpoint=None)
    e = r["embedder"]
    assert (r["protocol"], r["embedding"], e["amodel"], e["enable_fusion"], e["sample_rate"], e["max_samples"]) == \
        ("audiocraft", "clap-laion-music", "HTSAT-base", False, 48000, 480000)
    assert (e["fill"], e["crop"], r["cosine_eps"]) == ("repeatpad", "start", 1e-8)
    assert r["input"]["both"] == [{"resample": {"rate": "embedder", "with": "julius"}}, {"channels": 1}]  # no int16
    assert (e["tokenizer_name"], e["text_max_length"], e["text_padding"], e["text_truncation"]) == \
        ("roberta-base", 77, "max_length", True)
    assert e["checkpoint_file"] == "music_audioset_epoch_15_esc_90.14.pt"
    assert e["checkpoint_url"] == ("https://huggingface.co/lukewys/laion_clap/resolve/main/"
                                   "music_audioset_epoch_15_esc_90.14.pt")
    assert e["drop_state_keys"] == ["text_branch.embeddings.position_ids"]
    assert clap_recipe("+metrics.clap.embedder.crop=center")["embedder"]["crop"] == "center"  # a user override wins
    assert (AUDIO_CFG["sample_rate"], AUDIO_CFG["clip_samples"]) == (48000, 480000)  # HTSAT-base.json audio_cfg
    # roberta-base config.json, not transformers' RobertaConfig() defaults (512 positions, 2 types, eps 1e-12)
    assert (ROBERTA_BASE["max_position_embeddings"], ROBERTA_BASE["type_vocab_size"], ROBERTA_BASE["layer_norm_eps"],
            ROBERTA_BASE["pad_token_id"], ROBERTA_BASE["vocab_size"]) == (514, 1, 1e-5, 1, 50265)
    text_cfg = metric.embedder.clap.model.text_model.config
    assert (text_cfg.layer_norm_eps, text_cfg.pad_token_id, text_cfg.type_vocab_size) == (1e-5, 1, 1)
    cls = get_metric("clap")
    assert cls is type(metric)
    s = cls.spec
    assert (s.name, s.primary, s.higher_is_better, s.needs_reference, s.card_column) == \
        ("clap", "clap", True, False, "Text Consistency")


@needs_laion
def test_audio_parity_with_laion_clap_exact_length_and_repeatpad(laion_pair):
    metric, laion = laion_pair
    waves = [noise(SR, 10.0, 0.1, seed=1)[0], chord([220, 277, 330], SR, 150001 / SR)[0], sine(880, SR, 7000 / SR)[0]]
    assert [w.shape[0] for w in waves] == [480000, 150001, 7000]
    ref = laion.get_audio_embedding_from_data(waves, use_tensor=True).detach()
    got = ours(metric, waves)
    assert got.shape == (3, 512)
    assert torch.allclose(got, ref, rtol=0, atol=1e-5), (got - ref).abs().max()
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-5)
    # the three clips do not collapse onto one embedding (the comparison above is not vacuous)
    assert (got[0] - got[1]).abs().max() > 1e-3 and (got[1] - got[2]).abs().max() > 1e-3


def test_repeatpad_rule_is_laion_claps():
    from evalkit.embeddings.clap import fit_to_length

    x = torch.arange(1, 150002, dtype=torch.float32)  # 150001 samples: int(480000 / 150001) = 3 copies
    y, longer = fit_to_length(x, N)
    assert not longer and y.shape == (N,)
    assert torch.equal(y[:150001], x) and torch.equal(y[150001:300002], x) and torch.equal(y[300002:450003], x)
    assert torch.count_nonzero(y[450003:]) == 0
    y, _ = fit_to_length(x[:7], 20, fill="repeat")
    assert y.tolist() == [1, 2, 3, 4, 5, 6, 7] * 2 + [1, 2, 3, 4, 5, 6]
    y, _ = fit_to_length(x[:7], 20, fill="pad")
    assert y.tolist() == [1, 2, 3, 4, 5, 6, 7] + [0] * 13
    exact = torch.arange(N, dtype=torch.float32)
    y, longer = fit_to_length(exact, N)
    assert not longer and torch.equal(y, exact)


@needs_laion
def test_text_parity_with_laion_clap(laion_pair):
    metric, laion = laion_pair
    captions = ["A calm piano melody with soft strings.", "Heavy metal: distorted guitars, double-kick drums ♪",
                "lo-fi " * 40]  # the last one is truncated to 77 tokens
    ref = laion.get_text_embedding(captions, use_tensor=True).detach()
    got = metric.embedder.embed_text(captions)
    assert torch.allclose(got, ref, rtol=0, atol=1e-5), (got - ref).abs().max()
    assert (got[0] - got[1]).abs().max() > 1e-3


@needs_laion
def test_long_audio_crop_is_deterministic_unlike_laion_clap(metric, laion_pair):
    laion_metric, laion = laion_pair
    from evalkit.embeddings.clap import fit_to_length
    from evalkit.metrics.clap import ClapScore

    long = noise(SR, 12.5, 0.1, seed=3)[0]  # 600,000 samples
    clip = Clip(id="long", caption="noise burst", audio=long[None], sample_rate=SR)
    first = metric.update([clip])["long"].values["clap"]
    second_run = ClapScore(clap_recipe()).update([clip])["long"].values["clap"]
    assert first == second_run  # bit for bit, a fresh model from the same seed
    # crop=start keeps the first 480,000 samples: laion_clap's embedding of exactly those (no randomness there)
    start = laion.get_audio_embedding_from_data(long[None, :N], use_tensor=True).detach()
    assert torch.allclose(ours(laion_metric, [long]), start, atol=1e-5)
    centre, longer = fit_to_length(long, N, crop="center")
    assert longer and torch.equal(centre, long[60000:540000])
    assert torch.equal(fit_to_length(long, N, crop="end")[0], long[-N:])
    ref_c = laion.get_audio_embedding_from_data(long[None, 60000:540000], use_tensor=True).detach()
    assert torch.allclose(laion_metric.embedder.clap.embed_audio([centre], [True]), ref_c, atol=1e-5)
    # laion_clap itself picks a random offset (np.random): two draws, two embeddings (LAION-AI/CLAP issue 166)
    state = np.random.get_state()
    try:
        np.random.seed(0)
        a = laion.get_audio_embedding_from_data(long[None], use_tensor=True).detach()
        np.random.seed(1)
        b = laion.get_audio_embedding_from_data(long[None], use_tensor=True).detach()
    finally:
        np.random.set_state(state)
    assert (a - b).abs().max() > 1e-6


def test_score_is_cosine_and_pairs_by_id_not_by_order(metric):
    captions = {"yt_a": "a slow sad violin solo", "yt_b": "fast techno beat with synth bass",
                "yt_c": "children's choir singing", "yt_d": "white noise"}
    audio = {"yt_a": sine(440, 32000, 10.0)[None, 0], "yt_b": chord([110, 165], 32000, 10.0),
             "yt_c": sine(660, 32000, 4.0, channels=2), "yt_d": noise(32000, 10.0, seed=9)}
    clips = [Clip(id=k, caption=captions[k], audio=audio[k], sample_rate=32000) for k in captions]
    metric.reset()
    by_order = metric.update(clips)
    mean_1 = metric.compute()["clap"]
    metric.reset()
    shuffled = clips[:]
    random.Random(4).shuffle(shuffled)
    assert [c.id for c in shuffled] != [c.id for c in clips]
    metric.batch_size = 2  # other batch boundaries too
    try:
        by_shuffle = metric.update(shuffled)
    finally:
        metric.batch_size = 8
    mean_2 = metric.compute()["clap"]
    assert set(by_order) == set(by_shuffle) == set(captions)
    for k in captions:
        assert by_order[k].values["clap"] == pytest.approx(by_shuffle[k].values["clap"], abs=1e-6)
    assert mean_1 == pytest.approx(mean_2, abs=1e-7)
    # independently: cosine(audio_i, text_i) (the diagonal), and not any other caption's cosine
    ids = list(captions)
    a = ours_from_clips(metric, clips)
    t = metric.embedder.embed_text([captions[k] for k in ids])
    cross = torch.nn.functional.cosine_similarity(a[:, None, :], t[None, :, :], dim=-1)
    for i, k in enumerate(ids):
        assert by_order[k].values["clap"] == pytest.approx(cross[i, i].item(), abs=1e-6)
        others = [abs(by_order[k].values["clap"] - cross[i, j].item()) for j in range(len(ids)) if j != i]
        assert min(others) > 1e-5
    assert mean_1 == pytest.approx(float(np.mean([cross[i, i].item() for i in range(len(ids))])), abs=1e-6)
    assert metric.state["n_clips"] == 4 and metric.state["n_skipped"] == 0


def ours_from_clips(metric, clips):
    prepared = [prepare(metric, c) for c in clips]
    return metric.embedder.clap.embed_audio([p[0] for p in prepared], [p[1] for p in prepared])


def test_prepare_resamples_then_downmixes_like_audiocraft(metric):
    import julius

    x = torch.cat([sine(440, 32000, 10.0), noise(32000, 10.0, seed=2)], dim=0)  # stereo, 10 s at 32 kHz
    wav, longer = prepare(metric, Clip(id="s", caption="c", audio=x, sample_rate=32000))
    expect = julius.resample_frac(x, 32000, 48000).mean(dim=0)
    assert wav.shape == (N,) and not longer  # 10 s at 32 kHz = exactly 480,000 samples at 48 kHz
    assert torch.equal(wav, expect)


def test_silent_audio_gives_a_finite_score_and_eps_guards_zero_vectors(metric):
    from evalkit.metrics.clap import ClapScore
    from evalkit.metrics.spec import RunContext

    metric.reset()
    out = metric.update([Clip(id="quiet", caption="silence", audio=torch.zeros(1, 320000), sample_rate=32000)])
    assert out["quiet"].skipped == "generated: silent (RMS -inf dBFS < -70 dBFS)"  # the audit's policy
    lenient = ClapScore(clap_recipe(), context=RunContext(audit={"skip": []}))  # a policy that lets silence through
    out = lenient.update([Clip(id="quiet", caption="silence", audio=torch.zeros(1, 320000), sample_rate=32000)])
    value = out["quiet"].values["clap"]
    assert math.isfinite(value) and -1.0 <= value <= 1.0
    assert out["quiet"].flags == {"generated": {"silent": "RMS -inf dBFS < -70 dBFS"}}  # still listed
    assert lenient.compute()["clap"] == pytest.approx(value, abs=1e-7)
    zero = metric.cosine(torch.zeros(1, 512), torch.randn(1, 512))
    assert torch.isfinite(zero).all() and zero.item() == 0.0


def test_unusable_clips_are_skipped_and_counted(metric):
    metric.reset()
    out = metric.update([
        Clip(id="empty", caption="x", audio=torch.zeros(1, 0), sample_rate=32000),
        Clip(id="nan", caption="x", audio=torch.full((1, 1000), float("nan")), sample_rate=32000),
        Clip(id="nocap", caption="  ", audio=sine(440, 32000, 1.0), sample_rate=32000),
    ])
    assert {k: (r.skipped, r.values) for k, r in out.items()} == {
        "empty": ("generated: silent (no samples)", {}),
        "nan": ("generated: non_finite (1500 of 1500 samples are NaN or infinite)", {}),  # at 48 kHz
        "nocap": ("empty caption", {})}
    assert metric.state["n_skipped"] == 3 and metric.state["n_clips"] == 0
    with pytest.raises(ValueError, match="no clip was scored"):
        metric.compute()
    with pytest.raises(ValueError, match="twice"):
        metric.update([Clip(id="d", caption="x", audio=sine(440, 32000, 1.0), sample_rate=32000)] * 2)


def test_states_merge_by_addition(metric):
    from evalkit.metrics.clap import ClapScore

    clips = [Clip(id=f"m{i}", caption=f"tone number {i}", audio=sine(220 * (i + 1), 48000, 1.0), sample_rate=48000)
             for i in range(2)]
    metric.reset()
    metric.update(clips)
    whole = metric.compute()["clap"]
    saved_all = metric.state_dict()
    metric.reset()
    metric.update(clips[:1])
    part_a = metric.state_dict()
    metric.reset()
    metric.update(clips[1:])
    other = object.__new__(ClapScore)
    other.state = metric.state_dict()
    metric.load_state_dict(part_a)
    metric.merge(other)
    assert metric.state["n_clips"] == 2 == saved_all["n_clips"]
    assert metric.compute()["clap"] == pytest.approx(whole, abs=1e-7)


def test_checkpoint_file_is_loaded_and_described(tmp_path):
    from evalkit.embeddings.clap import ClapError, build_clap_hf
    from evalkit.embeddings.weights import CheckpointError
    from evalkit.io import sha256_file
    from evalkit.metrics.clap import ClapScore

    source, _ = build_clap_hf("tiny", vocab_size=261, seed=1)
    # the same weights in the released file's laion layout (tests/test_clap_backbone.py checks the key map itself)
    from tests.test_clap_backbone import to_laion_layout

    path = tmp_path / "tiny_clap.pt"
    torch.save({"epoch": 15, "state_dict": to_laion_layout(source)}, path)
    # by default a checkpoint file must be the released one (conf/embeddings/clap-laion-music.yaml pins its sha256)
    with pytest.raises(CheckpointError,
                       match=r"does not start with fae3e9c087f2909c.*pinned by metrics\.clap\.checkpoint_sha256"):
        ClapScore(clap_recipe(checkpoint=str(path), tokenizer="tiny", checkpoint_sha256="pinned"))
    m = ClapScore(clap_recipe(checkpoint=str(path), tokenizer="tiny"))
    d = m.describe()
    assert (d["checkpoint"], d["checkpoint_sha256"], d["random_weights"]) == ("tiny_clap.pt", sha256_file(path), False)
    assert d["protocol"] == "audiocraft" and d["tokenizer"].startswith("evalkit:tiny") and d["model_size"] == "tiny"
    for (k, v), (k2, v2) in zip(m.embedder.clap.model.state_dict().items(), source.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    sd = torch.load(path, weights_only=True)["state_dict"]
    bad = {k: v for k, v in sd.items() if "logit_scale_a" not in k}
    torch.save({"state_dict": bad}, tmp_path / "bad.pt")
    with pytest.raises(ClapError, match="logit_scale_a"):
        ClapScore(clap_recipe(checkpoint=str(tmp_path / "bad.pt"), tokenizer="tiny"))


def test_describe_random_mode(metric):
    d = metric.describe()
    assert d["random_weights"] is True and d["checkpoint"] == "random:music_audioset_epoch_15_esc_90.14.pt"
    assert d["checkpoint_sha256"] is None and d["crop"] == "start" and d["fill"] == "repeatpad"
    assert d["quantize_int16"] is False
