"""Python API (temporary shim; replaced by the RunSpec-based API)."""
from __future__ import annotations

from pathlib import Path


def evaluate(overrides, out_dir):
    from hydra import compose, initialize_config_dir

    from evalkit.run import run

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        cfg = compose("config", overrides=list(overrides))
    return run(cfg, out_dir)
