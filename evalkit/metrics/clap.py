"""CLAP text consistency: cosine similarity of LAION-CLAP audio and text embeddings, averaged over (clip, caption)
pairs. The MusicGen model card's "Text Consistency" column.

Protocol ``audiocraft`` (``audiocraft/metrics/clap_consistency.py: CLAPTextConsistencyMetric``, constants in
``conf/metrics/clap/audiocraft.yaml``): ``convert_audio(..., 48000, 1)`` (julius resample, then channel mean), no
int16 quantisation, HTSAT-base non-fusion CLAP with ``music_audioset_epoch_15_esc_90.14.pt``, RoBERTa tokens
padded/truncated to 77, ``cosine_similarity(eps=1e-8)`` per pair, mean over pairs.

Where evalkit is deliberately different from running audiocraft's code:
- audio longer than 480,000 samples (10 s at 48 kHz) is cropped at a fixed place (``crop: start`` by default),
  where laion_clap picks a random offset, so the same input always gives the same score. MusicCaps clips are 10 s,
  i.e. exactly 480,000 samples, where laion_clap has no randomness and both agree.
- each clip is scored at its own length; audiocraft zero-pads a batch to its longest item (``sizes`` unused), so
  a shorter clip's score there depends on its batch neighbours. Identical when all clips have the same length.
- every clip is paired with its own ``Clip.caption`` (by id), never by file order (frechet-audio-distance's
  ``CLAPScore`` pairs ``os.listdir`` order with the caption list).

Note for the run (``audiocraft/solvers/musicgen.py: evaluate_audio_generation``): audiocraft generates every clip
of a batch for the batch's longest reference, crops to that batch length (not to each clip's ``sizes``),
loudness-normalises, and hands that to all metrics; FAD/KLD/chroma then crop to ``sizes`` themselves, CLAP does
not. So for a reference shorter than its batch's longest (rare in MusicCaps: nearly all clips are 10 s) audiocraft's
CLAP saw the longer generation. This metric scores whatever audio the run gives it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from evalkit.audio import AudioError, convert_audio
from evalkit.backbones.base import all_finite, cpu_threads, run_calls
from evalkit.backbones.clap import (AUDIO_CFG, CROPS, FILLS, ClapBackbone, ClapEmbedder, ClapError, fit_to_length,
                                    quantize_int16)
from evalkit.backbones.tokenizers import (CHECK_CAPTION, ROBERTA_DOWNLOAD_HINT, TokenizerError, check_tokenizer,
                                          load_hf_tokenizer, tiny_roberta_tokenizer)
from evalkit.backbones.weights import resolve_checkpoint
from evalkit.metrics.base import Clip, ClipResult, Metric
from evalkit.metrics.spec import MetricSpec
from evalkit.registry import register_metric

SETTING = "metrics.clap"


def _resolve_tokenizer(recipe: dict, random_weights: bool, model_size: str) -> tuple[Any, str]:
    """``tokenizer: null`` -> the protocol's hub tokenizer (roberta-base, from the local HF cache when offline)
    for released weights, the in-memory byte-level one for random weights; ``tiny``; a hub name; or a folder."""
    spec = recipe.get("tokenizer")
    if spec is None:
        spec = "tiny" if random_weights else recipe.get("tokenizer_name", "roberta-base")
    spec = str(spec)
    if spec == "tiny":
        if not random_weights and model_size == "full":
            raise TokenizerError(
                f"{SETTING}.tokenizer=tiny is the in-memory test tokenizer; released CLAP weights need the real "
                f"roberta-base tokenizer (leave {SETTING}.tokenizer unset, or pass a folder).")
        tok = tiny_roberta_tokenizer()
        source = "evalkit:tiny-byte-roberta (in-memory; random-weight mode)"
        check_tokenizer(tok, CHECK_CAPTION, f"{SETTING}.tokenizer", source=source)
        return tok, source
    return load_hf_tokenizer(spec, cls_name="RobertaTokenizer", setting=f"{SETTING}.tokenizer",
                             download_hint=ROBERTA_DOWNLOAD_HINT)


@register_metric("clap")
class ClapScore(Metric):
    spec = MetricSpec(
        name="clap", primary="clap", higher_is_better=True, card_column="Text Consistency", decimals=3,
        tolerance="2%", per_clip=("clap",), aggregate="mean", value_column="clap", needs_reference=False,
        needs_captions=True, min_clips=1,
        description="cosine similarity of LAION-CLAP audio and caption embeddings, mean over clips",
    )

    def __init__(self, recipe, device: str | torch.device = "cpu") -> None:
        super().__init__(recipe, device)
        self.add_state("cosine_sum", ())
        r = self.recipe
        self.crop = str(r.get("crop") or "start")
        self.fill = str(r.get("fill") or "repeatpad")
        if self.crop not in CROPS:
            raise ValueError(f"{SETTING}.crop={self.crop!r}: expected one of {CROPS}")
        if self.fill not in FILLS:
            raise ValueError(f"{SETTING}.fill={self.fill!r}: expected one of {FILLS}")
        self.model_size = str(r.get("model_size") or "full")
        if str(r.get("tmodel", "roberta")) != "roberta":
            raise ClapError(f"{SETTING}.tmodel={r.get('tmodel')!r}: only the roberta text tower (audiocraft's) is "
                            f"implemented")
        if bool(r.get("enable_fusion", False)):
            raise ClapError(f"{SETTING}: fusion CLAP models are not implemented (protocol {r.get('protocol')!r})")
        self.sample_rate = int(r["sample_rate"])
        self.max_samples = int(r["max_samples"])
        self.quantize = bool(r.get("quantize_int16", False))
        self.eps = float(r["cosine_eps"])
        self.batch_size = max(1, int(r.get("batch_size") or 8))

        self.checkpoint = resolve_checkpoint(
            r.get("checkpoint"), setting=f"{SETTING}.checkpoint", filename=r["checkpoint_file"],
            url=r["checkpoint_url"], expected_sha256=r.get("checkpoint_sha256"),
            policy=r.get("backbone_weights", "released"))
        if self.model_size != "full" and not self.checkpoint.random and r.get("checkpoint") is None:
            raise ClapError(f"{SETTING}.model_size={self.model_size} is a shrunken test model; the released "
                            f"checkpoint needs model_size=full")
        if str(r.get("amodel", "HTSAT-base")) != "HTSAT-base" or (self.sample_rate, self.max_samples) != (
                AUDIO_CFG["sample_rate"], AUDIO_CFG["clip_samples"]):
            raise ClapError(f"{SETTING}: amodel={r.get('amodel')}, sample_rate={self.sample_rate}, max_samples="
                            f"{self.max_samples}: only laion_clap's HTSAT-base (48 kHz, 480,000 samples) is built")
        # the tokenizer first: a broken one must stop the run before minutes of model building
        self.tokenizer, self.tokenizer_source = _resolve_tokenizer(r, self.checkpoint.random, self.model_size)
        self.backbone = ClapBackbone(self.model_size, int(r.get("random_seed") or 0),
                                     vocab_size=len(self.tokenizer) if self.model_size == "tiny" else None,
                                     drop_keys=tuple(r.get("drop_state_keys") or ()))
        net = self.backbone.load(self.checkpoint, setting=f"{SETTING}.checkpoint", device=self.device,
                                 trust=bool(r.get("trust_checkpoint", False)))
        self.embedder = ClapEmbedder(net.model, {**net.info, "front_end": net.front_end}, self.tokenizer,
                                     device=self.device, text_max_length=int(r["text_max_length"]),
                                     text_padding=str(r.get("text_padding", "max_length")),
                                     text_truncation=bool(r.get("text_truncation", True)))

    # -- per clip ------------------------------------------------------------------------------------------------------
    def prepare(self, clip: Clip) -> tuple[torch.Tensor, bool]:
        """The clip's audio as the model sees it: 48 kHz mono (resample, then channel mean), cut or filled to
        ``max_samples``, quantised only if the protocol says so. Raises :class:`AudioError` for unusable audio."""
        audio = clip.audio
        if audio is None or audio.numel() == 0:
            raise AudioError("empty audio")
        if audio.dim() == 1:
            audio = audio[None]
        audio = audio.to(torch.float32)
        if not all_finite(audio):
            raise AudioError("audio holds NaN or infinite samples")
        wav = convert_audio(audio, int(clip.sample_rate), self.sample_rate, 1)[0]
        wav, longer = fit_to_length(wav, self.max_samples, crop=self.crop, fill=self.fill)
        if self.quantize:
            wav = quantize_int16(wav)
        return wav, longer

    def cosine(self, audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(audio_emb, text_emb, dim=1, eps=self.eps)

    def _prepare_all(self, clips: Sequence[Clip], out: dict[str, ClipResult]
                     ) -> list[tuple[str, str, torch.Tensor, bool]]:
        """``(id, caption, model input, longer)`` of each scorable clip; skipped clips go to ``out`` with the reason.
        On a CPU the clips are prepared side by side on the intra-op threads' count of workers, one thread each
        (resampling is small ops; a clip's result does not depend on where it was computed)."""
        ready: list[tuple[str, str, torch.Tensor, bool]] = []
        seen: set[str] = set()
        for clip in clips:
            if clip.id in seen:
                raise ValueError(f"clip id {clip.id!r} appears twice in one batch")
            seen.add(clip.id)
        cpu = self.device.type == "cpu"
        workers = torch.get_num_threads() if cpu else 1
        with cpu_threads(1 if cpu else None):
            prepared = run_calls(self._try_prepare, list(clips), workers)
        for clip, (inputs, why) in zip(clips, prepared):
            if why is not None:
                out[clip.id] = self.skip(why)
            else:
                ready.append((clip.id, clip.caption, *inputs))
        return ready

    def _try_prepare(self, clip: Clip) -> tuple[tuple[torch.Tensor, bool] | None, str | None]:
        if not isinstance(clip.caption, str) or not clip.caption.strip():
            return None, "empty caption"
        try:
            return self.prepare(clip), None
        except AudioError as exc:
            return None, str(exc)

    def update(self, clips: Sequence[Clip]) -> dict[str, ClipResult]:
        """Cosine similarity of each clip's audio embedding with its own caption's (``clip.caption``; pairs by id).

        ``clip.audio``: ``[C, T]`` float32 at ``clip.sample_rate`` (converted to 48 kHz mono: julius, then channel
        mean; cut or filled to ``max_samples`` = 10 s). Per clip: ``clap`` (cosine, in [-1, 1]). A clip with an empty
        caption or unusable audio (empty, non-finite) is skipped with the reason. Raises ``ValueError`` when a clip id
        appears twice in one batch (two captions for one audio)."""
        out: dict[str, ClipResult] = {}
        ready = self._prepare_all(clips, out)
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start:start + self.batch_size]
            a = self.embedder.embed_audio([c[2].to(self.device) for c in chunk], [c[3] for c in chunk])
            t = self.embedder.embed_text([c[1] for c in chunk])
            cos = self.cosine(a, t).detach().cpu()
            self.state["cosine_sum"] = self.state["cosine_sum"] + cos.double().sum().numpy()
            self.state["n_clips"] = self.state["n_clips"] + float(len(chunk))
            for (clip_id, *_), value in zip(chunk, cos.tolist()):
                out[clip_id] = ClipResult(values={"clap": float(value)})
        return out

    def _compute(self) -> dict[str, float]:
        n = float(self.state["n_clips"])
        return {"clap": float(np.float64(self.state["cosine_sum"]) / n)}

    def describe(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "protocol": r.get("protocol", ""),
            **self.checkpoint.describe(),
            "tokenizer": self.tokenizer_source,
            "model": self.backbone.describe()["model"],
            "model_size": self.model_size,
            "crop": self.crop,
            "fill": self.fill,
            "quantize_int16": self.quantize,
        }
