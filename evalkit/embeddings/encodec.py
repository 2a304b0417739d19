"""EnCodec 24 kHz encoder frames (fadtk's ``encodec-emb``) on :class:`transformers.EncodecModel`'s encoder.

fadtk 1.1.0 (``fadtk/model_loader.py: EncodecEmbModel('24k')``) loads the ``encodec`` package's
``EncodecModel.encodec_model_24khz()`` (weights ``encodec_24khz-d7cc33bc.th``, sha256 prefix checked by torch hub) and
takes ``model.encoder(wav)[0].T``: the continuous pre-quantiser latent, ``[frames, 128]`` at 75 Hz (24000 / 320), for
``wav`` ``[1, 1, N]`` mono 24 kHz (no normalisation: the 24 kHz model has ``normalize=False``; no segmenting:
``segment=None``). The quantiser and decoder are not used.

evalkit builds the same encoder from transformers (``EncodecEncoder`` of ``facebook/encodec_24khz``'s config:
:data:`ENCODEC_24KHZ`, written out here as transformers' ``convert_encodec_checkpoint_to_pytorch.py`` sets it for
``encodec_24khz``: the ``EncodecConfig`` defaults) and reads the ``encodec`` package's own checkpoint file, converting
its keys (:func:`convert_encodec_state_dict`: an explicit map; every key is renamed, or dropped as part of the
quantiser/decoder, or refused). ``tests/test_encodec.py`` checks the frames against the ``encodec`` package's encoder
on identical random weights (environment ``evalkit[reference]``).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch

from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder, by_length
from evalkit.embeddings.weights import CheckpointError, load_strict

#: ``facebook/encodec_24khz`` (transformers ``convert_encodec_checkpoint_to_pytorch.py``, model ``encodec_24khz``:
#: ``EncodecConfig()`` defaults), i.e. ``encodec.EncodecModel.encodec_model_24khz``: ``SEANetEncoder(channels=1,
#: dimension=128, n_filters=32, n_residual_layers=1, ratios=[8, 5, 4, 2], kernel_size=7, last_kernel_size=7,
#: residual_kernel_size=3, dilation_base=2, causal=True, pad_mode='reflect', true_skip=False, compress=2, lstm=2,
#: norm='weight_norm')``.
ENCODEC_24KHZ: dict[str, Any] = dict(
    sampling_rate=24000, audio_channels=1, target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], upsampling_ratios=[8, 5, 4, 2],
    num_filters=32, hidden_size=128, codebook_dim=128, codebook_size=1024, num_residual_layers=1, kernel_size=7,
    last_kernel_size=7, residual_kernel_size=3, dilation_growth_rate=2, use_causal_conv=True, pad_mode="reflect",
    compress=2, num_lstm_layers=2, trim_right_ratio=1.0, norm_type="weight_norm", normalize=False,
    use_conv_shortcut=True, chunk_length_s=None, overlap=None)
#: ``model_size: tiny``: the same classes with 4 filters (tests and the offline demo; random weights only)
TINY = dict(num_filters=4)

class EncodecError(CheckpointError):
    pass


def encodec_config(size: str = "full"):
    """The ``transformers.EncodecConfig`` of the 24 kHz model (``size="tiny"``: 4 filters instead of 32)."""
    from transformers import EncodecConfig

    if size not in ("full", "tiny"):
        raise EncodecError(f"model_size={size!r}: expected 'full' or 'tiny'")
    return EncodecConfig(**{**ENCODEC_24KHZ, **(TINY if size == "tiny" else {})})


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint conversion: the encodec package's layout -> transformers' EncodecEncoder
# ----------------------------------------------------------------------------------------------------------------
#: ``encoder.model.<i>[.block.<j> | .shortcut].conv.conv.<p>`` (SConv1d -> NormConv1d -> Conv1d) and
#: ``encoder.model.<i>.lstm.<p>`` (SLSTM) -> ``layers.<i>[...].conv.<p>`` / ``layers.<i>.lstm.<p>``
RENAMES: list[tuple[str, str]] = [
    (r"encoder\.model\.(\d+)\.conv\.conv\.(bias|weight_g|weight_v|weight)", r"layers.\1.conv.\2"),
    (r"encoder\.model\.(\d+)\.block\.(\d+)\.conv\.conv\.(bias|weight_g|weight_v|weight)", r"layers.\1.block.\2.conv.\3"),
    (r"encoder\.model\.(\d+)\.shortcut\.conv\.conv\.(bias|weight_g|weight_v|weight)", r"layers.\1.shortcut.conv.\2"),
    (r"encoder\.model\.(\d+)\.lstm\.((?:weight|bias)_(?:ih|hh)_l\d+)", r"layers.\1.lstm.\2"),
]
#: keys of the ``encodec`` package's state dict that are not the encoder fadtk calls, dropped by name
DROPPED = {r"decoder\..+": "the decoder (fadtk's embedding is model.encoder(wav))",
           r"quantizer\..+": "the residual vector quantiser (the embedding is taken before it)"}
#: ``torch.nn.utils.weight_norm`` (the encodec package) -> ``parametrizations.weight_norm`` (transformers on torch
#: >= 2.1): g and v under other names, the same tensors
WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}

_RENAME_RES = [(re.compile(r"\A" + p + r"\Z"), t) for p, t in RENAMES]
_DROP_RES = [re.compile(r"\A" + p + r"\Z") for p in DROPPED]


def convert_encodec_state_dict(sd: dict[str, torch.Tensor], target_keys: Sequence[str] | None = None
                               ) -> dict[str, torch.Tensor]:
    """The encoder of an ``encodec`` package state dict (``encodec_24khz-d7cc33bc.th``: ``encoder.*``,
    ``quantizer.*``, ``decoder.*``) renamed for ``transformers``' ``EncodecEncoder``. Weight-norm tensors go to
    ``parametrizations.weight.original0/1`` when ``target_keys`` (the encoder's own state-dict keys) use that layout,
    else stay ``weight_g/weight_v``. Raises :class:`EncodecError` naming every key that is neither renamed nor a
    quantiser/decoder key; missing keys are found by the strict load."""
    parametrized = target_keys is None or any(".parametrizations." in k for k in target_keys)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in sd.items():
        for rx, template in _RENAME_RES:
            m = rx.match(k)
            if m:
                new = m.expand(template)
                last = new.rsplit(".", 1)[-1]
                if parametrized and last in WEIGHT_NORM:
                    new = new[: -len(last)] + WEIGHT_NORM[last]
                out[new] = v
                break
        else:
            if not any(rx.match(k) for rx in _DROP_RES):
                unknown.append(k)
    if unknown:
        raise EncodecError(f"checkpoint conversion: {len(unknown)} key(s) of the encodec state dict are neither the "
                           f"encoder's nor the quantiser's/decoder's: {unknown[:8]}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Backbone and embedder
# ----------------------------------------------------------------------------------------------------------------
class EncodecBackbone(Backbone):
    """transformers' ``EncodecEncoder`` of the 24 kHz model: random weights from a seed, or the ``encodec``
    package's checkpoint converted by name (:func:`convert_encodec_state_dict`)."""

    name = "encodec"

    def __init__(self, size: str = "full", seed: int = 0) -> None:
        if size not in ("full", "tiny"):
            raise EncodecError(f"model_size={size!r}: expected 'full' or 'tiny'")
        super().__init__(size, seed)

    def build(self) -> torch.nn.Module:
        from transformers.models.encodec.modeling_encodec import EncodecEncoder

        return EncodecEncoder(encodec_config(self.size)).eval()

    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        own = list(module.state_dict())
        try:
            converted = convert_encodec_state_dict(state, own)
        except EncodecError as exc:
            raise EncodecError(f"{setting}: {exc}") from exc
        load_strict(module, converted, setting=setting, error=EncodecError,
                    hint=f"Expected the encodec package's 24 kHz model state dict (encodec_24khz-d7cc33bc.th) of size "
                         f"{self.size!r}.")

    def describe(self) -> dict:
        return {**super().describe(), "model": "transformers EncodecEncoder (facebook/encodec_24khz)"}


@register_embedder("encodec-emb")
class EncodecEmbedder(Embedder):
    """fadtk's ``encodec-emb`` (``conf/embeddings/encodec-emb.yaml``): an input ``[T]`` (mono, 24 kHz, float32) ->
    ``encoder(x[None, None])[0].T`` = ``[ceil(T / 320), 128]`` float32 frames at 75 Hz. Inputs of equal length are
    encoded ``batch_size`` at a time (the encoder is causal convolutions and an LSTM: no frame sees another input);
    ``[N, T]`` inputs (windows) give every window's frames in order."""

    def __init__(self, config, weights, device="cpu", name=None) -> None:
        super().__init__(config, weights, device, name)
        # CPU: one input per pass, as fadtk/kadtk run them: a batch moves the float32 outputs by ~1e-7, which the
        # float16 storage turns into whole float16 steps now and then (measured: ~0.2 % of EnCodec's values)
        self.batch_size = max(1, weights.batch_size or (8 if self.device.type == "cuda" else 1))

    def backbone(self) -> EncodecBackbone:
        return EncodecBackbone(self.weights.model_size, self.weights.seed)

    @torch.inference_mode()
    def embed(self, items: Sequence[torch.Tensor]) -> list[np.ndarray]:
        def frames(x: torch.Tensor) -> np.ndarray:  # [n, T] -> [n, frames, 128]
            return self.network(x.to(self.device, torch.float32)[:, None, :]).transpose(1, 2).float().cpu().numpy()

        return [np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)
                for rows in by_length(items, self.batch_size, frames)]
