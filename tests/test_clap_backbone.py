"""CLAP on transformers' ClapModel (evalkit/embeddings/clap.py) against laion_clap's own classes on identical weights.

The laion side is the model references/laion_clap_model.py build_clap builds (``clap_module.model.CLAP``, HTSAT-base +
roberta-base, non-fusion), given deterministic random weights (every tensor perturbed, so that a wrong mapping cannot
hide behind a zero or a one) and saved as a laion-format checkpoint file (``{"state_dict": {"module.…": …}}`` with
``text_branch.embeddings.position_ids``, like the released file). The transformers side loads that file through
build_clap_hf. Audio: the shared music clips (32 kHz stereo, resampled to 48 kHz mono as the metric does), at 10 s
(no crop, no fill), 3.7 s (repeatpad) and 13 s (crop; ``longer`` set). Tolerance: 1e-5 max abs difference on the
embeddings and on the audiocraft score (cosine with eps 1e-8 per pair, then the mean).
"""
from __future__ import annotations

import csv
import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from evalkit.audio import convert_audio, load_audio
from evalkit.embeddings.clap import (AUDIO_CFG, DROPPED_KEYS, SYNTHESISED_KEYS, ClapEmbedder, ClapError, HtsatLogMel,
                                    _convert, build_clap_hf, clap_config, convert_laion_state_dict, fit_to_length)
from references.laion_clap_model import LaionEmbedder
from references.laion_clap_model import randomise as _randomise
from evalkit.embeddings.tokenizers import tiny_roberta_tokenizer
from tests.conftest import MUSIC_DIR, REPO, have, needs_reference, reference_test, sine

TOL = 1e-5
SR = 48000
N = 480000
HAVE_LAION = have("laion_clap")
# the parity tests compare against laion_clap's own CLAP classes: the extra evalkit[reference]
needs_laion = reference_test("laion_clap")


# ---------------------------------------------------------------------------------------------------------------
# Inputs: real music, real captions
# ---------------------------------------------------------------------------------------------------------------
def _music_48k(name: str) -> torch.Tensor:
    path = MUSIC_DIR / f"{name}.flac"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    wav, sr = load_audio(path)
    return convert_audio(wav, sr, SR, 1)[0]


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[torch.Tensor, bool]]:
    """name -> (480,000 samples as the metric prepares them, longer)."""
    ten = _music_48k("shared00_bach_bwv66-6")
    short = _music_48k("shared01_bach_bwv269")[: int(3.7 * SR)]
    long = torch.cat([_music_48k("shared02_bach_bwv347"), _music_48k("shared03_bach_bwv153-1")[: 3 * SR]])
    assert ten.shape[0] == N and short.shape[0] == 177600 and long.shape[0] == 13 * SR
    out = {name: fit_to_length(w, N) for name, w in (("10s", ten), ("3.7s", short), ("13s", long))}
    assert [lg for _, lg in out.values()] == [False, False, True]
    return out


@pytest.fixture(scope="module")
def captions() -> list[str]:
    with open(MUSIC_DIR / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["caption"] for r in rows[:3]]


@pytest.fixture(scope="module")
def tok():
    # roberta-base's files cannot be downloaded here; the in-memory byte-level RoBERTa tokenizer gives real,
    # distinct token ids (one per byte) through the same encode_batch call, for both models alike
    return tiny_roberta_tokenizer()


# ---------------------------------------------------------------------------------------------------------------
# The laion side: build, randomise, save as a laion checkpoint
# ---------------------------------------------------------------------------------------------------------------
#: ClapModel key -> LAION-CLAP key, written out by hand (the inverse of evalkit's RENAMES / QKV), so a laion-format
#: checkpoint can be made without laion_clap (numpy-2 environment) and the converter checked against it.
_TO_LAION = [
    (r"audio_model\.audio_encoder\.batch_norm\.(.+)", r"audio_branch.bn0.\1"),
    (r"audio_model\.audio_encoder\.patch_embed\.(.+)", r"audio_branch.patch_embed.\1"),
    (r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.(.+)",
     r"audio_branch.layers.\1.blocks.\2.norm1.\3"),
    (r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.(.+)",
     r"audio_branch.layers.\1.blocks.\2.norm2.\3"),
    (r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(relative_position_\w+)",
     r"audio_branch.layers.\1.blocks.\2.attn.\3"),
    (r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.output\.dense\.(.+)",
     r"audio_branch.layers.\1.blocks.\2.attn.proj.\3"),
    (r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.intermediate\.dense\.(.+)",
     r"audio_branch.layers.\1.blocks.\2.mlp.fc1.\3"),
    (r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.output\.dense\.(.+)",
     r"audio_branch.layers.\1.blocks.\2.mlp.fc2.\3"),
    (r"audio_model\.audio_encoder\.layers\.(\d+)\.downsample\.(.+)", r"audio_branch.layers.\1.downsample.\2"),
    (r"audio_model\.audio_encoder\.norm\.(.+)", r"audio_branch.norm.\1"),
    (r"(audio|text)_projection\.linear1\.(.+)", r"\1_projection.0.\2"),
    (r"(audio|text)_projection\.linear2\.(.+)", r"\1_projection.2.\2"),
    (r"text_model\.(.+)", r"text_branch.\1"),
    (r"logit_scale_(a|t)", r"logit_scale_\1"),
]
_QKV_HF = r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)"


def to_laion_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A ClapModel's weights as a released LAION-CLAP checkpoint stores them (``module.`` prefix, fused ``qkv``,
    ``position_ids``; no token_type_ids)."""
    import re

    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.fullmatch(_QKV_HF, k)
        if m:
            if m[3] == "query":
                base = f"audio_model.audio_encoder.layers.{m[1]}.blocks.{m[2]}.attention.self"
                out[f"audio_branch.layers.{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}"] = torch.cat(
                    [sd[f"{base}.{n}.{m[4]}"] for n in ("query", "key", "value")])
            continue
        if k == "text_model.embeddings.token_type_ids":
            continue
        for pattern, template in _TO_LAION:
            if re.fullmatch(pattern, k):
                out[re.sub(pattern, template, k)] = v.clone()
                break
        else:
            raise AssertionError(f"no laion name for {k}")
    return {f"module.{k}": v for k, v in out.items()}


def test_laion_layout_round_trips_through_the_converter_without_laion_clap():
    """A ClapModel's weights, written in the released checkpoint's layout and read back by the converter, are the
    same tensors under the same keys: every key is mapped, none twice (this runs without laion_clap)."""
    model, _ = build_clap_hf("tiny", vocab_size=261, seed=3)
    laion = {k[len("module."):]: v for k, v in to_laion_layout(model).items()}
    back = convert_laion_state_dict(laion)
    own = model.state_dict()
    assert sorted(back) == sorted(own)
    for k in own:
        assert torch.equal(back[k], own[k]), k


def _save_laion_checkpoint(model: torch.nn.Module, path) -> None:
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    n = model.text_branch.embeddings.position_embeddings.num_embeddings
    sd["module.text_branch.embeddings.position_ids"] = torch.arange(n)[None]  # as in the released file
    torch.save({"epoch": 15, "state_dict": sd}, path)


def _laion_setup(size: str, tmp_path_factory, tok, seed: int):
    from references.laion_clap_model import build_clap

    vocab = len(tok) if size == "tiny" else None
    model, cfg = build_clap(size, vocab_size=vocab, seed=seed)
    _randomise(model, seed + 100)
    path = tmp_path_factory.mktemp(f"clap-{size}") / "laion.pt"
    _save_laion_checkpoint(model, path)
    return model, cfg, path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    if not HAVE_LAION:
        pytest.skip("laion_clap is not installed (extra evalkit[reference])")
    return _laion_setup("tiny", tmp_path_factory, tok, seed=3)


@pytest.fixture(scope="module")
def full(tmp_path_factory, tok):
    if not HAVE_LAION:
        pytest.skip("laion_clap is not installed (extra evalkit[reference])")
    model, cfg, path = _laion_setup("full", tmp_path_factory, tok, seed=5)
    hf, info = build_clap_hf("full", checkpoint_path=path)
    path.unlink()  # ~0.9 GB; everything it held has been copied into the model
    return model, cfg, hf, info


def _parity(laion_model, laion_cfg, hf_model, info, tok, clips, captions) -> dict[str, dict[str, float]]:
    """Per clip: max abs difference of the audio embedding, the text embedding and the audiocraft score."""
    ref = LaionEmbedder(laion_model, laion_cfg, tok)
    new = ClapEmbedder(hf_model, info, tok)
    waves = [w for w, _ in clips.values()]
    longer = [lg for _, lg in clips.values()]
    a_ref, a_new = ref.embed_audio(waves, longer), new.embed_audio(waves, longer)
    t_ref, t_new = ref.embed_text(captions), new.embed_text(captions)
    assert a_new.shape == a_ref.shape == (3, 512) and t_new.shape == t_ref.shape == (3, 512)
    assert torch.allclose(a_new.norm(dim=1), torch.ones(3)) and torch.allclose(t_new.norm(dim=1), torch.ones(3))
    cos_ref = torch.nn.functional.cosine_similarity(a_ref, t_ref, dim=1, eps=1e-8)
    cos_new = torch.nn.functional.cosine_similarity(a_new, t_new, dim=1, eps=1e-8)
    out = {name: {"audio": float((a_ref[i] - a_new[i]).abs().max()), "text": float((t_ref[i] - t_new[i]).abs().max()),
                  "score": float((cos_ref[i] - cos_new[i]).abs())}
           for i, name in enumerate(clips)}
    out["mean score"] = {"score": float((cos_ref.mean() - cos_new.mean()).abs()), "value": float(cos_new.mean())}
    print(json.dumps(out, indent=1))
    return out


def _assert_within(diffs: dict) -> None:
    bad = {f"{clip}/{what}": d for clip, row in diffs.items() for what, d in row.items()
           if what != "value" and not d <= TOL}
    assert not bad, f"differences above {TOL}: {bad}"


# ---------------------------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------------------------
@needs_laion
def test_full_size_parity_10s_short_long(full, tok, clips, captions):
    """HTSAT-base + roberta-base: audio, text embeddings and the score within 1e-5 of laion_clap's, per clip."""
    model, cfg, hf, info = full
    diffs = _parity(model, cfg, hf, info, tok, clips, captions)
    _assert_within(diffs)


@needs_laion
def test_tiny_size_parity(tiny, tok, clips, captions):
    model, cfg, path = tiny
    hf, info = build_clap_hf("tiny", checkpoint_path=path)
    assert info["size"] == "tiny" and not info["random"]
    _assert_within(_parity(model, cfg, hf, info, tok, clips, captions))


@needs_laion
def test_longer_flag_changes_nothing_for_a_non_fusion_model(full, tok, clips):
    """laion's non-fusion HTSAT reads only x["waveform"]; ClapModel's audio tower reads is_longer only with fusion."""
    model, cfg, hf, info = full
    wav, longer = clips["13s"]
    assert longer
    new = ClapEmbedder(hf, info, tok)
    ref = LaionEmbedder(model, cfg, tok)
    assert torch.equal(new.embed_audio([wav], [True]), new.embed_audio([wav], [False]))
    assert torch.equal(ref.embed_audio([wav], [True]), ref.embed_audio([wav], [False]))


@needs_laion
def test_front_end_equals_torchlibrosa(tiny, clips):
    """HtsatLogMel == laion's spectrogram_extractor + logmel_extractor (torchlibrosa), in the [B, 1, T, 64] layout."""
    model = tiny[0]
    waves = torch.stack([w for w, _ in clips.values()])
    with torch.no_grad():
        ref = model.audio_branch.logmel_extractor(model.audio_branch.spectrogram_extractor(waves))
        ours = HtsatLogMel()(waves)
    assert ours.shape == ref.shape == (3, 1, 1001, 64)
    assert float((ours - ref).abs().max()) <= 1e-5  # measured: 0 (the same operations in the same order)


@needs_laion
def test_shift_masks_rebuilt_by_clapmodel_equal_laions_stored_ones(full):
    """The dropped ``attn_mask`` buffers carry nothing ClapModel does not compute itself."""
    model, _, hf, _ = full
    checked = 0
    for i, stage in enumerate(model.audio_branch.layers):
        for j, blk in enumerate(stage.blocks):
            if blk.attn_mask is None:
                continue
            layer = hf.audio_model.audio_encoder.layers[i].blocks[j]
            h, w = blk.input_resolution
            layer.set_shift_and_window_size((h, w))
            assert layer.shift_size == blk.shift_size and layer.window_size == blk.window_size
            assert torch.equal(layer.get_attn_mask(h, w, torch.float32, "cpu"), blk.attn_mask)
            checked += 1
    assert checked == 8  # every second block of stages 0-2 is shifted: 1 + 1 + 6; stage 3 (8x8) has no shift


# ---------------------------------------------------------------------------------------------------------------
# Config and key mapping
# ---------------------------------------------------------------------------------------------------------------
@needs_laion
def test_config_is_laions_htsat_base_and_roberta_base(full):
    model, cfg, hf, info = full
    a, t = hf.config.audio_config, hf.config.text_config
    br = model.audio_branch
    assert (a.patch_embeds_hidden_size, list(a.depths), list(a.num_attention_heads), a.window_size, a.spec_size,
            a.patch_size, tuple(a.patch_stride), a.mlp_ratio, a.hidden_size, a.num_mel_bins, a.qkv_bias) == \
        (br.embed_dim, list(br.depths), list(br.num_heads), br.window_size, br.spec_size, br.patch_size,
         tuple(br.patch_stride), br.mlp_ratio, br.num_features, cfg["audio_cfg"]["mel_bins"], br.qkv_bias)
    assert (a.enable_fusion, a.projection_dim, a.projection_hidden_act, a.layer_norm_eps, a.hidden_act) == \
        (False, 512, "relu", br.norm.eps, "gelu")
    assert (a.patch_embeds_hidden_size, list(a.depths), list(a.num_attention_heads), a.hidden_size) == \
        (128, [2, 2, 12, 2], [4, 8, 16, 32], 1024)
    laion_text = model.text_branch.config
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
                  "bos_token_id", "eos_token_id"):
        assert getattr(t, field) == getattr(laion_text, field), field
    assert (t.vocab_size, t.max_position_embeddings, t.type_vocab_size, t.layer_norm_eps, t.pad_token_id,
            t.projection_hidden_act) == (50265, 514, 1, 1e-5, 1, "relu")
    assert {k: cfg["audio_cfg"][k] for k in AUDIO_CFG} == AUDIO_CFG == info["audio"]
    assert isinstance(model.audio_projection[1], torch.nn.ReLU) and isinstance(model.text_projection[1], torch.nn.ReLU)


def _dropped_categories(keys) -> set[str]:
    import re

    return {next(p for p in DROPPED_KEYS if re.fullmatch(p, k)) for k in keys}


@needs_laion
@pytest.mark.parametrize("size", ["tiny", "full"])
def test_key_mapping_is_complete_and_exact(size, tiny, full):
    """Every laion key is renamed or deliberately dropped; the result loads into ClapModel with strict=True; each
    tensor arrives unchanged (the qkv split concatenates back to laion's fused weight)."""
    from transformers import ClapModel

    model = tiny[0] if size == "tiny" else full[0]
    sd = model.state_dict()
    conv = convert_laion_state_dict(sd)
    hf = ClapModel(clap_config(size, sd["text_branch.embeddings.word_embeddings.weight"].shape[0]))
    result = hf.load_state_dict(conv, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(conv) == set(hf.state_dict())
    _, dropped = _convert(sd)
    expected = {r"audio_branch\.spectrogram_extractor\.stft\.conv_(real|imag)\.weight",
                r"audio_branch\.logmel_extractor\.melW", r"audio_branch\.tscam_conv\.(weight|bias)",
                r"audio_branch\.head\.(weight|bias)", r"(audio|text)_transform\.sequential\.\d+\.(weight|bias)"}
    if size == "full":
        expected.add(r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask")
    assert _dropped_categories(dropped) == expected
    # nothing lost: each kept key gives one ClapModel key (qkv gives three), plus the two synthesised buffers
    n_qkv = sum(k.endswith((".attn.qkv.weight", ".attn.qkv.bias")) for k in sd)
    assert len(conv) == len(sd) - len(dropped) + 2 * n_qkv + len(SYNTHESISED_KEYS)
    # values
    e = "audio_model.audio_encoder."
    for i, stage in enumerate(model.audio_branch.layers):
        for j in range(len(stage.blocks)):
            for p in ("weight", "bias"):
                q, k, v = (conv[f"{e}layers.{i}.blocks.{j}.attention.self.{n}.{p}"] for n in ("query", "key", "value"))
                assert torch.equal(torch.cat([q, k, v]), sd[f"audio_branch.layers.{i}.blocks.{j}.attn.qkv.{p}"])
    assert torch.equal(conv[e + "batch_norm.running_var"], sd["audio_branch.bn0.running_var"])
    assert torch.equal(conv["audio_projection.linear2.weight"], sd["audio_projection.2.weight"])
    assert torch.equal(conv["text_projection.linear1.bias"], sd["text_projection.0.bias"])
    assert torch.equal(conv["text_model.pooler.dense.weight"], sd["text_branch.pooler.dense.weight"])
    assert torch.equal(conv["logit_scale_a"], sd["logit_scale_a"])


@needs_laion
def test_unknown_key_is_refused_by_name(tiny, tmp_path):
    model, _, _ = tiny
    sd = dict(model.state_dict())
    sd["audio_branch.mystery_layer.weight"] = torch.zeros(3)
    with pytest.raises(ClapError, match=r"audio_branch\.mystery_layer\.weight"):
        convert_laion_state_dict(sd)
    sd.pop("audio_branch.mystery_layer.weight")
    # a feature-fusion layer is converted by name (fusion models exist: stable-audio-metrics' clap_score), and a
    # non-fusion model has no place for it: refused on loading, naming the layer
    sd["audio_branch.patch_embed.fusion_model.local_att.0.weight"] = torch.zeros(3)
    assert "audio_model.audio_encoder.patch_embed.fusion_model.local_att.0.weight" in convert_laion_state_dict(sd)
    torch.save({"state_dict": sd}, tmp_path / "fusion.pt")
    with pytest.raises(ClapError, match=r"fusion_model\.local_att\.0\.weight"):
        build_clap_hf("tiny", checkpoint_path=tmp_path / "fusion.pt")
    # through the file path too
    sd.pop("audio_branch.patch_embed.fusion_model.local_att.0.weight")
    sd["text_branch.encoder.layer.0.crossattention.self.query.weight"] = torch.zeros(3)
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ClapError, match=r"crossattention\.self\.query\.weight"):
        build_clap_hf("tiny", checkpoint_path=path)


@needs_laion
def test_missing_key_and_foreign_front_end_are_refused(tiny, tmp_path):
    model, _, _ = tiny
    sd = dict(model.state_dict())
    sd.pop("audio_branch.layers.0.blocks.0.norm2.bias")
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(ClapError, match=r"layers\.0\.blocks\.0\.layernorm_after\.bias"):
        build_clap_hf("tiny", checkpoint_path=tmp_path / "missing.pt")
    sd = dict(model.state_dict())
    mel = "audio_branch.logmel_extractor.melW"
    sd[mel] = sd[mel] * 1.01
    torch.save(sd, tmp_path / "melw.pt")
    with pytest.raises(ClapError, match=r"melW differs .* another STFT/mel setting"):
        build_clap_hf("tiny", checkpoint_path=tmp_path / "melw.pt")


@needs_laion
def test_front_end_uses_the_checkpoints_own_filters(tiny, tmp_path):
    """laion_clap's load_state_dict overwrites torchlibrosa's kernels and filters with the stored ones; so does
    build_clap_hf (after checking they are HTSAT-base's, up to rounding)."""
    model, _, _ = tiny
    sd = dict(model.state_dict())
    mel = "audio_branch.logmel_extractor.melW"
    sd[mel] = sd[mel] + 1e-7 * (sd[mel] > 0)
    torch.save(sd, tmp_path / "ulp.pt")
    hf, info = build_clap_hf("tiny", checkpoint_path=tmp_path / "ulp.pt")
    assert torch.equal(info["front_end"].melW, sd[mel])
    assert 0 < info["front_end_max_abs_diff"][mel] < 2e-7
    assert info["front_end_max_abs_diff"]["audio_branch.spectrogram_extractor.stft.conv_real.weight"] == 0.0
    assert ClapEmbedder(hf, info, tiny_roberta_tokenizer()).front_end is info["front_end"]


class NotATensor:  # pickled into a checkpoint: weights_only=True refuses it
    pass


@needs_laion
def test_untrusted_pickle_is_refused_unless_trusted(tiny, tmp_path):
    model, _, _ = tiny
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": model.state_dict(), "args": NotATensor()}, path)
    from evalkit.embeddings.weights import UnsafeCheckpointError  # the one reader of every backbone's files

    with pytest.raises(UnsafeCheckpointError, match=r"metrics\.clap\.trust_checkpoint=true"):
        build_clap_hf("tiny", checkpoint_path=path)
    hf, info = build_clap_hf("tiny", checkpoint_path=path, trust=True)
    assert info["checkpoint"] == str(path) and not info["random"]


# ---------------------------------------------------------------------------------------------------------------
# Without laion_clap
# ---------------------------------------------------------------------------------------------------------------
def test_random_build_is_seeded_and_leaves_the_callers_rng_alone():
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    a, info = build_clap_hf("tiny", seed=7, vocab_size=261)
    assert torch.equal(torch.random.get_rng_state(), before)
    b, _ = build_clap_hf("tiny", seed=7, vocab_size=261)
    c, _ = build_clap_hf("tiny", seed=8, vocab_size=261)
    w = "audio_model.audio_encoder.patch_embed.proj.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w]) and not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert info["random"] and info["seed"] == 7 and info["checkpoint"] is None and not a.training
    with pytest.raises(ClapError, match="model_size"):
        build_clap_hf("small")


def test_embedder_has_clapembedders_interface():
    tok = tiny_roberta_tokenizer()
    model, info = build_clap_hf("tiny", vocab_size=len(tok))
    emb = ClapEmbedder(model, info, tok)
    for name in ("embed_audio", "embed_text"):
        assert list(inspect.signature(getattr(emb, name)).parameters) == \
            list(inspect.signature(getattr(LaionEmbedder, name)).parameters)[1:]
    assert (emb.clip_samples, emb.sample_rate) == (N, SR)
    with pytest.raises(ValueError, match="480000 samples"):
        emb.embed_audio([torch.zeros(1000)])
    small, small_info = build_clap_hf("tiny", vocab_size=100)
    with pytest.raises(ClapError, match="tokenizer has 261 entries"):
        ClapEmbedder(small, small_info, tok)


@pytest.mark.parametrize("weights", ["random", pytest.param("laion-checkpoint", marks=needs_reference("laion_clap"))])
def test_runs_without_laion_clap_or_torchlibrosa(tmp_path, weights):
    """Import, build (tiny), embed audio and text with laion_clap, clap_module and torchlibrosa unimportable; and
    (the reference environment, where a laion-format checkpoint can be made) load one too."""
    ckpt = None
    if weights == "laion-checkpoint":
        from references.laion_clap_model import build_clap

        model, _ = build_clap("tiny", vocab_size=261, seed=1)
        ckpt = tmp_path / "tiny.pt"
        _save_laion_checkpoint(model, ckpt)
    script = textwrap.dedent(f"""
        import sys
        for name in ("laion_clap", "clap_module", "torchlibrosa"):
            sys.modules[name] = None   # import raises ImportError
        import torch
        from evalkit.embeddings.clap import ClapEmbedder, build_clap_hf, fit_to_length
        from evalkit.embeddings.tokenizers import tiny_roberta_tokenizer
        tok = tiny_roberta_tokenizer()
        ckpt = {str(ckpt) if ckpt else None!r}
        model, info = build_clap_hf("tiny", vocab_size=len(tok), checkpoint_path=ckpt)
        emb = ClapEmbedder(model, info, tok)
        wav, longer = fit_to_length(torch.sin(torch.arange(96000) * 0.05), 480000)
        a = emb.embed_audio([wav], [longer])
        t = emb.embed_text(["a calm piano melody with soft strings"])
        assert a.shape == t.shape == (1, 512), (a.shape, t.shape)
        assert abs(float(a.norm()) - 1) < 1e-5 and abs(float(t.norm()) - 1) < 1e-5
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("laion_clap", "clap_module", "torchlibrosa")
                        and sys.modules[m] is not None)
        assert not loaded, loaded
        print("ok", info["random"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"ok {ckpt is None}"


def test_front_end_shape_and_silence():
    fe = HtsatLogMel()
    out = fe(torch.stack([sine(440.0, SR, 10.0)[0], torch.zeros(N)]))
    assert out.shape == (2, 1, 1001, 64)
    assert torch.all(out[1] == -100.0)  # 10 * log10(amin = 1e-10)
    assert float(out[0].max()) > 0.0
