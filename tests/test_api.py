"""The Python API gives the command line's numbers: evaluate(overrides) = evaluate(RunSpec) = python -m evalkit;
score(folders) = model=folder; the README's example runs as written."""
from __future__ import annotations

import json
import os
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import evalkit
from evalkit.spec import RunSpec, SpecError

REPO = Path(__file__).resolve().parents[1]
SMALL = ["generation.duration=1.0", "dataset.limit=3", "metrics=[kld,clap,chroma]", "progress=false"]


def _values(summary: dict) -> dict:
    return {m: e.get("values") for m, e in summary["metrics"].items()}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    with pytest.warns(evalkit.RandomWeightsWarning):  # tiny random-weight models: said from Python too
        return out, evalkit.evaluate(SMALL, out_dir=out)


def test_evaluate_overrides_spec_and_cli_agree(small_run, tmp_path):
    out, summary = small_run
    assert summary == json.loads((out / "summary.json").read_text())
    again = evalkit.evaluate(RunSpec.from_overrides(SMALL), out_dir=tmp_path / "spec")
    assert _values(again) == _values(summary)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "evalkit", *SMALL, f"hydra.run.dir={tmp_path / 'cli'}"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert _values(cli) == _values(summary)


def test_score_equals_folder_mode_on_the_same_clips(small_run, tmp_path):
    out, _ = small_run
    from evalkit.data.prompts import DEMO_PROMPTS

    common = dict(backbone_weights="random", backbone_size="tiny", progress=False)
    got = evalkit.score(out / "audio", reference=out / "references", captions=DEMO_PROMPTS,
                        metrics=("kld", "clap", "chroma"), out_dir=tmp_path / "score", **common)
    want = evalkit.evaluate(["model=folder", f"model.dir={out / 'audio'}", "dataset=prompts",
                             f"dataset.path={DEMO_PROMPTS}", f"reference.dir={out / 'references'}",
                             "metrics=[kld,clap,chroma]", "backbone_weights=random", "backbone_size=tiny",
                             "progress=false"], out_dir=tmp_path / "folder")
    assert got["n_clips"] == 3 and want["n_clips"] == 8  # score() takes the clips of the folder; the file has 8
    assert got["metrics"]["kld"]["n_clips"] == want["metrics"]["kld"]["n_clips"] == 3
    assert _values(got) == _values(want)
    # captions as a mapping: only the clips of the folder, each with its own caption
    caps = {p.stem: f"caption of {p.stem}" for p in (out / "audio").glob("*.flac")}
    by_dict = evalkit.score(out / "audio", captions=caps, metrics=["clap"], out_dir=tmp_path / "d", **common)
    assert by_dict["metrics"]["clap"]["n_clips"] == 3


def test_score_refuses_what_cannot_work(tmp_path):
    with pytest.raises(SpecError, match="no such folder"):
        evalkit.score(tmp_path / "nowhere")
    (tmp_path / "g").mkdir()
    with pytest.raises(SpecError, match="no audio files"):
        evalkit.score(tmp_path / "g")
    (tmp_path / "g" / "a.wav").write_bytes(b"")
    with pytest.raises(SpecError, match="clap metric pairs each clip with its caption, and 1 clips have none"):
        evalkit.score(tmp_path / "g", metrics=["clap"])
    with pytest.raises(TypeError, match="list of overrides"):
        evalkit.evaluate("model=small")
    # wrong types name the argument (a second new-user trial: a caption None was scored as the text "None")
    g = tmp_path / "g"
    with pytest.raises(SpecError, match=r"a caption is a non-empty string; 2 are not \(e.g. 'a': None\)"):
        evalkit.score(g, captions={"a": None, "b": 1}, metrics=["clap"])
    with pytest.raises(SpecError, match=r"score\(captions=...\): expected \{id: caption\} or a prompts file path, "
                                        r"got list"):
        evalkit.score(g, captions=["a calm piano"], metrics=["clap"])
    (tmp_path / "c.txt").write_text("a calm piano\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"c.txt\): a .txt file is one caption a line, without ids"):
        evalkit.score(g, captions=tmp_path / "c.txt", metrics=["clap"])
    with pytest.raises(SpecError, match=r"score\(generated=...\): expected a folder path, got list"):
        evalkit.score([g])
    with pytest.raises(SpecError, match=r"score\(reference=...\): expected a folder path, got int"):
        evalkit.score(g, reference=3)
    with pytest.raises(SpecError, match="clap metric pairs each clip"):  # one name, not the letters c, l, a, p
        evalkit.score(g, metrics="clap")


@pytest.mark.parametrize("override,message", [
    ("seed=abc", "seed=abc: must be an integer"), ("seed=1.5", "seed=1.5: must be an integer"),
    ("num_workers=-1", "num_workers=-1: must be an integer >= 0"),
    ("progress=no", "progress='no': must be true or false"),
    ("allow_missing_metrics=1", "allow_missing_metrics=1: must be true or false"),
])
def test_settings_of_the_wrong_type_are_named_before_any_work(override, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        RunSpec.from_overrides([override])
    assert RunSpec.from_overrides(["seed=7", "progress=false"]).seed == 7


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, caplog):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with pytest.warns(evalkit.RandomWeightsWarning) as warned:
        exec(compile(code, "README.md", "exec"), namespace)
    demo, scored = namespace["demo"], namespace["scored"]
    assert demo["random_weights"] is True and scored["n_clips"] == demo["n_clips"]
    assert _values(scored)["kld"] == _values(demo)["kld"]  # the same clips and references: the same KLD
    # the documented example logs no error or warning from evalkit (a new user saw FAD's "could not be computed")
    # but that its numbers come from random weights, once per run, as the command line prints it
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("evalkit") and r.levelno >= logging.WARNING]
    assert [m.split(":")[0] for m in logged] == ["RANDOM WEIGHTS"] * 2
    assert [w.filename for w in warned if w.category is evalkit.RandomWeightsWarning] == ["README.md"] * 2


def test_input_errors_are_the_documented_spec_error_with_the_command_lines_message(tmp_path):
    """Issue 26, item 7: score() on a folder with c0.wav and c0.flac raised a PromptError about the prompts file it had
    written itself (a duplicate id), and PromptError is none of the API's documented errors."""
    from evalkit.audio import save_audio
    from evalkit.data.prompts import PromptError
    from evalkit.data.references import synth_clip

    g = tmp_path / "g"
    for ext in ("wav", "flac"):
        save_audio(g / f"c0.{ext}", synth_clip("c0", 32000, 1.0), 32000)
    with pytest.raises(SpecError) as exc:
        evalkit.score(g, metrics=["chroma"], out_dir=tmp_path / "o")
    assert str(exc.value) == f"score(generated={g}): two files for id 'c0': c0.flac and c0.wav; keep one"
    # the kind: any input error of a run (here a prompts file) is a SpecError, the original kept as its cause
    bad = tmp_path / "p.csv"
    bad.write_text("id,caption\nc0,a piano, and strings\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"p\.csv: line 2 has 3 fields, the header has 2") as exc:
        evalkit.evaluate(["dataset=prompts", f"dataset.path={bad}", "metrics=[]", "progress=false"],
                         out_dir=tmp_path / "e")
    assert isinstance(exc.value.__cause__, PromptError)


NASTY = ["gen, seed=1 (v2)", "refs ü", "it's [x] #1", 'say "hi"', "C:\\clips\\", "a\\'b", "${HOME}/clips", "7", "true",
         "null", "a,b", " padded "]


@pytest.mark.parametrize("name", NASTY)
def test_quoted_values_read_back_as_written(name):
    """Issue 26, item 6: every string survives Hydra's override grammar and OmegaConf's interpolation unchanged."""
    from evalkit.overrides import path_override, quote, value
    from evalkit.spec import compose

    for text in (path_override("model.dir", name), f"model.dir={quote(name, q=chr(34))}"):
        assert compose(["model=folder", text]).model.dir == name, text
    assert compose([f"+model.label={value(name)}"]).model.label in (name, 7, True, None)  # words typed as on the CLI


def test_score_takes_folder_names_a_user_has(tmp_path):
    """Issue 26, item 6: score("gen, seed=1 (v2)", reference="refs ü") raised SpecError: mismatched input '='."""
    from evalkit.audio import save_audio
    from evalkit.data.references import synth_clip

    gen, ref = tmp_path / "gen, seed=1 (v2)", tmp_path / "refs ü"
    for k in ("c0", "c1"):
        save_audio(gen / f"{k}.wav", synth_clip(k, 32000, 1.0), 32000)
        save_audio(ref / f"{k}.wav", synth_clip(k, 32000, 1.0), 32000)
    s = evalkit.score(str(gen), reference=str(ref), metrics="chroma", out_dir=tmp_path / "out [it's #1]",
                      progress=False, **{"cache.dir": str(tmp_path / "cache, =x")})
    assert s["n_clips"] == 2 and s["metrics"]["chroma"]["value"] == pytest.approx(1.0)
    assert s["model"]["source"] == str(gen) and s["reference_set"]["dir"] == str(ref)


def test_a_value_hydra_cannot_parse_names_the_setting_and_the_quoting(tmp_path):
    """Issue 26, item 6: the CLI printed the parser's words (mismatched input '=' expecting <EOF>)."""
    from evalkit.spec import compose

    p = subprocess.run([sys.executable, "-m", "evalkit", "model=folder", "model.dir=gen, seed=1 (v2)",
                        f"hydra.run.dir={tmp_path / 'o'}"], cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [
        "evalkit: model.dir: Hydra cannot read the value 'gen, seed=1 (v2)' unquoted (mismatched input '=' expecting "
        "<EOF>); quote it: model.dir='gen, seed=1 (v2)' (on a shell command line: 'model.dir=\"gen, seed=1 (v2)\"')"]
    with pytest.raises(SpecError, match=r"^model\.dir: Hydra cannot read the value 'refs ü' unquoted \(a character "
                                        r"it does not allow in an unquoted value\); quote it: model\.dir='refs ü'"):
        evalkit.evaluate(["model=folder", "model.dir=refs ü"], out_dir=tmp_path / "x")
    with pytest.raises(SpecError, match=r"^model\.dir: Hydra cannot read the value 'takes, 2' unquoted \(a comma "
                                        r"makes it several values, a list or a sweep\); quote it: "
                                        r"model\.dir='takes, 2'"):
        evalkit.evaluate(["model=folder", "model.dir=takes, 2"], out_dir=tmp_path / "x")
    # the quoting shown is the fix: both forms read back the value
    assert compose(["model=folder", "model.dir='gen, seed=1 (v2)'"]).model.dir == "gen, seed=1 (v2)"
    assert compose(["model=folder", 'model.dir="gen, seed=1 (v2)"']).model.dir == "gen, seed=1 (v2)"


def test_a_random_weight_run_warns_from_python_as_the_cli_prints_it(small_run, tmp_path):
    """Issue 26, item 15: the Python API printed no RANDOM WEIGHTS warning; only the returned summary said so."""
    import warnings

    out, summary = small_run
    assert summary["random_weights"] is True
    note = (r"^RANDOM WEIGHTS: the model and/or the metric backbones of this run have random weights\..* "
            rf"\(run folder {out}\)$")
    with pytest.warns(evalkit.RandomWeightsWarning, match=note) as w:
        evalkit.evaluate(SMALL, out_dir=out)  # resumes the finished run: the same summary, the same warning
    assert [x.filename for x in w] == [__file__]  # it points at the caller's line, not into evalkit
    from evalkit.audio import save_audio
    from evalkit.data.references import synth_clip

    save_audio(tmp_path / "g" / "c0.wav", synth_clip("c0", 32000, 1.0), 32000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", evalkit.RandomWeightsWarning)  # chroma has no weights: nothing to warn
        s = evalkit.score(tmp_path / "g", reference=tmp_path / "g", metrics="chroma", out_dir=tmp_path / "o",
                          progress=False)
    assert s["random_weights"] is False
