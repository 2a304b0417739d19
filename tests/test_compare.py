"""Regression verdicts, tolerances, refusals and exit codes of `python -m evalkit.compare` (evalkit/report/compare.py)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from evalkit.report.compare import (
    DEFAULT_TOLERANCE,
    IncompatibleRuns,
    Tolerance,
    compare_summaries,
    main,
    resolve_tolerances,
    tolerance_for,
    verdict,
)
from evalkit.report.rundir import RunFolderError
from tests.conftest import REPO
from tests.fake_runs import make_run, metric_specs

BASE = {"fad": 4.9, "kld": 1.4, "clap": 0.27, "chroma": 0.44}


def run(tmp_path, name, values=None, **kw):
    return make_run(tmp_path / name, "small", embeddings=False, values={**BASE, **(values or {})}, **kw)


def summary(path):
    return json.loads((path / "summary.json").read_text())


# -- tolerances -------------------------------------------------------------------------------------------------------
def test_tolerance_parsing():
    assert Tolerance.parse("2%") == Tolerance(0.02, True)
    assert Tolerance.parse(" 0.5% ") == Tolerance(0.005, True)
    assert Tolerance.parse(0.05) == Tolerance(0.05, False) and Tolerance.parse("0.05") == Tolerance(0.05, False)
    assert Tolerance.parse("2%").allowed(-0.5) == pytest.approx(0.01)
    assert str(Tolerance.parse("2%")) == "2%" and str(Tolerance.parse(0.05)) == "0.05"
    for bad in ("abc", "-1", "nan%", "1e999"):
        with pytest.raises(ValueError):
            Tolerance.parse(bad)


def test_default_tolerances_come_from_the_spec_and_layers_override():
    specs = metric_specs()
    # no user tolerance: each metric's spec (FAD 5 %, KLD 2 %), DEFAULT_TOLERANCE without a spec
    assert tolerance_for("fad", specs["fad"], {}) == Tolerance(0.05, True)
    assert tolerance_for("kld", specs["kld"], {}) == Tolerance(0.02, True)
    assert tolerance_for("gone", None, {}) == Tolerance.parse(DEFAULT_TOLERANCE)
    tol = resolve_tolerances({"fad": "0.1"}, {"clap": 0.01})
    assert tol == {"fad": Tolerance(0.1, False), "clap": Tolerance(0.01, False)}
    assert tolerance_for("fad", specs["fad"], tol) == Tolerance(0.1, False)
    assert tolerance_for("kld", specs["kld"], tol) == Tolerance(0.02, True)  # not named: still the spec's
    # "default" replaces the spec's tolerance of the metrics not named; a named one still wins; later layers win
    tol = resolve_tolerances({"fad": "0.1", "default": "3%"}, {"default": "1%"})
    assert tolerance_for("kld", specs["kld"], tol) == Tolerance(0.01, True)
    assert tolerance_for("fad", specs["fad"], tol) == Tolerance(0.1, False)


@pytest.mark.parametrize(
    "base, cur, hib, tol, want",
    [
        (4.9, 5.0, False, "0.05", "regressed"),   # FAD up by 0.1 > 0.05
        (4.9, 4.95, False, "0.05", "ok"),         # exactly at the tolerance: not beyond it
        (4.9, 4.8, False, "0.05", "improved"),
        (1.0, 1.05, False, "5%", "ok"),
        (1.0, 1.0501, False, "5%", "regressed"),
        (0.27, 0.264, True, "2%", "regressed"),   # allowed 0.0054, dropped 0.006
        (0.27, 0.265, True, "2%", "ok"),
        (0.27, 0.28, True, "2%", "improved"),
        (0.27, 0.20, True, "100%", "ok"),
        (0.27, math.nan, True, "2%", "missing"),
        (math.nan, 0.3, True, "2%", "new"),
    ],
)
def test_verdicts(base, cur, hib, tol, want):
    assert verdict(base, cur, hib, Tolerance.parse(tol)) == want


# -- whole comparisons ------------------------------------------------------------------------------------------------
def test_identical_runs_pass(tmp_path, capsys):
    a, b = run(tmp_path, "a"), run(tmp_path, "b")
    assert main([str(a), str(b / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## evalkit regression check: ✅ no regression")
    assert "| fad ↓ | 4.9 | 4.9 | +0 (+0.00%) | ±5% (±0.245) | ✅ ok |" in out
    assert "| clap ↑ | 0.27 | 0.27 | +0 (+0.00%) | ±2% (±0.0054) | ✅ ok |" in out


def test_regression_fails_with_exit_1_and_report_file(tmp_path, capsys):
    a = run(tmp_path, "a")
    b = run(tmp_path, "b", {"fad": 5.3, "clap": 0.30, "kld": 1.41})
    report = tmp_path / "ci" / "report.md"
    assert main([str(a), str(b), "--out", str(report), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert report.read_text(encoding="utf-8") == out
    assert out.startswith("## evalkit regression check: ❌ regression")
    assert "| fad ↓ | 4.9 | 5.3 | +0.4 (+8.16%) | ±5% (±0.245) | ❌ regressed |" in out
    assert "| kld ↓ | 1.4 | 1.41 | +0.01 (+0.71%) | ±2% (±0.028) | ✅ ok |" in out
    assert "| clap ↑ | 0.27 | 0.3 | +0.03 (+11.11%) | ±2% (±0.0054) | ✅ improved |" in out
    rows = {r["metric"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert rows["fad"]["verdict"] == "regressed" and rows["fad"]["delta"] == pytest.approx(0.4)
    # the same move passes under a looser FAD tolerance given as a flag
    assert main([str(a), str(b), "--tol", "fad=0.5"]) == 0


def test_tolerance_file_and_flags(tmp_path, capsys):
    a = run(tmp_path, "a")
    b = run(tmp_path, "b", {"kld": 1.45})  # +0.05: beyond the default 2 % (0.028)
    cfg = tmp_path / "tol.yaml"
    cfg.write_text(yaml.safe_dump({"tolerances": {"kld": 0.06}}))
    assert main([str(a), str(b)]) == 1
    assert main([str(a), str(b), "--config", str(cfg)]) == 0
    assert main([str(a), str(b), "--config", str(cfg), "--tol", "kld=1%"]) == 1  # flags win over the file
    capsys.readouterr()
    assert main([str(a), str(b), "--tol", "kld"]) == 2
    assert "expected METRIC=VALUE" in capsys.readouterr().err


def test_direction_and_tolerance_are_read_from_the_spec(tmp_path):
    """Flip a metric's spec: the same move is judged by the summary's spec, not by a table in compare.py."""
    flipped = {**metric_specs()["kld"], "higher_is_better": True, "tolerance": "0.5"}
    a = run(tmp_path, "a", specs={"kld": flipped})
    b = run(tmp_path, "b", {"kld": 1.0}, specs={"kld": flipped})  # -0.4: bad when higher is better, within 0.5
    cmp = compare_summaries(summary(a), summary(b))
    kld = next(r for r in cmp.rows if r.metric == "kld")
    assert kld.higher_is_better is True and kld.tolerance == Tolerance(0.5, False) and kld.verdict == "ok"
    c = run(tmp_path, "c", {"kld": 0.8}, specs={"kld": flipped})  # -0.6: beyond 0.5 in the bad direction
    assert {r.metric: r.verdict for r in compare_summaries(summary(a), summary(c)).rows}["kld"] == "regressed"


def test_missing_and_new_metrics(tmp_path):
    a = make_run(tmp_path / "a", "small", embeddings=False, values=BASE, metrics=("fad", "kld", "clap"))
    b = make_run(tmp_path / "b", "small", embeddings=False, values=BASE, metrics=("fad", "kld", "chroma"))
    cmp = compare_summaries(summary(a), summary(b))
    assert {r.metric: r.verdict for r in cmp.rows} == {"fad": "ok", "kld": "ok", "clap": "missing", "chroma": "new"}
    assert cmp.exit_code == 1
    c = make_run(tmp_path / "c", "small", embeddings=False, values={**BASE, "kld": None})  # metric present, value null
    assert {r.metric: r.verdict for r in compare_summaries(summary(a), summary(c)).rows}["kld"] == "missing"
    # asked for and not computed: missing, and the note says why
    d = make_run(tmp_path / "d", "small", embeddings=False, values=BASE, errors={"fad": "MetricUnavailable: 38 windows"})
    cmp = compare_summaries(summary(a), summary(d))
    assert {r.metric: r.verdict for r in cmp.rows}["fad"] == "missing" and cmp.exit_code == 1
    assert "fad missing in the current run: not computed: MetricUnavailable: 38 windows" in cmp.notes
    # not applicable in either run: skipped, not a failure
    e = make_run(tmp_path / "e", "small", embeddings=False, values=BASE, metrics=("fad", "kld", "clap"),
                 skipped={"chroma": "melody.source=none"})
    cmp = compare_summaries(summary(e), summary(e))
    assert {r.metric: r.verdict for r in cmp.rows}["chroma"] == "skipped" and cmp.exit_code == 0


def test_summaries_without_spec_blocks_are_refused(tmp_path, capsys):
    a = run(tmp_path, "a")
    old = run(tmp_path, "old", legacy=True)
    with pytest.raises(RunFolderError, match="older evalkit"):
        compare_summaries(summary(a), summary(old))
    assert main([str(a), str(old)]) == 2
    err = capsys.readouterr().err
    assert str(old / "summary.json") in err and "re-run" in err


@pytest.mark.parametrize("views, refused", [(("mono", "mono"), False), ((None, "mono"), False),
                                             ((None, "mid"), True), (("left", "right"), True)])
def test_different_channel_views_are_refused(tmp_path, capsys, views, refused):
    extra = [{} if v is None else {"channel_view": v} for v in views]  # absent = mono
    a, b = run(tmp_path, "a", extra_summary=extra[0]), run(tmp_path, "b", extra_summary=extra[1])
    rc = main([str(a), str(b)])
    out = capsys.readouterr().out
    if refused:
        assert rc == 2 and "not comparable" in out
        assert f"channel_view differs (baseline {views[0] or 'mono'!r}, current {views[1]!r})" in out
    else:
        assert rc == 0 and "channel_view differs" not in out


@pytest.mark.parametrize("shas, warned", [(("a" * 64, "a" * 64), None), ((None, None), None),
                                          (("a" * 64, "b" * 64), "different reference sets"),
                                          (("a" * 64, None), "only the baseline run names its reference set"),
                                          ((None, "b" * 64), "only the current run names its reference set")])
def test_different_reference_sets_warn_without_changing_the_exit_code(tmp_path, capsys, shas, warned):
    extra = [{"reference_set": None if s is None else {"dir": "/data/musiccaps", "manifest_sha256": s, "n_ok": 5500}}
             for s in shas]
    a, b = run(tmp_path, "a", extra_summary=extra[0]), run(tmp_path, "b", extra_summary=extra[1])
    assert main([str(a), str(b)]) == 0
    c = run(tmp_path, "c", {"fad": 6.0}, extra_summary=extra[1])
    assert main([str(a), str(c)]) == 1  # a regression still fails; the warning does not change that
    out, err = capsys.readouterr()
    if warned is None:
        assert "warning" not in out and "warning" not in err
    else:
        assert out.count(f"- ⚠️ warning: {warned}") == 2 and err.count(f"evalkit.compare: warning: {warned}") == 2


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"protocol": {"fad": "frechet-audio-distance", "kld": "audiocraft", "clap": "audiocraft", "chroma": "audiocraft"}},
         "fad: protocol differs (baseline 'audiocraft', current 'frechet-audio-distance')"),
        ({"checkpoint_sha256": {"fad": "0" * 64, "kld": "f" * 64, "clap": "0" * 64, "chroma": "0" * 64}},
         "kld: backbone checkpoint (checkpoint_sha256) differs"),
        ({"random_weights": True}, "random_weights differs (baseline False, current True)"),
        ({"extra_summary": {"placeholder": True}}, None),
    ],
)
def test_incomparable_runs_are_refused_with_exit_2(tmp_path, capsys, kw, reason):
    a = run(tmp_path, "a")
    b = run(tmp_path, "b", **kw)
    if reason is None:  # a placeholder baseline
        a, b = b, a
        reason = "the baseline is a placeholder"
    with pytest.raises(IncompatibleRuns) as exc:
        compare_summaries(summary(a), summary(b))
    assert any(reason in r for r in exc.value.reasons)
    out_file = tmp_path / "refused.md"
    assert main([str(a), str(b), "--out", str(out_file)]) == 2
    out = capsys.readouterr()
    assert out.out.startswith("## evalkit regression check: ⛔ refused") and reason in out.out
    assert reason in out_file.read_text(encoding="utf-8") and "refusing to compare" in out.err


def test_different_model_and_clip_count_are_noted_not_refused(tmp_path):
    a = run(tmp_path, "a")
    b = make_run(tmp_path / "b", "medium", embeddings=False, values=BASE, n_clips=30)
    cmp = compare_summaries(summary(a), summary(b))
    assert cmp.exit_code == 0
    assert cmp.notes == ["different models: baseline 'small', current 'medium'", "different clip counts: baseline 40, current 30"]


def test_unreadable_input_exit_2(tmp_path, capsys):
    a = run(tmp_path, "a")
    assert main([str(a), str(tmp_path / "nope")]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert main([str(a), str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_module_entry_point_and_exit_codes(tmp_path):
    a = run(tmp_path, "a")
    b = run(tmp_path, "b", {"fad": 6.0})
    cmd = [sys.executable, "-m", "evalkit.compare", str(a), str(b)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "❌ regressed" in p.stdout
    p = subprocess.run(cmd + ["--tol", "fad=30%"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


# -- the CI example ---------------------------------------------------------------------------------------------------
def test_ci_example_and_placeholder_baseline(tmp_path, capsys):
    ci = yaml.safe_load((REPO / "examples" / "github-ci.yml").read_text())
    steps = [s.get("run", "") for job in ci["jobs"].values() for s in job["steps"]]
    joined = "\n".join(steps)
    assert "python -m evalkit hydra.run.dir=" in joined
    assert "python -m evalkit.compare examples/baseline/summary.json" in joined
    assert "--config examples/tolerances.yaml" in joined
    tol = yaml.safe_load((REPO / "examples" / "tolerances.yaml").read_text())
    assert set(resolve_tolerances(tol.get("tolerances", tol))) >= {"fad", "kld", "clap", "default"}
    baseline = json.loads((REPO / "examples" / "baseline" / "summary.json").read_text())
    assert set(baseline["metrics"]) == {"fad", "kld", "clap", "stereo"} and baseline["random_weights"] is True
    # a real demo run of this evalkit: not a placeholder, every metric with its spec (compare reads them)
    assert "placeholder" not in baseline
    assert {m: e["spec"]["name"] for m, e in baseline["metrics"].items()} == {m: m for m in baseline["metrics"]}
    readme = (REPO / "examples" / "README.md").read_text()
    assert "is a **placeholder**" not in readme and "summary of a real offline demo run" in readme


def test_committed_ci_baseline_is_a_real_demo_run():
    """examples/baseline/summary.json is what examples/github-ci.yml compares the offline demo with: it must be a
    real demo summary (not a placeholder) of the demo's model and metrics, and pass against itself."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    base = repo / "examples" / "baseline" / "summary.json"
    s = json.loads(base.read_text())
    assert not s.get("placeholder") and s["model"]["name"] == "tiny-stereo" and s["random_weights"] is True
    assert sorted(s["metrics"]) == ["clap", "fad", "kld", "stereo"] and all(m["value"] is not None for m in s["metrics"].values())
    p = subprocess.run([sys.executable, "-m", "evalkit.compare", str(base), str(base), "--config",
                        str(repo / "examples" / "tolerances.yaml")], capture_output=True, text=True, cwd=repo)
    assert p.returncode == 0, p.stdout + p.stderr


def test_runs_of_another_recipe_or_generation_are_not_compared():
    """A changed recipe constant (pad_chunks) or generation setting (duration) is another measurement: refused
    (exit 2), naming the constant; a different seed is run-to-run noise and is compared."""
    import copy

    from evalkit.report.compare import check_compatible

    base = json.loads((REPO / "examples" / "baseline" / "summary.json").read_text())
    cur = copy.deepcopy(base)
    cur["metrics"]["kld"]["recipe"]["pad_chunks"] = True
    cur["settings"]["generation"]["duration"] = 2.0
    reasons = check_compatible(base, cur)
    assert any("kld recipe: pad_chunks differs (baseline False, current True)" in r for r in reasons)
    assert any("generation: duration differs (baseline 10.0, current 2.0)" in r for r in reasons)
    assert check_compatible(base, copy.deepcopy(base)) == []
    assert "seed" not in base["settings"]["generation"]
    # a digest pinned since the baseline (the embedder's checkpoint_sha256: where weights come from and how they are
    # checked) is not another recipe: the weights used are compared as the metric's own checkpoint_sha256
    pinned = copy.deepcopy(base)
    assert base["metrics"]["clap"]["recipe"]["embedder"]["checkpoint_sha256"] is None
    pinned["metrics"]["clap"]["recipe"]["embedder"]["checkpoint_sha256"] = "fae3e9c0" + "0" * 56
    assert check_compatible(base, pinned) == []
    pinned["metrics"]["clap"]["recipe"]["embedder"]["max_samples"] = 240000  # a constant of the embedding is
    assert check_compatible(base, pinned) == [  # named inside its block
        "clap recipe embedder: max_samples differs (baseline 480000, current 240000): another recipe, not a regression"]
    pinned["metrics"]["clap"]["checkpoint_sha256"] = "f" * 64  # another weights file is another measurement
    assert any("clap: backbone checkpoint (checkpoint_sha256) differs" in r for r in check_compatible(base, pinned))


def test_a_folder_run_is_compared_with_a_generation_run_on_what_scores_the_audio(tmp_path, capsys):
    """Issue 26, item 15: compare outputs/demo outputs/folder-demo refused with "the model's random_weights differs"
    though both scored the same audio with the same backbones: a folder of files has no generator."""
    demo = make_run(tmp_path / "demo", "tiny-stereo", embeddings=False, values=BASE, random_weights=True,
                    extra_summary={"synthetic_references": True})
    folder_model = {"name": "folder", "hub_id": None, "source": str(demo / "audio"), "random_weights": False,
                    "generated": False}
    folder = make_run(tmp_path / "folder-demo", "folder", embeddings=False, values=BASE, random_weights=True,
                      extra_summary={"model": folder_model})
    cmp = compare_summaries(summary(demo), summary(folder))
    assert cmp.exit_code == 0 and [r.verdict for r in cmp.rows] == ["ok"] * 4
    assert ("the baseline run generated its audio (tiny-stereo, random weights) and the current run scored a folder "
            "of files, which has no generator: compared on what scores the audio (metric recipes, backbone weights, "
            "post-processing), not on the generators' weights") in cmp.notes
    assert cmp.warnings == ["only the baseline run scored against synthesised stand-in references (the offline "
                            "demo's): the numbers agree only if the other run's reference folder holds that same audio"]
    # a summary before model.generated: a model named folder is a folder run
    old = summary(folder)
    del old["model"]["generated"]
    assert compare_summaries(old, summary(demo)).exit_code == 0
    # what scores the audio still counts: released vs random backbones are refused, naming the metric
    released = make_run(tmp_path / "released", "folder", embeddings=False, values=BASE,
                        extra_summary={"model": folder_model})
    with pytest.raises(IncompatibleRuns, match=r"fad: backbone random_weights differs \(baseline True, current "
                                               r"False\)"):
        compare_summaries(summary(demo), summary(released))
    # two generation runs: random vs released generators are refused, saying why it matters
    small = run(tmp_path, "small", random_weights=False)
    tiny = make_run(tmp_path / "tiny", "tiny-stereo", embeddings=False, values=BASE, random_weights=True,
                    extra_summary={"metrics": summary(small)["metrics"]})
    assert main([str(tiny), str(small)]) == 2
    out = capsys.readouterr().out
    assert ("- the generators' weights differ (baseline 'tiny-stereo': random weights, current 'small': released "
            "weights): audio from a model with random weights only shows that the pipeline runs, so a change between "
            "the two says nothing about either model") in out
    assert "backbone random_weights" not in out  # the same backbones: only the generators differ


def test_skipped_clips_and_unused_tolerances_are_said(tmp_path, capsys):
    """A run whose silent or NaN clips were skipped passed a FAD check with nothing said; a misspelt ``--tol fda=5%``
    set nothing and said nothing. Both are warnings now (markdown and stderr), the verdicts unchanged."""
    import json

    from evalkit.report.compare import main

    a = run(tmp_path, "a")
    b = run(tmp_path, "b")
    summary = json.loads((b / "summary.json").read_text())
    summary["n_skipped"] = (summary.get("n_skipped") or 0) + 1
    summary["metrics"]["fad"]["n_clips"] = summary["metrics"]["fad"]["n_clips"] - 1
    (b / "summary.json").write_text(json.dumps(summary))
    code = main([str(a), str(b), "--tol", "fda=5%"])
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert "the current run skipped 1 clips" in err and "the current run skipped 1 clips" in out
    assert f"fad {summary['metrics']['fad']['n_clips']} < {summary['metrics']['fad']['n_clips'] + 1}" in err
    assert "--tol for fda matches no metric of either run" in err
    main([str(a), str(a)])
    out, err = capsys.readouterr()
    assert "skipped" not in err and "match no metric" not in err
