"""Runs → the MusicGen model card's table, and evalkit's own tables, as markdown, LaTeX (booktabs) and CSV.

Hydra-free: ``collect_runs(["outputs/small/...", "outputs/medium/..."])`` reads run folders into a tidy frame (one row
per run × metric: measured value, bootstrap interval, published value, protocol, why a number is missing);
``card_table(collected)`` pivots it into the card's layout - a row per model, a column per card column, each
measured value with its interval and the published value beside it - and holds evalkit's own tables in
``table.attrs["sections"]``. ``to_markdown`` / ``to_latex`` / ``to_csv`` render them.

Nothing here names a metric: every fact comes from the metric's ``spec`` in summary.json (see
:mod:`evalkit.report.rundir`), the card's columns from the published CSV.

Rules of the tables:
- the card's columns, in order, are the published CSV's columns between ``hub_id`` and ``source``; a metric goes into
  the column its ``spec.card_column`` names (a card column the CSV lacks is appended). A metric with
  ``card_column: null`` or ``section`` other than ``card`` goes into a table of evalkit's own metrics (not on the
  model card), one per ``section``, a column per metric;
- header arrows (↑ higher is better, ↓ lower) come from the spec of any run that measured the column (none if none);
- rows are in the card's order: the published CSV's rows (a run is matched by evalkit model name, then hub id), then
  every other model in the order given, each named by its label (``model.label``: a folder run's folder name, not
  ``folder``); a run with random weights (its model's, or any metric backbone's) is labelled
  ``"<label> (random weights)"`` and footnoted (†): its numbers test the pipeline only;
- numbers: a measured value (and its interval, in the same cell) is printed with the spec's ``decimals`` unless that
  would show fewer than 2 significant digits of a nonzero value - then with the decimals that show 2 significant
  digits, the same for the value and both bounds of a cell (demo FAD ``0.0024 [0.0019, 0.0031]``, a real one
  ``4.91 [4.80, 5.02]``); published values as published (2 decimals);
- a number that does not exist (not measured, not published) is ``–`` (``--`` in LaTeX, empty in CSV); a metric that
  was asked for and has no number (an error, or not applicable to the run) is ``n/a‡`` with a ``‡`` footnote giving
  the reason (in CSV an empty value and the reason in ``<column> note``);
- a metric measured with a protocol other than the card's (``audiocraft``) is footnoted;
- a warning the run recorded for a metric (``metrics.<m>.warnings`` in summary.json, e.g. a rank-deficient FAD
  covariance: the value exists but is not comparable) marks its cell with ``§`` and is footnoted (in CSV: the
  ``<column> note``);
- an interval with no width is no interval: one clip, or clips that all give one value, print ``n/a (1 clip)`` /
  ``n/a (identical values)`` (``identical clips`` for a Fréchet distance) in its place, never ``[x, x]``;
- runs measured with different recipes (another metric recipe, backbone checkpoint, generation, post-processing or
  audit setting: what ``python -m evalkit.compare`` refuses to compare) are marked ``¶`` and footnoted, naming what
  differs from the table's first run;
- folders that could not be read are named with their reason under the markdown table.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from evalkit.metrics.spec import MetricSpec
from evalkit.report import bootstrap as bs
from evalkit.report.rundir import DEFAULT_CHANNEL_VIEW, RunFolderError, RunRecord, SkippedFolder, load_runs

#: The published numbers shipped with evalkit.
PUBLISHED_CSV = Path(__file__).resolve().parents[2] / "results" / "published" / "musicgen_model_card.csv"
#: The card's protocol for every metric.
CARD_PROTOCOL = "audiocraft"
#: Published values are printed as published.
PUBLISHED_DECIMALS = 2
#: The most decimals the 2-significant-digit rule may ask for.
MAX_DECIMALS = 10
MISSING = "–"
NOT_AVAILABLE = "n/a"
NA_MARK = "‡"
RANDOM_MARK = "†"
#: a cell whose metric the run recorded a warning for (footnoted)
WARN_MARK = "§"
#: a row measured with another recipe than the table's first run (footnoted)
RECIPE_MARK = "¶"
#: why an interval has no width (:attr:`evalkit.report.bootstrap.Interval.degenerate`), for its footnote
NO_INTERVAL = {"1 clip": "one clip: resampling it gives the same value every time",
               "identical values": "every clip has the same value, so every resample has it too",
               "identical clips": "every clip has the same embeddings, so every resample is the same set"}
RANDOM_SUFFIX = " (random weights)"
CARD_SECTION = "card"
#: Section of a metric with ``card_column: null`` whose spec still says ``section: card``.
OWN_SECTION = "evalkit"
OWN_TITLE = "evalkit's own metrics (not on the MusicGen model card): {section}"


# -- published numbers ----------------------------------------------------------------------------------------------
def load_published(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The published table: one row per model, columns ``model``, ``hub_id``, the card's columns, ``source``.

    The card's columns are the ones between ``hub_id`` and ``source`` (:func:`card_columns_of`); rows of models the
    card does not cover have empty cells (they fix the row order and the hub id). Raises ValueError if a column is
    missing or out of place."""
    src = path or PUBLISHED_CSV
    df = pd.read_csv(src, comment="#", skipinitialspace=True)
    missing = {"model", "hub_id", "source"} - set(df.columns)
    if missing:
        raise ValueError(f"{src}: missing columns {sorted(missing)}")
    if list(df.columns).index("source") < list(df.columns).index("hub_id"):
        raise ValueError(f"{src}: the card's columns go between 'hub_id' and 'source'")
    return df


def card_columns_of(published: pd.DataFrame | None) -> list[str]:
    """The card's columns in the card's order: the published CSV's columns between ``hub_id`` and ``source``."""
    if published is None:
        return []
    cols = list(published.columns)
    return cols[cols.index("hub_id") + 1: cols.index("source")]


def _published_index(published: pd.DataFrame | None, model: str, hub_id: str | None) -> int | None:
    """Position of the model's row in the published CSV (by evalkit model name, then hub id), or None."""
    if published is None or published.empty:
        return None
    for key, want in (("model", model), ("hub_id", hub_id)):
        if want:
            hits = [i for i, v in enumerate(published[key]) if v == want]
            if hits:
                return hits[0]
    return None


def published_row(published: pd.DataFrame | None, model: str, hub_id: str | None) -> pd.Series | None:
    """The published CSV's row of a model (by evalkit model name, then hub id), or None."""
    i = _published_index(published, model, hub_id)
    return None if i is None else published.iloc[i]


def order_runs(runs: Sequence[RunRecord], published: pd.DataFrame | None) -> list[RunRecord]:
    """Runs in the card's order: the published CSV's row order, then the others in the order given (stable)."""
    n = 0 if published is None else len(published)

    def key(item: tuple[int, RunRecord]) -> tuple[int, int]:
        i, run = item
        pos = _published_index(published, run.model_name, run.hub_id)
        return (pos if pos is not None else n, i)

    return [r for _, r in sorted(enumerate(runs), key=key)]


def run_labels(runs: Sequence[RunRecord]) -> list[str]:
    """Row labels: the run's label (``model.label``: the model name, or for a folder run its folder's name; +
    ``" (random weights)"``), with ``[<run folder>]`` when two runs would share one."""
    base = [r.label + (RANDOM_SUFFIX if r.random_weights else "") for r in runs]
    return [f"{b} [{r.path.name}]" if base.count(b) > 1 else b for r, b in zip(runs, base)]


# -- where a metric goes ----------------------------------------------------------------------------------------------
def placement(spec: MetricSpec | None) -> tuple[str | None, str | None]:
    """``(section, column)``: ``("card", spec.card_column)`` for a card metric, ``(<section>, <its label, else its
    name>)`` for evalkit's own (``FAD (clap-laion-music)``: FAD on another embedding than the card's), ``(None,
    None)`` without a spec (a skipped metric no run holds a spec for)."""
    if spec is None:
        return None, None
    if spec.section == CARD_SECTION and spec.card_column:
        return CARD_SECTION, spec.card_column
    return (spec.section if spec.section != CARD_SECTION else OWN_SECTION), spec.label or spec.name


def known_specs(runs: Iterable[RunRecord]) -> dict[str, MetricSpec]:
    """``{metric: spec}`` over all runs (the first run holding a spec wins): places a metric a run skipped."""
    out: dict[str, MetricSpec] = {}
    for run in runs:
        for m, s in run.specs.items():
            out.setdefault(m, s)
    return out


def _resolve(paths, published) -> tuple[list[RunRecord], list[SkippedFolder], pd.DataFrame | None]:
    items = list(paths)
    skipped: list[SkippedFolder] = []
    if all(isinstance(p, RunRecord) for p in items):
        runs = items
    else:
        runs, skipped = load_runs([str(p) for p in items])
    if isinstance(published, str) and published == "default":
        published = load_published()
    elif published is not None and not isinstance(published, pd.DataFrame):
        published = load_published(published)
    return runs, skipped, published


# -- collecting runs ------------------------------------------------------------------------------------------------
def collect_runs(
    paths: Iterable[str | os.PathLike] | Iterable[RunRecord],
    *,
    ci: bool = True,
    n_boot: int = bs.N_BOOT,
    level: float = bs.LEVEL,
    seed: int = bs.SEED,
    published: pd.DataFrame | str | os.PathLike | None = "default",
    skipped: Sequence[SkippedFolder] = (),
) -> pd.DataFrame:
    """Tidy frame of the runs' numbers: one row per (run, metric), every card column included for every run (value
    NaN when the run did not measure it: the published value still shows).

    Columns: ``label, model, hub_id, run_dir, random_weights, model_random_weights, random_note, metric, section,
    column, card_column, aggregate, value, ci_low, ci_high, ci_level, n_boot, ci_value, ci_note, ci_none, note,
    warnings, n_clips, protocol, higher_is_better, decimals, channel_view, reference_set, published``; rows in the
    card's order. ``note`` says why an asked-for metric has no number, ``ci_note`` why a value has no interval,
    ``ci_none`` why its interval has no width (``"1 clip"``, ``"identical values"``, ``"identical clips"``; its bounds
    are then NaN), ``warnings`` (a tuple) what the run warned about the metric. ``attrs["recipes"]``: ``{label:
    [what differs]}`` of the runs measured with another recipe than the first
    (:func:`evalkit.report.compare.scoring_differences`). ``paths``: run folders, summary.json files, folders
    holding runs (searched recursively), or :class:`RunRecord` objects. Folders that cannot be read are left out and
    listed in ``attrs["skipped"]`` (with ``skipped``, those the caller already set aside). Raises
    :class:`RunFolderError` when no run can be read.
    """
    runs, found_skipped, published = _resolve(paths, published)
    skipped = list(skipped) + found_skipped
    if not runs:
        raise RunFolderError("no run could be read: " + ("; ".join(map(str, skipped)) or "no paths given"))
    runs = order_runs(runs, published)
    specs = known_specs(runs)
    columns = card_columns_of(published)
    columns += [c for c in dict.fromkeys(placement(s)[1] for s in specs.values() if placement(s)[0] == CARD_SECTION)
                if c not in columns]
    rows: list[dict[str, Any]] = []
    for run, label in zip(runs, run_labels(runs)):
        names = list(run.metrics)
        ivs, why = bs.run_intervals(run, names, n_boot=n_boot, level=level, seed=seed) if ci else ({}, {})
        pub = published_row(published, run.model_name, run.hub_id)
        for m, section, column in _metric_slots(run, specs, columns):
            spec = (run.spec(m) or specs.get(m)) if m else None
            row = _row(run, label, m, spec, section, column, ivs.get(m), why.get(m, "") if ci else "")
            row["published"] = _published_value(pub, column if section == CARD_SECTION else None)
            row.update(ci_level=level if ivs.get(m) else math.nan, n_boot=n_boot if ivs.get(m) else 0)
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs.update(runs=[str(r.path) for r in runs], labels=run_labels(runs), card_columns=columns,
                    ci={"level": level, "n_boot": n_boot, "seed": seed} if ci else None,
                    skipped=[str(s) for s in skipped], recipes=recipe_differences(runs))
    return df


def recipe_differences(runs: Sequence[RunRecord]) -> dict[str, list[str]]:
    """``{label: [what differs]}`` of the runs measured with another recipe than the first (in the table's order):
    what ``python -m evalkit.compare`` refuses to compare (:func:`evalkit.report.compare.scoring_differences`),
    except random vs released backbones and protocols, which the † rows and the protocol footnotes say."""
    from evalkit.report.compare import scoring_differences

    labels = run_labels(runs)
    out: dict[str, list[str]] = {}
    for run, label in zip(runs[1:], labels[1:]):
        diff = scoring_differences(runs[0].summary, run.summary, said_apart=True, names=(labels[0], label), why="")
        if diff:
            out[label] = diff
    return out


def _metric_slots(run: RunRecord, specs: Mapping[str, MetricSpec], columns: Sequence[str]):
    """``(metric, section, column)`` for every card column (metric None when no run measured it), then the run's
    other metrics."""
    placed = {m: placement(run.spec(m) or specs.get(m)) for m in run.metrics}
    by_column = {}
    for m, s in specs.items():
        sec, col = placement(s)
        if sec == CARD_SECTION:
            by_column.setdefault(col, m)
    for col in columns:
        mine = [m for m, (sec, c) in placed.items() if sec == CARD_SECTION and c == col]
        yield (mine[0] if mine else by_column.get(col)), CARD_SECTION, col
    for m, (sec, col) in placed.items():
        if sec != CARD_SECTION:
            yield m, sec, col


def _published_value(pub: pd.Series | None, column: str | None) -> float:
    if pub is None or column is None or column not in pub.index or pd.isna(pub[column]):
        return math.nan
    return float(pub[column])


def _row(run: RunRecord, label: str, m: str | None, spec: MetricSpec | None, section, column, iv, why: str) -> dict:
    """One row of the tidy frame (without the published value and the interval's settings)."""
    entry = (run.metrics.get(m) or {}) if m else {}
    measured = m in run.metrics
    return {
        "label": label, "model": run.model_name, "hub_id": run.hub_id, "run_dir": str(run.path),
        "random_weights": run.random_weights, "model_random_weights": run.model_random,
        "random_note": _random_note(run),
        "metric": m, "section": section, "column": column,
        "card_column": column if section == CARD_SECTION else None,
        "aggregate": spec.aggregate if spec else None,
        "value": run.value(m) if measured else math.nan,
        "ci_low": iv.low if iv and not iv.degenerate else math.nan,
        "ci_high": iv.high if iv and not iv.degenerate else math.nan,
        "ci_value": iv.value if iv else math.nan,
        "ci_note": why if measured and not iv and math.isfinite(run.value(m)) else "",
        "ci_none": iv.degenerate if iv else "",
        "note": run.note(m) if measured else "",
        "warnings": tuple(str(w) for w in entry.get("warnings") or ()),
        "n_clips": entry.get("n_clips", run.summary.get("n_clips")),
        "protocol": entry.get("protocol"),
        "higher_is_better": spec.higher_is_better if spec else None,
        "decimals": spec.decimals if spec else None,
        "channel_view": run.channel_view,
        "reference_set": (run.reference_set or {}).get("manifest_sha256"),
    }


def _random_note(run: RunRecord) -> str:
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


# -- the card's layout and evalkit's own tables ------------------------------------------------------------------------
def _wide(rows: pd.DataFrame, labels: Sequence[str], columns: Sequence[str], published: bool) -> pd.DataFrame:
    """A row per label; per column C: ``C``, ``C CI low``, ``C CI high``, (``C (published)``), ``C note``, ``C no
    interval`` (why the interval has no width, else ""), ``C warnings`` (the run's warnings, one a line); then
    ``hub_id``, ``random_weights``, ``run_dir``. attrs: ``columns``, ``arrows`` ({C: True ↑ / False ↓ / None}),
    ``decimals`` ({C: int})."""
    names = []
    for c in columns:
        names += [c, f"{c} CI low", f"{c} CI high"] + ([f"{c} (published)"] if published else []) + [
            f"{c} note", f"{c} no interval", f"{c} warnings"]
    table = pd.DataFrame(index=pd.Index(list(labels), name="Model"), columns=names, dtype=object)
    for c in columns:
        table[[c, f"{c} CI low", f"{c} CI high"] + ([f"{c} (published)"] if published else [])] = math.nan
        table[[f"{c} note", f"{c} no interval", f"{c} warnings"]] = ""
    for _, r in rows.iterrows():
        c, lab = r["column"], r["label"]
        cells = [r["value"], r["ci_low"], r["ci_high"], r["note"], r["ci_none"], "\n".join(r["warnings"])]
        table.loc[lab, [c, f"{c} CI low", f"{c} CI high", f"{c} note", f"{c} no interval", f"{c} warnings"]] = cells
        if published:
            table.loc[lab, f"{c} (published)"] = r["published"]
    for c in columns:
        for suffix in ("", " CI low", " CI high") + ((" (published)",) if published else ()):
            table[c + suffix] = table[c + suffix].astype(float)
    first = rows.drop_duplicates("label").set_index("label")
    table["hub_id"] = [first["hub_id"].get(lab) for lab in labels]
    table["random_weights"] = [bool(first["random_weights"].get(lab, False)) for lab in labels]
    table["run_dir"] = [first["run_dir"].get(lab) for lab in labels]
    known = rows.dropna(subset=["higher_is_better"]).drop_duplicates("column").set_index("column")
    table.attrs["columns"] = list(columns)
    table.attrs["arrows"] = {c: (bool(known.loc[c, "higher_is_better"]) if c in known.index else None) for c in columns}
    table.attrs["decimals"] = {c: (int(known.loc[c, "decimals"]) if c in known.index else PUBLISHED_DECIMALS)
                               for c in columns}
    table.attrs["random_rows"] = [lab for lab in labels if bool(first["random_weights"].get(lab, False))]
    return table


def card_table(collected: pd.DataFrame) -> pd.DataFrame:
    """The card's table: a row per run (index ``Model``, the card's order), the card's columns in the card's order.

    Columns for each card column C: ``C`` (measured), ``C CI low``, ``C CI high``, ``C (published)``, ``C note`` (why
    an asked-for metric has no number; "" otherwise), ``C no interval`` (why the interval has no width), ``C warnings``
    (the run's warnings about it, one a line); then ``hub_id``, ``random_weights``, ``run_dir``.
    ``table.attrs``: ``columns``, ``arrows``, ``decimals``, ``footnotes`` (list of str), ``random_rows``,
    ``recipe_rows`` (measured with another recipe than the first row), ``ci``, ``sections`` ({section: table of
    evalkit's own metrics, same layout without published columns, with ``title``}), ``skipped`` (folders not read,
    with their reasons)."""
    labels = list(collected.attrs.get("labels") or dict.fromkeys(collected["label"]))
    columns = list(collected.attrs.get("card_columns") or dict.fromkeys(collected.loc[
        collected["section"] == CARD_SECTION, "column"]))
    rows = collected[collected["section"] == CARD_SECTION]
    table = _wide(rows, labels, columns, published=True)
    table.attrs["recipe_rows"] = [lab for lab in labels if lab in (collected.attrs.get("recipes") or {})]
    ci = collected.attrs.get("ci")
    unplaced = collected[collected["section"].isna() & (collected["note"] != "")]
    notes = _random_footnote(collected, table.attrs["random_rows"])
    notes.append(
        "Measured: evalkit on the run's clips"
        + (f"; brackets: {ci['level']:.0%} bootstrap interval over clips ({ci['n_boot']} draws, seed {ci['seed']}"
           + ("; Fréchet distances: basic interval centred on the measured value, evalkit/report/bootstrap.py"
              if (rows["aggregate"] == "frechet").any() else "") + ")" if ci else "")
        + ". Published: MusicGen model card, MusicCaps (results/published/musicgen_model_card.csv). "
        + f"{MISSING}: not measured or not published; {NOT_AVAILABLE}{NA_MARK}: asked for, no number (reason below)."
    )
    notes += _run_footnotes(collected) + _cell_footnotes(rows)
    notes += [f"{NA_MARK} {r['label']}: {r['metric']} {r['note']}" for _, r in unplaced.iterrows()]
    table.attrs.update(footnotes=notes, ci=ci, skipped=list(collected.attrs.get("skipped") or []),
                       title="Objective metrics on MusicCaps: evalkit (with bootstrap intervals) beside the MusicGen "
                             "model card.")
    sections = [s for s in dict.fromkeys(collected["section"].dropna()) if s != CARD_SECTION]
    table.attrs["sections"] = {s: section_table(collected, s) for s in sections}
    return table


def section_table(collected: pd.DataFrame, section: str) -> pd.DataFrame:
    """evalkit's own metrics of one ``section`` (``spec.section``): a row per run that asked for any of them, a
    column per metric (named by the metric), the layout of :func:`card_table` without published columns."""
    rows = collected[collected["section"] == section]
    labels = [lab for lab in (collected.attrs.get("labels") or []) if lab in set(rows["label"])]
    table = _wide(rows, labels or list(dict.fromkeys(rows["label"])), list(dict.fromkeys(rows["column"])),
                  published=False)
    table.attrs["recipe_rows"] = [lab for lab in table.index if lab in (collected.attrs.get("recipes") or {})]
    notes = []
    if table.attrs["random_rows"]:
        notes.append(f"{RANDOM_MARK} random weights: see the card table's note; these numbers test the pipeline only.")
    if table.attrs["recipe_rows"]:
        notes.append(f"{RECIPE_MARK} measured with another recipe: see the card table's note; not comparable.")
    notes += _cell_footnotes(rows)
    table.attrs.update(footnotes=notes, ci=collected.attrs.get("ci"), section=section, skipped=[],
                       title=OWN_TITLE.format(section=section), sections={})
    return table


def _random_footnote(collected: pd.DataFrame, random_rows: Sequence[str]) -> list[str]:
    if not random_rows:
        return []
    which = []
    for lab in random_rows:
        note = collected.loc[collected["label"] == lab, "random_note"].iloc[0]
        which.append(f"{lab}: {note or 'random weights'}")
    return [f"{RANDOM_MARK} random weights (or synthesised references), so these numbers only show that the pipeline "
            "runs; they say nothing about MusicGen and are not comparable with the published values ("
            + "; ".join(which) + ")."]


def _run_footnotes(collected: pd.DataFrame) -> list[str]:
    """Runs measured with another recipe than the first row (``attrs["recipes"]``, ¶), runs whose card metrics were
    computed on another channel view than the card's (mono), and runs scored against different MusicCaps reference
    sets (``reference_set.manifest_sha256``; unknown counts as different)."""
    labels = list(collected.attrs.get("labels") or dict.fromkeys(collected["label"]))
    notes = [f"{RECIPE_MARK} {lab} was measured with another recipe than {labels[0]}, so their numbers are different "
             f"measurements, not comparable (python -m evalkit.compare refuses such runs): " + "; ".join(diff) + "."
             for lab, diff in (collected.attrs.get("recipes") or {}).items()]
    runs = collected.drop_duplicates("label")
    notes += [f"{r['label']}: metrics computed on the '{r['channel_view']}' channel view (the card's: "
              f"{DEFAULT_CHANNEL_VIEW}); not comparable with the published values."
              for _, r in runs.iterrows() if r["channel_view"] != DEFAULT_CHANNEL_VIEW]
    shas = [r if isinstance(r, str) and r else None for r in runs["reference_set"]]
    if len(set(shas)) > 1:
        which = "; ".join(f"{lab}: {s[:12] + '…' if s else 'unknown'}" for lab, s in zip(runs["label"], shas))
        notes.append(f"The runs were scored against different MusicCaps reference sets (manifest sha256: {which}).")
    return notes


def _cell_footnotes(rows: pd.DataFrame) -> list[str]:
    """Protocol notes, missing intervals (and intervals without width), recomputed values that disagree, the §
    warnings the runs recorded, then the ‡ reasons of n/a cells."""
    protocol, no_ci, warned, na = [], [], [], []
    for _, r in rows.iterrows():
        lab, c, v = r["label"], r["column"], r["value"]
        if r["section"] == CARD_SECTION and pd.notna(v) and r["protocol"] and r["protocol"] != CARD_PROTOCOL:
            protocol.append(f"{lab}: {c} measured with protocol '{r['protocol']}' (the card's is '{CARD_PROTOCOL}').")
        if r.get("ci_note"):
            no_ci.append(f"{lab}: no interval for {c} ({r['ci_note']}).")
        if r.get("ci_none"):
            no_ci.append(f"{lab}: {c} has no interval ({NO_INTERVAL[r['ci_none']]}).")
        warned += [f"{WARN_MARK} {lab}: {c}: {w}" for w in r.get("warnings") or ()]
        rv = r.get("ci_value", math.nan)
        if pd.notna(v) and pd.notna(rv) and abs(rv - v) > 1e-4 * max(1.0, abs(v)):
            no_ci.append(f"{lab}: {c} recomputed from the per-clip data is {rv:.6g}, the summary says {v:.6g} "
                         "(the interval is around the recomputed value; check the run folder).")
        if r.get("note"):
            na.append(f"{NA_MARK} {lab}: {c} {r['note']}")
    return protocol + no_ci + warned + na


# -- numbers ----------------------------------------------------------------------------------------------------------
def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def cell_decimals(decimals: int, *values: float) -> int:
    """Decimals for a cell: ``decimals``, or more where they would show fewer than 2 significant digits of a nonzero
    value among ``values`` (the value and its interval bounds share the result); at most :data:`MAX_DECIMALS`."""
    d = int(decimals)
    for x in values:
        if _finite(x) and float(x) != 0:
            d = max(d, 1 - math.floor(math.log10(abs(float(x)))))
    return min(d, MAX_DECIMALS)


def format_number(x: Any, decimals: int, missing: str = MISSING) -> str:
    """``x`` with ``decimals`` decimals (``missing`` for None/NaN)."""
    return f"{float(x):.{decimals}f}" if _finite(x) else missing


def _text(table: pd.DataFrame, label: str, column: str) -> str:
    """A text column of the wide table ("" when absent or empty)."""
    return str(table.loc[label, column] or "") if column in table.columns else ""


def cell_text(table: pd.DataFrame, label: str, column: str) -> tuple[str | None, str | None, str]:
    """``(value, "[low, high]" or "[n/a (why)]" or None, note)`` of one measured cell, by the decimals rule (module
    doc); value is None when there is no number. An interval without width is ``[n/a (1 clip)]``,
    ``[n/a (identical values)]`` or ``[n/a (identical clips)]``."""
    v = table.loc[label, column]
    lo, hi = table.loc[label, f"{column} CI low"], table.loc[label, f"{column} CI high"]
    note = _text(table, label, f"{column} note")
    if not _finite(v):
        return None, None, note
    has_ci = _finite(lo) and _finite(hi)
    d = cell_decimals(table.attrs.get("decimals", {}).get(column, PUBLISHED_DECIMALS), v, *((lo, hi) if has_ci else ()))
    none = _text(table, label, f"{column} no interval")
    ci = f"[{format_number(lo, d)}, {format_number(hi, d)}]" if has_ci else (f"[{NOT_AVAILABLE} ({none})]" if none
                                                                            else None)
    return format_number(v, d), ci, note


def format_cell(table: pd.DataFrame, label: str, column: str, *, missing: str = MISSING, ci_sep: str = " ") -> str:
    """``"4.91 [4.80, 5.02]"`` (``"4.91"`` without an interval, ``"4.91 [n/a (1 clip)]"`` with one of no width,
    ``"n/a‡"`` when asked for and not computed, ``"–"`` when not measured), ``" §"`` after it when the run recorded
    a warning about it."""
    v, ci, note = cell_text(table, label, column)
    mark = f" {WARN_MARK}" if _text(table, label, f"{column} warnings") else ""
    if v is None:
        return (NOT_AVAILABLE + NA_MARK if note else missing) + mark
    return v + (f"{ci_sep}{ci}" if ci else "") + mark


def format_published(table: pd.DataFrame, label: str, column: str, missing: str = MISSING) -> str:
    """The published value as published (2 decimals), ``missing`` when the card has none."""
    return format_number(table.loc[label, f"{column} (published)"], PUBLISHED_DECIMALS, missing)


def _arrow(table: pd.DataFrame, column: str, up: str = "↑", down: str = "↓") -> str:
    a = (table.attrs.get("arrows") or {}).get(column)
    return "" if a is None else " " + (up if a else down)


# -- rendering ------------------------------------------------------------------------------------------------------
def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def _md_block(table: pd.DataFrame) -> str:
    columns = table.attrs.get("columns", [])
    published = any(f"{c} (published)" in table.columns for c in columns)
    header = ["Model"]
    for c in columns:
        header += [f"{c}{_arrow(table, c)}"] + (["published"] if published else [])
    per = 2 if published else 1
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (per * len(columns))]
    random_rows, recipe_rows = set(table.attrs.get("random_rows", [])), set(table.attrs.get("recipe_rows", []))
    for label in table.index:
        cells = [_md_escape(label) + (f" {RANDOM_MARK}" if label in random_rows else "")
                 + (f" {RECIPE_MARK}" if label in recipe_rows else "")]
        for c in columns:
            cells += [format_cell(table, label, c)] + ([format_published(table, label, c)] if published else [])
        lines.append("| " + " | ".join(cells) + " |")
    notes = table.attrs.get("footnotes", [])
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + "\n"


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub markdown: ``| Model | Frechet Audio Distance ↓ | published | KLD ↓ | published | ...``, footnotes below;
    then a ``### evalkit's own metrics ...`` table per section; then a line per folder that could not be read."""
    out = _md_block(table)
    for sub in (table.attrs.get("sections") or {}).values():
        out += f"\n### {sub.attrs['title']}\n\n" + _md_block(sub)
    skipped = table.attrs.get("skipped") or []
    if skipped:
        out += "\n" + "\n".join(f"- skipped {s}" for s in skipped) + "\n"
    return out


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_TEX_SYMBOLS = {"–": "--", RANDOM_MARK: r"$^\dagger$", NA_MARK: r"$^\ddagger$", WARN_MARK: r"$^\S$",
                RECIPE_MARK: r"$^\P$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "∞": r"$\infty$"}


def tex_escape(s: str) -> str:
    """``s`` for pdflatex: special characters escaped, –, †, ‡, ↑, ↓, ∞ as LaTeX."""
    return "".join(_TEX_SYMBOLS.get(ch, _TEX_SPECIAL.get(ch, ch)) for ch in str(s))


def _tex_cell(table: pd.DataFrame, label: str, column: str) -> str:
    v, ci, note = cell_text(table, label, column)
    mark = r"$^\S$" if _text(table, label, f"{column} warnings") else ""
    if v is None:
        return (NOT_AVAILABLE + r"$^\ddagger$" if note else "--") + mark
    return v + (rf"\,{{\scriptsize{tex_escape(ci)}}}" if ci else "") + mark


def _latex_env(table: pd.DataFrame, caption: str, label: str) -> list[str]:
    columns = table.attrs.get("columns", [])
    published = any(f"{c} (published)" in table.columns for c in columns)
    per = 2 if published else 1
    out = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{tex_escape(caption)}}}", rf"\label{{{label}}}",
           r"\begin{tabular}{l" + "r" * per * len(columns) + "}", r"\toprule"]
    arrows = [tex_escape(_arrow(table, c)) for c in columns]
    if published:
        heads = [rf"\multicolumn{{2}}{{c}}{{{tex_escape(c)}{a}}}" for c, a in zip(columns, arrows)]
        out.append(" & ".join([""] + heads) + r" \\")
        out.append(" ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(columns))))
        out.append(" & ".join(["Model"] + ["evalkit", "published"] * len(columns)) + r" \\")
    else:
        out.append(" & ".join(["Model"] + [f"{tex_escape(c)}{a}" for c, a in zip(columns, arrows)]) + r" \\")
    out.append(r"\midrule")
    random_rows, recipe_rows = set(table.attrs.get("random_rows", [])), set(table.attrs.get("recipe_rows", []))
    for lab in table.index:
        cells = [tex_escape(lab) + (r"$^\dagger$" if lab in random_rows else "") + (r"$^\P$" if lab in recipe_rows
                                                                                 else "")]
        for c in columns:
            cells += [_tex_cell(table, lab, c)] + ([format_published(table, lab, c, "--")] if published else [])
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    notes = table.attrs.get("footnotes", [])
    if notes:
        body = r" \\ ".join(tex_escape(n) for n in notes)
        out += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + body + "}"]
    return out + [r"\end{table}"]


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str = "tab:musicgen-card") -> str:
    """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), footnotes below; then
    one per section of evalkit's own metrics (label ``<label>-<section>``)."""
    out = [r"% Generated by `python -m evalkit.report`; needs \usepackage{booktabs}."]
    out += _latex_env(table, caption or table.attrs.get("title", ""), label)
    for section, sub in (table.attrs.get("sections") or {}).items():
        out += [""] + _latex_env(sub, sub.attrs["title"], f"{label}-{section}")
    return "\n".join(out) + "\n"


def to_csv(table: pd.DataFrame, path: str | os.PathLike | None = None) -> str:
    """Numbers as numbers (empty = missing): the ``Model`` index, each column with CI bounds, published value and
    note (why an asked-for metric has no number, why its interval is missing - ``no interval: 1 clip`` -, and every
    ``warning:`` the run recorded about it), then ``hub_id, random_weights, run_dir``. One table: the card, or one of
    ``table.attrs["sections"]``."""
    out = table.copy()
    for c in table.attrs.get("columns", []):
        parts = [out[f"{c} note"],
                 out[f"{c} no interval"].map(lambda why: f"no interval: {why}" if why else ""),
                 out[f"{c} warnings"].map(lambda ws: "; ".join(f"warning: {w}" for w in ws.split("\n") if w))]
        out[f"{c} note"] = ["; ".join(x for x in row if x) for row in zip(*parts)]
        out = out.drop(columns=[f"{c} no interval", f"{c} warnings"])
    text = out.to_csv(index=True, float_format="%.6g", na_rep="")
    if path is not None:
        from evalkit.io import write_text

        write_text(path, text)
    return text


def write_tables(table: pd.DataFrame, out_dir: str | os.PathLike, stem: str = "card_table") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.tex``, ``<stem>.csv`` (the card; markdown and LaTeX hold the sections too) and
    ``evalkit_metrics_<section>.csv`` per section into ``out_dir`` (atomically). Returns ``{kind: path}``."""
    from evalkit.io import write_text

    out = Path(out_dir)
    paths = {"markdown": out / f"{stem}.md", "latex": out / f"{stem}.tex", "csv": out / f"{stem}.csv"}
    write_text(paths["markdown"], to_markdown(table))
    write_text(paths["latex"], to_latex(table))
    write_text(paths["csv"], to_csv(table))
    for section, sub in (table.attrs.get("sections") or {}).items():
        paths[f"csv:{section}"] = out / f"evalkit_metrics_{section}.csv"
        write_text(paths[f"csv:{section}"], to_csv(sub))
    return paths


# -- per-clip values (plots, notebook) -------------------------------------------------------------------------------
def per_clip_values(paths_or_runs, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Long frame ``label, model, metric, column, higher_is_better, id, value`` of the runs' per-clip values: each
    metric whose spec aggregates a per-clip column (``aggregate: mean``, ``value_column``), or only ``metrics``.
    NaN rows (skipped clips) dropped; runs in the card's order."""
    items = list(paths_or_runs)
    runs = items if all(isinstance(r, RunRecord) for r in items) else load_runs(items)[0]
    try:
        runs = order_runs(runs, load_published())
    except (OSError, ValueError):  # no published CSV beside this evalkit: the order given
        pass
    frames = []
    for run, label in zip(runs, run_labels(runs)):
        clips = run.clips
        for m, spec in run.specs.items():
            col = spec.value_column or spec.primary
            if spec.aggregate != "mean" or col not in clips.columns or (metrics is not None and m not in metrics):
                continue
            f = pd.DataFrame({"id": clips["id"].astype(str), "value": clips[col].astype(float)})
            f.insert(0, "higher_is_better", spec.higher_is_better)
            f.insert(0, "column", placement(spec)[1])
            f.insert(0, "metric", m)
            f.insert(0, "model", run.model_name)
            f.insert(0, "label", label)
            frames.append(f.dropna(subset=["value"]))
    if not frames:
        return pd.DataFrame(columns=["label", "model", "metric", "column", "higher_is_better", "id", "value"])
    return pd.concat(frames, ignore_index=True)
