"""The code's shape (issue 12): short functions and classes, stages in data-flow order, and a new metric is its module,
its conf files and its tests - nothing else in the package."""
from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "evalkit"
MAX_FUNCTION, MAX_CLASS = 60, 250


def test_no_function_over_60_lines_no_class_over_250():
    long = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            n = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and n > MAX_FUNCTION:
                long.append(f"{f.relative_to(REPO)}:{node.lineno} def {node.name} ({n} lines)")
            if isinstance(node, ast.ClassDef) and n > MAX_CLASS:
                long.append(f"{f.relative_to(REPO)}:{node.lineno} class {node.name} ({n} lines)")
    assert long == []


def test_the_runner_only_composes_the_stages():
    src = (PACKAGE / "run.py").read_text(encoding="utf-8")
    assert len(src.splitlines()) < 100
    for stage in ("inputs", "generation", "outputs", "scoring", "folder"):
        assert f"{stage}." in src


def test_no_metric_name_is_special_cased_outside_its_module():
    """The run, its stages, the report and compare never test a metric's name (hooks and specs say it all)."""
    names = ("fad", "kld", "clap", "chroma", "stereo")
    offenders = []
    for f in list((PACKAGE / "stages").glob("*.py")) + [PACKAGE / "run.py", PACKAGE / "api.py", PACKAGE / "spec.py"] + \
            list((PACKAGE / "report").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Constant) and side.value in names:
                        offenders.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


@pytest.mark.slow
def test_a_fifth_metric_is_its_module_and_its_conf_files(tmp_path):
    """Write a new metric (its module and conf files only) into a copy of the package and run it through the whole
    pipeline and the report: nothing else had to change."""
    import shutil
    import subprocess
    import sys

    work = tmp_path / "repo"
    shutil.copytree(PACKAGE, work / "evalkit")
    shutil.copytree(REPO / "conf", work / "conf")
    shutil.copytree(REPO / "results", work / "results")
    (work / "evalkit" / "metrics" / "loudness_gap.py").write_text(textwrap.dedent('''
        """Mean absolute RMS level difference (dB) between generated clips and their references (a test metric)."""
        import math
        from evalkit.metrics.base import ClipResult, Metric
        from evalkit.metrics.spec import MetricSpec
        from evalkit.registry import register_metric

        @register_metric("loudness_gap")
        class LoudnessGap(Metric):
            spec = MetricSpec(name="loudness_gap", primary="loudness_gap", higher_is_better=False, card_column=None,
                              decimals=2, tolerance="0.5", per_clip=("loudness_gap",), value_column="loudness_gap",
                              section="extra")

            def __init__(self, recipe, device="cpu", context=None):
                super().__init__(recipe, device, context)
                self.build_input(int(self.recipe["sample_rate"]))
                self.add_state("sum", ())

            def update(self, clips):
                out = {}
                for c, p, skipped in self.prepare(clips):  # its protocol's input path, and the audit
                    if skipped is not None:
                        out[c.id] = skipped
                        continue
                    db = lambda x: 20 * math.log10(float(x.double().pow(2).mean().sqrt()) + 1e-12)
                    gap = abs(db(p.generated.wav) - db(p.reference.wav)) * float(self.recipe["scale"])
                    self.state["sum"] += gap
                    self.state["n_clips"] += 1
                    out[c.id] = self.result(p, {"loudness_gap": gap})
                return out

            def _compute(self):
                return {"loudness_gap": float(self.state["sum"]) / float(self.state["n_clips"])}
        '''))
    (work / "conf" / "metrics" / "loudness_gap").mkdir()
    (work / "conf" / "metrics" / "loudness_gap" / "evalkit.yaml").write_text(
        "protocol: evalkit\nembedding: null\nsample_rate: 32000\nscale: 1.0\n"
        "input:\n  reference: ${postprocess.reference}\n  generated: ${postprocess.generated}\n"
        "  both: [{resample: {rate: embedder}}, {channels: 1}]\n")
    (work / "conf" / "metrics" / "loudness_gap.yaml").write_text(
        "defaults:\n  - loudness_gap: evalkit\n  - _self_\n")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(work),
           "EVALKIT_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "evalkit", "generation.duration=1.0", "dataset.limit=2",
                          "metrics=[loudness_gap]", "progress=false", f"hydra.run.dir={tmp_path / 'out'}"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["metrics"]["loudness_gap"]["value"] > 0 and s["metrics"]["loudness_gap"]["spec"]["section"] == "extra"
    rep = subprocess.run([sys.executable, "-m", "evalkit.report", str(tmp_path / "out"), "--out",
                          str(tmp_path / "rep"), "--no-plots"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=600)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert "loudness_gap" in rep.stdout and (tmp_path / "rep" / "evalkit_metrics_extra.csv").is_file()
