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
from tests.fake_runs import make_run, make_unfinished_run

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
    from evalkit.metrics.frechet import GaussianStats

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
    make_run(tmp_path / "r", "small", embeddings=False)
    p = subprocess.run([sys.executable, "-m", "evalkit.report", str(tmp_path / "r"), "--no-ci", "--no-plots"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "| small | " in p.stdout
    assert (tmp_path / "outputs" / "report" / "card_table.tex").is_file()  # the documented default --out
    bad = subprocess.run([sys.executable, "-m", "evalkit.report", str(tmp_path / "missing")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no such run folder" in bad.stderr


def test_reports_stay_light():
    """Report and compare never import the run pipeline, torch or a metric backbone (CI runs them anywhere)."""
    code = ("import sys, evalkit.report.__main__, evalkit.report.plots, evalkit.compare; "
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
