"""A whole run through the real config: Hydra composition, the run folder's contents, folder mode, missing
references, and the run identity that makes resuming safe."""
import json
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from evalkit.audio import save_audio
from evalkit.data.references import synth_clip
from evalkit.run import RunError, run

CONF = str(Path(__file__).resolve().parents[1] / "conf")
FAST = ["generation.duration=1.0", "progress=false", "batch_size=2", "metric_batch_size=2"]


def cfg(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("config", overrides=list(overrides))


def test_default_config_is_the_offline_demo_and_real_models_are_real():
    demo = cfg()
    assert demo.model.name == "tiny-stereo" and demo.dataset.name == "demo"
    assert demo.backbone_weights == "random" and demo.reference.synthesize is True
    assert sorted(demo.metrics) == ["clap", "fad", "kld", "stereo"]  # a stereo model adds the stereo image
    real = cfg("model=stereo-medium")
    assert real.model.hub_id == "facebook/musicgen-stereo-medium" and real.dataset.name == "musiccaps"
    assert real.backbone_weights == "released" and real.reference.synthesize is False
    assert real.generation.top_k == 250 and real.generation.guidance_scale == 3.0 and real.precision == "fp32"
    mel = cfg("model=melody")
    assert sorted(mel.metrics) == ["chroma", "clap", "fad", "kld"]
    assert cfg("metrics=[]").get("metrics") is None
    assert cfg("model=tiny-mono", "dataset=musiccaps").dataset.name == "musiccaps"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    c = cfg(*FAST, "metrics=[chroma]", "dataset.limit=3")
    return out, run(c, out), c


def test_run_folder_contents(demo_run):
    out, summary, c = demo_run
    for f in ("config.yaml", "manifest.json", "summary.json", "clips.parquet"):
        assert (out / f).is_file(), f
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["random_weights"] is True and "RANDOM WEIGHTS" in summary["note"]
    assert summary["model"]["name"] == "tiny-stereo" and summary["n_clips"] == 3 and summary["n_missing_reference"] == 0
    assert summary["model"]["label"] == "tiny-stereo" and summary["model"]["generated"] is True
    ch = summary["metrics"]["chroma"]
    assert ch["spec"]["card_column"] == "Chroma Cosine Similarity" and ch["n_clips"] == 3 and 0.0 <= ch["value"] <= 1.0
    df = pd.read_parquet(out / "clips.parquet")
    assert len(df) == 3 and {"id", "caption", "audio_path", "reference_path", "seed", "chroma"} <= set(df.columns)
    for _, r in df.iterrows():
        info = sf.info(r.audio_path)
        assert (info.samplerate, info.channels, info.frames, info.format) == (32000, 2, 32000, "FLAC")
        assert Path(r.audio_path).stem == r.id
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["seed"] == 0 and manifest["git_sha"]
    assert manifest["versions"]["torch"] and manifest["device"] == "cpu"
    # the batch seeds recorded in clips.parquet are the ones in generation/
    meta = [json.loads(p.read_text()) for p in sorted((out / "generation").glob("batch-*.json"))]
    seeds = {i: m["seed"] for m in meta for i in m["ids"]}
    assert dict(zip(df.id, df.seed)) == seeds


def test_rerun_same_config_resumes_without_regenerating(demo_run):
    out, summary, c = demo_run
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "audio").iterdir()}
    again = run(c, out)
    assert again["metrics"] == summary["metrics"]
    assert {p: p.stat().st_mtime_ns for p in (out / "audio").iterdir()} == mtimes


def test_another_config_in_the_same_folder_is_refused(demo_run):
    out, _, _ = demo_run
    with pytest.raises(RunError, match="differs in: seed"):
        run(cfg(*FAST, "metrics=[chroma]", "dataset.limit=3", "seed=7"), out)


def test_a_first_try_that_stopped_on_its_input_does_not_lock_the_folder(tmp_path):
    """A run that stopped on its input (here a caption table that is not there) left only its config: the corrected
    command takes the folder without overwrite=true. A folder with work in it is still refused (test above)."""
    gen = tmp_path / "gen"
    for k in ("c1", "c2"):
        save_audio(gen / f"{k}.wav", synth_clip(k, 32000, 1.0, channels=2), 32000)
    out = tmp_path / "out"
    base = ("model=folder", f"model.dir={gen}", f"reference.dir={gen}", "metrics=[stereo]", "progress=false")
    with pytest.raises(Exception, match="no_such.csv"):
        run(cfg(*base, f"dataset.captions={tmp_path / 'no_such.csv'}"), out)
    assert (out / "config.yaml").exists() and not (out / "summary.json").exists()
    s = run(cfg(*base), out)
    assert s["n_clips"] == 2 and (out / "summary.json").exists()
    with pytest.raises(RunError, match="differs in"):  # now it holds work: another config is refused again
        run(cfg(*base, "seed=3"), out)


def test_folder_mode_with_a_missing_reference(tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    prompts = tmp_path / "p.csv"
    prompts.write_text("id,caption\nc1,organ chorale\nc2,string chords\nc3,lofi noise\n", encoding="utf-8")
    for k in ("c1", "c2", "c3"):
        save_audio(gen / f"{k}.wav", synth_clip(k, 32000, 1.0), 32000)
    for k in ("c1", "c2"):
        save_audio(ref / f"{k}.flac", synth_clip(k, 32000, 1.0), 32000)
    save_audio(ref / "zz.flac", synth_clip("zz", 32000, 1.0), 32000)  # not in the prompt set
    c = cfg("model=folder", f"model.dir={gen}", "dataset=prompts", f"dataset.path={prompts}", f"reference.dir={ref}",
            "metrics=[chroma]", "progress=false")
    s = run(c, tmp_path / "out")
    assert s["random_weights"] is False and s["n_missing_reference"] == 1 and s["missing_reference_ids"] == ["c3"]
    assert s["extra_reference_ids"] == ["zz"]
    assert s["metrics"]["chroma"]["n_clips"] == 2
    # identical audio on both sides: chroma agrees on every frame
    assert s["metrics"]["chroma"]["value"] == pytest.approx(1.0)
    df = pd.read_parquet(tmp_path / "out" / "clips.parquet").set_index("id")
    assert df.loc["c3", "chroma_skipped"] == "no reference clip" and pd.isna(df.loc["c3", "chroma"])
    assert df.loc["c1", "audio_path"] == str(gen / "c1.wav")


def test_melody_model_without_references_is_a_clear_error(tmp_path):
    c = cfg("model=tiny-melody", *FAST, "reference.synthesize=false", "metrics=[]")
    with pytest.raises(RunError, match="melody.source=none"):
        run(c, tmp_path)


def test_generation_cache_reuses_audio_across_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    run(cfg(*FAST, "dataset.limit=2", "metrics=[]"), tmp_path / "a")
    # another run folder and another metric set: same generation inputs -> the audio comes from the cache
    import evalkit.generate.musicgen as mg

    def boom(*_, **__):
        raise AssertionError("generated again")

    monkeypatch.setattr(mg.MusicGenGenerator, "generate_batch", boom)
    b = run(cfg(*FAST, "dataset.limit=2", "metrics=[chroma]"), tmp_path / "b")
    assert b["metrics"]["chroma"]["n_clips"] == 2
    for f in (tmp_path / "a" / "audio").glob("*.flac"):
        assert f.read_bytes() == (tmp_path / "b" / "audio" / f.name).read_bytes()
    metas = [json.loads(p.read_text()) for p in (tmp_path / "b" / "generation").glob("batch-*.json")]
    assert metas and all(m["from_cache"] for m in metas)
    # a different seed is a different generation
    with pytest.raises(AssertionError, match="generated again"):
        run(cfg(*FAST, "dataset.limit=2", "metrics=[]", "seed=3"), tmp_path / "c")


def test_score_cache_reuses_a_metric_when_another_is_added(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    a = run(cfg(*FAST, "dataset.limit=3", "metrics=[chroma]"), tmp_path / "a")
    from evalkit.registry import get_metric

    def boom(self, clips):
        raise AssertionError("chroma recomputed")

    monkeypatch.setattr(get_metric("chroma"), "update", boom)
    b = run(cfg(*FAST, "dataset.limit=3", "metrics=[chroma,kld]", "backbone_size=tiny"), tmp_path / "b")
    assert b["metrics"]["chroma"]["values"] == a["metrics"]["chroma"]["values"]
    assert b["metrics"]["kld"]["n_clips"] == 3
    da = pd.read_parquet(tmp_path / "a" / "clips.parquet").set_index("id")
    db = pd.read_parquet(tmp_path / "b" / "clips.parquet").set_index("id")
    assert (da["chroma"] == db["chroma"]).all() and (da["chroma_frames"] == db["chroma_frames"]).all()
    # other audio -> other key -> computed (and here: the patched update is called)
    with pytest.raises(AssertionError, match="chroma recomputed"):
        run(cfg(*FAST, "dataset.limit=3", "metrics=[chroma]", "seed=5"), tmp_path / "c")


def test_generation_mode_names_a_cut_off_reference_and_scores_the_rest(tmp_path):
    """The truncated-file fault in generation mode: a reference WAV cut to a third of its bytes (libsndfile reads
    3.33 s of it without an error) is an unusable reference, named, never zero-padded and scored."""
    import numpy as np

    prompts = tmp_path / "p.csv"
    prompts.write_text("id,caption\nr0,a calm piano\nr1,a loud drum\n", encoding="utf-8")
    ref = tmp_path / "ref"
    save_audio(ref / "r0.wav", synth_clip("r0", 32000, 1.0), 32000)
    sf.write(str(ref / "r1.wav"), 0.1 * np.random.default_rng(0).standard_normal((32000, 1)).astype(np.float32),
             32000, subtype="PCM_16")
    data = (ref / "r1.wav").read_bytes()
    (ref / "r1.wav").write_bytes(data[: len(data) // 3])
    s = run(cfg("model=tiny-mono", *FAST, "dataset=prompts", f"dataset.path={prompts}", f"reference.dir={ref}",
                "metrics=[kld]", "backbone_weights=random", "backbone_size=tiny"), tmp_path / "out")
    assert list(s["unusable_references"]) == ["r1"]
    assert "r1.wav: truncated: its WAV header declares 64000 bytes of audio (1.00 s)" in s["unusable_references"]["r1"]
    assert s["metrics"]["kld"]["n_clips"] == 1
    df = pd.read_parquet(tmp_path / "out" / "clips.parquet").set_index("id")
    assert "r1.wav: truncated" in df.loc["r1", "kld_skipped"] and pd.isna(df.loc["r0", "kld_skipped"])


def test_ctrl_c_leaves_an_interrupted_manifest_with_what_to_do(tmp_path, monkeypatch):
    """Issue 26, item 9: after Ctrl-C manifest.json said ``failed`` with an empty ``KeyboardInterrupt: ``."""
    import evalkit.run as evalkit_run
    from evalkit.report.rundir import why_no_summary
    from evalkit.stages.folder import resume_message

    def ctrl_c(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(evalkit_run, "_stages", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run(cfg(*FAST, "dataset.limit=2", "metrics=[]"), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["end"]
    assert manifest["error"] == ("interrupted (Ctrl-C / SIGINT); every finished clip and scored batch is kept: run "
                                 "the same command (the same run folder) again to resume")
    assert why_no_summary(tmp_path) == "unfinished: the run was " + manifest["error"]
    assert "the earlier attempt was interrupted (Ctrl-C)" in resume_message(tmp_path)


def test_a_dangling_link_is_an_unreadable_clip_or_reference_named_and_counted(tmp_path):
    """Issue 26, item 5: a broken symlink in model.dir made its clip vanish (clips: 9, skipped: 0; the only trace blamed
    its reference as "no prompt id"); in reference.dir it read as a missing reference."""
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for k in ("c0", "c1", "c2"):
        save_audio(gen / f"{k}.wav", synth_clip(k, 32000, 1.0), 32000)
    for k in ("c0", "c2", "c3"):
        save_audio(ref / f"{k}.flac", synth_clip(k, 32000, 1.0), 32000)
    (gen / "c3.wav").symlink_to(tmp_path / "moved" / "c3.wav")
    (ref / "c1.flac").symlink_to(tmp_path / "moved" / "c1.flac")
    s = run(cfg("model=folder", f"model.dir={gen}", f"reference.dir={ref}", "metrics=[chroma]", "progress=false"),
            tmp_path / "out")
    assert s["n_clips"] == 4 and s["n_skipped"] == 1 and s["audit"]["unreadable"] == 1
    assert s["audit_ids"]["unreadable"] == ["c3"]
    why = f"{gen / 'c3.wav'}: a dangling link to {tmp_path / 'moved' / 'c3.wav'} (the file it points to does not exist)"
    assert [r for r in s["skip_reasons"] if why in r] and s["n_missing_reference"] == 0
    assert list(s["unusable_references"]) == ["c1"]
    assert f"a dangling link to {tmp_path / 'moved' / 'c1.flac'}" in s["unusable_references"]["c1"]
    assert not [u for u in s["unused_files"] if "no prompt id" in u["reason"]]  # c3's reference has its clip
    assert {u["file"]: "a dangling link to" in u["reason"] for u in s["unused_files"]} == {
        str(gen / "c3.wav"): True, str(ref / "c1.flac"): True}
    assert s["metrics"]["chroma"]["n_clips"] == 2 and s["metrics"]["chroma"]["value"] == pytest.approx(1.0)
    assert s["reference_set"]["n_files"] == 4


def test_folder_mode_shows_no_generate_bar(tmp_path, monkeypatch):
    """Issue 26, item 15: folder mode drew a ``generate`` progress bar although nothing is generated."""
    import evalkit.stages.generation as generation
    import evalkit.stages.scoring as scoring

    shown, real = [], generation.progress_bar

    def progress_bar(total, enabled, desc, unit):
        shown.append((desc, enabled))
        return real(total, False, desc, unit)

    monkeypatch.setattr(generation, "progress_bar", progress_bar)
    monkeypatch.setattr(scoring, "progress_bar", progress_bar)
    gen = tmp_path / "gen"
    save_audio(gen / "c0.wav", synth_clip("c0", 32000, 1.0), 32000)
    run(cfg("model=folder", f"model.dir={gen}", "metrics=[]", "progress=true"), tmp_path / "folder")
    run(cfg(*FAST, "dataset.limit=1", "metrics=[]", "progress=true", "cache.generations=false"), tmp_path / "gen-run")
    assert shown == [("generate", False), ("score", True), ("generate", True), ("score", True)]


@pytest.mark.parametrize("folder, label", [
    ("outputs/musicgen-small/audio", "musicgen-small"),
    ("outputs/musicgen-small/2026-12-01_01-55-50/audio", "musicgen-small"),  # Hydra's default run folder's clips
    ("/data/audioldm2-clips", "audioldm2-clips"),
    ("/audio", "audio"),  # nothing above it says more
])
def test_a_folder_runs_default_label_is_its_folders_meaningful_name(folder, label):
    from evalkit.generate.folder import folder_label

    assert folder_label(folder) == label


def test_folder_runs_are_named_by_model_label_not_folder(tmp_path):
    """Issue 26, item 16: every folder run was labelled ``folder``: three models scored in folder mode gave three rows
    named folder. summary.json records model.label; the printed headline and every table show it."""
    from evalkit.run import format_summary
    from evalkit.report.compare import compare_paths, to_markdown
    from evalkit.report.table import card_table, collect_runs, to_markdown as table_markdown

    outs = {}
    for model in ("musicgen-small", "musicgen-medium"):
        gen = tmp_path / "outputs" / model / "audio"
        save_audio(gen / "c0.wav", synth_clip("c0", 32000, 1.0), 32000)
        outs[model] = tmp_path / model
        s = run(cfg("model=folder", f"model.dir={gen}", f"reference.dir={gen}", "metrics=[chroma]", "progress=false"),
                outs[model])
        assert s["model"] == {"name": "folder", "hub_id": None, "source": str(gen), "random_weights": False,
                              "generated": False, "label": model}
        assert format_summary(s).splitlines()[0].startswith(f"model: {model} (folder {gen})   clips: 1")
    mine = run(cfg("model=folder", f"model.dir={gen}", f"reference.dir={gen}", "metrics=[chroma]", "progress=false",
                   "model.label='my model, v2'"), tmp_path / "mine")
    assert mine["model"]["label"] == "my model, v2"
    three = [outs["musicgen-small"], outs["musicgen-medium"], tmp_path / "mine"]
    md = table_markdown(card_table(collect_runs(three, ci=False)))
    assert [ln.split(" | ")[0] for ln in md.splitlines()[2:5]] == ["| musicgen-small", "| musicgen-medium",
                                                                   "| my model, v2"]
    from evalkit.report.table import per_clip_values  # what the per-clip plot draws

    assert list(dict.fromkeys(per_clip_values(three)["label"])) == ["musicgen-small", "musicgen-medium", "my model, v2"]
    report = to_markdown(compare_paths(outs["musicgen-small"], outs["musicgen-medium"]))
    assert f"Baseline: `{outs['musicgen-small'] / 'summary.json'}` (musicgen-small)" in report
    assert "- note: different models: baseline 'musicgen-small', current 'musicgen-medium'" in report
