"""Audiobox Aesthetics (Tjandra et al., 2025, arXiv 2502.05139; ``audiobox-aesthetics`` 0.0.4, CC BY 4.0): four
scores per clip - CE (content enjoyment), CU (content usefulness), PC (production complexity), PQ (production
quality) - from a WavLM Base+ encoder with one head per axis. The "embedding" of an input is its four scores.

The network (``audiobox_aesthetics/model/aes.py: AesMultiOutput``, ``model/wavlm.py``, ``model/utils.py``), written
here in its state-dict layout so that the released weights load strictly:

- WavLM (``wavlm_model.*``): seven 1-d convolutions without bias (the first followed by a per-channel GroupNorm),
  each followed by GELU (``[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2``: one frame per 320 samples), LayerNorm,
  ``post_extract_proj`` (512 -> 768); the encoder zeroes padded frames, adds a weight-normalised grouped positional
  convolution (kernel 128, 16 groups, the last output dropped, GELU), LayerNorm (post-LN transformer), then 12 layers
  of self-attention with a bucketed relative position bias (320 buckets, max distance 800, computed in layer 0 and
  gated per head and query by ``grep_linear``/``grep_a`` in every layer) and a GELU feed-forward, each followed by
  its LayerNorm. The layer results are the encoder's input (after the positional convolution and LayerNorm) and the
  output of each layer: ``nth_layer`` = 13 of them.
- per axis: the softmax of a learned 13-vector mixes the layer results, a masked mean over the valid frames
  (a frame is padding when all its 320 samples are), an L2 normalisation, and an MLP (``proj_num_layer`` = 5:
  Linear-LayerNorm-GELU four times, then Linear(768, 1)) giving the normalised score; de-normalised by the target
  transform (``x * std + mean``).

Inference (``audiobox_aesthetics/infer.py: AesPredictor.forward``, here :meth:`AestheticsEmbedder.embed`): an input
(mono, 16 kHz: the protocol's input path resamples and downmixes) is cut into non-overlapping ``window_s`` = 10 s
chunks, the last zero-padded to 10 s with a mask over its valid samples; every chunk is scored, and the file's score
per axis is the mean of its chunks' scores weighted by their valid length (``valid / 160000``). The package's
``precision`` setting never enables autocast (it compares a dtype with strings), so it runs in float32, as here.

Where evalkit runs differently, with the same values (float32 rounding aside, ~1e-6): chunks are scored
``batch_size`` at a time (side by side on the CPU cores) instead of all chunks of a batch of files in one pass (the package's batch of 100 ten-second
files needs about 15 GB of activations on a CPU); the relative position bias is gated per batch without first being
repeated ``batch`` times. ``tests/test_aesthetics.py`` checks the network against ``AesMultiOutput`` and the whole
path against ``AesPredictor.forward`` on identical weights.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder
from evalkit.embeddings.weights import Checkpoint, CheckpointError, load_strict

AXES = ("CE", "CU", "PC", "PQ")


class AestheticsError(CheckpointError):
    """An Audiobox Aesthetics setting or checkpoint that cannot work; the message names it."""


# ----------------------------------------------------------------------------------------------------------------
# The network's shape, from the embedding's conf
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AesShape:
    """The constants that decide the network (``conf/embeddings/audiobox-aesthetics.yaml``; ``tiny`` overrides some)."""

    conv_layers: tuple[tuple[int, int, int], ...]
    dim: int
    ffn_dim: int
    heads: int
    layers: int
    conv_pos: int
    conv_pos_groups: int
    num_buckets: int
    max_distance: int
    nth_layer: int
    proj_num_layer: int
    proj_ln: bool
    normalize_embed: bool
    target_transform: tuple[tuple[float, float], ...]  # (mean, std) per axis, in AXES order

    @classmethod
    def from_config(cls, conf: Mapping[str, Any], size: str) -> "AesShape":
        """The shape of ``model_size`` ``size`` from the embedding's constants (``tiny``: its ``tiny`` entries
        replace the released ones)."""
        tiny = dict(conf.get("tiny") or {}) if size == "tiny" else {}
        keys = ("proj_act_fn", "use_weighted_layer_sum", "target_transform", "conv_feature_layers", "encoder_embed_dim",
                "encoder_ffn_embed_dim", "encoder_attention_heads", "encoder_layers", "conv_pos", "conv_pos_groups",
                "num_buckets", "max_distance", "nth_layer", "proj_num_layer", "proj_ln", "normalize_embed")
        c = {k: tiny[k] if k in tiny else v for k, v in ((k, conf[k]) for k in keys)}
        if str(c["proj_act_fn"]) != "gelu":
            raise AestheticsError(f"proj_act_fn={c['proj_act_fn']!r}: the package's create_mlp_block knows only gelu")
        if not bool(c["use_weighted_layer_sum"]):
            raise AestheticsError("use_weighted_layer_sum=false is not implemented (the released model mixes layers)")
        tt = c["target_transform"]
        missing = [a for a in AXES if a not in tt]
        if missing:
            raise AestheticsError(f"target_transform lacks {missing}: it needs {{mean, std}} for each of {AXES}")
        shape = cls(conv_layers=tuple(tuple(int(v) for v in layer) for layer in c["conv_feature_layers"]),
                    dim=int(c["encoder_embed_dim"]), ffn_dim=int(c["encoder_ffn_embed_dim"]),
                    heads=int(c["encoder_attention_heads"]), layers=int(c["encoder_layers"]),
                    conv_pos=int(c["conv_pos"]), conv_pos_groups=int(c["conv_pos_groups"]),
                    num_buckets=int(c["num_buckets"]), max_distance=int(c["max_distance"]),
                    nth_layer=int(c["nth_layer"]), proj_num_layer=int(c["proj_num_layer"]),
                    proj_ln=bool(c["proj_ln"]), normalize_embed=bool(c["normalize_embed"]),
                    target_transform=tuple((float(tt[a]["mean"]), float(tt[a]["std"])) for a in AXES))
        if not 1 <= shape.nth_layer <= shape.layers + 1:
            raise AestheticsError(f"nth_layer={shape.nth_layer}: WavLM has {shape.layers + 1} layer results")
        return shape


# ----------------------------------------------------------------------------------------------------------------
# WavLM (model/wavlm.py), inference only
# ----------------------------------------------------------------------------------------------------------------
class ConvFeatures(nn.Module):
    """``ConvFeatureExtractionModel`` (mode ``default``): ``[B, T]`` -> ``[B, C, frames]``. Block i is
    ``Sequential(conv, dropout, [GroupNorm(C, C) for i = 0], GELU)``: the dropout slot keeps the state-dict indices."""

    def __init__(self, layers: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_dim = 1
        for i, (dim, kernel, stride) in enumerate(layers):
            block = [nn.Conv1d(in_dim, dim, kernel, stride=stride, bias=False), nn.Identity()]
            block += [nn.GroupNorm(dim, dim, affine=True)] if i == 0 else []
            self.conv_layers.append(nn.Sequential(*block, nn.GELU()))
            in_dim = dim

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv(nn.Module):
    """``nn.utils.weight_norm(Conv1d(C, C, K, padding=K // 2, groups=G), dim=2)``: parameters ``weight_g``
    ``[1, 1, K]``, ``weight_v`` ``[C, C / G, K]``, ``bias``; the weight is ``g · v / ‖v‖`` (norms over all but dim 2),
    the hook's ``torch._weight_norm(v, g, 2)``. That float32 reduction over C²/G values depends on the intra-op thread
    count (measured: 3e-5 between 1 and 2 threads at full size), so the package's own outputs move with it; here the
    weight is computed once per parameter change in float64, then cast: the same for any thread count, and within
    float32 rounding of the package's."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        v = torch.empty(dim, dim // groups, kernel)
        nn.init.normal_(v, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.norm_except_dim(v, 2, 2).clone())
        self.bias = nn.Parameter(torch.zeros(dim))
        self._weight: tuple[tuple, torch.Tensor] | None = None

    def weight(self) -> torch.Tensor:
        v, g = self.weight_v, self.weight_g
        key = (v.data_ptr(), _version(v), g.data_ptr(), _version(g), v.device, v.dtype)
        if self._weight is None or self._weight[0] != key:
            w = torch._weight_norm(v.detach().double(), g.detach().double(), 2).to(v.dtype)
            self._weight = (key, w)
        return self._weight[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


def _version(t: torch.Tensor) -> int | None:
    """A tensor's in-place version counter (None for an inference tensor, which keeps none)."""
    try:
        return t._version
    except RuntimeError:
        return None


class PositionalConv(nn.Sequential):
    """``Sequential(weight-normalised conv, SamePad, GELU)``: ``[B, C, T]`` -> ``[B, C, T]`` (an even kernel gives
    ``T + 1`` outputs; SamePad drops the last)."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__(WeightNormConv(dim, kernel, groups), nn.Identity(), nn.GELU())
        self.drop_last = kernel % 2 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        return self[2](x[:, :, :-1] if self.drop_last else x)


def relative_buckets(query_len: int, key_len: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """``MultiheadAttention._relative_positions_bucket`` (bidirectional) of ``key - query``: ``[Q, K]`` long. Half
    the buckets per direction; distances under a quarter of the buckets are exact, longer ones log-spaced up to
    ``max_distance``."""
    rel = torch.arange(key_len, dtype=torch.long)[None, :] - torch.arange(query_len, dtype=torch.long)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).to(torch.long) * half
    rel = rel.abs()
    exact = half // 2
    large = exact + (torch.log(rel.float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    return buckets + torch.where(rel < exact, rel, large)


class SelfAttention(nn.Module):
    """WavLM's ``MultiheadAttention`` (self-attention, gated relative position bias), inference path: the package's
    call of ``F.multi_head_attention_forward`` with separate projection weights and the gated bias as float mask."""

    def __init__(self, dim: int, heads: int, rel_bias: bool, num_buckets: int, max_distance: int) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.num_buckets, self.max_distance = num_buckets, max_distance
        if rel_bias:
            self.relative_attention_bias = nn.Embedding(num_buckets, heads)
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, length: int) -> torch.Tensor:
        """``compute_bias``: ``[H, T, T]``."""
        buckets = relative_buckets(length, length, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets.to(self.relative_attention_bias.weight.device)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None,
                bias: torch.Tensor) -> torch.Tensor:
        """``x`` ``[T, B, C]``; ``bias`` ``[H, T, T]`` (layer 0's, ungated)."""
        t, b, _ = x.shape
        q = x.transpose(0, 1).reshape(b, t, self.heads, self.head_dim).permute(0, 2, 1, 3)
        gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(b, self.heads, t, 2, 4).sum(-1)).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [B, H, T, 1]
        mask = (gate * bias.unsqueeze(0)).view(b * self.heads, t, t)
        out, _ = F.multi_head_attention_forward(
            x, x, x, self.dim, self.heads, torch.empty([0]),
            torch.cat((self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)), None, None, False, 0.0,
            self.out_proj.weight, self.out_proj.bias, training=False, key_padding_mask=key_padding_mask,
            need_weights=False, attn_mask=mask, use_separate_proj_weight=True, q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight)
        return out


class EncoderLayer(nn.Module):
    """``TransformerSentenceEncoderLayer`` with ``layer_norm_first=False`` (post-LN), GELU feed-forward."""

    def __init__(self, s: AesShape, rel_bias: bool) -> None:
        super().__init__()
        self.self_attn = SelfAttention(s.dim, s.heads, rel_bias, s.num_buckets, s.max_distance)
        self.self_attn_layer_norm = nn.LayerNorm(s.dim)
        self.fc1 = nn.Linear(s.dim, s.ffn_dim)
        self.fc2 = nn.Linear(s.ffn_dim, s.dim)
        self.final_layer_norm = nn.LayerNorm(s.dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x, key_padding_mask, bias))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    """``TransformerEncoder.extract_features`` up to ``n_results`` layer results (each ``[T, B, C]``)."""

    def __init__(self, s: AesShape) -> None:
        super().__init__()
        self.pos_conv = PositionalConv(s.dim, s.conv_pos, s.conv_pos_groups)
        self.layers = nn.ModuleList(EncoderLayer(s, rel_bias=i == 0) for i in range(s.layers))
        self.layer_norm = nn.LayerNorm(s.dim)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, n_results: int) -> list[torch.Tensor]:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = self.layer_norm(x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)).transpose(0, 1)
        results = [x]
        bias = self.layers[0].self_attn.position_bias(x.shape[0]) if n_results > 1 else None
        # the float form F.multi_head_attention_forward makes of a bool key mask (0 / -inf), made once here
        keys = (None if padding_mask is None else
                torch.zeros_like(padding_mask, dtype=x.dtype).masked_fill_(padding_mask, float("-inf")))
        for layer in self.layers[:n_results - 1]:
            x = layer(x, keys, bias)
            results.append(x)
        return results


class WavLM(nn.Module):
    """WavLM Base+ as ``AesMultiOutput.wavlm_model`` (inference; ``normalize=False``, no masking, no dropout)."""

    def __init__(self, s: AesShape) -> None:
        super().__init__()
        conv_dim = s.conv_layers[-1][0]
        self.feature_extractor = ConvFeatures(s.conv_layers)
        self.post_extract_proj = nn.Linear(conv_dim, s.dim) if conv_dim != s.dim else None
        self.mask_emb = nn.Parameter(torch.empty(s.dim).uniform_())  # training only; part of the state dict
        self.encoder = Encoder(s)
        self.layer_norm = nn.LayerNorm(conv_dim)

    @staticmethod
    def frame_padding(frames: int, padding_mask: torch.Tensor) -> torch.Tensor:
        """``forward_padding_mask``: ``[B, T]`` samples -> ``[B, frames]``; a frame is padding when all its samples
        are (the trailing ``T % frames`` samples are dropped first)."""
        extra = padding_mask.shape[1] % frames
        if extra > 0:
            padding_mask = padding_mask[:, :-extra]
        return padding_mask.view(padding_mask.shape[0], frames, -1).all(-1)

    def forward(self, wav: torch.Tensor, padding_mask: torch.Tensor | None, n_results: int):
        """``wav`` ``[B, T]``, ``padding_mask`` ``[B, T]`` (True: padding) -> (layer results, frame padding mask)."""
        features = self.layer_norm(self.feature_extractor(wav).transpose(1, 2))
        frame_mask = self.frame_padding(features.shape[1], padding_mask) if padding_mask is not None else None
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        return self.encoder(features, frame_mask, n_results), frame_mask


def mlp_head(dim: int, layers: int, layer_norm: bool) -> nn.Sequential:
    """``create_mlp_block(dim, 1, layers, "gelu", layer_norm)``: (Linear(dim, dim), [LayerNorm], GELU) x (layers-1),
    then Linear(dim, 1)."""
    blocks: list[nn.Module] = []
    for _ in range(layers - 1):
        blocks += [nn.Linear(dim, dim)] + ([nn.LayerNorm(dim)] if layer_norm else []) + [nn.GELU()]
    return nn.Sequential(*blocks, nn.Linear(dim, 1))


class AestheticsNet(nn.Module):
    """``AesMultiOutput`` for inference: ``(wav [B, T], mask [B, T] of valid samples)`` -> ``[B, 4]`` de-normalised
    scores (CE, CU, PC, PQ). State-dict keys: ``wavlm_model.*``, ``layer_weights.<axis>``, ``proj_layer.<axis>.*``."""

    def __init__(self, s: AesShape) -> None:
        super().__init__()
        self.shape = s
        self.wavlm_model = WavLM(s)
        self.proj_layer = nn.ModuleDict({a: mlp_head(s.dim, s.proj_num_layer, s.proj_ln) for a in AXES})
        self.layer_weights = nn.ParameterDict({a: nn.Parameter(torch.ones(s.nth_layer) / s.nth_layer) for a in AXES})
        mean, std = zip(*s.target_transform)
        self.register_buffer("target_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("target_std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def normalized(self, wav: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The heads' outputs before the target transform: ``[B, 4]``."""
        results, frame_mask = self.wavlm_model(wav, ~mask, self.shape.nth_layer)
        stacked = torch.stack(results, dim=-1)  # [T, B, C, L]
        valid = (~frame_mask).unsqueeze(-1).to(stacked.dtype)  # [B, T, 1]
        out = []
        for axis in AXES:
            embed = torch.einsum("tbcl,l->btc", stacked, torch.softmax(self.layer_weights[axis], dim=-1))
            embed = (embed * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
            if self.shape.normalize_embed:
                embed = F.normalize(embed, dim=-1)
            out.append(self.proj_layer[axis](embed).squeeze(-1))
        return torch.stack(out, dim=-1)

    def forward(self, wav: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.normalized(wav, mask) * self.target_std + self.target_mean


# ----------------------------------------------------------------------------------------------------------------
# Chunks (infer.py make_inference_batch) and the embedder
# ----------------------------------------------------------------------------------------------------------------
def chunks(wav: torch.Tensor, window: int, hop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``make_inference_batch(pad_zero=True)`` for one ``[T]`` input: chunks ``[N, window]`` starting every ``hop``
    (``range(0, T, hop)``), each zero-padded to ``window``; masks ``[N, window]`` (True: a valid sample); weights
    ``[N]`` = valid samples / ``window`` (float32, as ``torch.tensor`` of the package's Python floats)."""
    starts = range(0, wav.shape[-1], hop)
    pieces = [wav[s:s + window] for s in starts]
    lengths = [p.shape[-1] for p in pieces]
    padded = torch.stack([F.pad(p, (0, window - n)) for p, n in zip(pieces, lengths)])
    mask = torch.arange(window)[None, :] < torch.tensor(lengths)[:, None]
    return padded, mask, torch.tensor([n / window for n in lengths])


class AestheticsBackbone(Backbone):
    """:class:`AestheticsNet` of a given :class:`AesShape`; loads the hub's ``model.safetensors`` (keys as the
    network's) or the package's ``checkpoint.pt`` (``state_dict`` with a ``model.`` prefix, beside the
    ``model_cfg`` and ``target_transform`` it was trained with, which must agree with the conf)."""

    name = "audiobox-aesthetics"

    def __init__(self, shape: AesShape, size: str = "full", seed: int = 0) -> None:
        super().__init__(size, seed)
        self.shape = shape

    def build(self) -> AestheticsNet:
        return AestheticsNet(self.shape)

    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        if state and all(k.startswith("model.") for k in state):
            state = {k[len("model."):]: v for k, v in state.items()}  # infer.py: re.sub("^model.", "", k)
        load_strict(module, state, setting=setting, error=AestheticsError,
                    hint=f"Expected AesMultiOutput's state dict (hub model.safetensors or checkpoint.pt) of size "
                         f"{self.size!r}.")

    def load(self, checkpoint: Checkpoint, *, setting: str, device="cpu", trust: bool = False) -> AestheticsNet:
        """The network; with a file, the target transform the file carries (checked against the conf by
        :func:`released_target_transform`) replaces the conf's rounded one, as the package uses the file's."""
        own = released_target_transform(checkpoint.path, self.shape, setting) if checkpoint.path else None
        net = super().load(checkpoint, setting=setting, device=device, trust=trust)
        if own is not None:
            mean, std = zip(*own)
            net.target_mean.copy_(torch.tensor(mean, dtype=torch.float32))
            net.target_std.copy_(torch.tensor(std, dtype=torch.float32))
        return net


def _released_config(path: Path) -> dict[str, Any] | None:
    """The ``model_cfg`` + ``target_transform`` that travel with a checkpoint: inside the package's checkpoint.pt,
    or the hub's ``config.json`` beside its ``model.safetensors`` (None when neither is there)."""
    beside = path.parent / "config.json"
    if path.suffix == ".safetensors":
        return json.loads(beside.read_text(encoding="utf-8")) if beside.is_file() else None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, or one the safe reader refuses: read_state_dict says why
        return None
    if not isinstance(obj, dict) or "model_cfg" not in obj:
        return None
    return {**dict(obj["model_cfg"]), "target_transform": obj.get("target_transform")}


#: how closely a file's target transform must agree with the conf's (6 significant digits: half a unit of the 6th
#: digit of a number in [1, 10) is at most 5e-6 of it)
TARGET_RTOL = 1e-5


def released_target_transform(path: Path, s: AesShape, setting: str) -> tuple[tuple[float, float], ...] | None:
    """The ``(mean, std)`` per axis that a checkpoint carries (``checkpoint.pt``'s ``target_transform``, or the
    ``config.json`` beside a ``model.safetensors``), or None when it carries none. Raises :class:`AestheticsError`
    naming each difference when the file's config (heads, layers, target transform to :data:`TARGET_RTOL`) differs
    from the conf's: the conf's released values came from a third-party port."""
    cfg = _released_config(Path(path))
    if not cfg:
        return None
    ours = {"proj_num_layer": s.proj_num_layer, "proj_ln": s.proj_ln, "nth_layer": s.nth_layer,
            "normalize_embed": s.normalize_embed}
    diff = [f"{k}: file {cfg[k]!r}, conf {v!r}" for k, v in ours.items() if k in cfg and cfg[k] != v]
    tt = cfg.get("target_transform") or {}
    own = tuple((float(tt[a]["mean"]), float(tt[a]["std"])) for a in AXES) if all(a in tt for a in AXES) else None
    for axis, conf, got in zip(AXES, s.target_transform, own or ()):
        if not all(math.isclose(g, c, rel_tol=TARGET_RTOL) for g, c in zip(got, conf)):
            diff.append(f"target_transform.{axis}: file (mean {got[0]}, std {got[1]}), conf (mean {conf[0]}, "
                        f"std {conf[1]})")
    if diff:
        raise AestheticsError(f"{setting}={path}: the checkpoint's own config differs from "
                              f"conf/embeddings/audiobox-aesthetics.yaml ({'; '.join(diff)}): set the conf's values "
                              f"from the file (+metrics.<metric>.embedder.<key>=...) or pass the released file")
    return own


@register_embedder("audiobox-aesthetics")
class AestheticsEmbedder(Embedder):
    """Audiobox Aesthetics as an embedding (``conf/embeddings/audiobox-aesthetics.yaml``): each input ``[T]`` (mono,
    16 kHz, at least one sample) -> ``[1, 4]`` float32: CE, CU, PC, PQ, the length-weighted mean of its 10 s chunks'
    de-normalised scores (:func:`chunks`). Chunks of all inputs share forward passes of ``batch_size`` chunks
    (:meth:`forward_batches`).
    Raises :class:`AestheticsError` for an empty input (the package divides by a zero weight there)."""

    def __init__(self, config, weights, device="cpu", name=None) -> None:
        super().__init__(config, weights, device, name)
        c = self.config
        self.shape = AesShape.from_config(c, weights.model_size)
        if self.dim != len(AXES):
            raise AestheticsError(f"{weights.setting}.embedder.dim={self.dim}: the scores are {len(AXES)} ({AXES})")
        self.window = int(round(float(c["window_s"]) * self.sample_rate))
        self.hop = int(round(float(c["hop_s"]) * self.sample_rate))
        self.batch_size = weights.batch_size or 2

    def backbone(self) -> AestheticsBackbone:
        return AestheticsBackbone(self.shape, self.weights.model_size, self.weights.seed)

    def forward_batches(self, wav: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The de-normalised scores ``[n, 4]`` of chunks ``[N, window]`` in passes of ``batch_size`` chunks; on a CPU
        the passes run side by side, one intra-op thread each (:func:`~evalkit.cpu.run_calls`: measured 1.4-1.6x
        faster than one pass after the other on 2 cores; a pass's values do not depend on its thread count,
        ``tests/test_cpu_threads.py``)."""
        from evalkit.cpu import run_calls

        net, dev = self.network, self.device
        starts = list(range(0, wav.shape[0], self.batch_size))

        def forward(k: int) -> torch.Tensor:
            with torch.inference_mode():
                return net(wav[k:k + self.batch_size].to(dev), mask[k:k + self.batch_size].to(dev)).float().cpu()

        return run_calls(forward, starts, torch.get_num_threads() if dev.type == "cpu" else 1)

    @torch.inference_mode()
    def embed(self, items: Sequence[torch.Tensor]) -> list[np.ndarray]:
        parts = []
        for i, x in enumerate(items):
            x = x.reshape(-1)
            if x.numel() == 0:
                raise AestheticsError(f"input {i} is empty: no chunk to score")
            parts.append(chunks(x.to(torch.float32), self.window, self.hop))
        if not parts:
            return []
        wav = torch.cat([p[0] for p in parts])
        mask = torch.cat([p[1] for p in parts])
        preds = torch.cat(self.forward_batches(wav, mask))
        out, start = [], 0
        for _, _, w in parts:
            p = preds[start:start + w.shape[0]]  # [n, 4]
            start += w.shape[0]
            out.append(((p * w[:, None]).sum(0) / w.sum()).reshape(1, -1).numpy().astype(np.float32))
        return out
