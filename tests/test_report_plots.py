"""The report's plots (evalkit/report/plots.py): the measured-vs-published dot-and-interval chart with realistic and
demo values, and the scatter plot a metric's spec can ask for (the stereo section), on fabricated runs."""
from __future__ import annotations

import math

import numpy as np

from evalkit.metrics.spec import MetricSpec
from evalkit.report import card_table, collect_runs, load_run
from evalkit.report.plots import DistinctFormatter, per_clip_figure, published_figure, scatter_figure, write_plots
from evalkit.report.table import per_clip_values
from tests.fake_runs import fake_per_clip, make_run

CARD = ["Frechet Audio Distance", "KLD", "Text Consistency", "Chroma Cosine Similarity"]
#: measured value and 95 % interval per card column (None: not measured) - the magnitudes of full MusicCaps runs
REALISTIC = {
    "small": [(4.91, 4.80, 5.02), (1.40, 1.36, 1.44), (0.271, 0.262, 0.280), None],
    "medium": [(4.90, 4.77, 5.04), (1.40, 1.36, 1.43), (0.283, 0.275, 0.291), None],
    "melody": [(4.80, 4.69, 4.93), (1.43, 1.39, 1.47), (0.268, 0.260, 0.276), (0.452, 0.441, 0.463)],
    "stereo-medium": [(5.20, 5.08, 5.33), (1.39, 1.35, 1.43), (0.280, 0.271, 0.288), None],
}
#: the offline demo's magnitudes (random weights, no published values)
DEMO = {"tiny-stereo": [(0.00236, 0.00190, 0.00310), (0.00176, 0.00128, 0.00217), (0.0290, 0.0286, 0.0294), None]}


def _table(tmp_path, numbers, random_weights=False):
    """A card table of fabricated runs whose cells hold exactly ``numbers``."""
    for m in numbers:
        make_run(tmp_path / m, m, embeddings=False, n_clips=10, random_weights=random_weights,
                 metrics=("fad", "kld", "clap", "chroma"))
    table = card_table(collect_runs([tmp_path / m for m in numbers], ci=False))
    table.attrs["ci"] = {"level": 0.95, "n_boot": 1000, "seed": 0}
    assert len(table) == len(numbers)
    for m, cells in numbers.items():
        label = m + (" (random weights)" if random_weights else "")
        for c, cell in zip(CARD, cells):
            table.loc[label, [c, f"{c} CI low", f"{c} CI high"]] = cell if cell else (math.nan,) * 3
    assert len(table) == len(numbers)
    return table


def _drawn(fig):
    fig.canvas.draw()
    axes = [ax for ax in fig.axes]
    lines = [ln for ax in axes for ln in ax.get_lines()]
    texts = [t.get_text() for ax in axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    texts += [fig._suptitle.get_text()] if fig._suptitle else []
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    return axes, lines, texts, legend


def _kinds(lines):
    """The kinds of data artists on the axes, by their style."""
    kinds = set()
    for ln in lines:
        if ln.get_marker() == "D":
            kinds.add("published")
        elif ln.get_marker() == "o":
            kinds.add("random" if ln.get_color() == "#8c8c8c" else "measured")
        elif ln.get_linestyle() == "--":
            kinds.add("gap")
        elif ln.get_linestyle() == "-":
            kinds.add("interval")
    return kinds


LEGEND = {"measured": "evalkit (measured)", "random": "evalkit, random weights (pipeline check only)",
          "interval": "95% bootstrap interval", "published": "published (model card)",
          "gap": "gap: measured to published"}


def test_chart_with_realistic_values(tmp_path):
    table = _table(tmp_path, REALISTIC)
    fig = published_figure(table)
    axes, lines, texts, legend = _drawn(fig)
    assert [ax.get_title() for ax in axes] == ["Frechet Audio Distance ↓", "KLD ↓", "Text Consistency ↑",
                                               "Chroma Cosine Similarity ↑"]
    # the legend names exactly the kinds of markers drawn
    assert _kinds(lines) == {"measured", "interval", "published", "gap"}
    assert set(legend) == {LEGEND[k] for k in _kinds(lines)} and len(legend) == len(set(legend))
    # a published diamond per published value (FAD: small, medium, melody), one gap line from each measured dot
    fad = axes[0]
    diamonds = [ln for ln in fad.get_lines() if ln.get_marker() == "D"]
    assert sorted(float(d.get_xdata()[0]) for d in diamonds) == [4.88, 4.93, 5.14]
    gaps = [tuple(ln.get_xdata()) for ln in fad.get_lines() if ln.get_linestyle() == "--"]
    assert sorted(gaps) == [(4.8, 4.93), (4.9, 5.14), (4.91, 4.88)]
    # value labels: measured by the table's decimals, published as published; no "not published" lines
    assert {"4.91", "4.90", "4.88", "5.14", "1.40", "1.42", "0.271", "0.27", "0.452", "0.44"} <= set(texts)
    assert not [t for t in texts if "not published" in t or "not measured" in t]
    # readable ticks: at least 2 per axis, distinct, written exactly, not overlapping
    for ax in axes:
        _assert_ticks_readable(fig, ax)


def test_chart_with_demo_values(tmp_path):
    table = _table(tmp_path, DEMO, random_weights=True)
    fig = published_figure(table)
    axes, lines, texts, legend = _drawn(fig)
    # chroma: nothing measured, nothing published - no empty panel
    assert [ax.get_title() for ax in axes] == ["Frechet Audio Distance ↓", "KLD ↓", "Text Consistency ↑"]
    assert _kinds(lines) == {"random", "interval"}  # random-weight rows marked in grey, no published value
    assert set(legend) == {LEGEND["random"], LEGEND["interval"]}
    # 2 significant digits where 2 decimals would print 0.00
    assert {"0.0024", "0.0018", "0.029"} <= set(texts) and "0.00" not in texts
    assert not [t for t in texts if "not published" in t]
    label = axes[0].get_yticklabels()[0]
    assert label.get_text() == "tiny-stereo (random weights)" and label.get_fontstyle() == "italic"
    for ax in axes:
        _assert_ticks_readable(fig, ax)


def _assert_ticks_readable(fig, ax):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks = [t for t in ax.get_xticklabels() if t.get_text()]
    labels = [t.get_text() for t in ticks]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), (ax.get_title(), labels)
    assert np.allclose([float(s) for s in labels], ax.get_xticks()[: len(labels)], rtol=0, atol=1e-12), labels
    boxes = sorted((t.get_window_extent(renderer) for t in ticks), key=lambda b: b.x0)
    assert all(b.x0 >= a.x1 for a, b in zip(boxes, boxes[1:])), (ax.get_title(), labels)


def test_tick_formatter_writes_ticks_exactly_and_distinctly():
    f = DistinctFormatter()
    assert f.format_ticks([0.270, 0.285, 0.300]) == ["0.270", "0.285", "0.300"]  # not 0.27, 0.29, 0.30
    assert f.format_ticks([4.8, 5.2, 5.6]) == ["4.8", "5.2", "5.6"]
    assert f.format_ticks([0.0023584, 0.0023592, 0.00236]) == ["0.0023584", "0.0023592", "0.0023600"]
    assert f.format_ticks([-0.5, 0.0, 0.5]) == ["-0.5", "0.0", "0.5"]


def test_per_clip_figure_titles_from_the_specs(tmp_path):
    make_run(tmp_path / "r", "small", n_clips=12, embeddings=False)
    fig = per_clip_figure(per_clip_values([tmp_path / "r"]))
    fig.canvas.draw()
    assert [ax.get_title() for ax in fig.axes] == ["KLD ↓ (per clip)", "Text Consistency ↑ (per clip)",
                                                   "Chroma Cosine Similarity ↑ (per clip)"]


# -- evalkit's own scatter plots (the stereo section) -----------------------------------------------------------------
STEREO = MetricSpec(
    name="stereo", primary="stereo_correlation", higher_is_better=True, card_column=None, decimals=3, tolerance="5%",
    per_clip=("stereo_correlation", "stereo_side_to_mid_db", "stereo_ref_correlation", "stereo_ref_side_to_mid_db"),
    aggregate="mean", value_column="stereo_correlation", needs_reference=True, section="stereo",
    description="stereo image of generated vs reference audio",
    extra={"scatter": {"x": "stereo_correlation", "y": "stereo_side_to_mid_db", "x_ref": "stereo_ref_correlation",
                       "y_ref": "stereo_ref_side_to_mid_db", "x_label": "L/R correlation",
                       "y_label": "side-to-mid (dB)"}},
)


def _stereo_run(folder, model, seed):
    clips = fake_per_clip(15, seed)
    rng = np.random.default_rng(seed)
    clips["stereo_correlation"] = rng.uniform(0.3, 0.9, 15)
    clips["stereo_side_to_mid_db"] = rng.uniform(-25, -8, 15)
    clips["stereo_ref_correlation"] = rng.uniform(0.5, 1.0, 15)
    clips["stereo_ref_side_to_mid_db"] = rng.uniform(-30, -10, 15)
    return make_run(folder, model, clips=clips, embeddings=False, metrics=("kld", "clap", "stereo"),
                    specs={"stereo": STEREO})


def test_stereo_scatter_from_the_spec(tmp_path):
    runs = [load_run(_stereo_run(tmp_path / "a", "stereo-small", 1)),
            load_run(_stereo_run(tmp_path / "b", "stereo-medium", 2))]
    table = card_table(collect_runs(runs, ci=False))
    # evalkit's own section, not a card column
    assert "stereo" not in table.attrs["columns"] and list(table.attrs["sections"]) == ["stereo"]
    written = write_plots(table, per_clip_values(runs), tmp_path / "out", runs=runs)
    assert (tmp_path / "out" / "stereo_scatter.png") in written
    assert (tmp_path / "out" / "stereo_scatter.png").stat().st_size > 0

    fig = scatter_figure(runs, "stereo", STEREO.extra["scatter"])
    fig.canvas.draw()
    ax = fig.axes[0]
    assert "evalkit's own measure" in ax.get_title() and "not on the MusicGen model card" in ax.get_title()
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("L/R correlation", "side-to-mid (dB)")
    pts = ax.collections
    assert len(pts) == 4  # two runs × (generated, reference)
    for run, (gen, ref) in zip(runs, (pts[0:2], pts[2:4])):
        c = run.clips
        np.testing.assert_allclose(gen.get_offsets(), c[["stereo_correlation", "stereo_side_to_mid_db"]].to_numpy())
        ref_xy = c[["stereo_ref_correlation", "stereo_ref_side_to_mid_db"]].to_numpy()
        np.testing.assert_allclose(ref.get_offsets(), ref_xy)
        assert np.allclose(gen.get_facecolor()[0][:3], ref.get_edgecolor()[0][:3])  # one colour per run
    assert not np.allclose(pts[0].get_facecolor()[0], pts[2].get_facecolor()[0])  # runs differ in colour
    # two marker styles: generated filled circles, references crosses
    assert not np.array_equal(pts[0].get_paths()[0].vertices, pts[1].get_paths()[0].vertices)
    assert pts[0].get_facecolor()[0][3] > 0
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["stereo-small", "stereo-medium", "generated clips", "reference clips"]


def test_no_scatter_without_the_spec_asking(tmp_path):
    runs = [load_run(make_run(tmp_path / "r", "small", embeddings=False, n_clips=10))]
    table = card_table(collect_runs(runs, ci=False))
    written = write_plots(table, per_clip_values(runs), tmp_path / "out", runs=runs)
    assert sorted(p.name for p in written) == ["measured_vs_published.png", "per_clip.png"]
