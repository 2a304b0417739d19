"""LAION-CLAP (HTSAT audio tower + RoBERTa text tower) built from ``laion_clap``'s own classes, offline.

What ``laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-base")`` does, and why evalkit does not call it:
- ``import laion_clap`` imports ``laion_clap.training.data``, which builds three tokenizers from the hub at import
  time (with ``HF_HUB_OFFLINE=1`` they come back *empty*; without it the import retries the hub for minutes);
- ``CLAP(...)`` calls ``RobertaModel.from_pretrained("roberta-base")`` for weights that the CLAP checkpoint then
  overwrites;
- ``get_audio_embedding_from_data`` crops audio longer than 480,000 samples at a *random* offset (``rand_trunc`` in
  ``training/data.py: get_audio_features``; LAION-AI/CLAP issue 166).

So evalkit imports only ``clap_module`` (the model package inside ``laion_clap``; the same module object that
``laion_clap.hook`` uses), builds ``clap_module.model.CLAP`` from laion_clap's model config (``model_configs/
HTSAT-base.json``) with the RoBERTa text tower built from a :class:`transformers.RobertaConfig` (random init, then
overwritten by the checkpoint), and prepares audio itself (:func:`fit_to_length`: laion_clap's ``repeatpad`` rule
for short audio, a deterministic crop for long audio). The model's own ``get_audio_embedding`` /
``get_text_embedding`` then run unchanged, so the embeddings equal ``CLAP_Module``'s on the same weights and inputs
(tests/test_clap_parity.py).

``size="tiny"`` builds a shrunken model of the same classes (HTSAT with 4 one-block stages of width 16..128, a
one-layer RoBERTa) for fast tests and the offline demo; it is never used with released weights.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pickle
import sys
import threading
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any, Sequence
from unittest import mock

import torch
import torch.nn.functional as F

from evalkit.audio import AudioError

log = logging.getLogger(__name__)

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

_BUILD_LOCK = threading.Lock()


class ClapError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------------
# laion_clap's model package, without laion_clap/__init__ (which imports the hub-hungry training.data)
# ----------------------------------------------------------------------------------------------------------------
def clap_modules():
    """``(clap_module.model, clap_module.htsat, clap_module.factory)`` of the installed laion_clap.

    laion_clap's ``__init__`` appends its own folder to ``sys.path`` and imports the model package as the
    top-level ``clap_module``; evalkit does the same without running that ``__init__``."""
    if "clap_module.model" not in sys.modules:
        spec = importlib.util.find_spec("laion_clap")
        if spec is None or not spec.submodule_search_locations:
            raise ClapError("laion_clap is not installed: `pip install laion-clap` (evalkit pins 1.1.7)")
        folder = list(spec.submodule_search_locations)[0]
        if folder not in sys.path:
            sys.path.append(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm's FutureWarning about timm.models.layers, torch meshgrid
            importlib.import_module("clap_module")
    return sys.modules["clap_module.model"], importlib.import_module("clap_module.htsat"), \
        importlib.import_module("clap_module.factory")


def laion_model_config(amodel: str) -> dict:
    """laion_clap's architecture config (``clap_module/model_configs/<amodel>.json``), a deep copy."""
    _, _, factory = clap_modules()
    if amodel not in factory._MODEL_CONFIGS:
        raise ClapError(f"laion_clap has no model config {amodel!r}; known: {sorted(factory._MODEL_CONFIGS)}")
    return deepcopy(factory._MODEL_CONFIGS[amodel])


def roberta_config(size: str = "full", vocab_size: int | None = None):
    from transformers import RobertaConfig

    kw = dict(ROBERTA_BASE)
    if size == "tiny":
        kw.update(TINY_ROBERTA)
    if vocab_size is not None:
        kw["vocab_size"] = int(vocab_size)
    return RobertaConfig(**kw)


class _RobertaFromConfig:
    """Stands in for ``transformers.RobertaModel`` inside ``clap_module.model`` while ``CLAP`` is built:
    ``from_pretrained(...)`` returns a randomly initialised ``RobertaModel(config)`` instead of downloading."""

    def __init__(self, config):
        self.config = config

    def from_pretrained(self, *args, **kwargs):
        from transformers import RobertaModel

        return RobertaModel(self.config)


def build_clap(size: str = "full", amodel: str = "HTSAT-base", *, vocab_size: int | None = None,
               seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """``clap_module.model.CLAP`` as ``create_model(amodel, "roberta", enable_fusion=False)`` builds it, with
    random weights drawn from ``seed`` (the global RNG is left as it was). Returns ``(model in eval mode, model_cfg)``
    where ``model_cfg`` is the dict ``CLAP_Module.model_cfg`` would hold."""
    if size not in ("full", "tiny"):
        raise ClapError(f"model_size={size!r}: expected 'full' or 'tiny'")
    M, H, _ = clap_modules()
    model_cfg = laion_model_config(amodel)
    model_cfg["text_cfg"]["model_type"] = "roberta"
    model_cfg["enable_fusion"] = False
    model_cfg["fusion_type"] = "None"
    patches = [mock.patch.object(M, "RobertaModel", _RobertaFromConfig(roberta_config(size, vocab_size)))]
    if size == "tiny":
        t = TINY_HTSAT
        model_cfg["audio_cfg"]["class_num"] = t["class_num"]
        model_cfg["embed_dim"] = t["embed_dim"] * 2 ** (len(t["depths"]) - 1)

        def tiny_htsat(audio_cfg, enable_fusion=False, fusion_type="None"):
            return H.HTSAT_Swin_Transformer(
                spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=audio_cfg.class_num,
                embed_dim=t["embed_dim"], depths=list(t["depths"]), num_heads=list(t["num_heads"]),
                window_size=t["window_size"], config=audio_cfg, enable_fusion=enable_fusion, fusion_type=fusion_type)

        patches.append(mock.patch.object(M, "create_htsat_model", tiny_htsat))
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(int(seed))
        for p in patches:
            p.start()
        try:
            model = M.CLAP(**model_cfg)
        finally:
            for p in reversed(patches):
                p.stop()
    return model.eval(), model_cfg


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def _torch_load(path: Path, trust: bool = False) -> Any:
    """``torch.load(weights_only=True)``; full unpickling (which can run code from the file) only when the user
    says the file is trusted (``metrics.clap.trust_checkpoint=true``)."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip-format file: no mmap
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise ClapError(
                f"{path}: holds objects other than tensors and plain containers, so it cannot be loaded safely "
                f"(weights_only=True: {str(exc).splitlines()[0]}). If you trust the file, set "
                f"metrics.clap.trust_checkpoint=true; better, save its state_dict as safetensors/.pt and pass that."
            ) from exc
    log.warning("%s: unpickling fully because metrics.clap.trust_checkpoint=true", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def read_clap_state_dict(path: str | os.PathLike, drop_keys: Sequence[str] = DROP_KEYS, trust: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of a LAION-CLAP checkpoint, as ``clap_module.factory.load_state_dict`` +
    audiocraft's ``load_clap_state_dict`` read it: ``ckpt["state_dict"]`` if present, the DataParallel ``module.``
    prefix removed, ``drop_keys`` removed when present."""
    ckpt = _torch_load(Path(path), trust)
    sd = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    if not isinstance(sd, dict) or not sd:
        raise ClapError(f"{path}: holds no state dict")
    if next(iter(sd)).startswith("module"):
        sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    else:
        sd = dict(sd)
    for k in drop_keys:
        sd.pop(k, None)
    return sd


def load_clap_weights(model: torch.nn.Module, path: str | os.PathLike, drop_keys: Sequence[str] = DROP_KEYS,
                      setting: str = "checkpoint", trust: bool = False) -> None:
    """Load a checkpoint strictly (as audiocraft does); a mismatch names the first differing keys."""
    sd = read_clap_state_dict(path, drop_keys, trust)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ClapError(
            f"{setting}={path}: does not fit the CLAP model built here (missing {len(missing)}: {missing[:4]}, "
            f"unexpected {len(unexpected)}: {unexpected[:4]}, shape mismatches {len(shapes)}: {shapes[:3]}). "
            f"The audiocraft protocol needs a HTSAT-base, non-fusion LAION-CLAP checkpoint "
            f"(music_audioset_epoch_15_esc_90.14.pt) and model_size=full.")
    model.load_state_dict(sd, strict=True)


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


def quantize_int16(wav: torch.Tensor) -> torch.Tensor:
    """laion_clap's ``int16_to_float32(float32_to_int16(x))``: clip to ±1, ``* 32767``, truncate to int16,
    ``/ 32767`` (what ``use_tensor=False`` and stable-audio-metrics do; audiocraft does not)."""
    q = (torch.clamp(wav, -1.0, 1.0) * 32767.0).to(torch.int16)
    return q.to(torch.float32) / 32767.0


# ----------------------------------------------------------------------------------------------------------------
# The embedder
# ----------------------------------------------------------------------------------------------------------------
class ClapEmbedder:
    """Batched audio and text embeddings (L2-normalised, 512-d) from a built CLAP model and a tokenizer."""

    def __init__(self, model: torch.nn.Module, model_cfg: dict, tokenizer: Any, *, device: str | torch.device = "cpu",
                 text_max_length: int = 77, text_padding: str = "max_length", text_truncation: bool = True) -> None:
        self.model = model.to(device).eval()
        self.model_cfg = model_cfg
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.text_max_length = int(text_max_length)
        self.text_padding = text_padding
        self.text_truncation = bool(text_truncation)
        vocab = self.model.text_branch.embeddings.word_embeddings.num_embeddings
        if len(tokenizer) > vocab:
            raise ClapError(f"the tokenizer has {len(tokenizer)} entries but the text model only {vocab}")

    @property
    def clip_samples(self) -> int:
        return int(self.model_cfg["audio_cfg"]["clip_samples"])

    @property
    def sample_rate(self) -> int:
        return int(self.model_cfg["audio_cfg"]["sample_rate"])

    @torch.no_grad()
    def embed_audio(self, waves: Sequence[torch.Tensor], longer: Sequence[bool] | None = None) -> torch.Tensor:
        """``waves``: 1-D tensors of exactly ``clip_samples`` samples at ``sample_rate`` (see
        :func:`fit_to_length`). Runs ``CLAP.get_audio_embedding`` on the batch."""
        if longer is None:
            longer = [False] * len(waves)
        data = []
        for w, lg in zip(waves, longer):
            if w.dim() != 1 or w.shape[0] != self.clip_samples:
                raise ValueError(f"embed_audio expects 1-D waveforms of {self.clip_samples} samples, "
                                 f"got {tuple(w.shape)}")
            data.append({"waveform": w.float(), "longer": torch.tensor([bool(lg)])})
        return self.model.get_audio_embedding(data)

    @torch.no_grad()
    def embed_text(self, captions: Sequence[str]) -> torch.Tensor:
        """RoBERTa tokens (``padding="max_length", truncation=True, max_length=77``) -> ``CLAP.get_text_embedding``."""
        from evalkit.backbones.tokenizers import encode_batch

        enc = encode_batch(self.tokenizer, captions, max_length=self.text_max_length, padding=self.text_padding,
                           truncation=self.text_truncation)
        return self.model.get_text_embedding(enc)
