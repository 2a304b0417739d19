"""Never lose work: a real run SIGKILLed in the middle of generation and again in the middle of scoring, then
resumed, ends with the summary of an uninterrupted run - the statistics bit for bit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from evalkit import io as eio
from evalkit.run import run

REPO = Path(__file__).resolve().parents[1]
ARGS = ["generation.duration=1.0", "dataset.limit=4", "batch_size=2", "metric_batch_size=1", "metrics=[chroma]",
        "progress=false", "cache.generations=false", "cache.scores=false"]  # without the cache: the killed run must really generate


def launch(out: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("EVALKIT_KILL_AT", None)
    if kill_at:
        env["EVALKIT_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "evalkit", *ARGS, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_sigkill_in_generation_and_in_scoring_then_resume(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=ARGS)
    ref = run(cfg, tmp_path / "uninterrupted")

    out = tmp_path / "killed"
    p = launch(out, "generate:clip:3")  # dies after the 3rd clip: the middle of the 2nd batch
    assert p.returncode == -9, p.stderr[-2000:]
    assert len(list((out / "audio").glob("*.flac"))) == 3 and not (out / "summary.json").exists()

    p = launch(out, "score:rows:2")  # dies after the rows of scoring batch 2, before its statistics are saved
    assert p.returncode == -9, p.stderr[-2000:]
    assert not (out / "summary.json").exists()
    state = eio.read_npz(out / "scores" / "state-000-of-001.npz")
    assert sorted(state["__done__"].tolist()) == [0]  # batch 1's rows exist, its statistics were never saved

    p = launch(out, None)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["metrics"] == ref["metrics"]
    a = eio.read_npz(tmp_path / "uninterrupted" / "scores" / "state-000-of-001.npz")
    b = eio.read_npz(out / "scores" / "state-000-of-001.npz")
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    for f in sorted((tmp_path / "uninterrupted" / "audio").glob("*.flac")):
        assert f.read_bytes() == (out / "audio" / f.name).read_bytes(), f.name


def test_corrupt_state_is_recomputed_not_trusted(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=ARGS)
    first = run(cfg, tmp_path)
    (tmp_path / "scores" / "state-000-of-001.npz").write_bytes(b"garbage")
    (tmp_path / "audio" / sorted(os.listdir(tmp_path / "audio"))[0]).write_bytes(b"truncated")
    again = run(cfg, tmp_path)
    assert again["metrics"] == first["metrics"]
