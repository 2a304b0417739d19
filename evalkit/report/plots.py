"""Plots of runs (matplotlib, Agg): per-clip distributions, measured vs published, and evalkit's own scatter plots.

Figures are built with the object API on an Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): no
pyplot, no global backend switch, so the same functions work headless in CI and inside a notebook (where
``IPython.display.Image(png_bytes(fig))`` shows them). Titles, arrows and decimals come from the tables (and so from
each metric's spec); nothing here names a metric.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import Formatter, MaxNLocator

from evalkit.report.table import (
    PUBLISHED_DECIMALS,
    RANDOM_SUFFIX,
    cell_decimals,
    format_number,
    run_labels,
)

MEASURED_COLOR = "#1f77b4"
RANDOM_COLOR = "#8c8c8c"
PUBLISHED_COLOR = "#d62728"
GAP_COLOR = "0.35"
#: vertical offsets of the measured and published markers within a model's row (rows are 1 apart)
_MEASURED_DY, _PUBLISHED_DY = -0.14, 0.14


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


class DistinctFormatter(Formatter):
    """Tick labels in plain decimals (no scientific offset) with the fewest decimals that write every tick exactly
    (0.285, not 0.29) and keep every label of the axis distinct."""

    decimals = 2

    def format_ticks(self, values) -> list[str]:
        """The labels of one axis's ticks (all share the decimals chosen here)."""
        vals = sorted({float(v) for v in values})
        steps = [b - a for a, b in zip(vals, vals[1:])]
        step = min(steps) if steps else (abs(vals[0]) if vals and vals[0] else 1.0)
        d = max(0, -math.floor(math.log10(step)))
        while d < 12 and (len({f"{v:.{d}f}" for v in vals}) < len(vals)
                          or any(abs(float(f"{v:.{d}f}") - v) > 1e-6 * step for v in vals)):
            d += 1
        self.decimals = d
        return [self(float(v)) for v in values]

    def __call__(self, x, pos=None) -> str:
        s = f"{x:.{self.decimals}f}"
        return s[1:] if s.startswith("-") and float(s) == 0 else s  # no "-0.00"


class InsideLocator(MaxNLocator):
    """:class:`MaxNLocator` without the ticks within ``margin`` (a fraction of the view) of either end, whose labels
    would stick out of the panel into the next one."""

    def __init__(self, nbins: int, margin: float = 0.08):
        super().__init__(nbins=nbins)
        self.margin = margin

    def __call__(self):
        vmin, vmax = sorted(self.axis.get_view_interval())
        m = self.margin * (vmax - vmin)
        nbins = self._nbins
        for n in range(int(nbins), 10):  # at least 2 ticks inside, or there is no scale
            self.set_params(nbins=n)
            ticks = [t for t in self.tick_values(vmin, vmax) if vmin + m <= t <= vmax - m]
            if len(ticks) >= 2:
                break
        self.set_params(nbins=nbins)
        return ticks


def _set_ticks(ax, nbins: int) -> None:
    ax.xaxis.set_major_locator(InsideLocator(nbins))
    ax.xaxis.set_major_formatter(DistinctFormatter())


def fit_ticks(fig: Figure, axes: Sequence[Any], nbins: int = 5, pad_px: float = 6.0) -> None:
    """Fewer x ticks on an axis while its tick labels overlap each other or a neighbouring panel's (checked on the
    drawn figure; at least 2 ticks)."""
    bins = {id(ax): nbins for ax in axes}
    for ax in axes:
        _set_ticks(ax, nbins)
    for _ in range(nbins - 1):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = sorted(((t.get_window_extent(renderer), ax) for ax in axes for t in ax.get_xticklabels()
                        if t.get_visible() and t.get_text()), key=lambda item: item[0].x0)
        crowded: set[int] = set()
        for (left, ax1), (right, ax2) in zip(boxes, boxes[1:]):
            if right.x0 < left.x1 + pad_px:
                crowded |= {id(ax1), id(ax2)}
        crowded = {i for i in crowded if bins[i] > 2}
        if not crowded:
            return
        for ax in axes:
            if id(ax) in crowded:
                bins[id(ax)] -= 1
                _set_ticks(ax, bins[id(ax)])


def _arrow(table: pd.DataFrame, column: str) -> str:
    a = (table.attrs.get("arrows") or {}).get(column)
    return "" if a is None else (" ↑" if a else " ↓")


# -- per-clip distributions -------------------------------------------------------------------------------------------
def per_clip_figure(values: pd.DataFrame, metrics: Sequence[str] | None = None) -> Figure:
    """Box plots (with every clip as a dot and the mean as a diamond) of each per-clip metric, a row per model.

    ``values``: the long frame of :func:`evalkit.report.table.per_clip_values` (its ``column`` and
    ``higher_is_better`` give each panel's title)."""
    present = list(dict.fromkeys(values["metric"])) if len(values) else []
    metrics = [m for m in (metrics or present) if m in present]
    labels = list(dict.fromkeys(values["label"]))
    fig = _new_figure(4.2 * max(1, len(metrics)), 1.4 + 0.55 * max(1, len(labels)))
    if not metrics:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no per-clip metric columns in these runs", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, m in zip(axes, metrics):
        rows = values[values["metric"] == m]
        data = [(i, rows.loc[rows["label"] == lab, "value"].to_numpy(float)) for i, lab in enumerate(labels)]
        data = [(i, v) for i, v in data if v.size]
        ax.boxplot([v for _, v in data], positions=[i for i, _ in data], vert=False, widths=0.6, showfliers=False,
                   medianprops={"color": "black"}, boxprops={"color": "0.3"})
        for n, (p, v) in enumerate(data):
            random = RANDOM_SUFFIX in labels[p]
            ax.scatter(v, p + rng.uniform(-0.18, 0.18, v.size), s=6, alpha=0.45,
                       color=RANDOM_COLOR if random else MEASURED_COLOR, linewidths=0)
            ax.scatter([v.mean()], [p], marker="D", s=28, color="crimson", zorder=3, label="mean" if n == 0 else None)
        first = rows.iloc[0]
        hib = first.get("higher_is_better") if "higher_is_better" in rows.columns else None
        arrow = "" if hib is None or pd.isna(hib) else (" ↑" if hib else " ↓")
        ax.set_title(f"{first.get('column', m) if 'column' in rows.columns else m}{arrow} (per clip)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(labels)), labels)
    axes[0].set_ylim(len(labels) - 0.4, -0.6)  # first model on top (the y axis is shared: set it once)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle("Per-clip metric distributions")
    fit_ticks(fig, axes)
    return fig


# -- measured vs published ------------------------------------------------------------------------------------------
def _panel_values(table: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    pub = f"{column} (published)"
    return {
        "value": table[column].to_numpy(float),
        "low": table[f"{column} CI low"].to_numpy(float),
        "high": table[f"{column} CI high"].to_numpy(float),
        "published": table[pub].to_numpy(float) if pub in table.columns else np.full(len(table), np.nan),
    }


def _draw_panel(ax, table: pd.DataFrame, column: str) -> set[str]:
    """One card column: per model the measured dot, its interval bar, the published diamond and the gap line.
    Returns the kinds of artists drawn (the legend shows exactly these)."""
    v = _panel_values(table, column)
    decimals = (table.attrs.get("decimals") or {}).get(column, PUBLISHED_DECIMALS)
    random_rows = set(table.attrs.get("random_rows", []))
    drawn: set[str] = set()
    for y, lab in enumerate(table.index):
        val, lo, hi, pub = v["value"][y], v["low"][y], v["high"][y], v["published"][y]
        color = RANDOM_COLOR if lab in random_rows else MEASURED_COLOR
        ym, yp = y + _MEASURED_DY, y + _PUBLISHED_DY
        if np.isfinite(val) and np.isfinite(pub):
            ax.plot([val, pub], [ym, yp], color=GAP_COLOR, lw=0.8, ls="--", zorder=1)
            drawn.add("gap")
        if np.isfinite(val):
            has_ci = np.isfinite(lo) and np.isfinite(hi)
            if has_ci:
                ax.plot([lo, hi], [ym, ym], color=color, lw=2.2, alpha=0.55, solid_capstyle="butt", zorder=2)
                drawn.add("interval")
            ax.plot([val], [ym], marker="o", ms=6, color=color, ls="none", zorder=3)
            drawn.add("random" if lab in random_rows else "measured")
            d = cell_decimals(decimals, val, *((lo, hi) if has_ci else ()))
            ax.annotate(format_number(val, d), xy=(max(val, hi) if has_ci else val, ym), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7, color=color)
        if np.isfinite(pub):
            ax.plot([pub], [yp], marker="D", ms=6, mfc="white", mec=PUBLISHED_COLOR, mew=1.4, ls="none", zorder=3)
            ax.annotate(format_number(pub, PUBLISHED_DECIMALS), xy=(pub, yp), xytext=(5, 0),
                        textcoords="offset points", va="center", fontsize=7, color=PUBLISHED_COLOR)
            drawn.add("published")
    xs = np.concatenate([x[np.isfinite(x)] for x in v.values()])
    lo_x, hi_x = float(xs.min()), float(xs.max())
    span = (hi_x - lo_x) or (abs(hi_x) * 0.2) or 1.0
    ax.set_xlim(lo_x - 0.1 * span, hi_x + 0.4 * span)  # room on the right for the labels
    ax.set_title(f"{column}{_arrow(table, column)}", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    return drawn


def _legend_handles(drawn: set[str], level: float | None) -> list[Line2D]:
    """A handle per kind of artist drawn, styled like it (the interval in the colour of the dots it belongs to)."""
    interval = f"{level:.0%} bootstrap interval" if level else "bootstrap interval"
    bar = MEASURED_COLOR if "measured" in drawn else RANDOM_COLOR
    kinds = [
        ("measured", dict(marker="o", color=MEASURED_COLOR, ls="none"), "evalkit (measured)"),
        ("random", dict(marker="o", color=RANDOM_COLOR, ls="none"), "evalkit, random weights (pipeline check only)"),
        ("interval", dict(color=bar, lw=2.2, alpha=0.55), interval),
        ("published", dict(marker="D", mfc="white", mec=PUBLISHED_COLOR, mew=1.4, ls="none"), "published (model card)"),
        ("gap", dict(color=GAP_COLOR, lw=0.8, ls="--"), "gap: measured to published"),
    ]
    return [Line2D([], [], label=label, **style) for kind, style, label in kinds if kind in drawn]


def published_figure(table: pd.DataFrame) -> Figure:
    """Dot-and-interval chart: a panel per card column that has any number, a row per model (the table's order);
    the measured value as a dot with its bootstrap interval as a bar, the published value as a hollow diamond, a
    dashed line between them (the gap). Random-weight rows are grey with grey, italic labels.

    ``table``: :func:`evalkit.report.table.card_table`. Value labels follow the table's decimals rule."""
    columns = [c for c in table.attrs.get("columns", [])
               if any(np.isfinite(x).any() for x in _panel_values(table, c).values())]
    labels = list(table.index)
    fig = _new_figure(1.6 + 3.4 * max(1, len(columns)), 1.5 + 0.7 * max(1, len(labels)))
    if not columns:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no measured or published values for the card's columns", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(1, len(columns), sharey=True, squeeze=False)[0]
    drawn: set[str] = set()
    for ax, c in zip(axes, columns):
        drawn |= _draw_panel(ax, table, c)
    random_rows = set(table.attrs.get("random_rows", []))
    axes[0].set_yticks(range(len(labels)), labels)
    for tick, lab in zip(axes[0].get_yticklabels(), labels):
        if lab in random_rows:
            tick.set_color(RANDOM_COLOR)
            tick.set_fontstyle("italic")
    axes[0].set_ylim(len(labels) - 0.5, -0.5)  # first model on top (the y axis is shared: set it once)
    level = (table.attrs.get("ci") or {}).get("level")
    handles = _legend_handles(drawn, level)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", frameon=False)
    fig.suptitle("evalkit vs the MusicGen model card")
    fit_ticks(fig, axes, nbins=4)
    return fig


# -- evalkit's own scatter plots ------------------------------------------------------------------------------------
def scatter_metrics(runs: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """``{metric: spec.extra["scatter"]}`` for every metric of ``runs`` whose spec asks for a scatter plot."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        for m, spec in run.specs.items():
            block = (spec.extra or {}).get("scatter")
            if isinstance(block, dict) and block.get("x") and block.get("y"):
                out.setdefault(m, dict(block))
    return out


def scatter_figure(runs: Sequence[Any], metric: str, block: dict[str, Any]) -> Figure:
    """Per-clip ``x`` vs ``y`` (columns of clips.parquet named by the spec's ``extra.scatter``) of the generated clips
    (filled circles) and their references (``x_ref``/``y_ref``, crosses), one colour per run; titled as evalkit's
    own measure (not on the MusicGen model card)."""
    fig = _new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    handles = []
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, label, color in zip(runs, run_labels(runs), colors):
        clips, drew = run.clips, False
        for xk, yk, marker, kw in ((block["x"], block["y"], "o", {"alpha": 0.75}),
                                   (block.get("x_ref"), block.get("y_ref"), "x", {"alpha": 0.9})):
            if xk in clips.columns and yk in clips.columns:
                ax.scatter(clips[xk].astype(float), clips[yk].astype(float), marker=marker, s=22, color=color,
                           linewidths=1.2 if marker == "x" else 0, **kw)
                drew = True
        if drew:
            handles.append(Line2D([], [], marker="s", color=color, ls="none", label=label))
    handles += [Line2D([], [], marker="o", color="0.3", ls="none", label="generated clips"),
                Line2D([], [], marker="x", color="0.3", ls="none", label="reference clips")]
    ax.set_xlabel(block.get("x_label") or block["x"])
    ax.set_ylabel(block.get("y_label") or block["y"])
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_title(f"{metric}: evalkit's own measure, per clip (not on the MusicGen model card)", fontsize="medium")
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (``IPython.display.Image(png_bytes(fig))`` shows it in any notebook frontend)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write the figure as PNG to ``path`` atomically (a reader never sees half a file); returns ``path``."""
    from evalkit.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_plots(table: pd.DataFrame, values: pd.DataFrame, out_dir: str | os.PathLike,
                runs: Sequence[Any] = ()) -> list[Path]:
    """``per_clip.png``, ``measured_vs_published.png`` and, for each metric of ``runs`` whose spec has an
    ``extra.scatter`` block, ``<metric>_scatter.png`` in ``out_dir``. Returns the paths written."""
    out = Path(out_dir)
    paths = [
        save_figure(per_clip_figure(values), out / "per_clip.png"),
        save_figure(published_figure(table), out / "measured_vs_published.png"),
    ]
    for metric, block in scatter_metrics(runs).items():
        holders = [r for r in runs if metric in r.specs]
        paths.append(save_figure(scatter_figure(holders, metric, block), out / f"{metric}_scatter.png"))
    return paths
