"""Tiny random-weight MusicGen models built from transformers configs, and an in-memory tokenizer: the offline
path for tests and the demo. Same classes, same delay patterns, same sample rate and frame rate (32 kHz, 50 Hz)
as the released models; only widths and depths shrink, so every shape and sample count is the real one.
"""
from __future__ import annotations

import torch

#: name -> (audio_channels, num_codebooks, melody). Stereo interleaves 2 x 4 codebooks, delays [0,0,1,1,2,2,3,3].
TINY_MODELS = {
    "tiny-mono": (1, 4, False),
    "tiny-stereo": (2, 8, False),
    "tiny-melody": (1, 4, True),
    "tiny-stereo-melody": (2, 8, True),
}
#: init std of the tiny decoders. The released default (0.02) gives near-uniform logits that the conditioning barely
#: moves, so one random stream samples the same tokens for any prompt; 0.5 makes text and melody matter.
TINY_INIT = 0.5
TINY_VOCAB = 300  # 4 pieces + 94 ASCII + 64 Latin-1 characters, rounded up


def tiny_tokenizer():
    """A T5 (Unigram) tokenizer built in memory: T5's specials (<pad>=0, </s>=1, <unk>=2), the word-start marker
    and one piece per printable character, so any caption encodes to real tokens, never to ``<unk>`` only. It saves
    and reloads like a released T5 tokenizer (``save_pretrained`` / ``AutoProcessor.from_pretrained``)."""
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(0xC0, 0x100)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(c, -3.0) for c in chars]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def tiny_musicgen(name: str, seed: int = 0):
    """(model, tokenizer, feature_extractor|None) for one of :data:`TINY_MODELS`, random weights from ``seed``."""
    from transformers import EncodecConfig, T5Config

    if name not in TINY_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; known: {sorted(TINY_MODELS)}")
    channels, n_cb, melody = TINY_MODELS[name]
    t5 = T5Config(vocab_size=TINY_VOCAB, d_model=16, d_kv=8, num_heads=2, num_layers=1, d_ff=32, decoder_start_token_id=0)
    # EnCodec 32 kHz as MusicGen uses it: hop 8*5*4*4 = 640 -> 50 frames/s, 2048-entry codebooks, 4 quantisers (2.2 kbps).
    enc = EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=2, num_residual_layers=1,
                        upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, codebook_dim=8, hidden_size=8,
                        num_lstm_layers=1, target_bandwidths=[2.2], normalize=False, use_causal_conv=False)
    torch.manual_seed(seed)
    if melody:
        from transformers import (MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyFeatureExtractor,
                                  MusicgenMelodyForConditionalGeneration)

        dec = MusicgenMelodyDecoderConfig(vocab_size=2048, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          ffn_dim=32, num_codebooks=n_cb, audio_channels=channels, max_position_embeddings=1024,
                                          initializer_factor=TINY_INIT)
        cfg = MusicgenMelodyConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(), decoder=dec.to_dict(), num_chroma=12, chroma_length=235)
        model = MusicgenMelodyForConditionalGeneration(cfg)
        fe = MusicgenMelodyFeatureExtractor()
    else:
        from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

        dec = MusicgenDecoderConfig(vocab_size=2048, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    ffn_dim=32, num_codebooks=n_cb, audio_channels=channels, max_position_embeddings=1024,
                                    initializer_factor=TINY_INIT)
        cfg = MusicgenConfig(text_encoder=t5, audio_encoder=enc, decoder=dec)
        model = MusicgenForConditionalGeneration(cfg)
        fe = None
    # transformers leaves EnCodec's codebooks (buffers) at zero until trained: every code would decode to the same
    # audio and no test could tell two generations apart. Give them random vectors (from the same seed).
    g = torch.Generator().manual_seed(seed)
    for name, buf in model.audio_encoder.named_buffers():
        if name.endswith("codebook.embed"):
            buf.copy_(torch.randn(buf.shape, generator=g))
    gc = model.generation_config
    gc.decoder_start_token_id = gc.pad_token_id = gc.bos_token_id = 2048  # as in the released generation_config.json
    return model.eval(), tiny_tokenizer(), fe
