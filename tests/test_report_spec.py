"""The report and compare read every metric fact from the summary's spec: a metric they have never heard of
("loudness_gap", invented here) is tabled, bootstrapped and compared from its spec alone; older summaries without
spec blocks are refused; and evalkit/report + compare.py name no metric and keep their functions short."""
from __future__ import annotations

import ast
import json
import re

import numpy as np
import pandas as pd
import pytest

from evalkit.metrics.spec import MetricSpec
from evalkit.report import bootstrap as bs
from evalkit.report import card_table, collect_runs, load_run, to_latex, to_markdown, write_tables
from evalkit.report.compare import Tolerance, compare_summaries, main as compare_main
from evalkit.report.rundir import RunFolderError
from evalkit.report.table import per_clip_values
from tests.conftest import REPO
from tests.fake_runs import fake_per_clip, make_run, metric_specs

CARD = ["Frechet Audio Distance", "KLD", "Text Consistency", "Chroma Cosine Similarity"]
LOUDNESS = MetricSpec(
    name="loudness_gap", primary="loudness_gap", higher_is_better=False, card_column=None, decimals=2,
    tolerance="0.5", per_clip=("loudness_gap", "loudness_gap_seconds"), aggregate="mean", value_column="loudness_gap",
    weight="loudness_gap_seconds", needs_reference=True, min_clips=1, section="extra",
    description="|integrated loudness of the generated clip - its reference| in LU, weighted by duration",
)


def _loudness_run(folder, model="small", gap=(1.5, 0.4), seed=0, value=None):
    clips = fake_per_clip(40, seed)
    rng = np.random.default_rng(seed + 7)
    clips["loudness_gap"] = np.abs(rng.normal(*gap, len(clips)))
    clips["loudness_gap_seconds"] = rng.integers(5, 11, len(clips))
    values = {} if value is None else {"loudness_gap": value}
    return make_run(folder, model, clips=clips, embeddings=False, values={"fad": 4.9, **values},
                    metrics=("fad", "kld", "clap", "loudness_gap"), specs={"loudness_gap": LOUDNESS})


def test_an_invented_metric_gets_its_own_table_from_its_spec(tmp_path):
    run_dir = _loudness_run(tmp_path / "r")
    run = load_run(run_dir)
    clips = run.clips
    want = float((clips["loudness_gap"] * clips["loudness_gap_seconds"]).sum() / clips["loudness_gap_seconds"].sum())
    assert run.value("loudness_gap") == pytest.approx(want)
    table = card_table(collect_runs([run_dir], n_boot=300, seed=1))
    # not on the card: the card keeps exactly the published CSV's columns
    assert table.attrs["columns"] == CARD and "loudness_gap" not in table.columns
    extra = table.attrs["sections"]["extra"]
    assert extra.attrs["columns"] == ["loudness_gap"] and extra.attrs["arrows"] == {"loudness_gap": False}
    lo, v, hi = extra.loc["small", ["loudness_gap CI low", "loudness_gap", "loudness_gap CI high"]]
    assert v == pytest.approx(want) and lo < v < hi

    md = to_markdown(table)
    section = md.split("### evalkit's own metrics (not on the MusicGen model card): extra\n\n")[1]
    assert section.splitlines()[:3] == ["| Model | loudness_gap ↓ |", "|---|---:|",
                                        f"| small | {v:.2f} [{lo:.2f}, {hi:.2f}] |"]
    tex = to_latex(table)
    assert r"\label{tab:musicgen-card-extra}" in tex and r"Model & loudness\_gap $\downarrow$ \\" in tex
    assert rf"small & {v:.2f}\,{{\scriptsize[{lo:.2f}, {hi:.2f}]}} \\" in tex
    paths = write_tables(table, tmp_path / "out")
    back = pd.read_csv(paths["csv:extra"], index_col="Model")
    assert back.loc["small", "loudness_gap"] == pytest.approx(v, rel=1e-5)
    assert "loudness_gap" not in pd.read_csv(paths["csv"]).columns
    # the per-clip plots pick it up too (aggregate: mean over value_column)
    pc = per_clip_values([run])
    assert set(pc["metric"]) == {"kld", "clap", "loudness_gap"}


def test_an_invented_metric_is_bootstrapped_as_its_spec_says(tmp_path):
    run = load_run(_loudness_run(tmp_path / "r"))
    ivs, why = bs.run_intervals(run, n_boot=400)
    assert set(ivs) >= {"loudness_gap", "kld", "clap"} and "loudness_gap" not in why
    iv = ivs["loudness_gap"]
    assert iv.weighted  # weighted by spec.weight, loudness_gap_seconds
    assert iv.value == pytest.approx(run.value("loudness_gap"), rel=1e-12)
    c = run.clips
    direct = bs.bootstrap_mean(c["loudness_gap"], c["loudness_gap_seconds"], metric="loudness_gap", n_boot=400)
    assert (iv.low, iv.high) == (direct.low, direct.high)
    # aggregate "none": no interval, and the reason says why
    none = {**LOUDNESS.as_dict(), "aggregate": "none"}
    run = load_run(make_run(tmp_path / "n", clips=run.clips, embeddings=False, metrics=("loudness_gap",),
                            specs={"loudness_gap": none}, values={"loudness_gap": 1.0}))
    ivs, why = bs.run_intervals(run, n_boot=50)
    assert not ivs and "no per-clip decomposition" in why["loudness_gap"]


def test_an_invented_metric_is_compared_with_its_direction_and_tolerance(tmp_path, capsys):
    base = _loudness_run(tmp_path / "a", value=1.5)
    worse = _loudness_run(tmp_path / "b", value=2.1)  # +0.6 > 0.5, lower is better
    fine = _loudness_run(tmp_path / "c", value=1.9)   # +0.4
    better = _loudness_run(tmp_path / "d", value=0.9)

    def verdicts(cur):
        return {r.metric: r for r in compare_summaries(load_run(base).summary, load_run(cur).summary).rows}

    row = verdicts(worse)["loudness_gap"]
    assert (row.higher_is_better, row.tolerance, row.verdict) == (False, Tolerance(0.5, False), "regressed")
    assert verdicts(fine)["loudness_gap"].verdict == "ok"
    assert verdicts(better)["loudness_gap"].verdict == "improved"
    assert compare_main([str(base), str(worse)]) == 1
    assert "| loudness_gap ↓ | 1.5 | 2.1 | +0.6 (+40.00%) | ±0.5 | ❌ regressed |" in capsys.readouterr().out
    assert compare_main([str(base), str(worse), "--tol", "loudness_gap=0.7"]) == 0


TIMBRE = MetricSpec(
    name="timbre", primary="warmth", higher_is_better=True, card_column=None, decimals=2, tolerance="0.1",
    per_clip=("timbre_warmth", "timbre_air"), aggregate="mean", value_column="timbre_warmth", needs_reference=False,
    section="timbre", label="warmth",
    also=({"key": "air", "name": "timbre_air", "value_column": "timbre_air", "label": "air", "higher_is_better": False,
           "tolerance": "0.3"},),
)


def _timbre_run(folder, air=(2.0, 0.5), seed=0):
    """A run of an invented metric with two headline numbers: warmth (its primary) and air (``spec.also``)."""
    clips = fake_per_clip(40, seed)
    rng = np.random.default_rng(seed + 3)
    clips["timbre_warmth"], clips["timbre_air"] = rng.normal(5, 1, len(clips)), rng.normal(*air, len(clips))
    folder = make_run(folder, clips=clips, embeddings=False, metrics=("fad", "timbre"), specs={"timbre": TIMBRE},
                      values={"fad": 4.9})
    s = json.loads((folder / "summary.json").read_text())
    s["metrics"]["timbre"]["values"] = {"warmth": float(clips["timbre_warmth"].mean()),
                                        "air": float(clips["timbre_air"].mean())}
    (folder / "summary.json").write_text(json.dumps(s))
    return folder, clips


def test_a_metric_with_several_numbers_gets_a_column_interval_and_verdict_for_each(tmp_path):
    """``spec.also``: each other number of compute() is read as a metric of its own (its value, direction, label,
    tolerance, per-clip column for the interval), next to the headline; the summary itself holds one metric."""
    folder, clips = _timbre_run(tmp_path / "a")
    run = load_run(folder)
    assert list(run.metrics) == ["fad", "timbre", "timbre_air"] and run.random_metrics == []
    assert run.value("timbre_air") == pytest.approx(clips["timbre_air"].mean())
    assert run.spec("timbre_air").part_of == "timbre" and run.spec("timbre_air").skip_column == "timbre_skipped"
    section = card_table(collect_runs([folder], n_boot=300, seed=1)).attrs["sections"]["timbre"]
    assert section.attrs["columns"] == ["warmth", "air"] and section.attrs["arrows"] == {"warmth": True, "air": False}
    lo, v, hi = section.loc["small", ["air CI low", "air", "air CI high"]]
    direct = bs.bootstrap_mean(clips["timbre_air"], metric="timbre_air", n_boot=300, seed=1)
    assert v == pytest.approx(clips["timbre_air"].mean()) and (lo, hi) == (direct.low, direct.high)
    louder, _ = _timbre_run(tmp_path / "b", air=(2.5, 0.5))  # more air: worse for air, warmth unchanged
    rows = {r.metric: r for r in compare_summaries(run.summary, load_run(louder).summary).rows}
    assert (rows["timbre_air"].verdict, rows["timbre_air"].tolerance) == ("regressed", Tolerance(0.3, False))
    assert rows["timbre"].verdict == "ok" and MetricSpec.from_dict(TIMBRE.as_dict()) == TIMBRE
    with pytest.raises(ValueError, match="each needs key and name"):
        MetricSpec(name="x", primary="x", higher_is_better=True, card_column=None, decimals=2, tolerance="1",
                   also=({"key": "y", "colour": "red"},))


def test_specs_of_the_fake_runs_are_the_metric_classes(tmp_path):
    from evalkit.metrics.fad import FAD

    s = json.loads((make_run(tmp_path / "r", embeddings=False) / "summary.json").read_text())
    assert s["metrics"]["fad"]["spec"] == FAD.spec.as_dict() == metric_specs()["fad"]
    columns = {m: e["spec"]["card_column"] for m, e in s["metrics"].items()}
    assert columns == dict(zip(("fad", "kld", "clap", "chroma"), CARD))


def test_a_summary_without_spec_blocks_is_refused(tmp_path):
    old = make_run(tmp_path / "old", "small", embeddings=False, legacy=True)
    with pytest.raises(RunFolderError) as exc:
        load_run(old)
    msg = str(exc.value)
    assert str(old / "summary.json") in msg and "older evalkit" in msg and "re-run" in msg
    with pytest.raises(RunFolderError, match="no run could be read"):
        collect_runs([old], ci=False)


# -- guards: nothing in the report names a metric; short functions -----------------------------------------------
REPORT_FILES = sorted((REPO / "evalkit" / "report").glob("*.py")) + [REPO / "evalkit" / "compare.py"]
METRIC_LITERAL = re.compile(r"^_?(fad|kld|clap|chroma|stereo)(_[a-z_]+)?$")


@pytest.mark.parametrize("path", REPORT_FILES, ids=lambda p: p.name)
def test_the_report_names_no_metric(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    literals = [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and METRIC_LITERAL.match(n.value)]
    assert not literals, f"{path.name}: metric names as literals {literals}: read them from the spec"
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"CARD_COLUMNS", "HIGHER_IS_BETTER", "METRIC_ORDER", "DECIMALS", "DEFAULT_TOLERANCES",
                        "WEIGHT_SUFFIXES", "PER_CLIP_METRICS", "Run"}


@pytest.mark.parametrize("path", sorted((REPO / "evalkit" / "report").glob("*.py")), ids=lambda p: p.name)
def test_report_functions_and_classes_are_short(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    big = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
           if isinstance(n, ast.ClassDef) and n.end_lineno - n.lineno + 1 > 250]
    assert not long and not big, (long, big)
