"""Runs → one table in the MusicGen model card's layout, as markdown, LaTeX (booktabs) and CSV.

Hydra-free: ``collect_runs(["outputs/small/...", "outputs/medium/..."])`` reads run folders into a tidy frame (one row
per run × metric: measured value, bootstrap interval, published value, protocol, random-weights flags);
``card_table(collected)`` pivots it into the card's layout - a row per model, the four card columns
(``Frechet Audio Distance``, ``KLD``, ``Text Consistency``, ``Chroma Cosine Similarity``), each measured value with
its interval and the published value beside it. ``to_markdown`` / ``to_latex`` / ``to_csv`` render it.

Rules of the table:
- a row per run, labelled with the evalkit model name; a run with random weights (its model's, or any metric
  backbone's) is labelled ``"<name> (random weights)"`` and gets a footnote saying its numbers test the pipeline only;
- a number that does not exist (metric not run, not published) is ``–`` (``--`` in LaTeX, empty in CSV);
- published values come from ``results/published/musicgen_model_card.csv``, matched by evalkit model name, then by
  hub id; a model the card does not cover (e.g. the stereo models) has ``–`` there;
- a metric measured with a protocol other than the card's (``audiocraft``) is footnoted.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from evalkit.report import bootstrap as bs
from evalkit.report.rundir import CARD_COLUMNS, Run, find_runs, load_run

#: The published numbers shipped with evalkit.
PUBLISHED_CSV = Path(__file__).resolve().parents[2] / "results" / "published" / "musicgen_model_card.csv"
#: The card's protocol for every metric.
CARD_PROTOCOL = "audiocraft"
METRIC_ORDER = ("fad", "kld", "clap", "chroma")
#: Decimals printed for measured values (published values are printed as published: 2 decimals).
DECIMALS = {"fad": 2, "kld": 2, "clap": 3, "chroma": 3}
PUBLISHED_DECIMALS = 2
MISSING = "–"
RANDOM_SUFFIX = " (random weights)"


# -- published numbers ----------------------------------------------------------------------------------------------
def load_published(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The published table (one row per model; columns ``model``, ``hub_id``, the card columns, ``source``)."""
    df = pd.read_csv(path or PUBLISHED_CSV, comment="#", skipinitialspace=True)
    missing = {"model", "hub_id", *CARD_COLUMNS.values()} - set(df.columns)
    if missing:
        raise ValueError(f"{path or PUBLISHED_CSV}: missing columns {sorted(missing)}")
    return df


def published_row(published: pd.DataFrame | None, model: str, hub_id: str | None) -> pd.Series | None:
    if published is None or published.empty:
        return None
    hit = published[published["model"] == model]
    if hit.empty and hub_id:
        hit = published[published["hub_id"] == hub_id]
    return None if hit.empty else hit.iloc[0]


# -- collecting runs ------------------------------------------------------------------------------------------------
def _labels(runs: Sequence[Run]) -> list[str]:
    base = [r.model_name + (RANDOM_SUFFIX if r.random_weights else "") for r in runs]
    out = []
    for r, b in zip(runs, base):
        out.append(f"{b} [{r.path.name}]" if base.count(b) > 1 else b)
    return out


def collect_runs(
    paths: Iterable[str | os.PathLike] | Iterable[Run],
    *,
    ci: bool = True,
    n_boot: int = bs.N_BOOT,
    level: float = bs.LEVEL,
    seed: int = bs.SEED,
    published: pd.DataFrame | str | os.PathLike | None = "default",
) -> pd.DataFrame:
    """Tidy frame of the runs' numbers: one row per (run, metric) for the card's metrics and any other metric.

    Columns: ``label, model, hub_id, run_dir, random_weights, model_random_weights, metric, card_column, value,
    ci_low, ci_high, ci_level, n_boot, ci_note, n_clips, protocol, higher_is_better, published``.
    ``paths`` may name run folders, summary.json files, or folders holding runs (searched recursively).
    """
    items = list(paths)
    runs = [p if isinstance(p, Run) else None for p in items]
    if any(r is None for r in runs):
        runs = [load_run(p) for p in find_runs([str(p) for p in items])]
    if isinstance(published, str) and published == "default":
        published = load_published()
    elif published is not None and not isinstance(published, pd.DataFrame):
        published = load_published(published)

    rows: list[dict[str, Any]] = []
    for run, label in zip(runs, _labels(runs)):
        measured = [m for m in METRIC_ORDER if m in run.metrics] + [m for m in run.metrics if m not in METRIC_ORDER]
        intervals, why = bs.run_intervals(run, measured, n_boot=n_boot, level=level, seed=seed) if ci else ({}, {})
        pub = published_row(published, run.model_name, run.hub_id)
        # every card metric gets a row (value NaN when the run did not measure it: the published value still shows)
        for m in list(METRIC_ORDER) + [m for m in measured if m not in METRIC_ORDER]:
            entry = run.metrics.get(m) or {}
            card = entry.get("card_column") or CARD_COLUMNS.get(m, m)
            iv = intervals.get(m)
            pub_value = float("nan")
            if pub is not None and card in pub.index and pd.notna(pub[card]):
                pub_value = float(pub[card])
            rows.append(
                {
                    "label": label,
                    "model": run.model_name,
                    "hub_id": run.hub_id,
                    "run_dir": str(run.path),
                    "random_weights": run.random_weights,
                    "model_random_weights": run.model_random,
                    "random_note": _random_note(run),
                    "metric": m,
                    "card_column": card,
                    "value": run.value(m),
                    "ci_low": iv.low if iv else float("nan"),
                    "ci_high": iv.high if iv else float("nan"),
                    "ci_level": level if iv else float("nan"),
                    "n_boot": n_boot if iv else 0,
                    "ci_value": iv.value if iv else float("nan"),
                    "ci_note": "" if iv or not ci or m not in measured else why.get(m, ""),
                    "n_clips": entry.get("n_clips", run.summary.get("n_clips")),
                    "protocol": entry.get("protocol"),
                    "higher_is_better": _direction(run, m),
                    "published": pub_value,
                }
            )
    df = pd.DataFrame(rows)
    df.attrs["runs"] = [str(r.path) for r in runs]
    df.attrs["labels"] = _labels(runs)
    df.attrs["ci"] = {"level": level, "n_boot": n_boot, "seed": seed} if ci else None
    return df


def _random_note(run: Run) -> str:
    """Which weights were random, in words (empty when none)."""
    parts = []
    if run.model_random:
        parts.append("the generating model")
    if run.random_metrics:
        parts.append("the metric backbones (" + ", ".join(run.random_metrics) + ")")
    if run.summary.get("synthetic_references"):
        parts.append("synthesised stand-in reference audio")
    if not parts and run.random_weights:
        parts.append("some of the weights")
    return " and ".join(parts)


def _direction(run: Run, metric: str) -> bool | None:
    try:
        return run.higher_is_better(metric)
    except ValueError:
        return None


# -- the card's layout ----------------------------------------------------------------------------------------------
def card_table(collected: pd.DataFrame) -> pd.DataFrame:
    """Wide table, a row per run (index ``Model``), in the card's column order.

    Columns for each card column C: ``C`` (measured), ``C CI low``, ``C CI high``, ``C (published)``; then ``hub_id``,
    ``random_weights``, ``run_dir``. ``table.attrs``: ``footnotes`` (list of str), ``random_rows``, ``protocol_notes``.
    """
    labels = list(collected.attrs.get("labels") or dict.fromkeys(collected["label"]))
    cards = [CARD_COLUMNS[m] for m in METRIC_ORDER]
    cols: list[str] = []
    for c in cards:
        cols += [c, f"{c} CI low", f"{c} CI high", f"{c} (published)"]
    table = pd.DataFrame(index=pd.Index(labels, name="Model"), columns=cols, dtype=float)
    meta = {"hub_id": [], "random_weights": [], "run_dir": []}
    random_rows: list[str] = []
    protocol_notes: list[str] = []
    no_ci: list[str] = []
    for label in labels:
        rows = collected[collected["label"] == label]
        first = rows.iloc[0] if len(rows) else None
        for _, r in rows.iterrows():
            c = r["card_column"]
            if c not in cards:
                continue
            table.loc[label, c] = r["value"]
            table.loc[label, f"{c} CI low"] = r["ci_low"]
            table.loc[label, f"{c} CI high"] = r["ci_high"]
            if pd.notna(r["value"]) and r["protocol"] and r["protocol"] != CARD_PROTOCOL:
                protocol_notes.append(f"{label}: {c} measured with protocol '{r['protocol']}' (the card's is '{CARD_PROTOCOL}').")
            if r.get("ci_note"):
                no_ci.append(f"{label}: no interval for {c} ({r['ci_note']}).")
            v, rv = r["value"], r.get("ci_value", float("nan"))
            if pd.notna(v) and pd.notna(rv) and abs(rv - v) > 1e-4 * max(1.0, abs(v)):
                no_ci.append(f"{label}: {c} recomputed from the per-clip data is {rv:.6g}, the summary says {v:.6g} "
                             "(the interval is around the recomputed value; check the run folder).")
        if first is not None:
            published = rows.drop_duplicates("card_column").set_index("card_column")["published"]
            for c in cards:
                if c in published.index:
                    table.loc[label, f"{c} (published)"] = published[c]
        meta["hub_id"].append(None if first is None else first["hub_id"])
        meta["random_weights"].append(bool(first is not None and first["random_weights"]))
        meta["run_dir"].append(None if first is None else first["run_dir"])
        if first is not None and first["random_weights"]:
            random_rows.append(label)
    for k, v in meta.items():
        table[k] = v

    ci = collected.attrs.get("ci")
    notes: list[str] = []
    if random_rows:
        which = []
        for lab in random_rows:
            note = collected.loc[collected["label"] == lab, "random_note"].iloc[0]
            which.append(f"{lab}: {note or 'random weights'}")
        notes.append(
            "† random weights (or synthesised references), so these numbers only show that the pipeline runs; they say nothing about MusicGen "
            "and are not comparable with the published values (" + "; ".join(which) + ")."
        )
    notes.append(
        "Measured: evalkit on the run's clips"
        + (f"; brackets: {ci['level']:.0%} bootstrap interval over clips ({ci['n_boot']} draws, seed {ci['seed']}; "
           "FAD: basic interval centred on the measured value, evalkit/report/bootstrap.py)" if ci else "")
        + ". Published: MusicGen model card, MusicCaps (results/published/musicgen_model_card.csv). "
        + f"{MISSING}: not measured or not published."
    )
    notes += protocol_notes + no_ci
    table.attrs["footnotes"] = notes
    table.attrs["random_rows"] = random_rows
    table.attrs["ci"] = ci
    return table


# -- rendering ------------------------------------------------------------------------------------------------------
_METRIC_OF = {v: k for k, v in CARD_COLUMNS.items()}
_ARROW = {"fad": "↓", "kld": "↓", "clap": "↑", "chroma": "↑"}
_TEX_ARROW = {"fad": r"$\downarrow$", "kld": r"$\downarrow$", "clap": r"$\uparrow$", "chroma": r"$\uparrow$"}


def _fmt(x, decimals: int, missing: str = MISSING) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return missing
    return f"{float(x):.{decimals}f}"


def format_cell(table: pd.DataFrame, label: str, card: str, *, missing: str = MISSING, ci_sep: str = " ") -> str:
    """``"4.91 [4.80, 5.02]"`` (or ``"4.91"`` without an interval, ``"–"`` when not measured)."""
    d = DECIMALS.get(_METRIC_OF.get(card, ""), 3)
    v = table.loc[label, card]
    s = _fmt(v, d, missing)
    lo, hi = table.loc[label, f"{card} CI low"], table.loc[label, f"{card} CI high"]
    if s != missing and pd.notna(lo) and pd.notna(hi):
        s += f"{ci_sep}[{_fmt(lo, d)}, {_fmt(hi, d)}]"
    return s


def format_published(table: pd.DataFrame, label: str, card: str, missing: str = MISSING) -> str:
    return _fmt(table.loc[label, f"{card} (published)"], PUBLISHED_DECIMALS, missing)


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub markdown: ``| Model | Frechet Audio Distance ↓ | published | KLD ↓ | published | ...``, footnotes below."""
    cards = list(CARD_COLUMNS.values())
    header = ["Model"]
    for c in cards:
        header += [f"{c} {_ARROW[_METRIC_OF[c]]}", "published"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (2 * len(cards))]
    random_rows = set(table.attrs.get("random_rows", []))
    for label in table.index:
        cells = [_md_escape(label) + (" †" if label in random_rows else "")]
        for c in cards:
            cells += [format_cell(table, label, c), format_published(table, label, c)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = table.attrs.get("footnotes", [])
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + "\n"


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def tex_escape(s: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(s)).replace("–", "--").replace("†", r"$^\dagger$")


def to_latex(
    table: pd.DataFrame,
    caption: str = "Objective metrics on MusicCaps: evalkit (with bootstrap intervals) beside the MusicGen model card.",
    label: str = "tab:musicgen-card",
) -> str:
    """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), footnotes below."""
    cards = list(CARD_COLUMNS.values())
    ncol = 1 + 2 * len(cards)
    out = [
        r"% Generated by `python -m evalkit.report`; needs \usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "rr" * len(cards) + "}",
        r"\toprule",
    ]
    top = [""] + [rf"\multicolumn{{2}}{{c}}{{{tex_escape(c)} {_TEX_ARROW[_METRIC_OF[c]]}}}" for c in cards]
    out.append(" & ".join(top) + r" \\")
    out.append(" ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(cards))))
    out.append(" & ".join(["Model"] + ["evalkit", "published"] * len(cards)) + r" \\")
    out.append(r"\midrule")
    random_rows = set(table.attrs.get("random_rows", []))
    for lab in table.index:
        cells = [tex_escape(lab) + (r"$^\dagger$" if lab in random_rows else "")]
        for c in cards:
            d = DECIMALS.get(_METRIC_OF[c], 3)
            v = table.loc[lab, c]
            cell = _fmt(v, d, "--")
            lo, hi = table.loc[lab, f"{c} CI low"], table.loc[lab, f"{c} CI high"]
            if cell != "--" and pd.notna(lo) and pd.notna(hi):
                cell += rf"\,{{\scriptsize[{_fmt(lo, d)}, {_fmt(hi, d)}]}}"
            cells += [cell, format_published(table, lab, c, "--")]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    notes = table.attrs.get("footnotes", [])
    if notes:
        out.append(r"\par\smallskip")
        out.append(r"\parbox{\linewidth}{\footnotesize " + r" \\ ".join(tex_escape(n) for n in notes) + "}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def to_csv(table: pd.DataFrame, path: str | os.PathLike | None = None) -> str:
    """Numbers as numbers (empty = missing): the ``Model`` index, every card column with CI bounds and published."""
    text = table.to_csv(index=True, float_format="%.6g", na_rep="")
    if path is not None:
        from evalkit.io import write_text

        write_text(path, text)
    return text


def write_tables(table: pd.DataFrame, out_dir: str | os.PathLike, stem: str = "card_table") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.tex``, ``<stem>.csv`` into ``out_dir`` (atomically)."""
    from evalkit.io import write_text

    out = Path(out_dir)
    paths = {"markdown": out / f"{stem}.md", "latex": out / f"{stem}.tex", "csv": out / f"{stem}.csv"}
    write_text(paths["markdown"], to_markdown(table))
    write_text(paths["latex"], to_latex(table))
    write_text(paths["csv"], to_csv(table))
    return paths


# -- per-clip values (plots, notebook) -------------------------------------------------------------------------------
PER_CLIP_METRICS = ("kld", "clap", "chroma")


def per_clip_values(paths_or_runs, metrics: Sequence[str] = PER_CLIP_METRICS) -> pd.DataFrame:
    """Long frame ``label, model, metric, id, value`` of the runs' per-clip columns (NaN rows dropped)."""
    items = list(paths_or_runs)
    runs = items if all(isinstance(r, Run) for r in items) else [load_run(p) for p in find_runs(items)]
    frames = []
    for run, label in zip(runs, _labels(runs)):
        clips = run.clips
        for m in metrics:
            if m not in clips.columns:
                continue
            f = pd.DataFrame({"id": clips["id"].astype(str), "value": clips[m].astype(float)})
            f.insert(0, "metric", m)
            f.insert(0, "model", run.model_name)
            f.insert(0, "label", label)
            frames.append(f.dropna(subset=["value"]))
    if not frames:
        return pd.DataFrame(columns=["label", "model", "metric", "id", "value"])
    return pd.concat(frames, ignore_index=True)
