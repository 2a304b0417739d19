"""The card table (evalkit/report/table.py), the run-folder reader and `python -m evalkit.report` on fabricated runs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from evalkit.report import card_table, collect_runs, load_published, to_csv, to_latex, to_markdown
from evalkit.report.__main__ import main as report_main
from evalkit.report.rundir import (
    RunFolderError,
    find_runs,
    load_clip_arrays,
    load_reference_stats,
    load_run,
    load_runs,
    scan_runs,
)
from evalkit.report.table import card_columns_of, cell_decimals, format_cell, per_clip_values
from tests.conftest import REPO
from tests.fake_runs import fake_per_clip, make_run, make_unfinished_run

CARD = ["Frechet Audio Distance", "KLD", "Text Consistency", "Chroma Cosine Similarity"]
VARIANTS = ["melody-large", "stereo-small", "stereo-medium", "stereo-large", "stereo-melody", "stereo-melody-large"]


def test_published_numbers_are_the_model_card():
    raw = load_published()
    assert card_columns_of(raw) == CARD  # the card's columns and their order: between hub_id and source
    pub = raw.set_index("model")
    assert list(pub.index) == ["small", "medium", "large", "melody"] + VARIANTS
    assert pub.loc[["small", "medium", "large", "melody"], CARD[:3]].to_dict("index") == {
        "small": {"Frechet Audio Distance": 4.88, "KLD": 1.42, "Text Consistency": 0.27},
        "medium": {"Frechet Audio Distance": 5.14, "KLD": 1.38, "Text Consistency": 0.28},
        "large": {"Frechet Audio Distance": 5.48, "KLD": 1.37, "Text Consistency": 0.28},
        "melody": {"Frechet Audio Distance": 4.93, "KLD": 1.41, "Text Consistency": 0.27},
    }
    assert pub["Chroma Cosine Similarity"].isna().tolist() == [True, True, True, False] + [True] * 6
    assert pub.loc["melody", "Chroma Cosine Similarity"] == 0.44
    assert pub.loc["medium", "hub_id"] == "facebook/musicgen-medium"
    assert pub.loc[VARIANTS, "hub_id"].tolist() == [f"facebook/musicgen-{v}" for v in VARIANTS]
    assert pub.loc[["small", "medium", "large", "melody"], "source"].str.contains("MUSICGEN_MODEL_CARD.md").all()
    # the released variants the card does not cover: no numbers, and the source says so
    assert pub.loc[VARIANTS, CARD].isna().all().all()
    assert pub.loc[VARIANTS, "source"].str.startswith("not on the MusicGen model card").all()


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_run(root / "a_small", "small", values={"fad": 4.9012, "kld": 1.4049, "clap": 0.2712, "chroma": 0.5},
             metrics=("fad", "kld", "clap"), embeddings=False)
    make_run(root / "b_tiny", "tiny-stereo", random_weights=True, values={"fad": 12.5, "kld": 3.25, "clap": 0.01},
             metrics=("fad", "kld", "clap"), embeddings=False)
    # a fine-tune of melody, known to evalkit under another name: matched to the card by hub id
    make_run(root / "c_melody", "my-melody", hub_id="facebook/musicgen-melody", embeddings=False,
             values={"fad": 5.0, "kld": 1.5, "clap": 0.3, "chroma": 0.4321},
             protocol={"fad": "frechet-audio-distance", "kld": "audiocraft", "clap": "audiocraft", "chroma": "audiocraft"})
    return root


def test_card_table_cells(three_runs):
    collected = collect_runs([three_runs], ci=False)
    table = card_table(collected)
    # the card's order: small, melody (my-melody matched by hub id), then models the card does not list
    assert list(table.index) == ["small", "my-melody", "tiny-stereo (random weights)"]
    t = table[CARD + [f"{c} (published)" for c in CARD]]
    np.testing.assert_array_equal(
        t.to_numpy(float),
        np.array([
            [4.9012, 1.4049, 0.2712, np.nan, 4.88, 1.42, 0.27, np.nan],  # chroma not run: published "–" too
            [5.0, 1.5, 0.3, 0.4321, 4.93, 1.41, 0.27, 0.44],
            [12.5, 3.25, 0.01, np.nan, np.nan, np.nan, np.nan, np.nan],
        ]),
    )
    assert table.attrs["random_rows"] == ["tiny-stereo (random weights)"]
    assert table["random_weights"].tolist() == [False, False, True]
    assert table.attrs["columns"] == CARD
    assert table.attrs["arrows"] == dict(zip(CARD, [False, False, True, True]))  # from the runs' specs


def test_markdown_rows_and_footnotes(three_runs):
    md = to_markdown(card_table(collect_runs([three_runs], ci=False)))
    lines = md.splitlines()
    assert lines[0] == ("| Model | Frechet Audio Distance ↓ | published | KLD ↓ | published | Text Consistency ↑ | "
                        "published | Chroma Cosine Similarity ↑ | published |")
    assert lines[2] == "| small | 4.90 | 4.88 | 1.40 | 1.42 | 0.271 | 0.27 | – | – |"
    assert lines[3] == "| my-melody | 5.00 | 4.93 | 1.50 | 1.41 | 0.300 | 0.27 | 0.432 | 0.44 |"
    assert lines[4] == "| tiny-stereo (random weights) † | 12.50 | – | 3.25 | – | 0.010 | – | – | – |"
    notes = md.split("\n\n", 1)[1]
    assert "† random weights" in notes and "not comparable with the published values" in notes
    assert "the generating model and the metric backbones (fad, kld, clap)" in notes
    assert "my-melody: Frechet Audio Distance measured with protocol 'frechet-audio-distance'" in notes


def test_latex_is_booktabs_and_escaped(three_runs, tmp_path):
    make_run(tmp_path / "r", "my_model", values={"fad": 1.0, "kld": 2.0, "clap": 0.5, "chroma": 0.25},
             embeddings=False, hub_id=None)
    tex = to_latex(card_table(collect_runs([tmp_path / "r", three_runs / "b_tiny"], ci=False)))
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\cmidrule(lr){2-3}" in tex
    assert r"my\_model & 1.00 & -- & 2.00 & -- & 0.500 & -- & 0.250 & -- \\" in tex
    assert r"tiny-stereo (random weights)$^\dagger$ & 12.50 & -- &" in tex
    assert r"\multicolumn{2}{c}{Frechet Audio Distance $\downarrow$}" in tex
    body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0].splitlines()
    assert len(body) == 2 and all(line.count("&") == 8 for line in body)  # 9 columns
    assert "–" not in tex  # no unicode dash for pdflatex


def test_csv_round_trips_numbers(three_runs):
    table = card_table(collect_runs([three_runs], ci=False))
    from io import StringIO

    back = pd.read_csv(StringIO(to_csv(table)), index_col="Model")
    assert back.loc["small", "Frechet Audio Distance"] == 4.9012
    assert back.loc["my-melody", "Chroma Cosine Similarity (published)"] == 0.44
    assert np.isnan(back.loc["small", "Chroma Cosine Similarity"])
    assert bool(back.loc["tiny-stereo (random weights)", "random_weights"]) is True


def test_intervals_in_the_table(tmp_path):
    make_run(tmp_path / "r", "small", n_clips=50, dim=4)
    collected = collect_runs([tmp_path / "r"], n_boot=200, seed=3)
    table = card_table(collected)
    for c in CARD:
        lo, v, hi = table.loc["small", [f"{c} CI low", c, f"{c} CI high"]]
        assert lo < v < hi, c
    row = to_markdown(table).splitlines()[2]
    fad = table.loc["small"]
    assert row.startswith(f"| small | {fad.iloc[0]:.2f} [{fad['Frechet Audio Distance CI low']:.2f}, "
                          f"{fad['Frechet Audio Distance CI high']:.2f}] | 4.88 |")
    assert ("95% bootstrap interval over clips (200 draws, seed 3; Fréchet distances: basic interval centred on the "
            "measured value") in to_markdown(table)
    # seeded: the same numbers again
    again = card_table(collect_runs([tmp_path / "r"], n_boot=200, seed=3))
    pd.testing.assert_frame_equal(table, again)


def test_same_model_twice_gets_distinct_labels(tmp_path):
    for d in ("run1", "run2"):
        make_run(tmp_path / d, "small", embeddings=False, values={"fad": 1.0})
    table = card_table(collect_runs([tmp_path / "run1", tmp_path / "run2" / "summary.json"], ci=False))
    assert list(table.index) == ["small [run1]", "small [run2]"]


# -- the run-folder reader -------------------------------------------------------------------------------------------
def test_find_runs(tmp_path):
    a = make_run(tmp_path / "outputs" / "small" / "t1", "small", embeddings=False)
    b = make_run(tmp_path / "outputs" / "tiny" / "t2", "tiny-stereo", embeddings=False)
    assert find_runs([tmp_path / "outputs"]) == [a, b]
    assert find_runs([b / "summary.json", a, a]) == [b, a]
    with pytest.raises(RunFolderError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(RunFolderError, match="no such run folder"):
        find_runs([tmp_path / "nope"])


def test_clip_array_layouts(tmp_path):
    e = tmp_path / "embeddings"
    e.mkdir()
    x = {i: np.full((2, 3), i, np.float32) for i in range(5)}
    # older runs keyed arrays "<id>/_fad_gen_emb", the run now writes "<id>/fad_gen_emb" (the name spec.arrays gives)
    np.savez(e / "batch-00000.npz", **{"a0/_fad_gen_emb": x[0], "a0/_fad_ref_emb": x[4], "a1/fad_gen_emb": x[1]})
    np.savez(e / "a2.npz", _fad_gen_emb=x[2])  # one file per clip
    (e / "sub").mkdir()
    np.savez(e / "sub" / "other.npz", **{"fad_gen_emb/a3": x[3], "a0/fad_gen_emb": x[0]})  # repeat: identical
    np.savez(e / ".batch-00001.npz.tmp-1.npz", **{"zz/fad_gen_emb": x[1]})  # unfinished atomic write: ignored
    for column in ("fad_gen_emb", "_fad_gen_emb"):
        got = load_clip_arrays(e, column)
        assert sorted(got) == ["a0", "a1", "a2", "a3"]
        assert [float(got[k][0, 0]) for k in sorted(got)] == [0, 1, 2, 3]
    assert list(load_clip_arrays(e, "fad_ref_emb")) == ["a0"]
    np.savez(e / "clash.npz", **{"a1/_fad_gen_emb": x[4]})
    with pytest.raises(RunFolderError, match="second, different"):
        load_clip_arrays(e, "fad_gen_emb")


def test_reference_stats_in_the_run_format(tmp_path):
    from evalkit.statistics.frechet import GaussianStats

    rng = np.random.default_rng(0)
    ref, gen = GaussianStats(3), GaussianStats(3)
    ref.update(rng.normal(size=(20, 3)))
    gen.update(rng.normal(size=(20, 3)))
    mu, sigma = ref.mean_cov()
    (tmp_path / "stats").mkdir()
    # the run's stats/fad_reference.npz (evalkit/metrics/fad.py: export_reference_stats) + a generated side to ignore
    np.savez(tmp_path / "stats" / "fad_reference.npz", kind=np.asarray("vggish"), mu=mu, sigma=sigma,
             n=np.asarray(ref.n), **ref.state("ref_"), **gen.state("gen_"))
    st = load_reference_stats(tmp_path / "stats", dim=3)
    assert st.n == 20 and np.array_equal(st.sum_outer, ref.sum_outer)
    assert load_reference_stats(tmp_path / "stats", dim=4) is None
    np.savez(tmp_path / "only_mu.npz", mu=mu, sigma=sigma)
    m, s = load_reference_stats(tmp_path / "only_mu.npz")
    assert np.array_equal(m, mu) and np.array_equal(s, sigma)


def test_per_clip_values(tmp_path):
    make_run(tmp_path / "r", "small", n_clips=7, embeddings=False)
    v = per_clip_values([tmp_path / "r"])
    assert v.groupby("metric").size().to_dict() == {"chroma": 7, "clap": 7, "kld": 7}
    clips = pd.read_parquet(tmp_path / "r" / "clips.parquet")
    assert np.allclose(v[v.metric == "kld"]["value"], clips["kld"])


# -- the command -----------------------------------------------------------------------------------------------------
def test_report_command_writes_tables_and_plots(tmp_path, capsys):
    import matplotlib.image as mpimg

    make_run(tmp_path / "runs" / "small", "small", n_clips=30, dim=4)
    make_run(tmp_path / "runs" / "tiny", "tiny-stereo", random_weights=True, n_clips=30, dim=4)
    out = tmp_path / "rep"
    rc = report_main([str(tmp_path / "runs"), "--out", str(out), "--n-boot", "100", "--fad-inf", "--fad-inf-min-n", "20",
                      "--fad-inf-steps", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.startswith((out / "card_table.md").read_text(encoding="utf-8").split("\n\n")[0])
    for name in ("card_table.md", "card_table.tex", "card_table.csv", "results.csv", "fad_inf.csv", "fad_inf.json",
                 "per_clip.png", "measured_vs_published.png"):
        assert (out / name).stat().st_size > 0, name
    img = mpimg.imread(out / "measured_vs_published.png")
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 200
    res = pd.read_csv(out / "results.csv")
    assert set(res["metric"]) == {"fad", "kld", "clap", "chroma"} and len(res) == 8
    fi = json.loads((out / "fad_inf.json").read_text())
    # FAD∞ of every metric whose spec says aggregate: frechet, {label: {metric: ...}}
    assert set(fi) == {"small", "tiny-stereo (random weights)"} and set(fi["small"]) == {"fad"}
    assert [p[0] for p in fi["small"]["fad"]["points"]] == [int(x) for x in np.linspace(20, 90, 5)]  # 30 clips × 3
    inf = pd.read_csv(out / "fad_inf.csv")
    assert inf["metric"].tolist() == ["fad", "fad"] and np.isfinite(inf["inf"]).all()
    assert "### FAD∞" in printed and "| small | Frechet Audio Distance |" in printed


def test_report_module_entry_point(tmp_path):
    import os

    make_run(tmp_path / "r", "small", embeddings=False)
    failed = make_unfinished_run(tmp_path / "f")
    # run from elsewhere, with this checkout's evalkit (not whichever one the venv has installed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "evalkit.report", str(tmp_path / "r"), str(failed), "--no-ci",
                        "--no-plots"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert "| small | " in p.stdout and f"- skipped {failed}: failed run" in p.stdout
    assert f"evalkit.report: skipped {failed}: failed run" in p.stderr
    assert (tmp_path / "outputs" / "report" / "card_table.tex").is_file()  # the documented default --out
    bad = subprocess.run([sys.executable, "-m", "evalkit.report", str(tmp_path / "missing")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "no such run folder" in bad.stderr


def test_reports_stay_light():
    """Report and compare never import the run pipeline, torch or a metric backbone (CI runs them anywhere)."""
    code = ("import sys, evalkit.report.__main__, evalkit.report.plots, evalkit.report.html, evalkit.compare; "
            "print(sorted(m for m in ('torch', 'evalkit.run', 'evalkit.metrics.base', 'evalkit.metrics.fad', "
            "'evalkit.metrics.kld', 'evalkit.metrics.clap', 'evalkit.metrics.chroma', 'laion_clap', 'hear21passt', 'hydra') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_summary_disagreeing_with_its_per_clip_data_is_footnoted(tmp_path):
    make_run(tmp_path / "r", "small", n_clips=20, dim=4, values={"kld": 9.0})  # clips.parquet says ~1.4
    md = to_markdown(card_table(collect_runs([tmp_path / "r"], n_boot=50)))
    assert "small: KLD recomputed from the per-clip data is" in md and "the summary says 9" in md
    assert "Frechet Audio Distance recomputed" not in md


# -- folders that cannot be read (issue 18, item 1) -------------------------------------------------------------------
def _outputs_with_a_failed_run(root):
    """Hydra's outputs/<model>/<time> layout: two finished runs, a failed one, a running one, a stray folder."""
    outputs = root / "outputs"
    make_run(outputs / "small" / "t1", "small", embeddings=False, values={"fad": 4.9, "kld": 1.4, "clap": 0.27})
    make_run(outputs / "tiny-stereo" / "t4", "tiny-stereo", random_weights=True, embeddings=False,
             metrics=("fad", "kld", "clap"), values={"fad": 0.0024})
    failed = make_unfinished_run(outputs / "medium" / "t2", "failed", "RuntimeError: CUDA out of memory (batch 12)")
    running = make_unfinished_run(outputs / "large" / "t3", "running", None)
    (outputs / "notes" / "misc").mkdir(parents=True)
    return outputs, failed, running, outputs / "notes" / "misc"


def test_a_failed_folder_in_the_glob_does_not_block_the_report(tmp_path, capsys):
    outputs, failed, running, stray = _outputs_with_a_failed_run(tmp_path)
    glob = sorted(str(p) for p in outputs.glob("*/*"))  # python -m evalkit.report outputs/*/* --out paper/
    assert str(failed) in glob and len(glob) == 5
    out = tmp_path / "paper"
    assert report_main(glob + ["--out", str(out), "--no-ci", "--no-plots"]) == 0
    md = (out / "card_table.md").read_text(encoding="utf-8")
    assert "| small | 4.90 | 4.88 |" in md and "| tiny-stereo (random weights) † | 0.0024 | – |" in md
    reasons = [f"{failed}: failed run (manifest.json): RuntimeError: CUDA out of memory (batch 12)",
               f"{running}: still running (manifest.json, started 2026-11-30T10:00:00+00:00): no summary.json yet",
               f"{stray}: not a run folder, and no run folders under it (no summary.json or manifest.json here or "
               "below)"]
    err = capsys.readouterr().err
    for r in reasons:
        assert f"- skipped {r}" in md  # a footnote line under the table
        assert f"evalkit.report: skipped {r}" in err
    assert (out / "card_table.tex").is_file() and len(pd.read_csv(out / "results.csv")["label"].unique()) == 2


def test_a_failed_folder_under_a_searched_parent_is_named_too(tmp_path, capsys):
    outputs, failed, running, stray = _outputs_with_a_failed_run(tmp_path)
    (outputs / "small" / "t1" / ".hydra").mkdir()
    (outputs / "small" / "t1" / ".hydra" / "config.yaml").write_text("x: 1\n")  # inside a run: not a run of its own
    runs, skipped = load_runs([outputs])
    assert [r.model_name for r in runs] == ["small", "tiny-stereo"]
    assert [s.path for s in skipped] == [running, failed]  # by path; the stray folder has no run marker: not a run
    assert report_main([str(outputs), "--out", str(tmp_path / "rep"), "--no-ci", "--no-plots"]) == 0
    md = (tmp_path / "rep" / "card_table.md").read_text(encoding="utf-8")
    assert f"- skipped {failed}: failed run (manifest.json): RuntimeError" in md and "| small |" in md


def test_unreadable_and_older_summaries_are_skipped_and_named(tmp_path, capsys):
    good = make_run(tmp_path / "good", "small", embeddings=False)
    old = make_run(tmp_path / "old", "medium", embeddings=False, legacy=True)
    bad = make_run(tmp_path / "bad", "large", embeddings=False)
    (bad / "summary.json").write_text("{truncated")
    runs, skipped = load_runs([good, old, bad])
    assert [r.model_name for r in runs] == ["small"]
    why = {s.path: s.reason for s in skipped}
    assert why[old].startswith("written by an older evalkit (no 'spec' block for fad, kld, clap, chroma); re-run it")
    assert why[bad].startswith("not valid JSON")
    assert report_main([str(good), str(old), str(bad), "--out", str(tmp_path / "rep"), "--no-ci", "--no-plots"]) == 0
    md = (tmp_path / "rep" / "card_table.md").read_text(encoding="utf-8")
    assert f"- skipped {old}: written by an older evalkit" in md and f"- skipped {bad}: not valid JSON" in md


def test_no_readable_run_exits_2_and_writes_nothing(tmp_path, capsys):
    failed = make_unfinished_run(tmp_path / "outputs" / "medium" / "t2")
    out = tmp_path / "rep"
    assert report_main([str(failed), str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"skipped {failed}: failed run (manifest.json): RuntimeError: CUDA out of memory" in err
    assert f"skipped {tmp_path / 'nope'}: no such run folder or summary.json" in err
    assert not out.exists()
    assert report_main([str(tmp_path / "outputs"), "--out", str(out)]) == 2
    assert scan_runs([tmp_path / "outputs"]) == ([], [scan_runs([failed])[1][0]])
    with pytest.raises(RunFolderError, match="failed run"):
        collect_runs([failed], ci=False)


# -- a metric asked for without a number (issue 18, item 4) ------------------------------------------------------------
FAD_ERROR = "MetricUnavailable: generated windows of 2 clips: 38 embeddings for dimension 128 (needs at least 129)"
CHROMA_SKIP = "melody.source=none (text-only generation)"


@pytest.mark.parametrize("spec_of_skipped", ["another run", "its own entry"])
def test_a_metric_without_a_number_shows_its_reason_in_every_format(tmp_path, capsys, spec_of_skipped):
    """FAD asked for and not computed; chroma not applicable (melody.source=none). A skipped entry carries no spec
    today: its column comes from another run that has one (here a melody run with chroma), or from its own entry
    when the run writes one there."""
    make_run(tmp_path / "r", "melody", n_clips=12, embeddings=False, metrics=("fad", "kld", "clap"),
             values={"kld": 1.41, "clap": 0.27}, errors={"fad": FAD_ERROR}, skipped={"chroma": CHROMA_SKIP},
             skipped_with_spec=spec_of_skipped == "its own entry")
    paths = [str(tmp_path / "r")]
    if spec_of_skipped == "another run":
        paths.append(str(make_run(tmp_path / "m", "stereo-melody", n_clips=12, embeddings=False, values={"fad": 5.0})))
    out = tmp_path / "rep"
    assert report_main(paths + ["--out", str(out), "--no-ci", "--no-plots"]) == 0
    md = (out / "card_table.md").read_text(encoding="utf-8")
    assert "| melody | n/a‡ | 4.93 | 1.41 | 1.41 | 0.270 | 0.27 | n/a‡ | 0.44 |" in md
    assert f"- ‡ melody: Frechet Audio Distance not computed: {FAD_ERROR}" in md
    assert f"- ‡ melody: Chroma Cosine Similarity not applicable: {CHROMA_SKIP}" in md
    tex = (out / "card_table.tex").read_text(encoding="utf-8")
    assert r"melody & n/a$^\ddagger$ & 4.93 & 1.41 & 1.41 & 0.270 & 0.27 & n/a$^\ddagger$ & 0.44 \\" in tex
    assert r"$^\ddagger$ melody: Frechet Audio Distance not computed: MetricUnavailable: generated windows" in tex
    assert r"Chroma Cosine Similarity not applicable: melody.source=none (text-only generation)" in tex
    csv = pd.read_csv(out / "card_table.csv", index_col="Model")
    assert np.isnan(csv.loc["melody", "Frechet Audio Distance"])
    assert csv.loc["melody", "Frechet Audio Distance note"] == f"not computed: {FAD_ERROR}"
    assert csv.loc["melody", "Chroma Cosine Similarity note"] == f"not applicable: {CHROMA_SKIP}"
    assert np.isnan(csv.loc["melody", "KLD note"]) and csv.loc["melody", "Frechet Audio Distance (published)"] == 4.93
    res = pd.read_csv(out / "results.csv")
    res = res[res["label"] == "melody"].set_index("metric")
    assert res.loc["fad", "note"] == f"not computed: {FAD_ERROR}" and np.isnan(res.loc["fad", "value"])
    assert res.loc["chroma", "note"] == f"not applicable: {CHROMA_SKIP}" and np.isnan(res.loc["kld", "note"])


def test_a_skipped_metric_no_run_has_a_spec_for_is_still_footnoted(tmp_path):
    make_run(tmp_path / "r", "small", embeddings=False, metrics=("kld", "clap"), skipped={"brand_new": "needs stereo"})
    table = card_table(collect_runs([tmp_path / "r"], ci=False))
    assert "‡ small: brand_new not applicable: needs stereo" in table.attrs["footnotes"]
    assert "brand_new" not in table.columns


# -- numbers by magnitude (issue 18, item 8) ---------------------------------------------------------------------------
@pytest.mark.parametrize("decimals, values, want", [
    (2, (4.91, 4.80, 5.02), 2),            # a real FAD: the card's decimals
    (2, (0.00236, 0.0019, 0.0031), 4),     # the demo's FAD: 2 significant digits
    (3, (0.012, 0.0095, 0.015), 4),        # one bound needs more: the whole cell follows
    (3, (0.029,), 3),                      # 0.029 already has 2 significant digits at 3 decimals
    (2, (0.05,), 3),                       # "0.05" would show one
    (2, (0.0, -0.0, float("nan")), 2),     # zero and missing need nothing
    (2, (1e-30,), 10),                     # capped
])
def test_cell_decimals(decimals, values, want):
    assert cell_decimals(decimals, *values) == want


def test_cells_are_formatted_by_magnitude(tmp_path):
    make_run(tmp_path / "r", "small", embeddings=False, values={"fad": 1.0}, metrics=("fad", "kld", "clap"))
    table = card_table(collect_runs([tmp_path / "r"], ci=False))
    fad, kld, clap = CARD[:3]

    def put(c, v, lo, hi):
        table.loc["small", [c, f"{c} CI low", f"{c} CI high"]] = [v, lo, hi]

    put(fad, 4.91, 4.80, 5.02)
    assert format_cell(table, "small", fad) == "4.91 [4.80, 5.02]"  # realistic: unchanged
    put(fad, 0.00236, 0.0019, 0.0031)
    assert format_cell(table, "small", fad) == "0.0024 [0.0019, 0.0031]"  # demo: no more 0.00 [0.00, 0.00]
    put(kld, 0.00176, 0.00128, 0.00217)
    put(clap, 0.029039, 0.028623, 0.029428)
    assert format_cell(table, "small", kld) == "0.0018 [0.0013, 0.0022]"
    assert format_cell(table, "small", clap) == "0.029 [0.029, 0.029]"  # spec decimals (3) already show 2 digits
    md = to_markdown(table).splitlines()[2]
    assert md == ("| small | 0.0024 [0.0019, 0.0031] | 4.88 | 0.0018 [0.0013, 0.0022] | 1.42 | 0.029 [0.029, 0.029] | "
                  "0.27 | – | – |")
    tex = to_latex(table)
    assert r"small & 0.0024\,{\scriptsize[0.0019, 0.0031]} & 4.88 & 0.0018\,{\scriptsize[0.0013, 0.0022]} & 1.42" in tex
    put(fad, 0.00236, float("nan"), float("nan"))
    assert format_cell(table, "small", fad) == "0.0024"


# -- rows in the card's order (issue 18, item 9) -----------------------------------------------------------------------
def test_rows_follow_the_card_then_the_variants_then_the_command_line(tmp_path):
    given = ["zeta-custom", "stereo-melody", "large", "my-model", "stereo-small", "small", "melody-large", "medium"]
    for m in given:
        make_run(tmp_path / m, m, embeddings=False, n_clips=5, hub_id=None)
    table = card_table(collect_runs([tmp_path / m for m in given], ci=False))
    assert list(table.index) == ["small", "medium", "large", "melody-large", "stereo-small", "stereo-melody",
                                 "zeta-custom", "my-model"]
    # a run of a released checkpoint under another evalkit name goes where its hub id is
    make_run(tmp_path / "ft", "my-stereo", embeddings=False, n_clips=5, hub_id="facebook/musicgen-stereo-large")
    table = card_table(collect_runs([tmp_path / "zeta-custom", tmp_path / "ft", tmp_path / "small"], ci=False))
    assert list(table.index) == ["small", "my-stereo", "zeta-custom"]


def test_channel_view_and_reference_set_are_read_and_footnoted(tmp_path):
    """Summaries will say which channel view and which MusicCaps reference set they used; absent = mono / unknown."""
    sha = {"dir": "/data/musiccaps", "manifest_sha256": "ab" * 32, "n_ok": 5500}
    make_run(tmp_path / "a", "small", embeddings=False, extra_summary={"reference_set": sha})
    make_run(tmp_path / "b", "medium", embeddings=False, extra_summary={"reference_set": sha})
    make_run(tmp_path / "c", "large", embeddings=False, extra_summary={"channel_view": "mid"})
    collected = collect_runs([tmp_path / "a", tmp_path / "b"], ci=False)
    assert set(collected["channel_view"]) == {"mono"} and set(collected["reference_set"]) == {"ab" * 32}
    notes = card_table(collected).attrs["footnotes"]
    assert not [n for n in notes if "channel view" in n or "reference sets" in n]
    md = to_markdown(card_table(collect_runs([tmp_path / p for p in "abc"], ci=False)))
    assert "- large: metrics computed on the 'mid' channel view (the card's: mono); not comparable" in md
    assert ("different MusicCaps reference sets (manifest sha256: small: abababababab…; medium: abababababab…; "
            "large: unknown)") in md
    assert md.splitlines()[0].endswith("| Chroma Cosine Similarity ↑ | published |")  # measured: from the spec
    md = to_markdown(card_table(collect_runs([make_run(tmp_path / "d", "small", embeddings=False,
                                                       metrics=("fad", "kld", "clap"))], ci=False)))
    assert md.splitlines()[0].endswith("| Chroma Cosine Similarity | published |")  # no run measured it: no arrow


def test_a_glob_one_level_too_deep_names_the_run_folders_contents_and_reads_no_bogus_run(tmp_path):
    """outputs/*/* where outputs/<run> is itself the run: none of its files and folders is read as a run
    (manifest.json is valid JSON but not a summary), and none is named: the run is reported, from its summary.json.
    Issue 26, item 15: the README's glob printed a "glob one level too deep?" note for every run folder, and a line
    per file of the report's own output folder under outputs/."""
    run = make_run(tmp_path / "outputs" / "demo", "tiny-stereo", random_weights=True, embeddings=True, n_clips=5)
    report = tmp_path / "outputs" / "report"
    report.mkdir()
    for name in ("card_table.md", "card_table.csv", "results.csv"):
        (report / name).write_text("")
    paths = sorted((tmp_path / "outputs").glob("*/*"))
    runs, skipped = load_runs(paths)
    assert [r.model_name for r in runs] == ["tiny-stereo"]  # from its summary.json, once
    assert [str(s) for s in skipped] == [f"3 files in {report} (card_table.csv, card_table.md, results.csv), none of "
                                         f"them: not a summary.json"]  # one line per folder
    runs, skipped = load_runs([run, run / "embeddings", run / "config.yaml"])  # the run folder given as well
    assert [r.model_name for r in runs] == ["tiny-stereo"] and skipped == []
    # paths inside a run folder that is not itself reported: one line for the run folder
    runs, skipped = load_runs([run / "embeddings", run / "config.yaml", run / "clips.parquet"])
    assert not runs and [str(s) for s in skipped] == [
        f"3 paths inside the run folder {run} (embeddings, config.yaml, clips.parquet): pass the run folder itself "
        f"(a glob one level too deep?)"]
    # a file of a run folder that is not itself reported is still named on its own
    runs, skipped = load_runs([run / "config.yaml", tmp_path / "baseline-missing.json"])
    assert not runs
    assert [s.reason for s in skipped][0] == f"a file of the run folder {run}, not its summary.json"
    # a summary saved under another name is read; a JSON without a metrics object is refused
    (tmp_path / "baseline.json").write_text((run / "summary.json").read_text())
    (tmp_path / "other.json").write_text('{"status": "finished"}')
    runs, skipped = load_runs([tmp_path / "baseline.json", tmp_path / "other.json"])
    assert [r.model_name for r in runs] == ["tiny-stereo"]
    assert [s.reason for s in skipped] == ["not an evalkit summary (expected an object with a 'metrics' object)"]


# -- issue 26, item 4: warnings, intervals without width, runs of different recipes ---------------------------------
RANK = ("the generated side's covariance has rank 40 < 128 (40 windows): its embeddings span too few directions "
        "(repeated or stationary audio?), so this FAD exists but is not comparable with FADs of full-rank sets")


def _edit_summary(run, edit) -> None:
    s = json.loads((run / "summary.json").read_text())
    edit(s)
    (run / "summary.json").write_text(json.dumps(s))


def test_a_runs_warnings_are_marked_and_footnoted_in_every_table_format(tmp_path):
    """A rank-deficient covariance warning was in summary.json (metrics.<m>.warnings) but in no table."""
    from evalkit.metrics.spec import MetricSpec

    own = MetricSpec(name="loudness_gap", primary="loudness_gap", higher_is_better=False, card_column=None,
                     decimals=2, tolerance="0.5", per_clip=("loudness_gap",), aggregate="none", section="extra")
    run = make_run(tmp_path / "small", "small", embeddings=False, metrics=("fad", "kld", "loudness_gap"),
                   values={"fad": 4.9, "kld": 1.4, "loudness_gap": 0.25}, specs={"loudness_gap": own})

    def warn(s):
        s["metrics"]["fad"]["warnings"] = [RANK]
        s["metrics"]["loudness_gap"]["warnings"] = ["two clips were cut to 9.5 s"]

    _edit_summary(run, warn)
    table = card_table(collect_runs([run], ci=False))
    md = to_markdown(table)
    assert "| small | 4.90 § | 4.88 | 1.40 | 1.42 |" in md
    assert f"- § small: Frechet Audio Distance: {RANK}" in md
    # evalkit's own table too
    assert "| small | 0.25 § |" in md and "- § small: loudness_gap: two clips were cut to 9.5 s" in md
    tex = to_latex(table)
    assert r"small & 4.90$^\S$ & 4.88 & 1.40 & 1.42" in tex and r"$^\S$ small: Frechet Audio Distance: the" in tex
    csv = pd.read_csv(pd.io.common.StringIO(to_csv(table)), keep_default_na=False)
    assert csv.loc[0, "Frechet Audio Distance note"] == f"warning: {RANK}" and csv.loc[0, "KLD note"] == ""
    assert "Frechet Audio Distance warnings" not in csv.columns  # the note column carries it
    own_csv = pd.read_csv(pd.io.common.StringIO(to_csv(table.attrs["sections"]["extra"])), keep_default_na=False)
    assert own_csv.loc[0, "loudness_gap note"] == "warning: two clips were cut to 9.5 s"


def test_an_interval_without_width_is_no_interval(tmp_path):
    """One clip, or identical clips, printed 0.00034 [0.00034, 0.00034] as a 95 % interval."""
    one = make_run(tmp_path / "small", "small", n_clips=1, embeddings=False, metrics=("kld", "clap"))
    clips = fake_per_clip(6)
    clips["kld"] = 0.00034  # every clip the same value
    same = make_run(tmp_path / "medium", "medium", clips=clips, embeddings=False, metrics=("kld", "clap"))
    gen = {f"clip{i:04d}": np.arange(40, dtype=float).reshape(10, 4) for i in range(6)}  # identical embeddings
    ref = {k: np.random.default_rng(0).normal(size=(10, 4)) for k in gen}
    frechet = make_run(tmp_path / "large", "large", clips=fake_per_clip(6), embeddings=(gen, ref), dim=4,
                       metrics=("fad", "kld"))
    table = card_table(collect_runs([one, same, frechet], n_boot=200))
    md = to_markdown(table)
    kld = float(json.loads((one / "summary.json").read_text())["metrics"]["kld"]["value"])
    assert f"| small | – | 4.88 | {kld:.2f} [n/a (1 clip)] | 1.42 |" in md
    assert "| medium | – | 5.14 | 0.00034 [n/a (identical values)] | 1.38 |" in md
    assert "[n/a (identical clips)] | 5.48 |" in md
    assert "[0.00034, 0.00034]" not in md
    assert "- medium: KLD has no interval (every clip has the same value, so every resample has it too)." in md
    assert r"0.00034\,{\scriptsize[n/a (identical values)]}" in to_latex(table)
    csv = pd.read_csv(pd.io.common.StringIO(to_csv(table)), keep_default_na=False).set_index("Model")
    assert csv.loc["medium", "KLD CI low"] == "" and csv.loc["medium", "KLD note"] == "no interval: identical values"
    # the paired tables (the stereo image): a dual-mono reference's correlation is 1.0 on every clip
    from evalkit.report.paired import paired_markdown, paired_table
    from evalkit.report.rundir import load_run
    from evalkit.stages.outputs import paired_summary

    df = pd.DataFrame({"corr": [0.9, 0.8, 0.95], "ref_corr": [1.0, 1.0, 1.0]})
    block = paired_summary(df, [{"name": "correlation", "generated": "corr", "reference": "ref_corr"}], n_boot=200)
    assert block["correlation"]["reference"]["degenerate"] == "identical values"
    old = json.loads(json.dumps(block))
    del old["correlation"]["reference"]["degenerate"]  # a summary before it: equal bounds say the same
    for paired in (block, old):
        _edit_summary(one, lambda s: s["metrics"]["kld"].update(paired=paired))
        text = paired_markdown(paired_table([load_run(one)], ["small"], "kld"), "kld")
        assert "| small | correlation | 0.883 [" in text and "| 1.000 [n/a (identical values)] |" in text
        assert "\"n/a (1 clip)\", \"n/a (identical values)\": no interval" in text


def test_runs_of_different_recipes_in_one_table_are_marked_naming_what_differs(tmp_path):
    """2 s and 10 s clips sat in one card table without a note, though compare refuses to compare them."""
    def settings(duration):
        return {"settings": {"generation": {"duration": duration, "top_k": 250}, "postprocess": {"name": "audiocraft"}}}

    a = make_run(tmp_path / "a", "small", embeddings=False, extra_summary=settings(10.0))
    b = make_run(tmp_path / "b", "medium", embeddings=False, extra_summary=settings(2.0))
    c = make_run(tmp_path / "c", "large", embeddings=False, extra_summary=settings(10.0))
    _edit_summary(c, lambda s: s["metrics"]["kld"].update(recipe={"pad_chunks": True}))
    _edit_summary(a, lambda s: s["metrics"]["kld"].update(recipe={"pad_chunks": False}))
    table = card_table(collect_runs([a, b, c], ci=False))
    assert table.attrs["recipe_rows"] == ["medium", "large"]
    md = to_markdown(table)
    assert "| small | " in md and "| medium ¶ | " in md and "| large ¶ | " in md and "small ¶" not in md
    assert ("- ¶ medium was measured with another recipe than small, so their numbers are different measurements, "
            "not comparable (python -m evalkit.compare refuses such runs): generation: duration differs (small 10.0, "
            "medium 2.0).") in md
    assert "- ¶ large was measured with another recipe than small" in md and \
        "kld recipe: pad_chunks differs (small False, large True)." in md
    assert r"medium$^\P$ &" in to_latex(table)
    # one recipe: no mark, no note (and runs that record no settings, as before, none either)
    d = make_run(tmp_path / "d", "stereo-small", embeddings=False, extra_summary=settings(10.0))
    same = card_table(collect_runs([a, d], ci=False))
    assert same.attrs["recipe_rows"] == [] and "¶" not in to_markdown(same)


def test_the_terminal_prints_the_card_table_only_when_a_card_metric_was_asked_for(tmp_path, capsys):
    """An aesthetics-only run printed the card's table as one row of dashes above its own table."""
    from evalkit.__main__ import print_tables
    from evalkit.metrics.spec import MetricSpec

    own = MetricSpec(name="loudness_gap", primary="loudness_gap", higher_is_better=False, card_column=None,
                     decimals=2, tolerance="0.5", per_clip=("loudness_gap",), aggregate="none", section="extra")
    alone = make_run(tmp_path / "alone", "small", embeddings=False, metrics=("loudness_gap",),
                     values={"loudness_gap": 0.25}, specs={"loudness_gap": own})
    def summary(run):  # what a finished run's summary has that the fabricated one leaves out
        return {"n_missing_reference": 0, "n_skipped": 0, **json.loads((run / "summary.json").read_text())}

    print_tables(summary(alone), alone)
    out = capsys.readouterr().out
    assert "In the layout of the MusicGen model card" not in out and "Frechet Audio Distance" not in out
    assert "### evalkit's own metrics (not on the MusicGen model card): extra" in out and "| small | 0.25 |" in out

    both = make_run(tmp_path / "both", "small", embeddings=False, metrics=("kld", "loudness_gap"),
                    values={"kld": 1.4, "loudness_gap": 0.25}, specs={"loudness_gap": own})
    print_tables(summary(both), both)
    out = capsys.readouterr().out
    assert "In the layout of the MusicGen model card" in out and "| small | – | 4.88 | 1.40 | 1.42 |" in out
    assert "| small | 0.25 |" in out
