"""The first hour of a new user (issue 18): every dead end from a clean clone reproduced and its fix asserted."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def cli(*args, cwd=REPO, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_a_bad_setting_is_one_line_with_exit_status_2_not_a_traceback(tmp_path):
    p = cli("model=folder", f"model.dir={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'out'}")
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert re.search(r"evalkit: model\.dir=.*nowhere: no such folder", p.stderr)
    clip = tmp_path / "c0.wav"
    clip.write_bytes(b"")
    p = cli("model=folder", f"model.dir={clip}", f"hydra.run.dir={tmp_path / 'o1'}")  # a clip instead of its folder
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"evalkit: model.dir={clip}: is a file, not a folder: pass the folder that holds the clips (this file is " \
           f"in {tmp_path})" in p.stderr, p.stderr[-2000:]
    p = cli("model=folder", f"hydra.run.dir={tmp_path / 'o3'}")  # model.dir forgotten
    assert p.returncode == 2 and "evalkit: model.dir is not set: model=folder / dataset=folder read the clips" in p.stderr, \
        p.stderr[-2000:]
    p = cli("generation.top_p=3", f"hydra.run.dir={tmp_path / 'o2'}")
    assert p.returncode == 2 and "evalkit: generation.top_p=3: must be in [0, 1]" in p.stderr and "Traceback" not in p.stderr


def test_offline_released_backbone_error_names_every_way_out(tmp_path):
    from evalkit.embeddings.weights import CheckpointError, resolve_checkpoint

    os.environ.setdefault("EVALKIT_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"metrics\.fad\.checkpoint=PATH.*backbone_weights=random"):
        resolve_checkpoint(None, setting="metrics.fad.checkpoint", filename="vggish-never.pth", url="https://x/y",
                           expected_sha256=None)


@pytest.mark.slow
def test_a_metric_without_a_number_shows_its_reason_and_the_run_exits_3(tmp_path):
    """dataset.limit=2: 38 VGGish windows, the covariance needs 128. The printed tables give the reason where the
    value would be; the exit status says it (CI scripts rely on it) unless allow_missing_metrics=true."""
    args = ["generation.duration=2.0", "dataset.limit=2", "metrics=[fad,clap]", f"cache.dir={tmp_path / 'c'}",
            "progress=false"]
    p = cli(*args, f"hydra.run.dir={tmp_path / 'a'}")
    assert p.returncode == 3, p.stderr[-2000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("Frechet Audio Distance"))
    assert "–" in line and "MetricUnavailable" in line and "embeddings for dimension 128" in line
    assert "n/a‡" in p.stdout and "Frechet Audio Distance not computed" in p.stdout  # the card table too
    assert "metrics asked for without a number" in p.stderr and "fad:" in p.stderr
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["metrics"]["fad"]["value"] is None and "dimension 128" in s["metrics"]["fad"]["error"]
    assert s["metrics"]["clap"]["value"] is not None
    p = cli(*args, "allow_missing_metrics=true", f"hydra.run.dir={tmp_path / 'a'}")  # same folder: a resume
    assert p.returncode == 0, p.stderr[-2000:]


def test_a_failed_folder_is_not_called_a_resume(tmp_path):
    from evalkit.stages.folder import resume_message

    (tmp_path / "manifest.json").write_text(json.dumps({"status": "failed", "error": "RunError: no references"}))
    msg = resume_message(tmp_path)
    assert "failed (RunError: no references)" in msg and "running it from the start" in msg and "resuming" not in msg
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.flac").write_bytes(b"x")
    assert "resuming with its 1 generated clips" in resume_message(tmp_path)


def test_tiny_models_and_long_captions_warn_about_nothing(caplog):
    """The tiny configs' pad/bos id 2048 (MusicGen reserves it; the released configs carry it too) and MusicCaps
    captions over 512 T5 tokens (audiocraft's T5Conditioner does not truncate either: padding only, and T5's
    relative positions take any length) printed alarming notices; the numbers were never affected."""
    from evalkit.generate.musicgen import MusicGenGenerator
    from tests.test_generate import GEN

    caplog.set_level(logging.WARNING)
    g = MusicGenGenerator({"name": "t", "tiny": "tiny-mono"}, {**GEN, "duration": 0.1}, device="cpu", batch_size=1)
    long = " ".join(["a long caption with many words about drums, bass and a soaring violin"] * 60)
    ids = g.tokenizer([long], padding=True, return_tensors="pt", verbose=False)["input_ids"]
    assert ids.shape[-1] > 512  # not truncated: the whole caption conditions the model, as in audiocraft
    from evalkit.data.prompts import Prompt
    from evalkit.generate.base import Batch

    g.generate_batch(Batch(0, 1, [Prompt("x", long)]))
    text = caplog.text
    assert "must be `None` or an integer within the vocabulary" not in text
    assert "Token indices sequence length is longer" not in text


def test_generation_progress_counts_decoding_steps():
    from evalkit.data.prompts import Prompt
    from evalkit.generate.base import Batch
    from evalkit.generate.musicgen import MusicGenGenerator
    from tests.test_generate import GEN

    g = MusicGenGenerator({"name": "t", "tiny": "tiny-stereo"}, {**GEN, "duration": 0.2}, device="cpu", batch_size=2)
    steps = []
    g.generate_batch(Batch(0, 1, [Prompt("a", "piano"), Prompt("b", "drums")]), on_step=steps.append)
    assert sum(steps) == g.max_new_tokens == g.progress_units(Batch(0, 1, []))[0] == 13  # 0.2 s x 50 Hz + 3


def test_folder_mode_prompts_come_from_the_folder(tmp_path):
    from evalkit.audio import save_audio
    from evalkit.data.references import synth_clip
    from evalkit.spec import RunSpec

    gen = tmp_path / "gen"
    for i in ("b", "a"):
        save_audio(gen / f"{i}.flac", synth_clip(i, 32000, 1.0), 32000)
    (gen / "readme.txt").write_text("not a clip")
    spec = RunSpec.from_overrides(["model=folder", f"model.dir={gen}"])
    from evalkit.data.prompts import load_prompts

    assert [(p.id, p.caption) for p in load_prompts(spec.dataset)] == [("a", ""), ("b", "")]
    assert spec.context().captions is False  # clap does not apply; it is skipped with that reason
    from evalkit.metrics.clap import ClapScore

    assert "dataset.captions=FILE" in ClapScore.run_skip_reason({}, spec.context())
    caps = tmp_path / "c.csv"
    caps.write_text("id,caption\na,a piano\nzz,unused\n", encoding="utf-8")
    spec = RunSpec.from_overrides(["model=folder", f"model.dir={gen}", f"dataset.captions={caps}"])
    from evalkit.data.prompts import PromptError

    with pytest.raises(PromptError, match=r"no caption for 1 of the 2 clips of model.dir \(e\.g\. b\)"):
        load_prompts(spec.dataset)  # a clip without its caption is named, never scored as "empty caption"
    caps.write_text("id,caption\na,a piano\nb,drums\nzz,unused\n", encoding="utf-8")
    assert [(p.id, p.caption) for p in load_prompts(spec.dataset)] == [("a", "a piano"), ("b", "drums")]
    assert spec.context().captions is True
    tsv = tmp_path / "p.tsv"
    tsv.write_text("id\tcaption\np1\tpiano\n", encoding="utf-8")
    with pytest.raises(PromptError, match=r"\.tsv is none of them"):
        load_prompts(RunSpec.from_overrides(["dataset=prompts", f"dataset.path={tsv}"]).dataset)
    txt = tmp_path / "p.txt"
    txt.write_text("id,caption\np1,piano\n", encoding="utf-8")
    with pytest.raises(PromptError, match="line 1 looks like a table header"):
        load_prompts(RunSpec.from_overrides(["dataset=prompts", f"dataset.path={txt}"]).dataset)


def _readme_block(section: str, index: int = 0) -> list[str]:
    """The commands of the ``index``-th bash block of a README section, line continuations joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", body, flags=re.S)[index]
    lines = block.replace("\\\n", " ").splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


@pytest.mark.slow
def test_the_readme_demo_and_folder_mode_commands_run_offline_as_written(tmp_path):
    (tmp_path / "evalkit").symlink_to(REPO / "evalkit")  # the commands name paths relative to a checkout
    env = {**ENV, "EVALKIT_CACHE": str(tmp_path / "cache")}
    demo = [c for c in _readme_block("The offline demo (no GPU, no hub)") if c.startswith("python")]
    folder = _readme_block("Score your own clips (folder mode)", 1)
    assert demo == ["python -m evalkit hydra.run.dir=outputs/demo"] and len(folder) == 1
    for cmd in demo + folder:
        p = subprocess.run(cmd.replace("python", sys.executable, 1).split(), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, (cmd, p.stderr[-3000:])
    s = json.loads((tmp_path / "outputs" / "folder-demo" / "summary.json").read_text())
    assert s["n_clips"] == 8 and s["model"]["name"] == "folder"
    assert all(e["value"] is not None for e in s["metrics"].values()), s["metrics"]


def test_typos_exit_2_with_the_choices_and_ctrl_c_is_not_a_traceback(tmp_path):
    for args, msg in ((["metrics=[fadd]"], "metrics=fadd: no such choice; known: aesthetics, chroma, clap, clap_score, fad, fd_openl3, kad, kl_passt, kld, mauve, stable-audio-metrics, stereo"),
                      (["model=stereo-mediumm"], "model=stereo-mediumm: no such choice"),
                      (["+metrics.kld.pad_chunk=true"], "did you mean metrics.kld.pad_chunks?")):
        p = cli(*args, f"hydra.run.dir={tmp_path / 'o'}")
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr[-1500:]
    import evalkit
    from evalkit.spec import SpecError

    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(SpecError, match="unknown \\['fadd'\\]"):
        evalkit.score(tmp_path, metrics=["fadd"])
    with pytest.raises(SpecError, match="chanel_view: no such setting"):
        evalkit.evaluate(["chanel_view=side"], out_dir=tmp_path / "x")


def test_a_metric_that_does_not_apply_is_still_missing_for_the_exit_status():
    from evalkit.__main__ import missing_metrics

    s = {"metrics": {"fad": {"value": 1.0}, "clap": {"value": None, "skipped": "no captions"},
                     "kld": {"value": None, "error": "MetricUnavailable: x"}}}
    assert missing_metrics(s) == ["clap: not applicable: no captions", "kld: MetricUnavailable: x"]


def test_a_killed_run_is_reported_as_unfinished_not_running(tmp_path):
    import platform

    from evalkit.report.rundir import why_no_summary

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "running", "pid": pid,
                                                        "hostname": platform.node(), "start": "t0"}))
    assert "unfinished" in why_no_summary(tmp_path) and f"process {pid}" in why_no_summary(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "running", "pid": os.getpid(),
                                                        "hostname": platform.node()}))
    assert "still running" in why_no_summary(tmp_path)


def test_the_headline_never_prints_a_nonzero_value_as_zero():
    from evalkit.stages.outputs import _number

    assert (_number(2.99e-06), _number(0.0024), _number(0.0)) == ("2.99e-06", "0.0024", "0.0000")


def test_the_side_view_of_dual_mono_says_why_it_is_silent():
    import torch

    from evalkit.audit import AuditSettings, audit_scored

    x = torch.sin(torch.arange(32000) * 0.05)[None].repeat(2, 1) * 0.3
    a = audit_scored((x[:1] - x[1:]) / 2, 32000, AuditSettings(), raw=x, view_name="side")
    assert a.names == ["silent"] and "not silent" in a.flags["silent"] and "dual mono" in a.flags["silent"]


def test_progress_bars_in_a_log_file_are_redrawn_every_30_s_not_every_tenth(monkeypatch):
    """A new user's redirected log held hundreds of carriage-return redraws per bar."""
    import io

    from evalkit.stages import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, interval in ((io.StringIO(), 30.0), (Tty(), 0.1)):
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar(10, True, "scoring", "clip") as bar:
            assert bar.mininterval == interval
            bar.update(10)


def test_the_readme_set_up_chooses_gpu_or_cpu_before_any_install_command():
    """Issue 26, item 14: the set-up block installed torch's CUDA build (6.6 GB) on a machine without a GPU; the CPU
    route came after it. Each route is now its own block, named before its commands, and the CPU route installs
    torch's CPU build before evalkit (pip then keeps it)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"```bash\n.*?```", body, flags=re.S)
    blocks = [_readme_block("Set up", i) for i in range(2)]
    assert "**GPU machine**" in parts[0] and "**CPU-only machine**" in parts[1]
    assert "pip install" not in parts[0] and "4.5 GB" in parts[0]  # the choice and its cost come first
    assert blocks[0] == ["python -m venv .venv && . .venv/bin/activate", 'pip install -e ".[test]"']
    torch_cpu = "pip install torch torchvision torchaudio --index-url https://download.pytorch.org/whl/cpu"
    assert blocks[1] == [blocks[0][0], torch_cpu, blocks[0][1]]
