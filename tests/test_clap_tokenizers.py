"""The tokenizer guard (model-agnostic) and the in-memory RoBERTa tokenizer; no CLAP model is built here."""
from __future__ import annotations

import pytest

from evalkit.embeddings.tokenizers import (CHECK_CAPTION, ROBERTA_DOWNLOAD_HINT, ROBERTA_SPECIALS, TokenizerError,
                                          check_tokenizer, encode_batch, load_hf_tokenizer, tiny_roberta_tokenizer)


def _roberta(vocab_extra=()):
    from transformers import RobertaTokenizer

    vocab = {t: i for i, t in enumerate(ROBERTA_SPECIALS)}
    for s in vocab_extra:
        vocab[s] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[])


def _wordlevel(words):
    """A T5-like tokenizer (words, </s> appended, <unk>), to show the guard knows nothing about RoBERTa."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def test_tiny_tokenizer_encodes_bytes_with_roberta_specials():
    tok = tiny_roberta_tokenizer()
    assert len(tok) == 261  # 5 specials + 256 byte symbols
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    caption = "Lo-fi hip hop, mellow Rhodes ♪"
    ids = tok(caption)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    assert len(ids) == len(caption.encode("utf-8")) + 2  # one token per byte
    assert 3 not in ids  # nothing unknown
    assert tok.decode(ids, skip_special_tokens=True) == caption
    # the protocol's text settings: pad with <pad>=1 to 77, truncate longer captions to 77 keeping </s>
    enc = encode_batch(tok, ["ab", "x" * 200], max_length=77)
    assert enc["input_ids"].shape == (2, 77)
    assert enc["input_ids"][0, :4].tolist() == [0, ids_of(tok, "a"), ids_of(tok, "b"), 2]
    assert set(enc["input_ids"][0, 4:].tolist()) == {1}
    assert enc["attention_mask"][0].sum().item() == 4
    assert enc["attention_mask"][1].sum().item() == 77 and enc["input_ids"][1, -1].item() == 2
    assert check_tokenizer(tok, CHECK_CAPTION, "metrics.clap.tokenizer")[0] == 0


def ids_of(tok, ch):
    return tok.convert_tokens_to_ids(ch)


def test_guard_refuses_an_empty_roberta_tokenizer_with_a_download_hint():
    # what transformers builds offline without a cache: the specials only; every caption -> <s> (<unk>) </s>
    tok = _roberta()
    with pytest.raises(TokenizerError) as err:
        check_tokenizer(tok, CHECK_CAPTION, "metrics.clap.tokenizer", download_hint=ROBERTA_DOWNLOAD_HINT)
    msg = str(err.value)
    assert "metrics.clap.tokenizer" in msg and "special/unknown tokens only" in msg and "roberta-base" in msg
    # a vocabulary that covers some of the caption passes
    ok = _roberta(vocab_extra=["a"])
    assert ok.convert_tokens_to_ids("a") in check_tokenizer(ok, "a", "metrics.clap.tokenizer")


def test_guard_is_model_agnostic():
    empty = _wordlevel([])
    with pytest.raises(TokenizerError, match="model.tokenizer"):
        check_tokenizer(empty, "upbeat jazz", "model.tokenizer", download_hint="get t5-base")
    full = _wordlevel(["upbeat", "jazz"])
    assert check_tokenizer(full, "upbeat jazz", "model.tokenizer") == [3, 4, 1]
    with pytest.raises(ValueError):
        check_tokenizer(full, "  ", "model.tokenizer")


def test_loading_from_an_empty_or_missing_folder_is_refused(tmp_path):
    with pytest.raises(TokenizerError, match=r"metrics\.clap\.tokenizer"):
        load_hf_tokenizer(tmp_path, setting="metrics.clap.tokenizer", download_hint=ROBERTA_DOWNLOAD_HINT)
    with pytest.raises(TokenizerError, match="no such folder"):
        load_hf_tokenizer(tmp_path / "nope", setting="metrics.clap.tokenizer", download_hint=ROBERTA_DOWNLOAD_HINT)


def test_metric_refuses_a_broken_tokenizer_before_building_the_model(tmp_path):
    from tests.test_clap import clap_recipe

    from evalkit.metrics.clap import ClapScore

    with pytest.raises(TokenizerError, match="special/unknown tokens only"):
        ClapScore(clap_recipe(tokenizer=str(tmp_path)))
    # released (non-random) weights with the in-memory test tokenizer: refused too
    fake = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    fake.write_bytes(b"not a checkpoint")
    with pytest.raises(TokenizerError, match="real roberta-base tokenizer"):
        ClapScore(clap_recipe(checkpoint=str(fake), model_size="full", tokenizer="tiny"))
