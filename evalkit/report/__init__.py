"""Reports on finished runs: the model card's table (markdown, LaTeX, CSV), bootstrap intervals and FAD∞, plots,
and regression verdicts for CI. Reads run folders only (see :mod:`evalkit.report.rundir`); never imports the run
pipeline or a metric backbone.

- ``python -m evalkit.report RUN_DIR [RUN_DIR ...]``  → tables + plots (:mod:`evalkit.report.__main__`)
- ``python -m evalkit.compare BASELINE CURRENT``      → regression report, exit 1 on regression (:mod:`evalkit.report.compare`)
"""
from evalkit.report.rundir import Run, find_runs, load_run  # noqa: F401
from evalkit.report.table import (  # noqa: F401
    card_table,
    collect_runs,
    load_published,
    per_clip_values,
    to_csv,
    to_latex,
    to_markdown,
    write_tables,
)
