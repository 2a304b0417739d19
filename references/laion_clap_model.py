"""laion_clap's own CLAP, built offline, and audiocraft's CLAP text consistency around it: the parity reference for
evalkit's CLAP (tests and benchmarks).

evalkit computes CLAP with ``transformers.ClapModel`` (``evalkit/embeddings/clap.py``); these are laion_clap's classes
(``clap_module.model.CLAP``, HTSAT-base + roberta, non-fusion), built the way ``laion_clap.CLAP_Module`` builds them
but without its hub downloads, so tests can load the same weights into both and compare. Needs the extra
``evalkit[reference]`` (laion-clap, which pins numpy<2).

- ``import laion_clap`` imports ``laion_clap.training.data``, which builds three tokenizers from the hub at import
  time (with ``HF_HUB_OFFLINE=1`` they come back *empty*; without it the import retries the hub for minutes): only
  ``clap_module`` (the model package inside ``laion_clap``) is imported here;
- ``CLAP(...)`` calls ``RobertaModel.from_pretrained("roberta-base")`` for weights that a checkpoint then
  overwrites: it gets a randomly initialised ``RobertaModel`` of roberta-base's config instead.

From evalkit it takes the shrunken test architecture's sizes (``TINY_HTSAT``, ``TINY_ROBERTA``) and roberta-base's
config, so that a tiny laion model and a tiny evalkit model can hold the same weights.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import warnings
from copy import deepcopy
from typing import Any, Sequence
from unittest import mock

import torch

from evalkit.embeddings.clap import ROBERTA_BASE, TINY_HTSAT, TINY_ROBERTA, ClapError

_BUILD_LOCK = threading.Lock()


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
               seed: int = 0, enable_fusion: bool = False) -> tuple[torch.nn.Module, dict]:
    """``clap_module.model.CLAP`` as ``create_model(amodel, "roberta", enable_fusion=...)`` builds it
    (``CLAP_Module(enable_fusion=True)``: ``fusion_type="aff_2d"``), with random weights drawn from ``seed`` (the
    global RNG is left as it was). Returns ``(model in eval mode, model_cfg)`` where ``model_cfg`` is the dict
    ``CLAP_Module.model_cfg`` would hold."""
    if size not in ("full", "tiny"):
        raise ClapError(f"model_size={size!r}: expected 'full' or 'tiny'")
    M, H, _ = clap_modules()
    model_cfg = laion_model_config(amodel)
    model_cfg["text_cfg"]["model_type"] = "roberta"
    model_cfg["enable_fusion"] = bool(enable_fusion)
    model_cfg["fusion_type"] = "aff_2d" if enable_fusion else "None"
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


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking random weights, in place: every learnable tensor and statistic perturbed (not the frozen front
    end, not index buffers/masks), ``bn0`` holding log-mel dB statistics as a trained one does (a freshly initialised
    bn0, mean 0 and variance 1, makes every clip's embedding nearly the same)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if not v.is_floating_point() or "_extractor." in k or k.endswith("attn_mask"):
                continue
            if k == "audio_branch.bn0.running_mean":  # log-mel dB statistics, as a trained bn0 holds
                v.copy_(-45.0 + 5.0 * torch.randn(v.shape, generator=g))
            elif k == "audio_branch.bn0.running_var":
                v.copy_(150.0 + 50.0 * torch.rand(v.shape, generator=g))
            elif k.endswith("running_var"):
                v.copy_(0.5 + torch.rand(v.shape, generator=g))
            else:
                v.add_(0.02 * torch.randn(v.shape, generator=g))


def load_clap_weights(model: torch.nn.Module, path, drop_keys=("text_branch.embeddings.position_ids",),
                      setting: str = "checkpoint", trust: bool = False) -> None:
    """Load a checkpoint strictly (as audiocraft does); a mismatch names the first differing keys."""
    from evalkit.embeddings.clap import load_converted, read_clap_state_dict

    sd = read_clap_state_dict(path, drop_keys, trust)
    load_converted(model, sd, setting=f"{setting}={path}")


class LaionEmbedder:
    """laion_clap's CLAP called the way evalkit called it before ClapModel: get_audio_embedding on
    {"waveform", "longer"} dicts, get_text_embedding on RoBERTa tokens. Batched, L2-normalised, 512-d."""

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
        from evalkit.embeddings.tokenizers import encode_batch

        enc = encode_batch(self.tokenizer, captions, max_length=self.text_max_length, padding=self.text_padding,
                           truncation=self.text_truncation)
        return self.model.get_text_embedding(enc)


def clap_module(model: torch.nn.Module, model_cfg: dict, tokenizer: Any):
    """A ``laion_clap.CLAP_Module`` around an already built CLAP (its constructor would download roberta-base);
    ``tokenizer`` is what its ``tokenize`` attribute holds (a Hugging Face tokenizer)."""
    from laion_clap import CLAP_Module

    mod = CLAP_Module.__new__(CLAP_Module)
    torch.nn.Module.__init__(mod)
    mod.enable_fusion = False
    mod.model, mod.model_cfg, mod.tokenize = model, model_cfg, tokenizer
    return mod


def text_consistency(laion, audio: torch.Tensor, texts: Sequence[str], sample_rate: int, tokenizer: Any,
                     crop_start: bool = False) -> torch.Tensor:
    """``audiocraft/metrics/clap_consistency.py CLAPTextConsistencyMetric.update`` on one batch ``[B, C, T]``: the
    per-item cosines (the metric's ``cosine_sum`` increments; ``compute`` divides their total by the count).

    ``convert_audio(audio, sample_rate, 48000, 1).mean(dim=1)``, ``get_audio_embedding_from_data(audio,
    use_tensor=True)``, ``get_text_embedding(texts, tokenizer=self._tokenizer, use_tensor=True)`` (RoBERTa tokens
    ``padding="max_length", truncation=True, max_length=77``), ``cosine_similarity(..., dim=1, eps=1e-8)``.
    ``crop_start``: laion_clap cuts an input longer than 10 s at a random offset (``rand_trunc``, LAION-AI/CLAP issue
    166); evalkit keeps the first 10 s. With it, each input is cut to its first 480,000 samples before laion_clap
    sees it (laion_clap's own result when its offset is 0)."""
    from references.audiocraft_solver import convert_audio

    def _tokenizer(t):
        return tokenizer(t, padding="max_length", truncation=True, max_length=77, return_tensors="pt")

    with torch.no_grad():
        audio = convert_audio(audio, from_rate=sample_rate, to_rate=48000, to_channels=1).mean(dim=1)
        if crop_start:
            audio = audio[..., :480000]
        audio_embeddings = laion.get_audio_embedding_from_data(audio, use_tensor=True)
        text_embeddings = laion.get_text_embedding(list(texts), tokenizer=_tokenizer, use_tensor=True)
        return torch.nn.functional.cosine_similarity(audio_embeddings, text_embeddings, dim=1, eps=1e-8)
