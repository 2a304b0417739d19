"""LAION-CLAP (HTSAT audio tower + RoBERTa text tower) on :class:`transformers.ClapModel`: audiocraft's CLAP
(``laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-base")`` + ``music_audioset_epoch_15_esc_90.14.pt``, the
``clap-laion-music`` embedding) and fadtk's ``clap-laion-audio`` (``amodel="HTSAT-tiny"`` +
``630k-audioset-best.pt``), without ``laion_clap`` at run time.

Why not laion_clap: ``laion-clap`` 1.1.7 pins ``numpy<2`` and pulls in wandb, webdataset, h5py, scikit-learn and
llvmlite, all for model classes that ``transformers`` also ships; its import fetches tokenizers from the hub; and
``get_audio_embedding_from_data`` crops audio longer than 10 s at a *random* offset (LAION-AI/CLAP issue 166).
Here: :func:`clap_config` (laion's HTSAT-base or HTSAT-tiny + roberta-base, non-fusion, as a ``ClapConfig``),
:func:`convert_laion_state_dict` (LAION checkpoint keys -> ``ClapModel`` keys, an explicit map: a key neither mapped
nor on :data:`DROPPED_KEYS` is an error), :class:`HtsatLogMel` (laion's torchlibrosa front end in torch, bit for
bit), :class:`ClapBackbone` (build / load / describe, the backbone interface), :func:`fit_to_length` (laion's
``repeatpad`` rule, a deterministic crop) and :class:`ClapEmbedder` (batched, L2-normalised 512-d embeddings).
``tests/test_clap_backbone.py`` checks embeddings and the audiocraft score against laion_clap's own classes on
identical weights (environment ``evalkit[reference]``): max abs difference at full size on random weights, 10 s /
3.7 s / 13 s music clips: audio <= 6e-8, text <= 1.6e-7, score <= 7.5e-8 (HTSAT-base); HTSAT-tiny: see the README.

Where laion_clap's HTSAT and ``ClapModel``'s audio tower meet
--------------------------------------------------------------
laion's ``HTSAT_Swin_Transformer.forward`` (non-fusion) takes the *waveform* and computes, inside the model,
``Spectrogram -> LogmelFilterBank -> bn0 -> reshape_wav2img -> forward_features``. ``ClapAudioModel`` starts at
``bn0`` (its ``batch_norm``): it takes ``input_features`` of shape ``[B, 1, T, 64]`` (T = 1001 frames for 480,000
samples) and ``is_longer``. :class:`HtsatLogMel` supplies the part before ``bn0``. ``is_longer`` is read only by a
fusion model; laion's non-fusion HTSAT ignores ``longer`` too, so for this model the flag changes nothing (tested).

``size="tiny"`` is a shrunken model of the same classes (HTSAT of width 16 with one block per stage, a one-layer
RoBERTa) for fast tests and the offline demo; it is never used with released weights.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.audio import AudioError
from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder
from evalkit.embeddings.logmel import TorchlibrosaLogMel, front_end_from_state
from evalkit.embeddings.weights import Checkpoint, CheckpointError, load_strict, read_state_dict

log = logging.getLogger(__name__)


class ClapError(CheckpointError):
    pass


#: ``roberta-base``'s ``config.json`` (huggingface.co/roberta-base). transformers' ``RobertaConfig()`` defaults differ
#: (512 positions, 2 token types, layer-norm eps 1e-12): the wrong eps would load without error and shift every
#: text embedding, so every value is spelled out.
ROBERTA_BASE: dict[str, Any] = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=514,
    type_vocab_size=1, initializer_range=0.02, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)

#: The shrunken model (``model_size: tiny``). hidden_size stays 768: laion_clap's CLAP hard-codes
#: ``text_projection = Linear(768, 512)`` for the roberta branch.
TINY_ROBERTA: dict[str, Any] = dict(num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                    max_position_embeddings=80)
TINY_HTSAT: dict[str, Any] = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=8,
                                  class_num=8)

#: ``text_branch.embeddings.position_ids``: a persistent buffer in transformers < 4.31, stored in the released
#: checkpoints, a non-persistent one since; audiocraft (``utils/utils.py: load_clap_state_dict``) pops it.
DROP_KEYS = ("text_branch.embeddings.position_ids",)

# ----------------------------------------------------------------------------------------------------------------
# Architecture constants (laion_clap 1.1.7)
# ----------------------------------------------------------------------------------------------------------------
#: ``clap_module/model_configs/HTSAT-base.json`` ``audio_cfg``: the front end's constants. ``window_size`` here is
#: the STFT window (1024 samples), not the Swin window (8 patches).
AUDIO_CFG: dict[str, int] = dict(sample_rate=48000, clip_samples=480000, window_size=1024, hop_size=480, mel_bins=64,
                                 fmin=50, fmax=14000)

#: ``htsat.py: create_htsat_model`` for ``model_name == "base"`` and the ``HTSAT_Swin_Transformer`` defaults it
#: keeps (mlp_ratio 4, qkv_bias, patch_norm, no absolute position embedding, drop_rate 0, attn_drop_rate 0,
#: drop_path_rate 0.1, LayerNorm eps 1e-5, exact GELU).
HTSAT_BASE: dict[str, Any] = dict(spec_size=256, patch_size=4, patch_stride=(4, 4), embed_dim=128,
                                  depths=[2, 2, 12, 2], num_heads=[4, 8, 16, 32], window_size=8, class_num=527)
#: ``create_htsat_model`` for ``model_name == "tiny"`` (``clap_module/model_configs/HTSAT-tiny.json``: the same
#: ``audio_cfg`` front end as HTSAT-base, joint ``embed_dim`` 768 = 96 * 2**3): LAION's ``630k-audioset-best.pt``
#: (fadtk's ``clap-laion-audio``, ``CLAP_Module(enable_fusion=False, amodel='HTSAT-tiny')``) and the audio tower of
#: ``630k-audioset-fusion-best.pt`` (stable-audio-metrics' CLAP score, with fusion).
HTSAT_TINY: dict[str, Any] = dict(HTSAT_BASE, embed_dim=96, depths=[2, 2, 6, 2])
#: laion_clap's audio models evalkit builds (``amodel``), with the roberta text tower (the front-end constants,
#: :data:`AUDIO_CFG`, are the same for both)
HTSAT_MODELS: dict[str, dict[str, Any]] = {"HTSAT-base": HTSAT_BASE, "HTSAT-tiny": HTSAT_TINY}

#: laion_clap's fusion (``CLAP_Module(enable_fusion=True)``: ``fusion_type="aff_2d"``, ``AFF(channels=embed_dim,
#: r=4)`` in the patch embedding); transformers' ``ClapAudioConfig(enable_fusion=True, aff_block_r=4)`` is the same
#: block (``ClapAudioAFFBlock``)
FUSION_TYPE = "aff_2d"

#: laion_clap's ``CLAP(joint_embed_shape=512, mlp_act="relu")``: both projections are Linear -> ReLU -> Linear.
PROJECTION_DIM = 512

#: Keys of a LAION-CLAP (HTSAT, roberta, non-fusion) state dict that ``ClapModel`` has no place for, and why
#: dropping them does not change ``get_audio_embedding`` / ``get_text_embedding``. Each is matched by a regular
#: expression; a key matched by no rename and no drop rule is an error.
DROPPED_KEYS: dict[str, str] = {
    r"audio_branch\.spectrogram_extractor\.stft\.conv_(real|imag)\.weight":
        "torchlibrosa STFT kernels (frozen): not ClapModel weights; the front end (HtsatLogMel) uses the "
        "checkpoint's copy after comparing it with its own (front_end_from_checkpoint)",
    r"audio_branch\.logmel_extractor\.melW":
        "torchlibrosa mel filter bank (frozen, librosa.filters.mel): as the STFT kernels",
    r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask":
        "shifted-window attention mask, a constant of the block geometry: ClapAudioLayer.get_attn_mask rebuilds the "
        "same mask at each call",
    r"audio_branch\.tscam_conv\.(weight|bias)":
        "HTSAT's AudioSet token-semantic head: forward_features runs it, but the embedding ('embedding', the "
        "avg-pooled features) is taken before it",
    r"audio_branch\.head\.(weight|bias)":
        "HTSAT's classification Linear: defined, never called by forward_features",
    r"(audio|text)_transform\.sequential\.\d+\.(weight|bias)":
        "MLPLayers used only by CLAP.forward for the training loss (audio/text_features_mlp); "
        "get_audio_embedding / get_text_embedding do not apply them",
}

_B = r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\."
_E = r"audio_model.audio_encoder.layers.\1.blocks.\2."
#: (laion key pattern, ClapModel key template); every pattern is anchored at both ends.
RENAMES: list[tuple[str, str]] = [
    (r"logit_scale_(a|t)", r"logit_scale_\1"),
    (r"audio_branch\.bn0\.(weight|bias|running_mean|running_var|num_batches_tracked)",
     r"audio_model.audio_encoder.batch_norm.\1"),
    (r"audio_branch\.patch_embed\.(proj|norm)\.(weight|bias)", r"audio_model.audio_encoder.patch_embed.\1.\2"),
    (_B + r"norm1\.(weight|bias)", _E + r"layernorm_before.\3"),
    (_B + r"attn\.(relative_position_bias_table|relative_position_index)", _E + r"attention.self.\3"),
    (_B + r"attn\.proj\.(weight|bias)", _E + r"attention.output.dense.\3"),
    (_B + r"norm2\.(weight|bias)", _E + r"layernorm_after.\3"),
    (_B + r"mlp\.fc1\.(weight|bias)", _E + r"intermediate.dense.\3"),
    (_B + r"mlp\.fc2\.(weight|bias)", _E + r"output.dense.\3"),
    (r"audio_branch\.layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)",
     r"audio_model.audio_encoder.layers.\1.downsample.\2"),
    (r"audio_branch\.norm\.(weight|bias)", r"audio_model.audio_encoder.norm.\1"),
    # fusion models (aff_2d): the local chunks' convolution and the attentional fusion block, same sub-module names
    (r"audio_branch\.patch_embed\.mel_conv2d\.(weight|bias)", r"audio_model.audio_encoder.patch_embed.mel_conv2d.\1"),
    (r"audio_branch\.patch_embed\.fusion_model\.(local_att|global_att)\.(\d+)\."
     r"(weight|bias|running_mean|running_var|num_batches_tracked)",
     r"audio_model.audio_encoder.patch_embed.fusion_model.\1.\2.\3"),
    (r"(audio|text)_projection\.0\.(weight|bias)", r"\1_projection.linear1.\2"),   # Sequential(Linear, ReLU, Linear)
    (r"(audio|text)_projection\.2\.(weight|bias)", r"\1_projection.linear2.\2"),
    (r"text_branch\.embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight",
     r"text_model.embeddings.\1.weight"),
    (r"text_branch\.embeddings\.LayerNorm\.(weight|bias)", r"text_model.embeddings.LayerNorm.\1"),
    (r"text_branch\.embeddings\.(position_ids|token_type_ids)", r"text_model.embeddings.\1"),
    (r"text_branch\.encoder\.layer\.(\d+)\.(attention\.self\.(?:query|key|value)|attention\.output\.dense|"
     r"attention\.output\.LayerNorm|intermediate\.dense|output\.dense|output\.LayerNorm)\.(weight|bias)",
     r"text_model.encoder.layer.\1.\2.\3"),
    (r"text_branch\.pooler\.dense\.(weight|bias)", r"text_model.pooler.dense.\1"),
]
#: laion's fused ``qkv`` Linear (rows: query, key, value) -> ClapAudioSelfAttention's three Linears.
QKV = (_B + r"attn\.qkv\.(weight|bias)", _E + r"attention.self.{}.\3")

#: Constant buffers ``ClapTextEmbeddings`` stores (persistent) and laion checkpoints lack: the released checkpoint
#: has ``position_ids`` (audiocraft pops it), none has ``token_type_ids``. Built from the position table's length.
SYNTHESISED_KEYS = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")

# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------
def clap_config(size: str = "full", vocab_size: int | None = None, amodel: str = "HTSAT-base",
                enable_fusion: bool = False):
    """The ``transformers.ClapConfig`` of laion_clap's ``amodel`` (``HTSAT-base`` or ``HTSAT-tiny``) + ``roberta``
    CLAP, with or without feature fusion.

    ``size="full"``: ``HTSAT-base`` (patch embedding 128, depths [2, 2, 12, 2], hidden 128 * 2**3 = 1024) or
    ``HTSAT-tiny`` (patch embedding 96, depths [2, 2, 6, 2], hidden 768), both with heads [4, 8, 16, 32], Swin window
    8, spec_size 256, patch 4 / stride 4 (``clap_module/htsat.py: create_htsat_model``), and roberta-base's own
    ``config.json`` (vocab 50265, 514 positions, 1 token type, layer-norm eps 1e-5, pad 1 / bos 0 / eos 2;
    ``ClapTextConfig``'s default eps is 1e-12, which would load without error and shift every text embedding).
    Projections: 512, ReLU. ``size="tiny"``: the shrunken model of laion reference builder (HTSAT embed 16, depths
    [1, 1, 1, 1]; one RoBERTa layer of width 768 with intermediate size 64), random weights only, for either
    ``amodel``. ``enable_fusion``: laion's feature fusion (``aff_2d``: an attentional fusion of three local mel chunks
    into the patch embedding of the global mel; ``mel_conv2d`` and ``fusion_model`` in the patch embedding;
    ``630k-audioset-fusion-best.pt``). Raises :class:`ClapError` for another size or audio model.
    """
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    if size not in ("full", "tiny"):
        raise ClapError(f"model_size={size!r}: expected 'full' or 'tiny'")
    if amodel not in HTSAT_MODELS:
        raise ClapError(f"amodel={amodel!r}: expected one of {sorted(HTSAT_MODELS)}")
    text = {k: v for k, v in ROBERTA_BASE.items() if k != "initializer_range"}  # not a ClapTextConfig field
    if size == "tiny":
        text.update(TINY_ROBERTA)
        htsat = dict(HTSAT_MODELS[amodel], embed_dim=TINY_HTSAT["embed_dim"], depths=list(TINY_HTSAT["depths"]),
                     num_heads=list(TINY_HTSAT["num_heads"]), window_size=TINY_HTSAT["window_size"],
                     class_num=TINY_HTSAT["class_num"])
    else:
        htsat = dict(HTSAT_MODELS[amodel])
    if vocab_size is not None:
        text["vocab_size"] = int(vocab_size)
    text.update(projection_dim=PROJECTION_DIM, projection_hidden_act="relu")
    depths = list(htsat["depths"])
    audio = dict(
        num_mel_bins=AUDIO_CFG["mel_bins"], spec_size=htsat["spec_size"], window_size=htsat["window_size"],
        patch_size=htsat["patch_size"], patch_stride=list(htsat["patch_stride"]),
        patch_embeds_hidden_size=htsat["embed_dim"], depths=depths, num_attention_heads=list(htsat["num_heads"]),
        hidden_size=htsat["embed_dim"] * 2 ** (len(depths) - 1), num_hidden_layers=len(depths),
        num_classes=htsat["class_num"], hidden_act="gelu", mlp_ratio=4.0, qkv_bias=True, layer_norm_eps=1e-5,
        enable_patch_layer_norm=True, flatten_patch_embeds=True, patch_embed_input_channels=1,
        enable_fusion=bool(enable_fusion), fusion_type=FUSION_TYPE if enable_fusion else None, aff_block_r=4,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.1,  # inactive in eval mode
        projection_dim=PROJECTION_DIM, projection_hidden_act="relu")
    return ClapConfig(text_config=ClapTextConfig(**text).to_dict(), audio_config=ClapAudioConfig(**audio).to_dict(),
                      projection_dim=PROJECTION_DIM, projection_hidden_act="relu", logit_scale_init_value=1 / 0.07)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint conversion
# ----------------------------------------------------------------------------------------------------------------
def _full(pattern: str) -> re.Pattern:
    return re.compile(r"\A" + pattern + r"\Z")


_RENAME_RES = [(_full(p), t) for p, t in RENAMES]
_QKV_RE = _full(QKV[0])
_DROP_RES = [(_full(p), why) for p, why in DROPPED_KEYS.items()]


def _convert(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []

    def put(key: str, value: torch.Tensor, src: str) -> None:
        if key in out:
            raise ClapError(f"checkpoint conversion: {src!r} maps to {key!r}, which another key already filled")
        out[key] = value

    for k, v in sd.items():
        m = _QKV_RE.match(k)
        if m:
            if v.shape[0] % 3:
                raise ClapError(f"checkpoint conversion: {k!r} has {v.shape[0]} rows, not a multiple of 3")
            for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                put(m.expand(QKV[1]).format(name), part.clone(), k)
            continue
        for rx, template in _RENAME_RES:
            m = rx.match(k)
            if m:
                put(m.expand(template), v, k)
                break
        else:
            if any(rx.match(k) for rx, _ in _DROP_RES):
                dropped.append(k)
            else:
                unknown.append(k)
    if unknown:
        raise ClapError(f"checkpoint conversion: {len(unknown)} key(s) of the LAION-CLAP state dict have no place in "
                        f"ClapModel and are not on the list of deliberately dropped keys: {unknown}")
    pos_key = "text_model.embeddings.position_embeddings.weight"
    if pos_key in out:
        n = out[pos_key].shape[0]
        want_pos = torch.arange(n, dtype=torch.long)[None]
        have = out.get(SYNTHESISED_KEYS[0])
        if have is not None and not torch.equal(have.long().reshape(1, -1), want_pos):
            raise ClapError(f"checkpoint conversion: text_branch.embeddings.position_ids is not 0..{n - 1}")
        out[SYNTHESISED_KEYS[0]] = want_pos
        have = out.get(SYNTHESISED_KEYS[1])
        if have is not None and bool(have.ne(0).any()):
            raise ClapError("checkpoint conversion: text_branch.embeddings.token_type_ids is not all zeros")
        out[SYNTHESISED_KEYS[1]] = torch.zeros(1, n, dtype=torch.long)
    return out, dropped


def convert_laion_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LAION-CLAP model state dict (``audio_branch.*``, ``text_branch.*``, ``audio_projection.*``,
    ``text_projection.*``, ``logit_scale_a/t``; unwrapped and without the ``module.`` prefix, as
    :func:`evalkit.embeddings.clap.read_clap_state_dict` returns it) renamed for ``transformers.ClapModel``.

    - every laion key must match one rule of :data:`RENAMES`, the ``qkv`` split (:data:`QKV`: laion's fused
      ``[3 * dim, dim]`` Linear, rows query / key / value) or :data:`DROPPED_KEYS`; any other key raises
      :class:`ClapError` naming it;
    - ``text_model.embeddings.position_ids`` (``0..n-1``) and ``token_type_ids`` (zeros) are constant buffers
      that ClapModel stores; they are built here (a ``position_ids`` in the input must already be ``0..n-1``).

    Missing keys are found by ``load_state_dict(strict=True)`` (done by :meth:`ClapBackbone.load_weights`)."""
    return _convert(sd)[0]


# ----------------------------------------------------------------------------------------------------------------
# Audio front end (laion's HTSAT: torchlibrosa Spectrogram + LogmelFilterBank), in torch
# ----------------------------------------------------------------------------------------------------------------
class HtsatLogMel(TorchlibrosaLogMel):
    """The log-mel front end of laion_clap's HTSAT (``spectrogram_extractor`` + ``logmel_extractor``), without
    torchlibrosa (:class:`~evalkit.embeddings.logmel.TorchlibrosaLogMel`): ``Spectrogram(n_fft=1024, hop_length=480,
    win_length=1024, window="hann", center=True, pad_mode="reflect", power=2)``, then ``LogmelFilterBank(sr=48000,
    n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0, amin=1e-10, top_db=None)``: the same in HTSAT-base.json and
    HTSAT-tiny.json ``audio_cfg``. Bit-identical to laion's (tested).

    ``forward(waves [B, N]) -> [B, 1, T, 64]`` with ``T = N // 480 + 1`` (1001 for 480,000 samples): the
    ``input_features`` layout ``ClapModel``'s audio tower takes (it applies ``bn0`` = ``batch_norm`` itself).

    Why not ``transformers.ClapFeatureExtractor``? Its defaults are another front end, and even set up to match it is
    not laion's computation:
    - the default ``truncation="fusion"`` uses HTK-scale mel filters without area normalisation (``mel_filters``,
      the fusion models' front end), and returns 4 stacked mels; only ``truncation="rand_trunc"`` uses the Slaney
      filters laion's non-fusion HTSAT was trained with;
    - ``frequency_min`` defaults to 0 Hz (laion: 50 Hz);
    - ``rand_trunc`` crops audio longer than 10 s at a *random* offset (``np.random``); evalkit crops
      deterministically before the front end (:func:`evalkit.embeddings.clap.fit_to_length`);
    - it computes the STFT and its own ``mel_filter_bank`` in float64 NumPy, one clip at a time on the CPU, where
      laion (and this class) run float32 convolutions on the model's device, batched.
    Measured on a real 10 s music clip (shared00, 48 kHz mono), against this front end (= torchlibrosa's bits):
    ``rand_trunc`` + ``frequency_min=50``: max 7.2e-4 dB (mean 9e-6 dB), float64-vs-float32 rounding, which moved
    the full-size random-weight audio embedding by 4e-8; defaults except ``rand_trunc`` (0 Hz): max 28.5 dB,
    embedding 9e-3; full defaults (``fusion``): max 52.6 dB, embedding 0.10.
    """

    def __init__(self, sample_rate: int = AUDIO_CFG["sample_rate"], n_fft: int = AUDIO_CFG["window_size"],
                 hop_length: int = AUDIO_CFG["hop_size"], n_mels: int = AUDIO_CFG["mel_bins"],
                 fmin: float = AUDIO_CFG["fmin"], fmax: float = AUDIO_CFG["fmax"], ref: float = 1.0,
                 amin: float = 1e-10) -> None:
        super().__init__(sample_rate, n_fft, hop_length, n_mels, fmin, fmax, ref, amin)


#: The front-end tensors a laion checkpoint stores (frozen torchlibrosa parameters) -> HtsatLogMel's buffers.
FRONT_END_KEYS: dict[str, str] = {"audio_branch.spectrogram_extractor.stft.conv_real.weight": "conv_real",
                                  "audio_branch.spectrogram_extractor.stft.conv_imag.weight": "conv_imag",
                                  "audio_branch.logmel_extractor.melW": "melW"}


def front_end_from_checkpoint(dropped: dict[str, torch.Tensor], setting: str = "checkpoint"
                              ) -> tuple[HtsatLogMel, dict[str, float]]:
    """The front end for a checkpoint: :class:`HtsatLogMel` with the checkpoint's own STFT kernels and mel filter
    bank where it stores them, because laion_clap's ``load_state_dict`` overwrites torchlibrosa's freshly computed
    tensors with the stored ones, so that is what the reference computes with. Each stored tensor is compared with
    the one computed here: a shape mismatch or a difference above 1e-3 of its largest value means another
    STFT/mel setting (not HTSAT's) and raises :class:`ClapError`. Returns ``(front_end, {key: max abs diff})``."""
    fe = HtsatLogMel()
    diffs = front_end_from_state(fe, dropped, FRONT_END_KEYS, setting, "HTSAT", error=ClapError)
    return fe, diffs


# ----------------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------------
#: what a CLAP checkpoint that does not fit should have been
CLAP_CHECKPOINT_HINT = ("Expected a non-fusion LAION-CLAP checkpoint of the embedding's audio model (clap-laion-music: "
                        "HTSAT-base, music_audioset_epoch_15_esc_90.14.pt; clap-laion-audio: HTSAT-tiny, "
                        "630k-audioset-best.pt) and model_size=full.")


def load_converted(model: torch.nn.Module, converted: dict[str, torch.Tensor], setting: str = "checkpoint",
                   hint: str = CLAP_CHECKPOINT_HINT) -> None:
    """:func:`~evalkit.embeddings.weights.load_strict` raising :class:`ClapError` with what the file should be."""
    load_strict(model, converted, setting=setting, hint=hint, error=ClapError)


def read_clap_state_dict(path: str | os.PathLike, drop_keys: Sequence[str] = DROP_KEYS, trust: bool = False,
                         setting: str = "metrics.clap.checkpoint") -> dict[str, torch.Tensor]:
    """A LAION-CLAP checkpoint's model state dict as ``clap_module.factory.load_state_dict`` + audiocraft's
    ``load_clap_state_dict`` read it: :func:`~evalkit.embeddings.weights.read_state_dict` (``weights_only=True``;
    ``trust`` = ``metrics.clap.trust_checkpoint``; ``state_dict`` unwrapped, ``module.`` removed), then ``drop_keys``
    removed when present."""
    sd = read_state_dict(path, setting=setting, trust=trust, unwrap=("state_dict",))
    for k in drop_keys:
        sd.pop(k, None)
    return sd


class ClapNetwork(torch.nn.Module):
    """``ClapModel`` and the :class:`HtsatLogMel` front end it needs, as one module; ``info`` says what they are."""

    def __init__(self, model: torch.nn.Module, front_end: HtsatLogMel, info: dict) -> None:
        super().__init__()
        self.model, self.front_end, self.info = model, front_end, info


class ClapBackbone(Backbone):
    """LAION-CLAP on ``ClapModel``: random weights from a seed, or a LAION checkpoint converted by name.
    ``vocab_size``: the text vocabulary (None: roberta-base's 50265; the tiny model takes its tokenizer's);
    ``amodel``: laion's audio model (:data:`HTSAT_MODELS`: audiocraft's HTSAT-base, fadtk's clap-laion-audio
    HTSAT-tiny)."""

    name = "clap"

    def __init__(self, size: str = "full", seed: int = 0, vocab_size: int | None = None,
                 drop_keys: Sequence[str] = DROP_KEYS, amodel: str = "HTSAT-base", enable_fusion: bool = False) -> None:
        if size not in ("full", "tiny"):
            raise ClapError(f"model_size={size!r}: expected 'full' or 'tiny'")
        if amodel not in HTSAT_MODELS:
            raise ClapError(f"amodel={amodel!r}: expected one of {sorted(HTSAT_MODELS)}")
        super().__init__(size, seed)
        self.vocab_size, self.drop_keys = vocab_size, tuple(drop_keys)
        self.amodel, self.enable_fusion = str(amodel), bool(enable_fusion)

    def build(self) -> ClapNetwork:
        from transformers import ClapModel

        model = ClapModel(clap_config(self.size, self.vocab_size, self.amodel, self.enable_fusion))
        return ClapNetwork(model.eval(), HtsatLogMel(), {"front_end_max_abs_diff": {}, "dropped_keys": []})

    @property
    def hint(self) -> str:
        """What a checkpoint that does not fit should have been."""
        if (self.amodel, self.enable_fusion) == ("HTSAT-base", False):
            return CLAP_CHECKPOINT_HINT
        return (f"This embedding needs a {self.amodel}, {'fusion' if self.enable_fusion else 'non-fusion'} LAION-CLAP "
                f"checkpoint{' (630k-audioset-fusion-best.pt)' if self.enable_fusion else ''} and model_size=full.")

    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        """Drop ``drop_keys`` (audiocraft pops ``position_ids``), convert the rest by name, take the checkpoint's own
        front-end tensors (as laion_clap does; checked against the recomputed ones) and load strictly."""
        state = {k: v for k, v in state.items() if k not in self.drop_keys}
        try:
            converted, dropped_names = _convert(state)
        except ClapError as exc:
            raise ClapError(f"{setting}: {exc}") from exc
        dropped = {k: state[k] for k in dropped_names}
        module.front_end, diffs = front_end_from_checkpoint(dropped, setting)
        load_converted(module.model, converted, setting=setting, hint=self.hint)
        module.info.update(front_end_max_abs_diff=diffs, dropped_keys=sorted(dropped))

    def describe(self) -> dict:
        fusion = f"enable_fusion={self.enable_fusion}"
        return {**super().describe(),
                "model": (f"transformers ClapModel: {self.amodel} + roberta-base, {fusion}" if self.size == "full"
                          else f"transformers ClapModel: shrunken HTSAT + 1-layer RoBERTa (tiny), {fusion}")}


def build_clap_hf(size: str = "full", *, seed: int = 0, checkpoint_path: str | os.PathLike | None = None,
                  trust: bool = False, vocab_size: int | None = None, drop_keys: Sequence[str] = DROP_KEYS,
                  amodel: str = "HTSAT-base", enable_fusion: bool = False) -> tuple[torch.nn.Module, dict]:
    """``(ClapModel in eval mode, info)``: :class:`ClapBackbone` for a file path (or random weights from ``seed``)
    of laion's ``amodel`` (HTSAT-base or HTSAT-tiny), with feature fusion if ``enable_fusion``. ``vocab_size``
    defaults to the checkpoint's. ``info``: ``size``, ``random``, ``seed``, ``checkpoint``,
    ``dropped_keys``, ``audio`` (front-end constants), ``model``, ``front_end`` (the :class:`HtsatLogMel` to use:
    with a checkpoint, holding its own STFT kernels and mel filters) and ``front_end_max_abs_diff``."""
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and vocab_size is None:
        word = read_clap_state_dict(path, drop_keys, trust).get("text_branch.embeddings.word_embeddings.weight")
        vocab_size = int(word.shape[0]) if word is not None else None
    backbone = ClapBackbone(size, seed, vocab_size, drop_keys, amodel, enable_fusion)
    ckpt = Checkpoint(name=path.name if path else "random", path=path, sha256=None, random=path is None)
    net = backbone.load(ckpt, setting=f"metrics.clap.checkpoint={path}" if path else "metrics.clap.checkpoint",
                        trust=trust)
    info = {"size": size, "random": path is None, "seed": int(seed) if path is None else None,
            "checkpoint": str(path) if path else None, "audio": dict(AUDIO_CFG), "model": backbone.describe()["model"],
            "front_end": net.front_end, **net.info}
    return net.model, info


# ----------------------------------------------------------------------------------------------------------------
# Audio preparation (laion_clap training/data.py: get_audio_features, enable_fusion=False), deterministic
# ----------------------------------------------------------------------------------------------------------------
CROPS = ("start", "center", "end")
FILLS = ("repeatpad", "pad", "repeat")


def fit_to_length(wav: torch.Tensor, max_len: int, crop: str = "start", fill: str = "repeatpad"
                  ) -> tuple[torch.Tensor, bool]:
    """Bring a 1-D waveform to exactly ``max_len`` samples. Returns ``(waveform, longer)``.

    Longer than ``max_len``: keep ``max_len`` samples from the start / centre / end (laion_clap's ``rand_trunc``
    keeps them from a random offset); ``longer`` is True as in laion_clap. Shorter: laion_clap's ``data_filling``
    rules: ``repeatpad`` tiles the clip ``int(max_len / n)`` times and zero-pads the rest; ``pad`` zero-pads;
    ``repeat`` tiles ``int(max_len / n) + 1`` times and cuts."""
    if wav.dim() != 1:
        raise ValueError(f"fit_to_length expects a 1-D waveform, got shape {tuple(wav.shape)}")
    n = wav.shape[0]
    if n == 0:
        raise AudioError("empty audio")
    if n > max_len:
        if crop not in CROPS:
            raise ValueError(f"crop={crop!r}: expected one of {CROPS}")
        offset = {"start": 0, "center": (n - max_len) // 2, "end": n - max_len}[crop]
        return wav[offset:offset + max_len], True
    if n < max_len:
        if fill not in FILLS:
            raise ValueError(f"fill={fill!r}: expected one of {FILLS}")
        n_repeat = int(max_len / n)
        if fill == "repeatpad":
            wav = wav.repeat(n_repeat)
            wav = F.pad(wav, (0, max_len - wav.shape[0]), mode="constant", value=0)
        elif fill == "pad":
            wav = F.pad(wav, (0, max_len - n), mode="constant", value=0)
        else:
            wav = wav.repeat(n_repeat + 1)[:max_len]
    return wav, False


# ----------------------------------------------------------------------------------------------------------------
# The embedder
# ----------------------------------------------------------------------------------------------------------------
class ClapEmbedder:
    """Batched audio and text embeddings (L2-normalised, 512-d) from a :func:`build_clap_hf` model and a tokenizer;
    ``ClapEmbedder.from_network(net, tokenizer, ...)`` takes a :class:`ClapNetwork`.

    Audio: waveform ``[B, 480000]`` -> :class:`HtsatLogMel` -> ``ClapModel.audio_model`` (bn0 ... avg-pool)
    -> ``audio_projection`` -> ``F.normalize`` (laion: ``get_audio_embedding``). Text: RoBERTa tokens
    (``padding="max_length", truncation=True, max_length=77``) -> ``text_model`` pooler output (dense + tanh on
    ``<s>``) -> ``text_projection`` -> ``F.normalize`` (laion: ``get_text_embedding``). The projections and the
    normalisation are called here rather than through ``get_*_features``, whose return type changed between
    transformers 4 (a tensor) and 5 (a model output)."""

    def __init__(self, model: torch.nn.Module, info: dict, tokenizer: Any, *, device: str | torch.device = "cpu",
                 text_max_length: int = 77, text_padding: str = "max_length", text_truncation: bool = True) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        audio = dict(AUDIO_CFG, **(info.get("audio") or {}))
        front_end = info.get("front_end")
        if front_end is None:
            front_end = HtsatLogMel(audio["sample_rate"], audio["window_size"], audio["hop_size"], audio["mel_bins"],
                                    audio["fmin"], audio["fmax"])
        self.front_end = front_end.to(self.device).eval()
        self._audio = audio
        self.tokenizer = tokenizer
        self.text_max_length = int(text_max_length)
        self.text_padding = text_padding
        self.text_truncation = bool(text_truncation)
        vocab = self.model.text_model.embeddings.word_embeddings.num_embeddings
        if tokenizer is not None and len(tokenizer) > vocab:
            raise ClapError(f"the tokenizer has {len(tokenizer)} entries but the text model only {vocab}")

    @property
    def clip_samples(self) -> int:
        return int(self._audio["clip_samples"])

    @property
    def sample_rate(self) -> int:
        return int(self._audio["sample_rate"])

    @torch.no_grad()
    def audio_features(self, waves: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ``input_features`` ``[B, 1, T, 64]`` of 1-D waveforms of exactly ``clip_samples`` samples."""
        for w in waves:
            if w.dim() != 1 or w.shape[0] != self.clip_samples:
                raise ValueError(f"embed_audio expects 1-D waveforms of {self.clip_samples} samples, "
                                 f"got {tuple(w.shape)}")
        batch = torch.stack([w.to(self.device, torch.float32) for w in waves])
        return self.front_end(batch)

    @torch.no_grad()
    def embed_audio(self, waves: Sequence[torch.Tensor], longer: Sequence[bool] | None = None) -> torch.Tensor:
        """``waves``: 1-D tensors of exactly ``clip_samples`` samples at ``sample_rate`` (see
        :func:`evalkit.embeddings.clap.fit_to_length`). ``longer`` is passed on as ``is_longer`` (read by fusion
        models only; this non-fusion model ignores it, as laion's does)."""
        if longer is None:
            longer = [False] * len(waves)
        if len(longer) != len(waves):
            raise ValueError(f"embed_audio: {len(waves)} waveforms but {len(longer)} 'longer' flags")
        return self.embed_features(self.audio_features(waves), longer)

    @torch.no_grad()
    def embed_features(self, feats: torch.Tensor, longer: Sequence[bool]) -> torch.Tensor:
        """``input_features`` (``[B, 1, 1001, 64]`` from :class:`HtsatLogMel`; a fusion model's ``[B, 4, 1001, 64]``
        from :func:`evalkit.embeddings.clap_fusion.fusion_input`) -> ``ClapModel.audio_model`` with ``is_longer``
        -> ``audio_projection`` -> ``F.normalize``: ``[B, 512]``."""
        is_longer = torch.tensor([[bool(x)] for x in longer], device=self.device)
        pooled = self.model.audio_model(input_features=feats.to(self.device), is_longer=is_longer).pooler_output
        return F.normalize(self.model.audio_projection(pooled), dim=-1)

    @torch.no_grad()
    def embed_text(self, captions: Sequence[str]) -> torch.Tensor:
        """RoBERTa tokens (``padding="max_length", truncation=True, max_length=77``) -> text embedding."""
        from evalkit.embeddings.tokenizers import encode_batch

        if self.tokenizer is None:
            raise ClapError("this CLAP embedder was built for audio only (no tokenizer): text needs the CLAP metric's "
                            "tokenizer setting")
        enc = encode_batch(self.tokenizer, captions, max_length=self.text_max_length, padding=self.text_padding,
                           truncation=self.text_truncation)
        pooled = self.model.text_model(input_ids=enc["input_ids"].to(self.device),
                                       attention_mask=enc["attention_mask"].to(self.device)).pooler_output
        return F.normalize(self.model.text_projection(pooled), dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# The registered embedding
# ----------------------------------------------------------------------------------------------------------------
@register_embedder("clap-laion-audio")
@register_embedder("clap-laion-audioset-fusion")
@register_embedder("clap-laion-music")
class LaionClapEmbedder(Embedder):
    """LAION-CLAP as an embedding (``conf/embeddings/clap-laion-*.yaml``): audio inputs ``[T]`` (mono, 48 kHz) cut or
    filled to ``max_samples`` (:func:`fit_to_length`: laion's ``repeatpad``, a deterministic crop), embedded
    ``batch_size`` at a time -> ``[1, 512]`` L2-normalised each; :meth:`embed_text`: captions -> ``[n, 512]``.
    ``tokenizer``: the metric's tokenizer setting (None: the conf's ``tokenizer_name`` from the Hugging Face cache for
    released weights, the in-memory byte-level tokenizer for random weights; ``tiny``; a hub name; a folder).
    ``audio_only``: a metric that embeds no text (FAD) needs no tokenizer files: full-size weights from a file then
    get none (the text tower keeps roberta-base's vocabulary; :meth:`embed_text` raises), random or tiny weights the
    in-memory one (a tiny checkpoint must then have its 261-entry vocabulary)."""

    def __init__(self, config, weights, device="cpu", name=None, tokenizer: str | None = None,
                 audio_only: bool = False) -> None:
        super().__init__(config, weights, device, name)
        c = self.config
        where = weights.setting
        if str(c.get("tmodel", "roberta")) != "roberta":
            raise ClapError(f"{where}.embedder.tmodel={c.get('tmodel')!r}: only the roberta text tower is implemented")
        self.amodel, self.fusion = str(c.get("amodel", "HTSAT-base")), bool(c.get("enable_fusion", False))
        if self.amodel not in HTSAT_MODELS or (self.sample_rate, int(c["max_samples"])) != (
                AUDIO_CFG["sample_rate"], AUDIO_CFG["clip_samples"]):
            raise ClapError(f"{where}: amodel={c.get('amodel')}, sample_rate={self.sample_rate}, max_samples="
                            f"{c.get('max_samples')}: only laion_clap's {' and '.join(HTSAT_MODELS)} (48 kHz, 480,000 "
                            f"samples) are built")
        self.crop, self.fill = str(c.get("crop") or "start"), str(c.get("fill") or "repeatpad")
        if self.fusion:
            if (self.crop, self.fill) != ("fusion", "repeatpad"):
                raise ClapError(f"{where}.embedder: a fusion model takes crop=fusion, fill=repeatpad (laion's "
                                f"get_audio_features(data_truncating='fusion', data_filling='repeatpad')), got "
                                f"crop={self.crop}, fill={self.fill}")
            self.fusion_seed = int(c["fusion_seed"])
            self.fusion_antialias = bool(c["fusion_resize_antialias"])
        elif self.crop not in CROPS:
            raise ValueError(f"{where}.embedder.crop={self.crop!r}: expected one of {CROPS}")
        if self.fill not in FILLS:
            raise ValueError(f"{where}.embedder.fill={self.fill!r}: expected one of {FILLS}")
        self._fusion_mel = None
        self.max_samples = int(c["max_samples"])
        self.batch_size = max(1, weights.batch_size or 8)
        if weights.model_size != "full" and not self.checkpoint.random and weights.checkpoint is None:
            raise ClapError(f"{where}.model_size={weights.model_size} is a shrunken test model; the released "
                            f"checkpoint needs model_size=full")
        self.tokenizer, self.tokenizer_source = None, None
        if audio_only and weights.model_size == "tiny" and tokenizer is None:
            tokenizer = "tiny"  # it only sizes the shrunken text tower's vocabulary (a tiny checkpoint's too)
        if not (audio_only and not self.checkpoint.random and weights.model_size == "full"):
            # the tokenizer first: a broken one must stop the run before minutes of model building
            from evalkit.embeddings.tokenizers import resolve_roberta_tokenizer

            self.tokenizer, self.tokenizer_source = resolve_roberta_tokenizer(
                tokenizer, default=str(c.get("tokenizer_name", "roberta-base")), random_weights=self.checkpoint.random,
                model_size=weights.model_size, setting=f"{where}.tokenizer")
        self._clap: ClapEmbedder | None = None

    @classmethod
    def from_recipe(cls, recipe, setting, device="cpu"):
        """``recipe["tokenizer"]``: the text metric's setting; a recipe without that key (FAD) embeds audio only."""
        from evalkit.embeddings.base import WeightSettings

        return cls(recipe["embedder"], WeightSettings.from_recipe(recipe, setting), device, name=recipe["embedding"],
                   tokenizer=recipe.get("tokenizer"), audio_only="tokenizer" not in recipe)

    def backbone(self) -> ClapBackbone:
        return ClapBackbone(self.weights.model_size, self.weights.seed,
                            vocab_size=len(self.tokenizer) if self.weights.model_size == "tiny" else None,
                            drop_keys=tuple(self.config.get("drop_state_keys") or ()), amodel=self.amodel,
                            enable_fusion=self.fusion)

    @property
    def clap(self) -> ClapEmbedder:
        if self._clap is None:
            net = self.network
            c = self.config
            self._clap = ClapEmbedder(net.model, {**net.info, "front_end": net.front_end}, self.tokenizer,
                                      device=self.device, text_max_length=int(c["text_max_length"]),
                                      text_padding=str(c.get("text_padding", "max_length")),
                                      text_truncation=bool(c.get("text_truncation", True)))
        return self._clap

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "tokenizer": self.tokenizer_source,
                "model": self.backbone().describe()["model"]}

    def fit(self, wav: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """A ``[T]`` (or ``[1, T]``) input cut or filled to ``max_samples`` (laion's ``get_audio_features``)."""
        return fit_to_length(wav.reshape(-1) if wav.dim() > 1 else wav, self.max_samples, crop=self.crop,
                             fill=self.fill)

    def fusion_inputs(self, items: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, bool]]:
        """A fusion model's input per item (:func:`evalkit.embeddings.clap_fusion.fusion_input`): ``(mel_fusion [4,
        1001, 64], longer)``, the random chunks of a clip longer than 10 s drawn from ``fusion_seed``."""
        from evalkit.embeddings.clap_fusion import FusionMel, fusion_input

        if self._fusion_mel is None:
            self._fusion_mel = FusionMel()
        with torch.no_grad():
            return [fusion_input(x.detach().cpu(), self._fusion_mel, self.fusion_seed, self.fusion_antialias,
                                 self.max_samples) for x in items]

    def embed(self, items: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """One ``[1, 512]`` row per input: an item ``[T]`` is one input, ``[N, T]`` N inputs (a protocol's windows,
        e.g. fadtk's 10 s every second) -> ``[N, 512]``. A fusion model: one ``[1, 512]`` row per item (its whole
        clip: laion's ``data_truncating='fusion'``)."""
        if self.fusion:
            inputs = self.fusion_inputs(items)
            out: list[np.ndarray] = []
            for start in range(0, len(inputs), self.batch_size):
                chunk = inputs[start:start + self.batch_size]
                emb = self.clap.embed_features(torch.stack([f for f, _ in chunk]), [lg for _, lg in chunk])
                out += [row[None].numpy() for row in emb.detach().float().cpu()]
            return out
        owner = [i for i, x in enumerate(items) for _ in range(1 if x.dim() == 1 else x.shape[0])]
        fitted = [self.fit(w) for x in items for w in (x[None] if x.dim() == 1 else x)]
        rows: list[np.ndarray] = []
        for start in range(0, len(fitted), self.batch_size):
            chunk = fitted[start:start + self.batch_size]
            emb = self.clap.embed_audio([w.to(self.device) for w, _ in chunk], [longer for _, longer in chunk])
            rows += list(emb.detach().float().cpu().numpy())
        return [np.stack([r for j, r in zip(owner, rows) if j == i]) if i in owner else np.zeros((0, self.dim), np.float32)
                for i in range(len(items))]

    def embed_text(self, captions: Sequence[str]) -> torch.Tensor:
        """``[n, 512]`` caption embeddings, ``batch_size`` captions per pass."""
        parts = [self.clap.embed_text(list(captions[i:i + self.batch_size]))
                 for i in range(0, len(captions), self.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)
