"""Stage 5: what a finished run leaves: ``clips.parquet``, ``summary.json``, ``stats/`` and the printed table.

``summary.json`` per metric: ``value`` (the headline, or None), ``protocol``, ``n_clips`` / ``n_skipped`` (clips
scored / not scored by it), the backbone's identity (checkpoint, sha256, random weights), ``values`` (everything
``compute`` returned), ``spec`` (the metric's declared facts: direction, card column, decimals, tolerance, per-clip
columns; the report reads them from here) and, when the metric has no number, ``error`` (why).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evalkit import io as eio
from evalkit.metrics.base import Metric
from evalkit.metrics.spec import metric_entries
from evalkit.spec import RunSpec
from evalkit.stages.inputs import Inputs

log = logging.getLogger("evalkit")

#: recipe keys that say how a run executes, not what it computes (the checkpoint's identity is recorded apart, as its
#: sha256): left out of summary.json's ``recipe`` so that compare judges recipes, not paths or batch sizes
RUN_ONLY_KEYS = ("batch_size", "save_embeddings", "save_probs", "trust_checkpoint", "checkpoint", "reference_stats",
                 "backbone_weights", "tokenizer", "per_clip")
#: generation settings meant to give the same samples faster (conf/generation/audiocraft.yaml "Speed")
SPEED_KEYS = ("cache_implementation", "compile", "compile_mode", "attn_implementation")

RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: the model and/or the metric backbones of this run have random weights. These numbers exercise "
    "the pipeline and say nothing about any released model."
)


def write_clips_table(out_dir: Path, inputs: Inputs, gen_rows, score_rows):
    """``clips.parquet``: one row per prompt (id, caption, paths, seed, skip reasons, per-clip metric values)."""
    import pandas as pd

    table = []
    for p in inputs.prompts:
        rpath = inputs.references.get(p.ref_key)
        row = {"id": p.id, "caption": p.caption, "reference_path": str(rpath) if rpath else None}
        row.update(gen_rows.get(p.id, {}))
        row.update({k: v for k, v in score_rows.get(p.id, {}).items() if k != "id"})
        table.append(row)
    df = pd.DataFrame(table)
    eio.write_parquet(Path(out_dir) / "clips.parquet", df)
    return df


def metric_entry(m: Metric, df) -> dict[str, Any]:
    """A metric's block of ``summary.json`` (see the module doc)."""
    desc = m.describe()
    col = m.spec.skip_column  # the metric's own skips and the run's (no reference), counted once per clip
    n_skipped = int(df[col].notna().sum()) if col in df else 0
    n_scored = m.count("n_clips")  # the clips its number covers
    entry: dict[str, Any] = {"value": None, "protocol": desc.get("protocol"), "n_clips": n_scored,
                             "n_skipped": n_skipped, **{k: v for k, v in desc.items() if k != "protocol"}}
    try:
        values = m.compute()
    except Exception as exc:  # e.g. FAD with fewer windows than dimensions: report it, keep the others
        reasons = _top_reasons(df, col)
        log.error("%s could not be computed: %s%s", m.name, exc, reasons)
        entry["error"] = f"{type(exc).__name__}: {exc}{reasons}"
    else:
        entry["value"] = values.get(m.spec.primary)
        entry["values"] = values
    if m.spec.extra.get("paired") and "value" in entry and entry.get("values"):
        entry["paired"] = paired_summary(df, m.spec.extra["paired"])
    if m.warnings:
        entry["warnings"] = list(m.warnings)
        for w in m.warnings:
            log.warning("%s: %s", m.name, w)
    entry["spec"] = m.spec.as_dict()
    from evalkit.spec import thaw

    entry["recipe"] = {k: thaw(v) for k, v in m.recipe.items() if k not in RUN_ONLY_KEYS}
    return entry


def _top_reasons(df, column: str, n: int = 3) -> str:
    """``"; most common reasons: <reason> (k clips), ..."`` from a per-clip skip column, or ``""``: the reason a
    metric has no number, where it is read (the column alone was easy to miss)."""
    if column not in df:
        return ""
    counts = df[column].dropna().astype(str).value_counts()
    if counts.empty:
        return ""
    return "; most common reasons: " + "; ".join(f"{r} ({k} clip{'s' if k != 1 else ''})"
                                                 for r, k in counts.head(n).items())


def audit_counts(df, column: str) -> tuple[dict[str, int], dict[str, list[str]]]:
    """``{flag: n clips}`` and ``{flag: ids}`` of a ``clips.parquet`` list column (``audit_flags``)."""
    from evalkit.audit import FLAGS

    ids: dict[str, list[str]] = {}
    if column in df:
        for cid, flags in zip(df["id"], df[column]):
            for f in (list(flags) if flags is not None and not isinstance(flags, float) else []):
                ids.setdefault(str(f), []).append(str(cid))
    ordered = {f: ids[f] for f in FLAGS if f in ids}
    return {f: len(v) for f, v in ordered.items()}, ordered


def unused_files(inputs: Inputs, generator_unused: list[dict[str, str]], df) -> list[dict[str, str]]:
    """Files of ``model.dir`` and ``reference.dir`` that no prompt uses or that cannot be used, with the reason (for an
    unreadable clip or reference: why, e.g. a dangling link and its target)."""
    out = list(generator_unused)
    refs = inputs.references
    counted = {p.id for p in inputs.reference_only}  # in the reference set of a folder-reading protocol
    out += [{"file": str(refs.paths[i]), "reason": "no prompt id (not in the prompt set)"}
            for i in inputs.extra_reference_ids if i in refs.paths and i not in counted]
    out += [{"file": str(p), "reason": why} for p, why in refs.unusable]
    for col, path_col, why_col in (("audit_flags", "audio_path", "skip_reason"),
                                   ("reference_audit_flags", "reference_path", "reference_problem")):
        if col in df and path_col in df:
            whys = df[why_col] if why_col in df else [None] * len(df)
            for flags, path, why in zip(df[col], df[path_col], whys):
                if flags is not None and not isinstance(flags, float) and "unreadable" in list(flags) and path:
                    out.append({"file": str(path),
                                "reason": f"unreadable ({why})" if isinstance(why, str) else "unreadable"})
    return out


def listing_identity(paths: Mapping[str, Path]) -> dict[str, Any]:
    """A cheap identity of a folder of clips: sha256 over each clip's id, file name, size and modification time
    (any folder; a MusicCaps folder also has its manifest's sha256)."""
    import hashlib
    import json

    items = []
    for cid, p in sorted(paths.items()):
        st = Path(p).stat() if Path(p).exists() else Path(p).lstat()  # a dangling link: the link itself
        items.append([cid, Path(p).name, st.st_size, st.st_mtime_ns])
    return {"listing_sha256": hashlib.sha256(json.dumps(items).encode()).hexdigest(), "n_files": len(items)}


def input_accounting(spec: RunSpec, inputs: Inputs, generator_unused, df) -> dict[str, Any]:
    """The summary's account of the inputs: the audit of both sides, unusable references, unused files, the
    reference set's identity."""
    audit, audit_ids = audit_counts(df, "audit_flags")
    ref_audit, ref_audit_ids = audit_counts(df, "reference_audit_flags")
    problems = {str(i): str(r) for i, r in zip(df["id"], df["reference_problem"]) if isinstance(r, str)} \
        if "reference_problem" in df else {}
    reference_set = None
    if inputs.references.root is not None and not inputs.references.synthetic:
        from evalkit.data.musiccaps import reference_set_identity

        reference_set = {"dir": str(inputs.references.root), **listing_identity(inputs.references.paths),
                         **(reference_set_identity(inputs.references.root) or {})}
    return {"audit": audit, "audit_ids": audit_ids, "reference_audit": ref_audit, "reference_audit_ids": ref_audit_ids,
            "n_unusable_reference": len(problems), "unusable_references": problems,
            "unused_files": unused_files(inputs, generator_unused, df), "reference_set": reference_set}


def paired_summary(df, pairs, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """For each ``{"name", "generated", "reference"}`` pair of per-clip columns: the mean and a percentile bootstrap
    interval over clips (:func:`evalkit.statistics.bootstrap.bootstrap_mean`, seeded) of the generated value, the
    reference value and their per-clip difference (paired), with ``degenerate`` saying why an interval has no width
    (one clip, identical values), and how many clips had a non-finite value (e.g. a total downmix loss), which the
    means leave out."""
    import numpy as np

    from evalkit.statistics.bootstrap import bootstrap_mean

    def interval(values, what):
        v = np.asarray(values, np.float64)
        if not np.isfinite(v).any():
            return None
        iv = bootstrap_mean(v, metric=what, n_boot=n_boot, level=level, seed=seed)
        return {"value": iv.value, "low": iv.low, "high": iv.high, "n": iv.n_clips, "degenerate": iv.degenerate}

    out: dict[str, Any] = {}
    for pair in pairs:
        gcol, rcol = pair["generated"], pair["reference"]
        if gcol not in df or rcol not in df:
            continue
        g, r = df[gcol].astype(float).to_numpy(), df[rcol].astype(float).to_numpy()
        scored = ~(np.isnan(g) & np.isnan(r))
        out[pair["name"]] = {
            "generated": interval(g, gcol), "reference": interval(r, rcol), "difference": interval(g - r, gcol + "-ref"),
            "n_not_finite": {"generated": int((~np.isfinite(g) & scored).sum()),
                             "reference": int((~np.isfinite(r) & scored).sum())},
            "level": level, "n_boot": n_boot}
    return out


def run_settings(spec: RunSpec, generator_desc: Mapping[str, Any]) -> dict[str, Any]:
    """The settings besides the metrics' recipes that decide the numbers (compare refuses runs that differ in them):
    generation (not for existing files; speed settings left out) and its precision, post-processing, the audit
    policy. The seed is not one of them: runs of two seeds differ by sampling noise, which is what compare measures."""
    d = spec.to_dict()
    out = {"postprocess": d["postprocess"], "audit": d["audit"]}
    if generator_desc.get("name") != "folder" and spec.generator_name != "folder":
        out["generation"] = {k: v for k, v in d["generation"].items() if k not in SPEED_KEYS}
        out["generation"]["precision"] = d["precision"]
    return out


def prompt_set_sha256(inputs: Inputs) -> str:
    """sha256 over the prompt set (ids and captions, in order): two runs on different prompts are told apart."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([[p.id, p.caption] for p in inputs.prompts]).encode()).hexdigest()


def build_summary(spec: RunSpec, out_dir: Path, inputs: Inputs, generator_desc: Mapping[str, Any],
                  metrics: Mapping[str, Metric], skipped_metrics: Mapping[str, str], df,
                  generator_unused: list[dict[str, str]] = ()) -> dict[str, Any]:
    from evalkit.stages.folder import versions

    metrics_out: dict[str, Any] = {name: metric_entry(m, df) for name, m in metrics.items()}
    for name, why in skipped_metrics.items():
        from evalkit.registry import get_metric

        cls = get_metric(name, spec.metrics.get(name))
        metrics_out[name] = {"value": None, "skipped": why, "spec": cls.spec.as_dict()}
    any_random = bool(generator_desc.get("random_weights")) or bool(inputs.references.synthetic) or any(
        bool(e.get("random_weights")) for e in metrics_out.values())
    return {
        "evalkit_version": versions().get("evalkit"),
        "run_dir": str(out_dir),
        "model": {**{k: generator_desc.get(k) for k in ("name", "hub_id", "source", "random_weights")},
                  "generated": bool(generator_desc.get("generated", True)),
                  "label": str(generator_desc.get("label") or generator_desc.get("name"))},
        "random_weights": any_random,
        "note": RANDOM_WEIGHTS_NOTE if any_random else None,
        "synthetic_references": bool(inputs.references.synthetic),
        "dataset": dict(spec.to_dict()["dataset"]),
        "n_clips": len(inputs.prompts),
        "n_generated": int(df["audio_path"].notna().sum()) if "audio_path" in df else 0,
        "n_missing_reference": len(inputs.missing_reference_ids),
        "missing_reference_ids": inputs.missing_reference_ids,
        "extra_reference_ids": inputs.extra_reference_ids[:100],
        "n_skipped": int(df["skip_reason"].notna().sum()),
        "skip_reasons": {str(k): int(v) for k, v in df["skip_reason"].dropna().value_counts().items()},
        "channel_view": str(spec.channel_view),
        "settings": run_settings(spec, generator_desc),
        "prompt_set_sha256": prompt_set_sha256(inputs),
        **input_accounting(spec, inputs, list(generator_unused), df),
        "metrics": metrics_out,
    }


def write_outputs(spec: RunSpec, out_dir: Path, inputs: Inputs, generator, metrics, skipped_metrics,
                  gen_rows, score_rows) -> dict[str, Any]:
    """Write ``clips.parquet``, ``summary.json`` and the reference side's artifacts; return the summary. The per-clip
    values metrics find only in ``compute`` (``Metric.clip_values``: per-clip KAD) join ``clips.parquet`` after it."""
    out_dir = Path(out_dir)
    df = write_clips_table(out_dir, inputs, gen_rows, score_rows)
    desc = {**generator.describe(), "generated": bool(generator.writes_audio)}  # folder mode: existing files
    summary = build_summary(spec, out_dir, inputs, desc, metrics, skipped_metrics, df,
                            generator.unused_files([p.id for p in inputs.prompts]))
    if inputs.reference_only:
        ro = summary["reference_only"] = reference_only_block(inputs, metrics, score_rows)
        bad = {i: f["reference_problem"] for i, f in ro["files"].items() if f.get("reference_problem")}
        if bad:  # unusable references, whether a clip is named after them or not
            summary["unusable_references"] = {**(summary.get("unusable_references") or {}), **bad}
            summary["n_unusable_reference"] = len(summary["unusable_references"])
    if any(m.clip_values for m in metrics.values()):
        rows = {cid: dict(row) for cid, row in score_rows.items()}
        for m in metrics.values():
            for cid, values in m.clip_values.items():
                rows.setdefault(cid, {}).update(values)
        write_clips_table(out_dir, inputs, gen_rows, rows)
    eio.write_json(out_dir / "summary.json", summary)
    if spec.reference.get("write_stats", True):
        for m in metrics.values():
            try:
                m.write_reference_artifacts(out_dir / "stats")
            except Exception as exc:  # too few clips for statistics: not a reason to lose the run
                log.warning("could not write %s reference statistics: %s", m.name, exc)
    return summary


def reference_only_block(inputs: Inputs, metrics: Mapping[str, Metric], score_rows) -> dict[str, Any]:
    """``summary.json`` ``reference_only``: the reference files without a generated clip of their name that the
    metrics reading the whole reference folder counted (:attr:`Inputs.reference_only`), each with its path, audit
    flags, problem and what each of those metrics took from it (e.g. ``fd_openl3_ref_windows``)."""
    names = [n for n, m in metrics.items() if m.reads_reference_folder]
    keep = ("reference_path", "reference_audit_flags", "reference_problem")
    files = {}
    for p in inputs.reference_only:
        row = score_rows.get(p.id, {})
        entry = {k: row.get(k) for k in keep}
        flags = entry["reference_audit_flags"]
        entry["reference_audit_flags"] = [str(f) for f in flags] if flags is not None else []
        entry.update({k: v for k, v in row.items() if any(k.startswith(n + "_") for n in names)})
        files[p.id] = {k: _plain(k, v) for k, v in entry.items() if k == "reference_problem" or _plain(k, v) is not None}
    counted = sorted(i for i, f in files.items() if not f.get("reference_problem"))
    return {"metrics": names, "n_files": len(files), "n_counted": len(counted), "files": files}


def _plain(key: str, v: Any) -> Any:
    """A value of a rows table as JSON takes it: None for a missing one (pandas' NaN), an int for a count that the
    table widened to float (a column with a gap), numpy scalars as Python's."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if v != v:
            return None
        if v.is_integer() and key.endswith(("_windows", "_frames", "_vectors")):
            return int(v)
    return v


def _number(v: float) -> str:
    """4 decimals, or 2 significant digits when those would show a nonzero value as 0.0000."""
    return f"{v:.2e}" if v != 0 and abs(v) < 5e-5 else f"{v:.4f}"


def _is_audit_reason(reason: str) -> bool:
    from evalkit.audit import FLAGS

    return any(f": {flag} (" in reason for flag in FLAGS)


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text results table for the terminal (the report package writes the paper tables)."""
    lines = []
    if summary.get("random_weights"):
        lines += ["", "!! " + RANDOM_WEIGHTS_NOTE, ""]
    m = summary["model"]
    label, name = m.get("label") or m.get("name"), m.get("name")
    origin = ("" if label == name else f"{name} ") + str(m.get("hub_id") or m.get("source"))
    lines.append(f"model: {label} ({origin})   clips: {summary['n_clips']}   "
                 f"missing references: {summary['n_missing_reference']}   unusable references: "
                 f"{summary.get('n_unusable_reference', 0)}   skipped: {summary['n_skipped']}")
    flagged = [("generated", summary.get("audit") or {}), ("references", summary.get("reference_audit") or {})]
    if any(c for _, c in flagged):
        lines.append("audit: " + "; ".join(f"{side} " + ", ".join(f"{f} {n}" for f, n in c.items())
                                          for side, c in flagged if c)
                     + "   (clips.parquet: audit_flags, skip_reason; summary.json: audit_ids)")
    others = {r: n for r, n in (summary.get("skip_reasons") or {}).items() if not _is_audit_reason(r)}
    if others:
        lines.append("skipped for other reasons: " + "; ".join(f"{r} ({n})" for r, n in list(others.items())[:3]))
    if summary.get("reference_only"):
        ro = summary["reference_only"]
        unusable = ro["n_files"] - ro.get("n_counted", ro["n_files"])
        lines.append(f"reference files without a generated clip: {ro.get('n_counted', ro['n_files'])} counted in the "
                     f"reference set of {', '.join(ro['metrics'])} as the tool reading the whole folder does"
                     + (f", {unusable} unusable" if unusable else "") + " (summary.json: reference_only)")
    if summary.get("unused_files"):
        lines.append(f"unused files: {len(summary['unused_files'])} (summary.json: unused_files)")
    if summary.get("channel_view", "mono") != "mono":
        lines.append(f"channel view: {summary['channel_view']} (the card's protocol scores the mono downmix)")
    lines.append(f"{'metric':<26}{'value':>12}  {'protocol':<24}{'clips':>7}")
    for name, v in metric_entries(summary["metrics"]).items():  # a metric's other headline numbers beside it
        spec = v.get("spec") or {}
        label = spec.get("card_column") or (f"{name} ({spec['primary']})" if spec.get("primary", name) != name else name)
        if v.get("value") is None:
            lines.append(f"{label:<26}{'–':>12}  {v.get('skipped') or v.get('error', '')}")
            continue
        lines.append(f"{label:<26}{_number(v['value']):>12}  {str(v.get('protocol')):<24}{v.get('n_clips', 0):>7}")
    lines.append(f"run folder: {summary['run_dir']}")
    return "\n".join(lines)
