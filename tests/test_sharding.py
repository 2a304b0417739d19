"""torchrun with 2 processes (gloo, CPU) gives the one-process summary: shards merge by adding statistics."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARGS = ["generation.duration=1.0", "dataset.limit=4", "batch_size=1", "metric_batch_size=1", "metrics=[chroma]",
        "progress=false", "cache.generations=false", "cache.scores=false"]  # both runs really generate


def evalkit(out: Path, nproc: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else [sys.executable]
    p = subprocess.run([*launcher, "-m", "evalkit", *ARGS, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_two_processes_equal_one(tmp_path):
    one = evalkit(tmp_path / "one", 1)
    two = evalkit(tmp_path / "two", 2)
    assert two["n_clips"] == one["n_clips"] == 4
    for name, m in one["metrics"].items():
        for k, v in m["values"].items():
            assert two["metrics"][name]["values"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), (name, k)
    # each rank wrote its own statistics; both halves of the batches were scored
    assert sorted(p.name for p in (tmp_path / "two" / "scores").glob("state-*.npz")) == ["state-000-of-002.npz", "state-001-of-002.npz"]
    assert len(list((tmp_path / "two" / "audio").glob("*.flac"))) == 4
    # rank 0 held the run folder's lock for both ranks (neither locked the other out) and released it
    assert (tmp_path / "two" / ".evalkit.lock").read_text() == ""
    # the generated audio is the same: batch seeds do not depend on which rank ran the batch
    for f in (tmp_path / "one" / "audio").glob("*.flac"):
        assert f.read_bytes() == (tmp_path / "two" / "audio" / f.name).read_bytes()
