"""MusicGen generation on tiny random-weight models: exact sample counts, channels, seeds, sampling settings,
the tokenizer guard, local-path loading, offline errors, melody conditioning sanity."""
import pytest
from pathlib import Path
import torch

from evalkit.data.prompts import Prompt
from evalkit.generate.musicgen import (ModelLoadError, MusicGenGenerator, TokenizerError, VARIANTS,
                                       check_text_tokenizer, derive_seed)
from evalkit.generate.tiny import TINY_MODELS, tiny_musicgen, tiny_tokenizer

GEN = {"duration": 10.0, "use_sampling": True, "top_k": 250, "top_p": 0.0, "temperature": 1.0,
       "guidance_scale": 3.0, "sort_by_length": True}
PROMPTS = [Prompt("a", "an energetic rock song with distorted guitars"), Prompt("b", "calm piano")]


def tiny(name, duration=1.0, **kw):
    return MusicGenGenerator({"name": name, "tiny": name, "melody": TINY_MODELS[name][2]}, {**GEN, "duration": duration},
                             device="cpu", **kw)


def test_all_ten_variants_are_configured():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    assert len(VARIANTS) == 10
    for name, hub_id in VARIANTS.items():
        node = yaml.safe_load((conf / f"{name}.yaml").read_text())["model"]
        assert node["hub_id"] == hub_id and node["melody"] == ("melody" in name)
        assert node["channels"] == (2 if name.startswith("stereo") else 1)


@pytest.mark.parametrize("name, channels", [("tiny-mono", 1), ("tiny-stereo", 2)])
def test_ten_seconds_is_exactly_320000_samples(name, channels):
    g = tiny(name, duration=10.0, batch_size=1)
    assert g.max_new_tokens == 503 and g.num_samples == 320_000 and g.sample_rate == 32000
    (batch, _) = g.plan(PROMPTS)
    (clip,) = g.generate_batch(batch)
    assert clip.audio.shape == (channels, 320_000)
    assert clip.sample_rate == 32000 and clip.seed == batch.seed
    assert torch.isfinite(clip.audio).all()


def test_the_256_token_trap():
    # transformers keeps max_new_tokens - 3 frames: 256 tokens are 253 frames = 5.06 s, not 5.12 s
    g = tiny("tiny-mono", duration=5.06)
    assert g.max_new_tokens == 256 and g.num_samples == 253 * 640


def test_sampling_settings_follow_audiocraft():
    g = tiny("tiny-mono")
    kw = g._sampling_kwargs()
    assert kw["do_sample"] is True and kw["top_k"] == 250 and kw["temperature"] == 1.0 and kw["guidance_scale"] == 3.0
    assert kw["top_p"] == 1.0  # audiocraft's top_p=0 means "off"; transformers' top_p=0 would keep one token


def test_seeds_reproduce_and_differ():
    g = tiny("tiny-mono", batch_size=2)
    (batch,) = g.plan(PROMPTS)
    a = g.generate_batch(batch)
    b = g.generate_batch(batch)
    assert all(x.audio.equal(y.audio) for x, y in zip(a, b))
    assert not a[0].audio.equal(a[1].audio)
    g2 = tiny("tiny-mono", batch_size=2, seed=1)
    (batch2,) = g2.plan(PROMPTS)
    assert batch2.seed != batch.seed
    assert not g2.generate_batch(batch2)[0].audio.equal(a[0].audio)


def test_plan_sorts_by_length_and_seeds_are_recorded():
    g = tiny("tiny-mono", batch_size=1)
    plan = g.plan(PROMPTS)
    assert [b.prompts[0].id for b in plan] == ["b", "a"]  # the short caption first
    assert plan[0].seed == derive_seed(0, "b") and plan[1].seed == derive_seed(0, "a")


def test_empty_tokenizer_is_refused():
    from transformers import T5TokenizerFast

    empty = T5TokenizerFast(extra_ids=0)  # what an offline from_pretrained can silently return
    assert len(empty) < 10
    with pytest.raises(TokenizerError, match=r"model=small: .*special/unknown tokens only.*`hf download <hub id>`"):
        check_text_tokenizer(empty, "model=small")
    check_text_tokenizer(tiny_tokenizer(), "model=tiny")  # a real one passes


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="duration"):
        tiny("tiny-mono", duration=-1)
    with pytest.raises(ValueError, match="precision"):
        tiny("tiny-mono", precision="fp8")
    with pytest.raises(ValueError, match="guidance_scale"):
        MusicGenGenerator({"name": "t", "tiny": "tiny-mono"}, {**GEN, "guidance_scale": 0.5}, device="cpu")


def test_offline_hub_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelLoadError, match="`hf download facebook/musicgen-small`"):
        MusicGenGenerator({"name": "small", "hub_id": "facebook/musicgen-small"}, GEN, device="cpu")


def test_the_download_command_the_messages_name_exists():
    """The advice must work: huggingface_hub (installed with evalkit) ships `hf`; `huggingface-cli` is gone."""
    import shutil
    import subprocess
    import sys

    from evalkit.generate.musicgen import download_command

    cmd = download_command("facebook/musicgen-small").split()
    exe = shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or shutil.which(cmd[0])
    assert exe, "the `hf` command is not installed"
    out = subprocess.run([exe, cmd[1], "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "REPO_ID" in out.stdout


def test_local_path_loads_released_layout(tmp_path):
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    model, tok, _ = tiny_musicgen("tiny-mono", seed=3)
    model.save_pretrained(tmp_path)
    MusicgenProcessor(feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000), tokenizer=tok).save_pretrained(tmp_path)
    # the default config asks for SDPA: EnCodec has none, so it must be asked for the decoder only
    import yaml
    from pathlib import Path

    default = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/generation/audiocraft.yaml").read_text())
    assert default["attn_implementation"] == "sdpa"
    g = MusicGenGenerator({"name": "local", "path": str(tmp_path)}, {**default, "duration": 0.5}, device="cpu")
    assert g.source == str(tmp_path) and g.random_weights is False
    assert g.model.decoder.config._attn_implementation == "sdpa"
    (batch,) = g.plan(PROMPTS[:1])
    (clip,) = g.generate_batch(batch)
    assert clip.audio.shape == (1, 25 * 640)
    with pytest.raises(ModelLoadError, match="released files"):
        MusicGenGenerator({"name": "local", "path": str(tmp_path / "nope")}, GEN, device="cpu")


def test_melody_conditioning_changes_the_audio(music_dir):
    """transformers once silently dropped text, chroma and guidance for MusicgenMelody: with one seed, different
    melodies and different captions must both change the audio."""
    from evalkit.audio import load_audio
    from evalkit.generate.musicgen import Batch

    g = tiny("tiny-melody", duration=1.0)
    m1 = load_audio(music_dir / "shared00_bach_bwv66-6.melody.flac")
    m2 = load_audio(music_dir / "shared09_mozart_k80.melody.flac")
    p = [Prompt("x", "a baroque chorale on a church organ")]
    base = g.generate_batch(Batch(0, 123, p), [m1])[0].audio
    assert base.shape == (1, 50 * 640)
    assert g.generate_batch(Batch(0, 123, p), [m1])[0].audio.equal(base)
    assert not g.generate_batch(Batch(0, 123, p), [m2])[0].audio.equal(base)
    other = [Prompt("x", "a fast techno track with heavy drums")]
    assert not g.generate_batch(Batch(0, 123, other), [m1])[0].audio.equal(base)
    with pytest.raises(ValueError, match="melody"):
        g.generate_batch(Batch(0, 123, p), None)


def test_tiny_stereo_melody_shapes(music_dir):
    from evalkit.audio import load_audio
    from evalkit.generate.musicgen import Batch

    g = tiny("tiny-stereo-melody", duration=0.5)
    out = g.generate_batch(Batch(0, 1, PROMPTS), [load_audio(music_dir / "shared01_bach_bwv269.flac")] * 2)
    assert [c.audio.shape for c in out] == [(2, 25 * 640)] * 2
