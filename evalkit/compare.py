"""``python -m evalkit.compare BASELINE CURRENT``: the CI regression check (logic in :mod:`evalkit.report.compare`).

Exit status: 0 no regression, 1 a metric moved beyond its tolerance in the bad direction (or went missing),
2 the runs are not comparable (protocol, backbone checkpoint or random-weights flag differ) or could not be read.
"""
from evalkit.report.compare import compare_paths, compare_summaries, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
