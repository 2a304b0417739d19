"""``python -m evalkit.report RUN_DIR [RUN_DIR ...]``: the model card's table for runs, with intervals and plots.

Each RUN_DIR is a run folder, its summary.json, or a folder searched recursively for runs (``outputs/``).
Writes into ``--out`` (default: ``outputs/report`` under the current directory - beside Hydra's default run folders
``outputs/<model>/<time>``, ignored by git, and never inside a run folder, which stays the untouched record of its run):

- ``card_table.md``, ``card_table.tex`` (booktabs), ``card_table.csv`` - the card's layout, a row per run, in the
  card's order; the markdown and LaTeX also hold a table per section of evalkit's own metrics (not on the card),
  each also as ``evalkit_metrics_<section>.csv``;
- ``results.csv`` - the tidy frame behind it (one row per run × metric, intervals, protocol, published value, ``note``:
  why an asked-for metric has no number, ``ci_none``: why an interval has no width, ``warnings``: the run's, joined
  by `` | ``);
- ``per_clip.png``, ``measured_vs_published.png`` and ``<metric>_scatter.png`` for each metric whose spec asks for a
  scatter plot (unless ``--no-plots``);
- ``inf.csv`` and ``inf.json`` with ``--inf``: the 1/n extrapolation (intercept, slope, R², points) of every metric
  whose aggregate extrapolates: FAD∞ (fadtk ``score_inf``) of Fréchet metrics, KAD∞ (kadtk ``score_inf``) of KAD; the
  JSON is ``{label: {metric: {score, slope, r2, points, ...}}}``. ``--fad-inf`` (its former name) does the same and
  also writes them as ``fad_inf.csv`` and ``fad_inf.json``;
- with ``--html OUT``: one look-and-listen page for all the runs at OUT (:mod:`evalkit.report.html`; its spectrograms
  in ``<OUT stem>_files/`` beside it), comparing each run with the first one named when there are several.

A folder that cannot be read (a failed or unfinished run, not a run folder, unreadable or older summary.json) is
skipped: it is named with its reason on stderr and under the markdown table, and the other runs are reported.
The markdown table is also printed. Exit status 0 when at least one run was read, 2 when none could be.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

from evalkit.report import bootstrap as bs
from evalkit.report.html import DEFAULT_N_TOP
from evalkit.report.rundir import load_runs
from evalkit.report.table import (
    card_table,
    collect_runs,
    load_published,
    order_runs,
    per_clip_values,
    run_labels,
    to_markdown,
    write_tables,
)

DEFAULT_OUT = Path("outputs") / "report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evalkit.report",
        description="Collect evalkit runs into the MusicGen model card's table (markdown, LaTeX, CSV) with bootstrap "
        "intervals over clips, and plot them.",
    )
    p.add_argument("runs", nargs="+", help="run folders, summary.json files, or folders holding runs")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default: ./{DEFAULT_OUT})")
    p.add_argument("--published", default=None, help="published numbers CSV (default: results/published/musicgen_model_card.csv)")
    p.add_argument("--no-ci", action="store_true", help="skip the bootstrap intervals")
    p.add_argument("--n-boot", type=int, default=bs.N_BOOT, help=f"bootstrap draws (default {bs.N_BOOT})")
    p.add_argument("--level", type=float, default=bs.LEVEL, help=f"interval level (default {bs.LEVEL})")
    p.add_argument("--seed", type=int, default=bs.SEED, help=f"bootstrap seed (default {bs.SEED})")
    p.add_argument("--inf", action="store_true",
                   help="also extrapolate every metric whose aggregate allows it to infinitely many samples (linear fit "
                   "in 1/n): FAD-inf (fadtk) of Fréchet metrics, KAD-inf (kadtk) of KAD")
    p.add_argument("--fad-inf", action="store_true", help="the former name of --inf (also writes fad_inf.csv/json)")
    p.add_argument("--inf-steps", "--fad-inf-steps", dest="inf_steps", type=int, default=bs.FAD_INF_STEPS,
                   help=f"subset sizes (default {bs.FAD_INF_STEPS})")
    p.add_argument("--inf-min-n", "--fad-inf-min-n", dest="inf_min_n", type=int, default=bs.FAD_INF_MIN_N,
                   help=f"smallest subset (default {bs.FAD_INF_MIN_N})")
    p.add_argument("--inf-unit", "--fad-inf-unit", dest="inf_unit", choices=("frames", "clips"), default="frames",
                   help="draw embedding frames (fadtk, kadtk; default) or whole clips")
    p.add_argument("--inf-without-replacement", "--fad-inf-without-replacement", dest="inf_without_replacement",
                   action="store_true",
                   help="draw subsets without replacement (Chong & Forsyth's FID-inf) instead of the tools' "
                   "with-replacement draws, which keep the pool's own finite-sample bias in the intercept")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--html", default=None, metavar="OUT",
                   help="also write one look-and-listen page for these runs to OUT (an .html file; spectrograms go to "
                   "<OUT stem>_files/ beside it); with 2+ runs it compares each with the first one named")
    p.add_argument("--html-top", type=int, default=DEFAULT_N_TOP,
                   help=f"the page's worst and best clips per metric (default {DEFAULT_N_TOP})")
    p.add_argument("--html-all-images", action="store_true",
                   help="a spectrogram for every clip on the page, not only for those at the top")
    return p


def _num(x: float, fmt: str) -> str:
    return "–" if not math.isfinite(x) else format(x, fmt)


def inf_report(runs, labels, args) -> tuple[list[dict], dict, str]:
    """The 1/n extrapolation of every metric whose aggregate extrapolates, of every run: ``(csv rows, {label:
    {metric: FadInf dict}}, markdown)``; one markdown table per kind of aggregate (FAD∞, KAD∞)."""
    from evalkit.statistics import AGGREGATES

    rows, points, kinds = [], {}, {}
    for run, label in zip(runs, labels):
        for m in bs.infinity_metrics(run):
            row = {"Model": label, "metric": m, "column": run.spec(m).card_column or m, "value": run.value(m),
                   "inf": math.nan, "slope": math.nan, "R²": math.nan, "unit": args.inf_unit, "steps": 0, "note": ""}
            try:
                r = bs.run_infinity(run, m, steps=args.inf_steps, min_n=args.inf_min_n, seed=args.seed,
                                    unit=args.inf_unit, replace=not args.inf_without_replacement)
                row.update({"inf": r.score, "slope": r.slope, "R²": r.r2, "unit": r.unit, "steps": len(r.points)})
                points.setdefault(label, {})[m] = r.as_dict()
            except ValueError as exc:
                row["note"] = str(exc)
            rows.append(row)
            kinds.setdefault(AGGREGATES[run.spec(m).aggregate].infinity_title, []).append(row)
    how = "without" if args.inf_without_replacement else "with"
    md = ""
    for title, kind in kinds.items():
        md += (f"\n### {title.format(steps=args.inf_steps, how=how)}\n\n| Model | metric | value | ∞ | slope | R² |\n"
               "|---|---|---:|---:|---:|---:|\n")
        for r in kind:
            md += (f"| {r['Model']} | {r['column']} | {_num(r['value'], '.3g')} | {_num(r['inf'], '.3g')} | "
                   f"{_num(r['slope'], '.4g')} | {_num(r['R²'], '.3f')} |\n")
        notes = [f"- {r['Model']}: no {r['column']}∞ ({r['note']})" for r in kind if r["note"]]
        md += ("\n" + "\n".join(notes) + "\n") if notes else ""
    return rows, points, md


#: the former name of :func:`inf_report`
fad_inf_report = inf_report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evalkit.report``; returns the exit status: 0 when at least one run was read, else 2."""
    args = build_parser().parse_args(argv)
    try:
        published = load_published(args.published)
    except (OSError, ValueError) as exc:
        print(f"evalkit.report: {exc}", file=sys.stderr)
        return 2
    runs, skipped = load_runs(args.runs)
    for s in skipped:
        print(f"evalkit.report: skipped {s}", file=sys.stderr)
    if not runs:
        print("evalkit.report: no run could be read; nothing written", file=sys.stderr)
        return 2
    given = list(runs)  # the page compares each run with the first one named
    runs = order_runs(runs, published)
    out = Path(args.out)
    collected = collect_runs(runs, ci=not args.no_ci, n_boot=args.n_boot, level=args.level, seed=args.seed,
                             published=published, skipped=skipped)
    table = card_table(collected)
    written = list(write_tables(table, out).values())
    from evalkit.io import write_text

    tidy = collected.assign(warnings=collected["warnings"].map(" | ".join))  # a tuple per row: one text cell
    write_text(out / "results.csv", tidy.to_csv(index=False, float_format="%.6g"))
    written.append(out / "results.csv")
    md = to_markdown(table)
    from evalkit.report.paired import write_paired

    paired_paths, paired_md = write_paired(runs, run_labels(runs), out)
    written += paired_paths
    md += paired_md
    if args.inf or args.fad_inf:
        import pandas as pd

        rows, points, inf_md = inf_report(runs, run_labels(runs), args)
        names = [("inf.csv", "inf.json")] + ([("fad_inf.csv", "fad_inf.json")] if args.fad_inf else [])  # the old flag's
        for csv_name, json_name in names:
            write_text(out / csv_name, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
            write_text(out / json_name, json.dumps(points, indent=2) + "\n")
            written += [out / csv_name, out / json_name]
        md += inf_md
    if not args.no_plots:
        from evalkit.report.plots import write_plots

        written += write_plots(table, per_clip_values(runs), out, runs=runs)
    if args.html:
        from evalkit.report.html import write_page

        written.append(write_page(given, args.html, n_top=args.html_top, all_images=args.html_all_images,
                                  ci=not args.no_ci, n_boot=args.n_boot, level=args.level, seed=args.seed,
                                  published=published, skipped=skipped))
    print(md, end="")
    print("\nwrote: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
