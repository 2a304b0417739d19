"""Prompt sets: the real MusicCaps table through `datasets`, subsets, deterministic selection, prompt files, bad input."""
import json

import pytest

from evalkit.data.prompts import Prompt, PromptError, load_musiccaps, load_prompt_file, load_prompts, select
from evalkit.data.references import ReferenceError, ReferenceSet, synth_clip


@pytest.fixture(scope="module")
def all_caps(musiccaps_csv):
    return load_musiccaps(str(musiccaps_csv), "all")


def test_musiccaps_subsets(musiccaps_csv, all_caps):
    assert len(all_caps) == 5521
    assert len(load_musiccaps(str(musiccaps_csv), "audioset_eval")) == 2858
    assert len(load_musiccaps(str(musiccaps_csv), "balanced")) == 1000
    first = {p.id: p for p in all_caps}["-0Gj8-vB1q4"]
    assert first.caption.startswith("The low quality recording features a ballad song")
    assert first.reference_id == "-0Gj8-vB1q4"


def test_limit_is_deterministic_and_nested(all_caps):
    a = select(all_caps, 10)
    b = select(list(reversed(all_caps)), 10)
    assert [p.id for p in a] == [p.id for p in b]
    assert [p.id for p in select(all_caps, 5)] == [p.id for p in a[:5]]
    with pytest.raises(PromptError, match="limit"):
        select(all_caps, 0)


def test_load_prompts_from_config(musiccaps_csv):
    ps = load_prompts({"name": "musiccaps", "path": str(musiccaps_csv), "subset": "balanced", "limit": 3})
    assert len(ps) == 3
    demo = load_prompts({"name": "demo", "path": None, "limit": None})
    assert len(demo) == 8 and all(p.caption for p in demo)  # 8 x 19 VGGish windows >= 128 dims for FAD
    with pytest.raises(PromptError, match="subset"):
        load_musiccaps(str(musiccaps_csv), "nope")


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("a calm piano\n\n  an angry drum solo  \n", encoding="utf-8")
    ps = load_prompt_file(tmp_path / "p.txt")
    assert [(p.id, p.caption) for p in ps] == [("prompt-0001", "a calm piano"), ("prompt-0002", "an angry drum solo")]
    (tmp_path / "p.csv").write_text("id,caption\nx1,\"jazz, with brass\"\nx2,techno\n", encoding="utf-8")
    assert [(p.id, p.caption) for p in load_prompt_file(tmp_path / "p.csv")] == [("x1", "jazz, with brass"), ("x2", "techno")]
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "j1", "caption": "folk", "reference_id": "r9"}) + "\n", encoding="utf-8")
    (p,) = load_prompt_file(tmp_path / "p.jsonl")
    assert p == Prompt("j1", "folk", "r9") and p.ref_key == "r9"


@pytest.mark.parametrize("content, match", [
    ("id,caption\na,hello\nb,\n", "'b'.*empty caption"),
    ("id,caption\na,hello\na,world\n", "duplicate id 'a'"),
    ("id,text\na,hello\n", "the header\\) is id, text; a prompts table needs the columns id and caption"),
])
def test_bad_prompt_files(tmp_path, content, match):
    f = tmp_path / "bad.csv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(PromptError, match=match):
        load_prompt_file(f)


def test_non_utf8_prompt_file(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9 music\n".encode("latin-1"))
    with pytest.raises(PromptError, match="latin.txt: not UTF-8"):
        load_prompt_file(f)


def test_reference_dir(tmp_path):
    from evalkit.audio import save_audio

    save_audio(tmp_path / "a.wav", synth_clip("a", 16000, 0.5), 16000)
    save_audio(tmp_path / "b.flac", synth_clip("b", 16000, 0.5), 16000)
    (tmp_path / "notes.txt").write_text("x")
    ref = ReferenceSet.from_dir(tmp_path)
    assert sorted(ref.paths) == ["a", "b"]
    assert ref.missing(["a", "c"]) == ["c"] and ref.extra(["a"]) == ["b"]
    save_audio(tmp_path / "a.flac", synth_clip("a", 16000, 0.5), 16000)
    with pytest.raises(ReferenceError, match="two files for id 'a'"):
        ReferenceSet.from_dir(tmp_path)
    with pytest.raises(ReferenceError, match="no such folder"):
        ReferenceSet.from_dir(tmp_path / "nope")


def test_synth_clip_is_deterministic():
    a, b = synth_clip("demo-piano", 32000, 1.0), synth_clip("demo-piano", 32000, 1.0)
    assert a.shape == (1, 32000) and a.equal(b)
    assert not a.equal(synth_clip("demo-strings", 32000, 1.0))


def test_folder_prompts_refuse_captions_without_ids_and_a_file_as_folder(tmp_path):
    from evalkit.audio import save_audio
    from evalkit.data.prompts import load_folder_prompts

    for cid in ("c0", "c1"):
        save_audio(tmp_path / f"{cid}.wav", synth_clip(cid, 32000, 1.0), 32000)
    txt = tmp_path / "captions.txt"
    txt.write_text("a calm piano\na loud drum\n", encoding="utf-8")
    with pytest.raises(PromptError, match=r"captions.txt: a .txt file is one caption a line, without ids.*save it as "
                                          r"\.csv \(id,caption\)"):
        load_folder_prompts(str(tmp_path), str(txt))
    csv = tmp_path / "captions.csv"
    csv.write_text("id,caption\nc0,a calm piano\nc1,a loud drum\n", encoding="utf-8")
    assert [(p.id, p.caption) for p in load_folder_prompts(str(tmp_path), str(csv))] == \
        [("c0", "a calm piano"), ("c1", "a loud drum")]
    with pytest.raises(PromptError, match=r"c0.wav: is a file, not a folder"):
        load_folder_prompts(str(tmp_path / "c0.wav"), str(csv))
    with pytest.raises(ReferenceError, match=r"reference.dir=.*c1.wav: is a file, not a folder"):
        ReferenceSet.from_dir(tmp_path / "c1.wav")


def test_ids_match_across_unicode_normalisations(tmp_path):
    """A file named caf\u00e9 written decomposed (NFD, as macOS does) matches the composed id of a caption table and
    of a reference file: they look identical, and a new user could not see why 'no caption' was raised."""
    import unicodedata

    from evalkit.audio import save_audio
    from evalkit.data.prompts import load_folder_prompts

    nfd, nfc = unicodedata.normalize("NFD", "café"), "café"
    assert nfd != nfc
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    save_audio(gen / f"{nfd}.wav", synth_clip("x", 32000, 1.0), 32000)
    save_audio(ref / f"{nfc}.wav", synth_clip("y", 32000, 1.0), 32000)
    csv = tmp_path / "c.csv"
    csv.write_text(f"id,caption\n{nfc},a calm piano\n", encoding="utf-8")
    [p] = load_folder_prompts(str(gen), str(csv))
    assert p.id == nfd and p.caption == "a calm piano"
    refs = ReferenceSet.from_dir(ref)
    assert refs.get(nfd) == ref / f"{nfc}.wav" and refs.missing([nfd]) == [] and refs.extra([nfd]) == []
