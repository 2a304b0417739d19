"""The released MusicGen architectures as transformers configs built in code (nothing is downloaded), and full-size
random-weight models from them: for throughput benchmarks, where the numbers are about speed, never about audio.

Sources of the constants:
  * decoder (``MusicgenDecoderConfig``): audiocraft ``config/model/lm/model_scale/{small,medium,large}.yaml``
    (dim / num_heads / num_layers: 1024/16/24, 1536/24/48, 2048/32/48) and transformers'
    ``convert_musicgen_transformers.py`` (``ffn_dim = 4 * hidden_size``, ``tie_word_embeddings=False``, vocab 2048 +
    1 pad/bos id 2048). Mono models have 4 codebooks; stereo ones 8 (2 x 4 interleaved, ``audio_channels=2``).
  * text encoder: T5-base (``t5-base`` config.json: d_model 768, d_kv 64, d_ff 3072, 12 layers, 12 heads,
    relative attention 32 buckets / max distance 128, ReLU feed-forward, vocab 32128); MusicGen uses the encoder only.
  * audio codec: ``facebook/encodec_32khz`` (transformers' ``convert_encodec_checkpoint_to_pytorch.py``, branch
    ``encodec_32khz``: EncodecConfig defaults with upsampling_ratios [8, 5, 4, 4], target_bandwidths [2.2],
    num_filters 64, sampling_rate 32000, codebook_size 2048, use_causal_conv False, normalize False,
    use_conv_shortcut False; the defaults kept are hidden_size 128 (= codebook_dim), num_residual_layers 1,
    kernel sizes 7 / 7 / 3, dilation_growth_rate 2, pad_mode reflect, compress 2, num_lstm_layers 2,
    norm_type weight_norm, trim_right_ratio 1.0, audio_channels 1). Hop 640 -> 50 frames/s, 4 codebooks at 2.2 kbps.

Parameter counts (decoder only, computed by :func:`decoder_param_count` and equal to the built models): small 419.6M,
medium 1.83B (stereo 1.86B), large 3.29B. The published sizes "300M / 1.5B / 3.3B" are nominal labels: audiocraft's own
config comments say "300M" and "gpt2 like (~1.5B)"; with the cross-attention every layer has (16 d^2 per layer)
only "3.3B" matches; "300M" is the self-attention + feed-forward part alone (12 d^2 L = 302M).
"""
from __future__ import annotations

import math
from typing import Any

import torch

#: name -> (hidden_size, num_hidden_layers, num_attention_heads, ffn_dim)
DECODER_SCALES = {
    "small": (1024, 24, 16, 4096),
    "medium": (1536, 48, 24, 6144),
    "large": (2048, 48, 32, 8192),
}
#: released (text-conditioned) variants -> (scale, audio_channels, num_codebooks)
RELEASED = {
    "small": ("small", 1, 4),
    "medium": ("medium", 1, 4),
    "large": ("large", 1, 4),
    "stereo-small": ("small", 2, 8),
    "stereo-medium": ("medium", 2, 8),
    "stereo-large": ("large", 2, 8),
}
#: nominal sizes of the model card / audiocraft configs (labels, see the module docstring)
PUBLISHED_SIZES = {"small": 300e6, "medium": 1.5e9, "large": 3.3e9}

VOCAB = 2048  # codebook entries; the decoder's embeddings have VOCAB + 1 rows (pad/bos = 2048)
MAX_POSITIONS = 2048

T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
               relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
               layer_norm_epsilon=1e-6, feed_forward_proj="relu", initializer_factor=1.0, is_encoder_decoder=True,
               pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)

ENCODEC_32KHZ = dict(sampling_rate=32000, audio_channels=1, target_bandwidths=[2.2], upsampling_ratios=[8, 5, 4, 4],
                     num_filters=64, hidden_size=128, codebook_dim=128, codebook_size=2048, num_residual_layers=1,
                     kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_growth_rate=2,
                     use_causal_conv=False, pad_mode="reflect", compress=2, num_lstm_layers=2, trim_right_ratio=1.0,
                     norm_type="weight_norm", normalize=False, use_conv_shortcut=False, chunk_length_s=None,
                     overlap=None)


def _variant(name: str) -> tuple[str, int, int]:
    if name not in RELEASED:
        raise KeyError(f"unknown MusicGen variant {name!r}; known: {sorted(RELEASED)}")
    return RELEASED[name]


def decoder_config(name: str):
    from transformers import MusicgenDecoderConfig

    scale, channels, n_cb = _variant(name)
    d, layers, heads, ffn = DECODER_SCALES[scale]
    return MusicgenDecoderConfig(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS, num_hidden_layers=layers,
                                 ffn_dim=ffn, num_attention_heads=heads, hidden_size=d, num_codebooks=n_cb,
                                 audio_channels=channels, activation_function="gelu", dropout=0.1,
                                 attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0, scale_embedding=False,
                                 initializer_factor=0.02, pad_token_id=VOCAB, bos_token_id=VOCAB,
                                 tie_word_embeddings=False)


def text_encoder_config():
    from transformers import T5Config

    return T5Config(**T5_BASE)


def audio_encoder_config():
    from transformers import EncodecConfig

    return EncodecConfig(**ENCODEC_32KHZ)


def released_config(name: str, attn_implementation: str | None = None):
    """The ``MusicgenConfig`` of a released text-conditioned variant (``small`` ... ``stereo-large``)."""
    from transformers import MusicgenConfig

    cfg = MusicgenConfig(text_encoder=text_encoder_config(), audio_encoder=audio_encoder_config(),
                         decoder=decoder_config(name))
    if attn_implementation:
        # the decoder only: EnCodec has no attention and T5 no SDPA path; setting it on the composite config would
        # push it into every sub-config (EncodecModel then refuses "sdpa")
        cfg.decoder._attn_implementation = attn_implementation
    return cfg


def decoder_param_count(name: str) -> int:
    """Parameters of ``MusicgenForCausalLM`` for a variant, from the architecture alone (no model built):
    per layer self-attention and cross-attention (q, k, v, out: 4 d^2 each, no biases), feed-forward (2 d ffn,
    no biases) and three LayerNorms (2 d each); the final LayerNorm; one embedding (vocab + 1 rows) and one LM head
    (vocab outputs, no bias) per codebook. The sinusoidal positions are a buffer."""
    scale, _, n_cb = _variant(name)
    d, layers, _, ffn = DECODER_SCALES[scale]
    per_layer = 4 * d * d + 4 * d * d + 2 * d * ffn + 3 * 2 * d
    return layers * per_layer + 2 * d + n_cb * (VOCAB + 1) * d + n_cb * d * VOCAB


def _randomize_codebooks(model, generator: torch.Generator | None = None) -> None:
    # transformers leaves EnCodec's codebooks (buffers) at zero until weights are loaded: give them random vectors so
    # the decoded audio is not one constant (irrelevant to speed, but keeps the output a plausible signal)
    for bname, buf in model.audio_encoder.named_buffers():
        if bname.endswith("codebook.embed") and buf.device.type != "meta":
            buf.copy_(torch.randn(buf.shape, generator=generator, device="cpu").to(buf.device, buf.dtype))


def random_released_model(name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", *,
                          seed: int = 0, attn_implementation: str | None = "sdpa"):
    """The full-size ``MusicgenForConditionalGeneration`` of a released variant with random weights, built directly
    on ``device`` (parameters are allocated and initialised there: seconds on a GPU even for ``stereo-large``) in
    ``dtype``. ``device="meta"`` builds the structure only (no memory; for shapes and parameter counts).

    The generation config is the released one's (decoder start / pad / bos = 2048). Random weights: the audio is noise
    and the numbers a benchmark prints are about speed only."""
    from transformers import MusicgenForConditionalGeneration

    device = torch.device(device)
    cfg = released_config(name, attn_implementation)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = MusicgenForConditionalGeneration._from_config(cfg, dtype=dtype)
    if device.type != "meta":
        _randomize_codebooks(model, torch.Generator().manual_seed(seed))
    gc = model.generation_config
    gc.decoder_start_token_id = gc.pad_token_id = gc.bos_token_id = VOCAB
    return model.eval()


def decoder_bytes(model) -> int:
    """Bytes of the decoder's parameters (what one decode step reads at least once)."""
    return sum(p.numel() * p.element_size() for p in model.decoder.parameters())


def describe(name: str) -> dict[str, Any]:
    scale, channels, n_cb = _variant(name)
    d, layers, heads, ffn = DECODER_SCALES[scale]
    return {"name": name, "hidden_size": d, "layers": layers, "heads": heads, "ffn_dim": ffn, "codebooks": n_cb,
            "audio_channels": channels, "decoder_params": decoder_param_count(name),
            "frame_rate": math.ceil(ENCODEC_32KHZ["sampling_rate"] / math.prod(ENCODEC_32KHZ["upsampling_ratios"]))}


def kv_bytes_per_token(name: str, dtype_bytes: int = 2) -> int:
    """Bytes of keys + values one cached position holds across all decoder layers (self- or cross-attention)."""
    scale, _, _ = _variant(name)
    d, layers, _, _ = DECODER_SCALES[scale]
    return 2 * layers * d * dtype_bytes


def generation_floor(name: str, *, n_clips: int, steps: int, batch: int, text_len: float, bandwidth: float,
                     dtype_bytes: int = 2, cfg: bool = True) -> dict[str, float]:
    """Lower bound on the decode time of ``n_clips`` clips of ``steps`` tokens when every step is bound by reading
    memory at ``bandwidth`` bytes/s (large-batch decoding is: its FLOPs are a small fraction of the bytes' time).

    Bytes read, in total:
      * weights: the decoder's parameters once per step per batch (``ceil(n_clips / batch)`` batches);
      * self-attention keys/values: step t reads the t positions cached so far (the minimum: a cache that grows, or
        an attention kernel that skips the unfilled part), ``steps (steps + 1) / 2`` positions per sequence;
      * cross-attention keys/values: ``text_len`` positions per step per sequence.
    Classifier-free guidance (``cfg``) doubles the sequences (conditional + unconditional half).
    ``static_self_kv_bytes`` is what a static cache read in full at every step costs instead (``steps + 1``
    positions per step): the price of fixed shapes when attention does not skip the masked tail."""
    seqs = n_clips * (2 if cfg else 1)
    n_batches = math.ceil(n_clips / batch)
    kv = kv_bytes_per_token(name, dtype_bytes)
    weights = decoder_param_count(name) * dtype_bytes * steps * n_batches
    self_kv = seqs * kv * steps * (steps + 1) / 2
    cross_kv = seqs * kv * float(text_len) * steps
    static_self_kv = seqs * kv * steps * (steps + 1)
    total = weights + self_kv + cross_kv
    return {"weights_bytes": float(weights), "self_kv_bytes": float(self_kv), "cross_kv_bytes": float(cross_kv),
            "total_bytes": float(total), "floor_s": total / bandwidth,
            "static_self_kv_bytes": float(static_self_kv),
            "floor_static_cache_s": (weights + static_self_kv + cross_kv) / bandwidth,
            "n_batches": n_batches, "bandwidth": float(bandwidth)}
