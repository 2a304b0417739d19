"""MusicGen generation with transformers: all ten released variants, text and melody conditioning.

The generation protocol (``conf/generation/audiocraft.yaml``) is audiocraft's MusicCaps evaluation: sampling,
top_k 250, top_p 0 (= off), temperature 1, classifier-free guidance 3, fp32, 10 s. Length: with the delay pattern
transformers keeps ``max_new_tokens - max_delay`` frames (max_delay 3 for mono's 4 codebooks and stereo's 2 x 4), so
``max_new_tokens = duration * frame_rate + max_delay``: 503 tokens -> 500 frames -> exactly 320,000 samples at 32 kHz.

Batches: prompts sorted by token length (then id), cut into ``batch_size`` groups; each batch gets a seed derived
from the run seed and its ids (recorded per clip), so a resumed run regenerates a batch bit for bit.
"""
from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Sequence

import numpy as np
import torch

from evalkit.audio import convert_audio
from evalkit.embeddings.tokenizers import TokenizerError, check_tokenizer  # noqa: F401 (TokenizerError re-exported)
from evalkit.data.prompts import Prompt
from evalkit.errors import InputError
from evalkit.generate.base import Batch, GeneratedClip, Generator
from evalkit.registry import register_generator

#: evalkit model name -> Hugging Face hub id of the released checkpoint.
VARIANTS = {
    "small": "facebook/musicgen-small",
    "medium": "facebook/musicgen-medium",
    "large": "facebook/musicgen-large",
    "melody": "facebook/musicgen-melody",
    "melody-large": "facebook/musicgen-melody-large",
    "stereo-small": "facebook/musicgen-stereo-small",
    "stereo-medium": "facebook/musicgen-stereo-medium",
    "stereo-large": "facebook/musicgen-stereo-large",
    "stereo-melody": "facebook/musicgen-stereo-melody",
    "stereo-melody-large": "facebook/musicgen-stereo-melody-large",
}
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOKENIZER_PROBE = "an upbeat jazz tune with a walking bass and a bright piano melody"


class ModelLoadError(InputError, RuntimeError):
    pass


def check_text_tokenizer(tokenizer, setting: str) -> None:
    """Refuse a tokenizer that encodes a real caption into special/unknown tokens only: offline,
    ``T5Tokenizer.from_pretrained``/``AutoTokenizer`` can return an *empty* tokenizer without raising, and generating
    from its ``<unk>`` prompts would give unconditional audio and a silently wrong evaluation."""
    check_tokenizer(tokenizer, TOKENIZER_PROBE, setting,
                    download_hint="Download the model's files while online (`hf download <hub id>`) or "
                                  "pass model.path=DIR with a complete local copy.")


def download_command(hub_id: str | None) -> str:
    """The command that puts a model's files in the Hugging Face cache: huggingface_hub's ``hf`` (its older
    ``huggingface-cli`` is gone from current releases)."""
    return f"hf download {hub_id}"


def derive_seed(run_seed: int, key: str) -> int:
    return int(hashlib.sha256(f"{run_seed}:{key}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def resolve_device(device: str) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@register_generator("musicgen")
class MusicGenGenerator(Generator):
    """``model.generator=musicgen`` (text) and ``musicgen-melody`` (text + melody chroma)."""

    name = "musicgen"

    def __init__(self, model_cfg, gen_cfg, *, device: str = "auto", precision: str = "fp32", seed: int = 0,
                 batch_size: int = 16) -> None:
        self.model_cfg, self.gen_cfg = dict(model_cfg), dict(gen_cfg)
        self.melody = bool(self.model_cfg.get("melody", False))
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: expected one of {sorted(PRECISIONS)}")
        if float(self.gen_cfg["duration"]) <= 0:
            raise ValueError(f"generation.duration={self.gen_cfg['duration']}: must be > 0 seconds")
        if float(self.gen_cfg["guidance_scale"]) < 1 and float(self.gen_cfg["guidance_scale"]) != 0:
            raise ValueError(f"generation.guidance_scale={self.gen_cfg['guidance_scale']}: must be >= 1 (1 = no guidance)")
        if batch_size != "auto" and int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1 or auto")
        self.device = resolve_device(device)
        self.dtype = PRECISIONS[precision]
        self.precision, self.seed = precision, int(seed)
        self.batch_size = batch_size if batch_size == "auto" else int(batch_size)
        self.model, self.tokenizer, self.feature_extractor, self.source = self._load()
        check_text_tokenizer(self.tokenizer, f"model={self.model_cfg.get('name')}")
        self.model.to(self.device, dtype=self.dtype if self.dtype != torch.float32 else None).eval()
        if self.gen_cfg.get("cache_implementation") == "static":
            # transformers' MusicGen generate ignores cache_implementation: install a real static cache (and, with
            # compile=true, transformers' compiled / CUDA-graph decode step on it)
            from evalkit.generate.static_cache import install_static_cache

            install_static_cache(self.model, compile=bool(self.gen_cfg.get("compile")),
                                 compile_mode=str(self.gen_cfg.get("compile_mode") or "reduce-overhead"))
        elif self.gen_cfg.get("compile"):
            raise ValueError("generation.compile=true needs generation.cache_implementation=static (fixed shapes)")
        self.random_weights = bool(self.model_cfg.get("tiny"))
        acfg = self.model.config.audio_encoder
        self.sample_rate = int(acfg.sampling_rate)
        self.frame_rate = int(getattr(acfg, "frame_rate", None) or round(self.sample_rate / math.prod(acfg.upsampling_ratios)))
        dcfg = self.model.config.decoder
        self.channels = int(getattr(dcfg, "audio_channels", 1))
        per_channel = dcfg.num_codebooks // self.channels
        self.max_delay = per_channel - 1

    # -- loading -----------------------------------------------------------------------------------------------------
    def _load(self):
        cfg = self.model_cfg
        if cfg.get("tiny"):
            from evalkit.generate.tiny import tiny_musicgen

            model, tok, fe = tiny_musicgen(cfg["tiny"], seed=int(cfg.get("init_seed", 0)))
            return model, tok, fe, f"random:{cfg['tiny']}"
        from transformers import AutoProcessor

        from evalkit.embeddings.weights import offline

        if self.melody:
            from transformers import MusicgenMelodyForConditionalGeneration as cls
        else:
            from transformers import MusicgenForConditionalGeneration as cls
        src = cfg.get("path") or cfg.get("hub_id")
        if not src:
            raise ModelLoadError(f"model={cfg.get('name')}: set model.hub_id or model.path")
        local_only = offline() or bool(cfg.get("path"))
        kw = dict(local_files_only=local_only, revision=cfg.get("revision"))
        try:
            processor = AutoProcessor.from_pretrained(src, **kw)
            attn = self.gen_cfg.get("attn_implementation")
            # per sub-model: EnCodec has no SDPA kernel, and asking for it model-wide refuses to load
            model = cls.from_pretrained(src, attn_implementation={"decoder": attn} if attn else None, **kw)
        except (OSError, ValueError) as exc:
            hint = ("the folder must hold the released files (config.json, model weights, tokenizer, "
                    "preprocessor_config.json)" if cfg.get("path") else
                    f"downloads are off (HF_HUB_OFFLINE=1): run `{download_command(cfg.get('hub_id'))}` "
                    f"while online, or pass model.path=DIR" if local_only else "check the hub id and your network")
            raise ModelLoadError(f"cannot load {src} for model={cfg.get('name')}: {exc}. {hint}") from exc
        return model, processor.tokenizer, getattr(processor, "feature_extractor", None) if self.melody else None, src

    def describe(self) -> dict[str, Any]:
        return {"name": self.model_cfg.get("name"), "hub_id": self.model_cfg.get("hub_id"), "source": self.source,
                "label": str(self.model_cfg.get("label") or self.model_cfg.get("name")),
                "random_weights": self.random_weights, "sample_rate": self.sample_rate, "channels": self.channels,
                "frame_rate": self.frame_rate, "max_new_tokens": self.max_new_tokens, "precision": self.precision,
                "device": str(self.device), "melody": self.melody}

    # -- planning ----------------------------------------------------------------------------------------------------
    @property
    def max_new_tokens(self) -> int:
        return int(round(float(self.gen_cfg["duration"]) * self.frame_rate)) + self.max_delay

    @property
    def num_samples(self) -> int:
        return int(round(float(self.gen_cfg["duration"]) * self.frame_rate)) * (self.sample_rate // self.frame_rate)

    @property
    def expected_samples(self) -> int:
        return self.num_samples

    def cache_identity(self) -> dict[str, Any]:
        """The model's identity and every generation setting (speed settings included: they are meant to give the
        same samples, but a cache must not bet on it) and the precision."""
        m = self.model_cfg
        return {"model": {k: m.get(k) for k in ("name", "hub_id", "revision", "path", "tiny", "init_seed", "melody")},
                "generation": dict(self.gen_cfg), "precision": self.precision}

    def batch_meta(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens}

    def progress_units(self, batch: Batch) -> tuple[int, str]:
        return self.max_new_tokens, "step"

    def plan(self, prompts: Sequence[Prompt]) -> list[Batch]:
        if self.batch_size == "auto":
            raise ValueError("batch_size=auto: call find_batch_size(prompts) first")
        prompts = list(prompts)
        if self.gen_cfg.get("sort_by_length", True):
            lengths = {p.id: len(self.tokenizer(p.caption, verbose=False)["input_ids"]) for p in prompts}
            prompts.sort(key=lambda p: (lengths[p.id], p.id))
        batches = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i:i + self.batch_size]
            batches.append(Batch(len(batches), derive_seed(self.seed, "|".join(p.id for p in chunk)), chunk))
        return batches

    # -- generation --------------------------------------------------------------------------------------------------
    def _sampling_kwargs(self) -> dict[str, Any]:
        g = self.gen_cfg
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "guidance_scale": float(g["guidance_scale"]) or None}
        if g.get("cache_implementation"):
            kw["cache_implementation"] = g["cache_implementation"]
        if g.get("use_sampling", True):
            kw.update(do_sample=True, temperature=float(g["temperature"]), top_k=int(g["top_k"]) or None)
            # audiocraft: top_p > 0 -> nucleus sampling, else top-k. transformers would treat top_p=0 as "keep 1 token".
            kw["top_p"] = float(g["top_p"]) if float(g.get("top_p") or 0) > 0 else 1.0
        else:
            kw.update(do_sample=False)
        return kw

    @torch.no_grad()
    def generate_batch(self, batch: Batch, melodies: Sequence[tuple[torch.Tensor, int]] | None = None,
                       max_new_tokens: int | None = None, on_step=None) -> list[GeneratedClip]:
        captions = [p.caption for p in batch.prompts]
        # as audiocraft's T5Conditioner: padding, no truncation (T5's relative positions take captions of any
        # length); verbose=False only silences transformers' "longer than 512" notice, which does not apply
        inputs = self.tokenizer(captions, padding=True, return_tensors="pt", verbose=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        if self.melody:
            if melodies is None:
                raise ValueError("a melody model needs melody audio per prompt (or melody.source=none for text only)")
            if any(m is not None for m in melodies):
                inputs["input_features"] = self.melody_features(melodies).to(self.device, self.dtype)
        torch.manual_seed(batch.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(batch.seed)
        kw = self._sampling_kwargs()
        if on_step is not None:
            kw["logits_processor"] = _step_counter(on_step)
        if max_new_tokens is not None:  # probing memory (find_batch_size): no clips are returned
            kw["max_new_tokens"] = max_new_tokens
            self.model.generate(**inputs, **kw)
            return []
        audio = self.model.generate(**inputs, **kw)
        audio = audio.float().cpu()
        n = self.num_samples
        if audio.shape[-1] < n:
            raise RuntimeError(f"generation produced {audio.shape[-1]} samples, expected {n} ({self.max_new_tokens} tokens)")
        return [GeneratedClip(p.id, audio[i, :, :n].contiguous(), self.sample_rate, batch.seed,
                              meta={"batch": batch.index, "max_new_tokens": self.max_new_tokens})
                for i, p in enumerate(batch.prompts)]

    def find_batch_size(self, prompts: Sequence[Prompt], start: int = 256) -> int:
        """The largest batch (a power of two <= ``start``) whose generation of the longest prompts fits in memory,
        halving on out-of-memory. Probing generates a few frames only. Sets and returns ``self.batch_size``."""
        longest = sorted(prompts, key=lambda p: len(self.tokenizer(p.caption, verbose=False)["input_ids"]))[-1:]
        n = max(1, min(int(start), len(prompts)))
        n = 1 << (n.bit_length() - 1)
        full = self.max_new_tokens
        while True:
            try:
                probe = Batch(-1, 0, list(longest) * n)
                mel = [None] * n if self.melody else None
                # a static cache allocates its full length up front: a few steps show whether it fits; the dynamic
                # cache grows, so its probe must run to the full length
                steps = 8 if self.gen_cfg.get("cache_implementation") == "static" else full
                self.generate_batch(probe, mel, max_new_tokens=steps)
                break
            except torch.cuda.OutOfMemoryError:
                if n == 1:
                    raise
                n //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        self.batch_size = n
        return n

    def melody_features(self, melodies: Sequence[tuple[torch.Tensor, int] | None]) -> torch.Tensor:
        """Chroma conditioning through the model's own feature extractor (MusicgenMelodyFeatureExtractor), from each
        prompt's melody audio converted to the model's rate, mono. A missing melody gets a silent clip."""
        fe = self.feature_extractor
        sr = int(getattr(fe, "sampling_rate", self.sample_rate))
        arrays = []
        for m in melodies:
            if m is None:
                arrays.append(np.zeros(sr, np.float32))
            else:
                wav, wsr = m
                arrays.append(convert_audio(wav.float(), wsr, sr, 1)[0].numpy())
        feats = fe(arrays, sampling_rate=sr, padding=True, return_tensors="pt")
        return feats["input_features"]


def _step_counter(on_step):
    """A logits processor that leaves the scores alone and calls ``on_step(1)`` once per decoding step (progress)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class StepCounter(LogitsProcessor):
        def __call__(self, input_ids, scores):
            on_step(1)
            return scores

    return LogitsProcessorList([StepCounter()])


register_generator("musicgen-melody")(MusicGenGenerator)


class _MusicgenSpecialTokenNotice(logging.Filter):
    """transformers' generic config check (``PreTrainedConfig.validate_token_ids``, run on the composite
    ``MusicgenConfig``) warns that ``pad_token_id``/``bos_token_id`` 2048 lie outside a 2048-entry vocabulary. MusicGen
    reserves id 2048 on purpose: its decoder embeds ``vocab_size + 1`` tokens, and transformers' own
    ``MusicgenDecoderConfig.validate_token_ids`` accepts it. The released configs (``facebook/musicgen-*``) raise the
    same notice; it changes nothing, so it is dropped here, and only for that exact case."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("_token_id must be `None` or an integer within the vocabulary (between 0 and 2047), got 2048"
                    in msg)


for _name in ("transformers.configuration_utils", "transformers.models.musicgen.configuration_musicgen",
              "transformers.models.musicgen_melody.configuration_musicgen_melody"):
    logging.getLogger(_name).addFilter(_MusicgenSpecialTokenNotice())
