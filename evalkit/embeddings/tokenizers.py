"""Text tokenizers for the metric and generator backbones, and the guard that refuses a broken one.

The trap this module exists for: with ``HF_HUB_OFFLINE=1`` and no local copy, ``transformers`` (5.x) builds an
*empty* tokenizer from ``from_pretrained("roberta-base")`` without raising: its vocabulary holds only the special
tokens, and every caption encodes to ``<s></s>``. ``import laion_clap`` does exactly that at import time. A CLAP
score computed with such a tokenizer is a number about nothing. :func:`check_tokenizer` encodes a test caption and
raises :class:`TokenizerError` when no token other than special/unknown tokens comes out; it knows nothing about
the model, so the MusicGen T5 tokenizer guard uses it too.

:func:`tiny_roberta_tokenizer` is the in-memory tokenizer for random-weight backbones (tests, the offline demo):
the real ``transformers.RobertaTokenizer`` class (byte-level BPE, RoBERTa's pre-tokenizer and ``<s> … </s>``
post-processor, ``<pad>`` = 1 as RoBERTa's position ids expect) with a vocabulary of the 5 special tokens and the
256 byte symbols and no merges, so every caption encodes to real tokens, one per byte.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from evalkit.errors import InputError

#: RoBERTa's special tokens, in RoBERTa's id order (<s>=0, <pad>=1, </s>=2, <unk>=3); <mask> follows.
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

#: The caption every tokenizer must encode to more than its special tokens before anything is scored.
CHECK_CAPTION = "a calm piano melody with soft strings"


class TokenizerError(InputError, RuntimeError):
    """A tokenizer that is missing or cannot encode text; the message says what to download or set."""


def _ids(tok: Any, caption: str) -> list[int]:
    enc = tok(caption, add_special_tokens=True)
    ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], (list, tuple)):
        ids = ids[0]
    return [int(i) for i in ids]


def check_tokenizer(tok: Any, caption: str = CHECK_CAPTION, setting: str = "tokenizer", *,
                    source: str | None = None, download_hint: str | None = None) -> list[int]:
    """Encode ``caption`` with ``tok`` (a ``transformers`` tokenizer) and return its ids; raise
    :class:`TokenizerError` if none of them is a real (non-special, non-unknown) token.

    ``setting`` is the config key that selects the tokenizer (``metrics.clap.tokenizer``), ``source`` where it
    was loaded from, ``download_hint`` what to download; all three go into the error message."""
    if not caption or not caption.strip():
        raise ValueError("check_tokenizer needs a non-empty test caption")
    what = source or getattr(tok, "name_or_path", "") or type(tok).__name__
    try:
        ids = _ids(tok, caption)
    except Exception as exc:  # a tokenizer that cannot even run is as broken as an empty one
        raise TokenizerError(f"{setting}: the tokenizer {what!r} failed to encode a test caption "
                             f"({type(exc).__name__}: {exc}).") from exc
    special = set(int(i) for i in (getattr(tok, "all_special_ids", None) or []))
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None:
        special.add(int(unk))
    # a real token carries letters or digits: an empty T5 (Unigram) tokenizer still emits its word marker "▁"
    # between <unk>s, which is neither special nor unknown but says nothing about the caption
    def _wordy(i: int) -> bool:
        try:
            piece = tok.convert_ids_to_tokens(int(i))
        except Exception:
            return True
        return piece is None or any(ch.isalnum() for ch in str(piece))

    if not any(i not in special and _wordy(i) for i in ids):
        try:
            size = len(tok)
        except TypeError:
            size = "?"
        msg = (f"{setting}: the tokenizer {what!r} encodes the test caption {caption!r} to special/unknown tokens "
               f"only (ids {ids}; vocabulary of {size} entries), so every caption would look the same to the model. "
               f"This is what transformers builds when it runs offline (HF_HUB_OFFLINE=1) without a local copy of "
               f"the tokenizer files.")
        if download_hint:
            msg += " " + download_hint
        raise TokenizerError(msg)
    return ids


def tiny_roberta_tokenizer() -> Any:
    """The in-memory RoBERTa-compatible tokenizer for random-weight models (see the module docstring).

    Deterministic and offline; ``len()`` is 261 (5 special tokens + 256 bytes)."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {t: i for i, t in enumerate(ROBERTA_SPECIALS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = RobertaTokenizer(vocab=vocab, merges=[])
    tok.name_or_path = "evalkit:tiny-byte-roberta"
    return tok


ROBERTA_DOWNLOAD_HINT = (
    "Download the tokenizer files once with internet access (`hf download roberta-base vocab.json merges.txt "
    "tokenizer.json tokenizer_config.json config.json`; `hf` is huggingface_hub's command line, installed with "
    "evalkit; it fills the Hugging Face cache that HF_HUB_OFFLINE=1 then reads), or put them in a folder and pass "
    "{setting}=/path/to/that/folder."
)


def load_hf_tokenizer(source: str | os.PathLike, *, cls_name: str = "RobertaTokenizer",
                      setting: str = "tokenizer", download_hint: str | None = None,
                      check_caption: str = CHECK_CAPTION) -> tuple[Any, str]:
    """Load a ``transformers`` tokenizer from a hub name (from the local cache when offline) or a folder, check
    it with :func:`check_tokenizer` and return ``(tokenizer, source)``; ``source`` is what ``describe()``
    records (the folder, or ``hub:<name>@<revision-or-cache-path>``)."""
    import transformers

    cls = getattr(transformers, cls_name)
    hint = (download_hint or "").replace("{setting}", setting)
    path = Path(os.fspath(source)).expanduser()
    is_dir = path.is_dir()
    if not is_dir and (os.sep in os.fspath(source) or os.fspath(source).startswith(".")):
        raise TokenizerError(f"{setting}={source}: no such folder. {hint}".strip())
    name = str(path) if is_dir else os.fspath(source)
    try:
        tok = cls.from_pretrained(name)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise TokenizerError(f"{setting}: cannot load the tokenizer {name!r} ({type(exc).__name__}: {exc}). "
                             f"{hint}".strip()) from exc
    source = name if is_dir else f"hub:{name}"
    check_tokenizer(tok, check_caption, setting, source=source, download_hint=hint)
    return tok, source


def encode_batch(tok: Any, captions: Sequence[str], *, max_length: int, padding: str = "max_length",
                 truncation: bool = True) -> dict:
    """``tok(captions, padding=..., truncation=..., max_length=..., return_tensors="pt")`` as a plain dict."""
    enc = tok(list(captions), padding=padding, truncation=truncation, max_length=max_length, return_tensors="pt")
    return {k: v for k, v in enc.items()}


def resolve_roberta_tokenizer(value: str | None, *, default: str, random_weights: bool, model_size: str,
                              setting: str) -> tuple[Any, str]:
    """A CLAP text tower's tokenizer and its source: ``value`` None -> ``default`` (``roberta-base``, from the local
    Hugging Face cache when offline) for released weights, the in-memory byte-level one for random weights; ``tiny``
    (random weights or a shrunken model only); a hub name; a folder. Every one is checked (:func:`check_tokenizer`).
    Raises :class:`TokenizerError` naming ``setting`` and what to download."""
    choice = str(value) if value is not None else ("tiny" if random_weights else default)
    if choice == "tiny":
        if not random_weights and model_size == "full":
            raise TokenizerError(
                f"{setting}=tiny is the in-memory test tokenizer; released CLAP weights need the real {default} "
                f"tokenizer (leave {setting} unset, or pass a folder).")
        tok = tiny_roberta_tokenizer()
        source = "evalkit:tiny-byte-roberta (in-memory; random-weight mode)"
        check_tokenizer(tok, CHECK_CAPTION, setting, source=source)
        return tok, source
    return load_hf_tokenizer(choice, cls_name="RobertaTokenizer", setting=setting, download_hint=ROBERTA_DOWNLOAD_HINT)
