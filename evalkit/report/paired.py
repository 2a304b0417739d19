"""Tables of paired statistics: a metric whose summary entry has a ``paired`` block (``spec.extra.paired``, e.g. the
stereo image) gets its own table, labelled as evalkit's own: one row per (run, statistic), the mean over clips with its
bootstrap interval for the generated clips, for their references, and for the per-clip difference.

``paired_table(runs, metric) -> DataFrame`` (long: ``label, statistic, side, value, low, high, no_interval, n,
n_not_finite``); ``paired_markdown`` / ``paired_latex`` / ``paired_csv`` render it. An interval without width (one
clip, or clips that all have the same value: a dual-mono reference's correlation is 1.0 on every clip) is no
interval: ``low``/``high`` are empty, ``no_interval`` says why, and the cell reads ``1.000 [n/a (identical
values)]``, not ``1.000 [1.000, 1.000]``. Torch-free, like the rest of the report.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

SIDES = ("generated", "reference", "difference")
TITLE = "evalkit's own measure (not on the MusicGen model card): {metric}"


def paired_metrics(runs: Sequence[Any]) -> list[str]:
    """Metrics of these runs whose summary has a ``paired`` block, in order of appearance."""
    out: list[str] = []
    for run in runs:
        for name, entry in (run.summary.get("metrics") or {}).items():
            if isinstance(entry, dict) and entry.get("paired") and name not in out:
                out.append(name)
    return out


def paired_table(runs: Sequence[Any], labels: Sequence[str], metric: str) -> pd.DataFrame:
    rows = []
    for run, label in zip(runs, labels):
        block = ((run.summary.get("metrics") or {}).get(metric) or {}).get("paired") or {}
        for stat, entry in block.items():
            for side in SIDES:
                iv = entry.get(side) or {}
                none = _no_interval(iv)
                rows.append({"label": label, "statistic": stat, "side": side, "value": iv.get("value"),
                             "low": None if none else iv.get("low"), "high": None if none else iv.get("high"),
                             "no_interval": none, "n": iv.get("n"),
                             "n_not_finite": (entry.get("n_not_finite") or {}).get(side, 0) if side != "difference"
                             else None, "level": entry.get("level")})
    return pd.DataFrame(rows, columns=["label", "statistic", "side", "value", "low", "high", "no_interval", "n",
                                       "n_not_finite", "level"])


def _no_interval(iv: dict) -> str:
    """Why an interval of summary.json has no width (``degenerate``, as the run recorded it; for summaries before
    it: one clip, or bounds that are equal), "" when it has one."""
    if not iv or iv.get("value") is None:
        return ""
    if "degenerate" in iv:
        return str(iv["degenerate"] or "")
    return "1 clip" if iv.get("n") == 1 else ("identical values" if iv.get("low") == iv.get("high") else "")


def _fmt(v: Any, decimals: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{float(v):.{decimals}f}"


def paired_cell(df: pd.DataFrame, label: str, stat: str, side: str) -> str:
    """``"0.443 [0.204, 0.675]"`` of one (run, statistic, side) of :func:`paired_table` (3 decimals), with
    ``" (k inf)"`` when k clips had no finite value; ``"–"`` when there is none."""
    hit = df[(df["label"] == label) & (df["statistic"] == stat) & (df["side"] == side)]
    if hit.empty or hit.iloc[0]["value"] is None or pd.isna(hit.iloc[0]["value"]):
        return "–"
    r = hit.iloc[0]
    ci = f"n/a ({r['no_interval']})" if r["no_interval"] else f"{_fmt(r['low'])}, {_fmt(r['high'])}"
    cell = f"{_fmt(r['value'])} [{ci}]"
    if side != "difference" and r["n_not_finite"]:
        cell += f" ({int(r['n_not_finite'])} inf)"
    return cell


def paired_markdown(df: pd.DataFrame, metric: str) -> str:
    """``| Model | statistic | generated | reference | difference |`` with intervals, and a note on the intervals."""
    if df.empty:
        return ""
    lines = [f"### {TITLE.format(metric=metric)}", "",
             "| Model | statistic | generated | reference | generated − reference |", "|---|---|---:|---:|---:|"]
    for label in dict.fromkeys(df["label"]):
        for stat in dict.fromkeys(df.loc[df["label"] == label, "statistic"]):
            cells = [paired_cell(df, label, stat, side) for side in SIDES]
            lines.append(f"| {label} | {stat} | " + " | ".join(cells) + " |")
    level = df["level"].dropna()
    pct = f"{float(level.iloc[0]):.0%}" if len(level) else "95%"
    lines += ["", f"- Means over clips with {pct} bootstrap intervals over clips (the difference: paired, per clip). "
              "\"(k inf)\": clips whose value is not finite (a total downmix loss: anti-phase), left out of the mean."
              + (" \"n/a (1 clip)\", \"n/a (identical values)\": no interval, since resampling one clip, or clips "
                 "that all have the same value, gives no spread." if (df["no_interval"] != "").any() else "")]
    return "\n".join(lines) + "\n"


def paired_latex(df: pd.DataFrame, metric: str) -> str:
    from evalkit.report.table import tex_escape

    out = [r"\begin{table}[t]", r"\centering", r"\small",
           rf"\caption{{{tex_escape(TITLE.format(metric=metric))}}}", r"\begin{tabular}{llrrr}", r"\toprule",
           r"Model & statistic & generated & reference & difference \\", r"\midrule"]
    for label in dict.fromkeys(df["label"]):
        for stat in dict.fromkeys(df.loc[df["label"] == label, "statistic"]):
            cells = [tex_escape(paired_cell(df, label, stat, side)) for side in SIDES]
            out.append(" & ".join([tex_escape(label), tex_escape(stat)] + cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_paired(runs: Sequence[Any], labels: Sequence[str], out_dir) -> tuple[list, str]:
    """``<metric>_paired.{md,tex,csv}`` for every paired metric; returns the paths and the markdown."""
    from pathlib import Path

    from evalkit.io import write_text

    paths, md = [], ""
    for metric in paired_metrics(runs):
        df = paired_table(runs, labels, metric)
        text = paired_markdown(df, metric)
        for ext, body in (("md", text), ("tex", paired_latex(df, metric)),
                          ("csv", df.to_csv(index=False, float_format="%.6g"))):
            paths.append(write_text(Path(out_dir) / f"{metric}_paired.{ext}", body))
        md += "\n" + text
    return paths, md
