"""Plots of runs (matplotlib, Agg): per-clip distributions per model, and measured vs published per metric.

Figures are built with the object API on an Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): no
pyplot, no global backend switch, so the same functions work headless in CI and inside a notebook (where
``IPython.display.Image(png_bytes(fig))`` shows them).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from evalkit.report.rundir import CARD_COLUMNS
from evalkit.report.table import DECIMALS

_TITLES = {"kld": "KLD ↓ (per clip)", "clap": "Text consistency ↑ (per clip)", "chroma": "Chroma cosine ↑ (per clip)"}
_ARROW = {"fad": "↓", "kld": "↓", "clap": "↑", "chroma": "↑"}
MEASURED_COLOR = "#1f77b4"
RANDOM_COLOR = "#b0b0b0"
PUBLISHED_COLOR = "#ff7f0e"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def per_clip_figure(values: pd.DataFrame, metrics: Sequence[str] | None = None) -> Figure:
    """Box plots (with every clip as a dot and the mean as a diamond) of each per-clip metric, a row per model.

    ``values``: the long frame of :func:`evalkit.report.table.per_clip_values`.
    """
    metrics = [m for m in (metrics or ("kld", "clap", "chroma")) if m in set(values["metric"])]
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
        data, pos = [], []
        for i, lab in enumerate(labels):
            v = values.loc[(values["metric"] == m) & (values["label"] == lab), "value"].to_numpy(float)
            if v.size:
                data.append(v)
                pos.append(i)
        if data:
            ax.boxplot(data, positions=pos, vert=False, widths=0.6, showfliers=False,
                       medianprops={"color": "black"}, boxprops={"color": "0.3"})
            for p, v in zip(pos, data):
                random = "(random weights)" in labels[p]
                ax.scatter(v, p + rng.uniform(-0.18, 0.18, v.size), s=6, alpha=0.45,
                           color=RANDOM_COLOR if random else MEASURED_COLOR, linewidths=0)
                ax.scatter([v.mean()], [p], marker="D", s=28, color="crimson", zorder=3,
                           label="mean" if p == pos[0] else None)
        ax.set_title(_TITLES.get(m, m))
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(labels)), labels)
    axes[0].set_ylim(len(labels) - 0.4, -0.6)  # first model on top (the y axis is shared: set it once)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle("Per-clip metric distributions")
    return fig


def published_figure(table: pd.DataFrame) -> Figure:
    """Horizontal bars per metric: each model's measured value (with its interval) beside the published one.

    ``table``: :func:`evalkit.report.table.card_table`. Missing numbers are written as "–" at the axis.
    """
    cards = list(CARD_COLUMNS.items())
    labels = list(table.index)
    fig = _new_figure(4.0 * len(cards), 1.6 + 0.7 * max(1, len(labels)))
    axes = fig.subplots(1, len(cards), sharey=True, squeeze=False)[0]
    y = np.arange(len(labels))
    h = 0.38
    random_rows = set(table.attrs.get("random_rows", []))
    for ax, (metric, card) in zip(axes, cards):
        meas = table[card].to_numpy(float)
        lo = table[f"{card} CI low"].to_numpy(float)
        hi = table[f"{card} CI high"].to_numpy(float)
        pub = table[f"{card} (published)"].to_numpy(float)
        colors = [RANDOM_COLOR if lab in random_rows else MEASURED_COLOR for lab in labels]
        m_ok = np.isfinite(meas)
        ax.barh(y[m_ok] - h / 2, meas[m_ok], height=h, color=np.array(colors)[m_ok], label="evalkit")
        ci_ok = m_ok & np.isfinite(lo) & np.isfinite(hi)
        if ci_ok.any():
            err = np.vstack([meas[ci_ok] - lo[ci_ok], hi[ci_ok] - meas[ci_ok]])
            ax.errorbar(meas[ci_ok], y[ci_ok] - h / 2, xerr=np.clip(err, 0, None), fmt="none", ecolor="black",
                        capsize=3, lw=1)
        p_ok = np.isfinite(pub)
        ax.barh(y[p_ok] + h / 2, pub[p_ok], height=h, color=PUBLISHED_COLOR, hatch="//", edgecolor="white",
                label="published")
        top = float(np.nanmax(np.concatenate([meas[m_ok], hi[ci_ok], pub[p_ok], [0.0]]))) or 1.0
        for yi in range(len(labels)):
            for val, end, off, what in ((meas[yi], hi[yi], -h / 2, "not measured"), (pub[yi], np.nan, h / 2, "not published")):
                if np.isfinite(val):
                    x = max(val, end) if np.isfinite(end) else val
                    d = DECIMALS.get(metric, 2) if off < 0 else 2
                    ax.text(x + 0.015 * top, yi + off, f"{val:.{d}f}", va="center", fontsize=7)
                else:
                    ax.text(0.015 * top, yi + off, f"– {what}", va="center", fontsize=7, color="0.4")
        ax.set_xlim(min(0.0, float(np.nanmin(np.concatenate([meas[m_ok], lo[ci_ok], [0.0]])))), top * 1.25)
        ax.set_title(f"{card} {_ARROW[metric]}")
        ax.set_yticks(y, labels)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_ylim(len(labels) - 0.5, -0.5)  # first model on top (the y axis is shared: set it once)
    handles = [Patch(color=MEASURED_COLOR, label="evalkit (line: bootstrap interval)"),
               Patch(color=RANDOM_COLOR, label="evalkit, random weights"),
               Patch(facecolor=PUBLISHED_COLOR, hatch="//", edgecolor="white", label="published (model card)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    fig.suptitle("evalkit vs the MusicGen model card")
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (``IPython.display.Image(png_bytes(fig))`` shows it in any notebook frontend)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    from evalkit.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_plots(table: pd.DataFrame, values: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """``per_clip.png`` and ``measured_vs_published.png`` in ``out_dir``."""
    out = Path(out_dir)
    return [
        save_figure(per_clip_figure(values), out / "per_clip.png"),
        save_figure(published_figure(table), out / "measured_vs_published.png"),
    ]
