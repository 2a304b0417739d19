"""Hydra multirun sweeps over models: the local launcher for real, the SLURM launcher's config composition."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]


def test_local_multirun_over_two_models(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "evalkit", "-m", "model=tiny-mono,tiny-stereo", "metrics=[chroma]",
                        "generation.duration=1.0", "dataset.limit=2", "progress=false", f"hydra.sweep.dir={tmp_path}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for name, channels in (("tiny-mono", 1), ("tiny-stereo", 2)):
        s = json.loads((tmp_path / name / "summary.json").read_text())
        assert s["model"]["name"] == name and s["n_clips"] == 2 and s["random_weights"] is True
        import soundfile as sf

        assert {sf.info(str(f)).channels for f in (tmp_path / name / "audio").glob("*.flac")} == {channels}


def test_slurm_launcher_config():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is not installed: needs the extra evalkit[slurm]")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        c = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "model=stereo-large"],
                    return_hydra_config=True)
    assert c.hydra.launcher._target_.endswith("SlurmLauncher")
    assert (c.hydra.launcher.partition, c.hydra.launcher.gpus_per_node, c.hydra.launcher.tasks_per_node) == ("gpu", 1, 1)
    assert c.hydra.sweep.subdir == "stereo-large"  # one folder per swept model
