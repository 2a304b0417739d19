"""The released MusicGen architectures built in code (evalkit.generate.shapes): cheap structural checks only, every
model built on the meta device (no memory, no weights)."""
import math

import pytest

from benchmarks import musicgen_shapes as shapes


@pytest.fixture(scope="module")
def meta_models():
    return {n: shapes.random_released_model(n, device="meta") for n in ("small", "stereo-medium", "large")}


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_decoder_counts_match_formula_and_hand_values(meta_models):
    for name, model in meta_models.items():
        assert _count(model.decoder) == shapes.decoder_param_count(name)
        assert all(p.is_meta for p in model.parameters())
    # by hand: layers * (16 d^2 + 6 d) + 2 d + codebooks * (2049 + 2048) d
    assert shapes.decoder_param_count("small") == 24 * (16 * 1024**2 + 6 * 1024) + 2 * 1024 + 4 * 4097 * 1024 == 419_584_000
    assert shapes.decoder_param_count("stereo-medium") == 48 * (16 * 1536**2 + 6 * 1536) + 2 * 1536 + 8 * 4097 * 1536
    assert shapes.decoder_param_count("stereo-medium") == 1_862_728_704


def test_published_sizes():
    # "3.3B" counts the whole decoder; "300M" and "~1.5B" (audiocraft's model_scale comments) are nominal labels that
    # fit the self-attention + feed-forward part (12 d^2 per layer) rather than the full layers with cross-attention.
    assert abs(shapes.decoder_param_count("large") / shapes.PUBLISHED_SIZES["large"] - 1) < 0.10
    for name in ("small", "medium"):
        d, layers, _, _ = shapes.DECODER_SCALES[name]
        assert abs(12 * d * d * layers / shapes.PUBLISHED_SIZES[name] - 1) < 0.10
        assert shapes.decoder_param_count(name) > 1.2 * shapes.PUBLISHED_SIZES[name]


def test_released_configs(meta_models):
    m = meta_models["stereo-medium"]
    dec, enc, t5 = m.config.decoder, m.config.audio_encoder, m.config.text_encoder
    assert (dec.hidden_size, dec.num_hidden_layers, dec.num_attention_heads, dec.ffn_dim) == (1536, 48, 24, 6144)
    assert (dec.num_codebooks, dec.audio_channels, dec.vocab_size) == (8, 2, 2048)
    assert len(m.decoder.lm_heads) == 8 and m.decoder.model.decoder.embed_tokens[0].num_embeddings == 2049
    assert (t5.d_model, t5.num_layers, t5.num_heads, t5.d_ff, t5.vocab_size) == (768, 12, 12, 3072, 32128)
    assert _count(m.text_encoder) == 109_628_544  # t5-base encoder (shared embedding + 12 blocks + final norm)
    assert m.enc_to_dec_proj.in_features == 768 and m.enc_to_dec_proj.out_features == 1536
    assert math.prod(enc.upsampling_ratios) == 640 and enc.frame_rate == 50 and enc.num_quantizers == 4
    assert (enc.codebook_size, enc.sampling_rate, enc.use_causal_conv, enc.use_conv_shortcut) == (2048, 32000, False, False)
    assert m.decoder.config._attn_implementation == "sdpa"
    assert meta_models["small"].config.decoder.num_codebooks == 4
    assert m.generation_config.decoder_start_token_id == 2048


def test_generation_floor_closed_form():
    # 2 clips, 3 steps, batch 1 (2 batches), text 5, CFG: 4 sequences; stereo-small kv bytes/token 2*24*1024*2
    kv = 2 * 24 * 1024 * 2
    f = shapes.generation_floor("stereo-small", n_clips=2, steps=3, batch=1, text_len=5, bandwidth=1e9)
    assert f["weights_bytes"] == shapes.decoder_param_count("stereo-small") * 2 * 3 * 2
    assert f["self_kv_bytes"] == 4 * kv * (1 + 2 + 3)
    assert f["cross_kv_bytes"] == 4 * kv * 5 * 3
    assert f["static_self_kv_bytes"] == 4 * kv * 3 * 4
    assert f["floor_s"] == pytest.approx((f["weights_bytes"] + f["self_kv_bytes"] + f["cross_kv_bytes"]) / 1e9)
    # the "about 3 minutes": all of MusicCaps on stereo-medium, bf16, batch 128, ~57 text tokens, H100
    full = shapes.generation_floor("stereo-medium", n_clips=5521, steps=503, batch=128, text_len=57, bandwidth=3.35e12)
    assert 150 < full["floor_s"] < 210


def test_unknown_variant():
    with pytest.raises(KeyError, match="stereo-medium"):
        shapes.decoder_config("medium-stereo")
