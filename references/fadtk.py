"""fadtk 1.1.0's model loaders (``fadtk/model_loader.py``) around given networks: its own loader classes (their
``load_wav``, ``_get_embedding``, ``get_embedding`` and float16 storage), with the network set by hand instead of
their ``load_model`` checkpoint downloads.

Used by ``tests/test_fadtk_parity.py`` (the command-line parity tests) and the reference sides of
``benchmarks/suite_parts/fad_encodec.py`` and ``fad_clap_music.py``. Takes from evalkit only the networks whose
*weights* both sides use, renamed to fadtk's layouts by hand here (the inverse of evalkit's conversions)."""
from __future__ import annotations

import re

import torch


def to_encodec_layout(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """transformers' EncodecEncoder state dict -> encodec's ``SEANetEncoder`` (``model.<i>[...].conv.conv.*``,
    ``weight_g``/``weight_v``), written by hand (the inverse of evalkit's conversion)."""
    out = {}
    for k, v in net.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                             "weight_v")
        k = re.sub(r"^layers\.", "model.", k)
        out[re.sub(r"\.conv\.(bias|weight_g|weight_v)$", r".conv.conv.\1", k)] = v.clone()
    return out


def encodec_model(net: torch.nn.Module):
    """fadtk's ``EncodecEmbModel('24k')`` whose model is the encodec package's ``EncodecModel.encodec_model_24khz(
    pretrained=False)`` (target bandwidth 12, as its ``load_model`` sets) carrying ``net``'s encoder weights."""
    from encodec import EncodecModel
    from fadtk.model_loader import EncodecEmbModel

    ml = EncodecEmbModel("24k")
    ml.model = EncodecModel.encodec_model_24khz(pretrained=False)
    ml.model.set_target_bandwidth(12)
    ml.model.encoder.load_state_dict(to_encodec_layout(net), strict=True)
    ml.model.eval().to(ml.device)
    return ml


def clap_laion_model(module, kind: str):
    """fadtk's ``CLAPLaionModel(kind)`` (``'audio'``: clap-laion-audio, ``'music'``: clap-laion-music) around a
    laion_clap ``CLAP_Module`` (``references.laion_clap_model.clap_module``); its ``__init__``, which downloads the
    released checkpoint, is not run: :class:`ModelLoader`'s is, as it calls it."""
    from fadtk.model_loader import CLAPLaionModel, ModelLoader

    ml = CLAPLaionModel.__new__(CLAPLaionModel)
    ModelLoader.__init__(ml, f"clap-laion-{kind}", 512, 48000)
    ml.type, ml.model = kind, module
    return ml
