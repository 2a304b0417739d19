"""Bad input gets a named error or a counted, listed skip - never a silent wrong number (issue: reliability)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.audio import AudioError, load_audio, save_audio
from evalkit.embeddings.weights import CheckpointError, resolve_checkpoint
from evalkit.data.prompts import PromptError, load_prompt_file
from evalkit.data.references import synth_clip
from evalkit.run import run

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def cfg(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("config", overrides=list(overrides))


def _cut_wav(path: Path, seconds: float, subtype: str = "PCM_16", channels: int = 2) -> None:
    """A WAV whose header declares ``seconds`` of audio, with only the first third of its bytes left (an
    interrupted copy): libsndfile reads it without an error as a 3.33 s clip."""
    x = 0.1 * np.random.default_rng(1).standard_normal((int(32000 * seconds), channels)).astype(np.float32)
    sf.write(str(path), x, 32000, subtype=subtype)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    gen, ref = root / "gen", root / "ref"
    gen.mkdir()
    ref.mkdir()
    ids = []
    rng = np.random.default_rng(0)

    def add(i, write, with_ref=True):
        ids.append(i)
        write(gen)
        if with_ref:
            save_audio(ref / f"{i}.flac", synth_clip(i, 32000, 10.0), 32000)

    for k in range(8):  # 8 x 19 windows: enough for FAD's 128-d covariance
        add(f"ok{k}", lambda g, k=k: save_audio(g / f"ok{k}.flac", synth_clip(f"ok{k}", 32000, 10.0) * 0.9, 32000))
    add("corrupt", lambda g: (g / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage"))
    add("empty", lambda g: (g / "empty.wav").write_bytes(b""))
    add("textfile", lambda g: (g / "textfile.mp3").write_text("not audio at all"))
    add("truncated", lambda g: (g / "truncated.flac").write_bytes((g / "ok0.flac").read_bytes()[:3000]))
    add("truncwav", lambda g: _cut_wav(g / "truncwav.wav", 10.0))  # header 10 s, a third of the bytes left
    add("cutref", lambda g: save_audio(g / "cutref.flac", synth_clip("cutref", 32000, 10.0) * 0.9, 32000),
        with_ref=False)
    _cut_wav(ref / "cutref.wav", 10.0)  # the reference side: an unusable reference, named and counted
    add("nan", lambda g: sf.write(str(g / "nan.wav"), np.full((32000, 1), np.nan, np.float32), 32000, subtype="FLOAT"))
    add("silent", lambda g: sf.write(str(g / "silent.wav"), np.zeros((320000, 1), np.float32), 32000))
    add("short", lambda g: sf.write(str(g / "short.wav"), 0.3 * rng.standard_normal((3000, 1)).astype(np.float32), 32000))
    add("sixch", lambda g: sf.write(str(g / "sixch.wav"), 0.1 * rng.standard_normal((441000, 6)).astype(np.float32), 44100))
    add("long16k", lambda g: save_audio(g / "long16k.flac", synth_clip("long", 16000, 25.0), 16000))
    add("noref", lambda g: save_audio(g / "noref.flac", synth_clip("noref", 32000, 10.0), 32000), with_ref=False)
    (root / "p.csv").write_text("id,caption\n" + "".join(f"{i},a caption for {i}\n" for i in ids), encoding="utf-8")
    save_audio(ref / "stranger.flac", synth_clip("stranger", 32000, 1.0), 32000)  # an id not in the prompt set
    c = cfg("model=folder", f"model.dir={gen}", "dataset=prompts", f"dataset.path={root / 'p.csv'}", f"reference.dir={ref}",
            "metrics=[fad,kld,clap,chroma]", "backbone_weights=random", "backbone_size=tiny", "progress=false")
    s = run(c, root / "out")
    return s, pd.read_parquet(root / "out" / "clips.parquet").set_index("id")


REASONS = {
    "corrupt": "corrupt.wav: not a readable audio file",
    "empty": "empty.wav: not a readable audio file",
    "textfile": "textfile.mp3: not a readable audio file",
    "truncated": "truncated.flac: not a readable audio file",
    "truncwav": "truncwav.wav: truncated: its WAV header declares 1280000 bytes of audio (10.00 s) but the file "
                "holds",
    "nan": "nan.wav: non_finite (32000 of 32000 samples are NaN or infinite)",
    "short": "loudness needs at least 12800 samples",
    "sixch": "at most 5 channels",
    "silent": "silent.wav: silent (RMS -inf dBFS < -70 dBFS)",  # the audit keeps silence from every metric
}


def test_unusable_clips_are_skipped_with_the_file_named(bad_run):
    s, df = bad_run
    for cid, reason in REASONS.items():
        assert reason in df.loc[cid, "skip_reason"], cid
    assert s["n_skipped"] == len(REASONS) and s["n_clips"] == 20  # 8 good + 12 odd
    for name in ("fad", "kld", "clap", "chroma"):
        assert all(pd.isna(df.loc[cid, name]) for cid in REASONS if name in df.columns), name


def test_missing_and_extra_references_are_listed(bad_run):
    s, df = bad_run
    assert s["missing_reference_ids"] == ["noref"] and s["extra_reference_ids"] == ["stranger"]
    for name in ("fad", "kld", "chroma"):
        assert df.loc["noref", f"{name}_skipped"] == "no reference clip"
    assert np.isfinite(df.loc["noref", "clap"])  # CLAP needs no reference


def test_a_truncated_reference_is_an_unusable_reference(bad_run):
    s, df = bad_run
    assert s["n_unusable_reference"] == 1
    assert list(s["unusable_references"]) == ["cutref"]
    assert "cutref.wav: truncated: its WAV header declares 1280000 bytes" in s["unusable_references"]["cutref"]
    assert s["reference_audit"].get("unreadable") == 1, s["reference_audit"]
    for name in ("fad", "kld", "chroma"):
        assert "cutref.wav: truncated" in df.loc["cutref", f"{name}_skipped"], name
    assert np.isfinite(df.loc["cutref", "clap"])  # CLAP needs no reference


@pytest.mark.parametrize("subtype,channels", [("PCM_16", 2), ("PCM_24", 1), ("FLOAT", 2)])
def test_a_cut_off_wav_is_unreadable_not_short(tmp_path, subtype, channels):
    p = tmp_path / "cut.wav"
    _cut_wav(p, 10.0, subtype, channels)
    assert sf.info(str(p)).frames < 32000 * 4  # what libsndfile reads without complaint: ~3.3 s
    with pytest.raises(AudioError, match=r"cut\.wav: truncated: its WAV header declares .* \(10\.00 s\)"):
        load_audio(p)


def test_intact_files_have_no_integrity_problem(tmp_path):
    from evalkit.audio import integrity_problem

    def problem(p):
        with sf.SoundFile(str(p)) as fh:
            return integrity_problem(p, fh.frames, len(fh.read()), fh.samplerate)

    x = 0.1 * np.random.default_rng(2).standard_normal((32000, 2)).astype(np.float32)
    p = tmp_path / "ok.wav"
    sf.write(str(p), x, 32000, subtype="PCM_16")
    assert problem(p) is None
    with open(p, "ab") as fh:  # a chunk after the audio (LIST/INFO metadata): still whole
        fh.write(b"LIST" + (6).to_bytes(4, "little") + b"INFOab")
    assert problem(p) is None and load_audio(p)[0].shape == (2, 32000)
    with open(p, "ab") as fh:  # an ID3 tag appended without a chunk header, as some taggers do
        fh.write(b"ID3\x03\x00\x00" + bytes(40))
    assert problem(p) is None
    data = bytearray(p.read_bytes()[:32000 * 4 + 44])
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # a streaming writer's placeholder size
    p.write_bytes(bytes(data))
    assert problem(p) is None
    for ext, fmt, subtype in (("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III"), ("flac", "FLAC", "PCM_16")):
        q = tmp_path / f"ok.{ext}"
        sf.write(str(q), x, 32000, format=fmt, subtype=subtype)
        assert problem(q) is None, ext


@pytest.mark.parametrize("ext,fmt,subtype", [("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")])
def test_cut_off_compressed_files_are_truncated_not_short(tmp_path, ext, fmt, subtype):
    """libsndfile decodes the first third of these without an error: the Ogg stream's last page lacks the
    end-of-stream flag; the mp3's Xing header declares 10 s."""
    x = 0.1 * np.random.default_rng(3).standard_normal((320000, 2)).astype(np.float32)
    p = tmp_path / f"cut.{ext}"
    sf.write(str(p), x, 32000, format=fmt, subtype=subtype)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    assert len(sf.read(str(p))[0]) > 32000  # what would have been scored: seconds of it
    with pytest.raises(AudioError, match=rf"cut\.{ext}: truncated: "):
        load_audio(p)


def test_a_wav_header_declaring_less_than_the_file_holds_is_refused(tmp_path):
    """A writer that never finished its header: it declares 5 s while 10 s of audio follow. libsndfile reads 5 s."""
    p = tmp_path / "half.wav"
    sf.write(str(p), 0.1 * np.random.default_rng(4).standard_normal((320000, 1)).astype(np.float32), 32000,
             subtype="PCM_16")
    data = bytearray(p.read_bytes())
    data[40:44] = (320000).to_bytes(4, "little")  # 5 s of 16-bit mono instead of 10 s
    p.write_bytes(bytes(data))
    assert sf.info(str(p)).frames == 160000
    with pytest.raises(AudioError, match=r"half\.wav: its WAV header declares 320000 bytes of audio \(5\.00 s\) but "
                                         r"320000 more bytes follow that are no RIFF chunk"):
        load_audio(p)


def test_usable_odd_clips_are_scored_and_counted(bad_run):
    s, df = bad_run
    # 25 s at 16 kHz: resampled and cropped to the 10 s reference -> 19 FAD windows, like every 10 s clip
    assert df.loc["long16k", "fad_windows"] == 19 and np.isfinite(df.loc["long16k", "kld"])
    # sampled at 16 kHz: nothing above 8 kHz, where PaSST (KLD) looks up to 15 kHz and CLAP up to 14 kHz (issue 26)
    assert list(df.loc["long16k", "audit_flags"]) == ["long", "low_sample_rate"]
    assert df.loc["long16k", "duration_s"] == 25.0
    m = s["metrics"]
    # 20 clips - 9 unusable (silent among them: no metric scores silence) = 11 scored by CLAP; KLD, chroma and FAD
    # also lose `noref` and `cutref` (its reference is truncated)
    assert m["clap"]["n_clips"] == 11
    assert m["chroma"]["n_clips"] == 9 and m["kld"]["n_clips"] == 9
    # noref, cutref, and the three that every metric skips at its own input path and audit (silent, short, sixch);
    # the files that cannot be decoded (nan, corrupt, ...) reach no metric
    assert m["fad"]["n_clips"] == 9 and m["fad"]["n_skipped"] == 5
    for v in m.values():
        assert v["value"] is not None and np.isfinite(v["value"])


def test_too_few_clips_for_fad_is_reported_not_a_lost_run(tmp_path):
    gen = tmp_path / "gen"
    save_audio(gen / "a.wav", synth_clip("a", 32000, 10.0), 32000)
    save_audio(tmp_path / "ref" / "a.wav", synth_clip("b", 32000, 10.0), 32000)
    (tmp_path / "p.csv").write_text("id,caption\na,organ\n", encoding="utf-8")
    s = run(cfg("model=folder", f"model.dir={gen}", "dataset=prompts", f"dataset.path={tmp_path / 'p.csv'}",
                f"reference.dir={tmp_path / 'ref'}", "metrics=[fad,chroma]", "backbone_weights=random", "backbone_size=tiny",
                "progress=false"), tmp_path / "out")
    assert s["metrics"]["fad"]["value"] is None and "19 embeddings for dimension 128" in s["metrics"]["fad"]["error"]
    assert s["metrics"]["chroma"]["value"] is not None  # the other metrics survive


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises((ConfigCompositionException, MissingConfigException), match="model"):
        cfg("model=musicgen-huge")
    with pytest.raises(ValueError, match="generation.duration=-1"):
        run(cfg("generation.duration=-1", "metrics=[]", "progress=false"), tmp_path / "a")
    with pytest.raises(ValueError, match="guidance_scale"):
        run(cfg("generation.guidance_scale=0.5", "metrics=[]", "progress=false"), tmp_path / "b")
    with pytest.raises(PromptError, match="dataset.limit"):
        run(cfg("dataset.limit=-3", "metrics=[]", "progress=false"), tmp_path / "c")


def test_checkpoint_checks(tmp_path):
    f = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(2)}, f)
    with pytest.raises(CheckpointError, match=r"w.pt: sha256 [0-9a-f]{64} does not start with 10086976, the released "
                                              r"checkpoint's sha256 prefix pinned by metrics.fad.checkpoint_sha256. If it "
                                              r"is your own export of the same network, set "
                                              r"metrics.fad.checkpoint_sha256=null"):
        resolve_checkpoint(str(f), setting="metrics.fad.checkpoint", filename="vggish-10086976.pth", url="u",
                           expected_sha256="10086976")
    with pytest.raises(CheckpointError, match="metrics.fad.checkpoint=.*no such file"):
        resolve_checkpoint(str(tmp_path / "nope.pt"), setting="metrics.fad.checkpoint", filename="x", url="u", expected_sha256=None)
    with pytest.raises(CheckpointError, match="downloads are off"):
        resolve_checkpoint(None, setting="metrics.fad.checkpoint", filename="never-downloaded.pth", url="https://example/x",
                           expected_sha256=None)


def test_a_checkpoint_of_another_backbone_is_refused(tmp_path):
    from evalkit.registry import get_metric
    from evalkit.spec import metric_recipe

    f = tmp_path / "passt.pt"
    torch.save({"patch_embed.proj.weight": torch.zeros(4, 1, 16, 16)}, f)  # a PaSST-like state dict
    recipe = metric_recipe("fad")
    recipe.update(checkpoint=str(f), backbone_weights="released", reference_stats=None, checkpoint_sha256=None)
    with pytest.raises(Exception, match="passt.pt"):
        get_metric("fad")(recipe, device="cpu")


@pytest.mark.parametrize("trust", [False, True])
def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path, trust):
    from evalkit.embeddings.weights import read_state_dict

    f = tmp_path / "garbage.pt"
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"metrics.fad.checkpoint=.*garbage.pt: not a PyTorch checkpoint"):
        read_state_dict(f, setting="metrics.fad.checkpoint", trust=trust)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048), st.sampled_from([".wav", ".flac", ".mp3", ".ogg"]))
def test_fuzz_audio_loader(tmp_path, data, ext):
    f = tmp_path / f"fuzz{ext}"
    f.write_bytes(data)
    try:
        wav, sr = load_audio(f)
    except AudioError as exc:
        assert str(f) in str(exc)
    else:
        assert wav.ndim == 2 and wav.shape[1] > 0 and sr > 0 and torch.isfinite(wav).all()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=512), st.sampled_from([".txt", ".csv", ".jsonl"]))
def test_fuzz_prompt_parser(tmp_path, data, ext):
    f = tmp_path / f"p{ext}"
    f.write_bytes(data)
    try:
        prompts = load_prompt_file(f)
    except PromptError as exc:
        assert str(f) in str(exc)
    else:
        assert prompts and len({p.id for p in prompts}) == len(prompts) and all(p.caption.strip() for p in prompts)


class _NotATensor:  # anything a weights_only load refuses
    pass


@pytest.mark.parametrize("metric", ["fad", "kld", "clap"])
def test_unsafe_checkpoint_is_not_unpickled_unless_trusted(tmp_path, metric):
    """Every backbone reads its file through the one reader: weights_only=True, and a file that needs full
    unpickling is refused naming the metric's trust switch."""
    from evalkit.embeddings.weights import UnsafeCheckpointError
    from evalkit.registry import get_metric
    from evalkit.spec import metric_recipe

    f = tmp_path / f"{metric}.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": _NotATensor()}, f)
    recipe = dict(metric_recipe(metric), checkpoint=str(f), checkpoint_sha256=None, model_size="tiny", tokenizer="tiny")
    m = get_metric(metric)
    with pytest.raises(UnsafeCheckpointError, match=rf"metrics\.{metric}\.trust_checkpoint=true"):
        m(recipe).embedder.network  # KLD builds its network on first use
    # trusted, the file is read and then refused for what it is (not a backbone state dict), naming the file
    with pytest.raises(Exception, match=f"{metric}.pt"):
        m(dict(recipe, trust_checkpoint=True)).embedder.network


def test_reference_metrics_without_references_stop_before_generation(tmp_path):
    from evalkit.run import RunError

    c = cfg("model=tiny-mono", "reference.synthesize=false", "metrics=[fad,kld,clap]", "generation.duration=0.5",
            "progress=false")
    with pytest.raises(RunError, match="metrics fad, kld compare with reference audio"):
        run(c, tmp_path)
    assert not (tmp_path / "audio").exists()  # nothing was generated
