"""Reports on finished runs: the model card's table (markdown, LaTeX, CSV) and evalkit's own tables, bootstrap
intervals and FAD∞, plots, and regression verdicts for CI. Reads run folders only (see :mod:`evalkit.report.rundir`);
never imports the run pipeline or a metric backbone. Every fact about a metric comes from its ``spec`` in
summary.json, the card's columns and row order from ``results/published/musicgen_model_card.csv``.

- ``python -m evalkit.report RUN_DIR [RUN_DIR ...]``  → tables + plots (:mod:`evalkit.report.__main__`); with
  ``--html OUT`` also one look-and-listen page for the runs (:mod:`evalkit.report.html`, which also writes the
  ``report.html`` of every run)
- ``python -m evalkit.compare BASELINE CURRENT``      → regression report, exit 1 on regression (:mod:`evalkit.report.compare`)
"""
from evalkit.report.html import write_page, write_run_page  # noqa: F401
from evalkit.report.rundir import (  # noqa: F401
    RunFolderError,
    RunRecord,
    SkippedFolder,
    find_runs,
    load_run,
    load_runs,
    scan_runs,
)
from evalkit.report.table import (  # noqa: F401
    card_table,
    collect_runs,
    load_published,
    order_runs,
    per_clip_values,
    to_csv,
    to_latex,
    to_markdown,
    write_tables,
)
