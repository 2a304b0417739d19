"""Regression check between two runs, for CI: ``python -m evalkit.compare BASELINE CURRENT``.

BASELINE and CURRENT are run folders or ``summary.json`` files. For every metric of the baseline the headline value
(``metrics.<name>.value``) is compared with the current one. Every fact about a metric comes from its ``spec`` in
summary.json (a summary without ``spec`` blocks, from an older evalkit, is refused: re-run it):

- ``delta = current − baseline``; the *bad* direction is the spec's ``higher_is_better``;
- a tolerance is absolute (``0.05``) or relative to ``|baseline|`` (``"2%"``). Verdicts:
  ``ok`` (within tolerance), ``improved`` (beyond tolerance in the good direction - consider updating the baseline),
  ``regressed`` (beyond tolerance in the bad direction), ``missing`` (the baseline has the metric, the current run
  has no finite value for it - its error is noted), ``new`` (only the current run has it; not checked),
  ``skipped`` (neither run has a value);
- the exit status is 0 when nothing regressed or went missing, 1 otherwise;
- runs that are not comparable are refused with exit status 2 and the reasons: what scores the audio differs - a
  protocol, recipe constant, backbone checkpoint (``checkpoint_sha256``), backbone random-weights flag or direction
  for a shared metric, a generation, post-processing or audit setting, the ``channel_view`` (absent = ``mono``) -,
  or both runs generated their audio with generators of random vs released weights, or the baseline is marked
  ``"placeholder": true``. A folder run (existing files: no generator) and a generation run are compared on what
  scores their audio, with a note. A different model (its label: ``model.label``, else its name) or clip count is
  noted, not refused; a different MusicCaps reference set (``reference_set.manifest_sha256`` differs, or only one
  run names one), reference folder or prompt set, or synthesised references on one side, is a warning (markdown and
  stderr), the exit status unchanged.

Tolerances: each metric's default is its spec's ``tolerance`` (chosen by the metric's author to pass run-to-run noise
of a full MusicCaps run and catch a protocol or pipeline change, e.g. FAD 5 %), :data:`DEFAULT_TOLERANCE` for a
metric without one. Override per metric with ``--tol fad=0.1 --tol clap=1%`` or a YAML/JSON file (``--config``):
``{fad: 5%, kld: 0.03}`` or ``{tolerances: {fad: 5%}}``; the key ``default`` replaces the spec's tolerance of every
metric the flags and file do not name. Flags win over the file; a named metric over ``default``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from evalkit.metrics.spec import metric_entries
from evalkit.report.rundir import DEFAULT_CHANNEL_VIEW, RunFolderError, check_summary, load_run

#: The tolerance of a metric whose summary entry holds no spec (a metric neither run could compute).
DEFAULT_TOLERANCE = "2%"
EXIT_OK, EXIT_REGRESSION, EXIT_REFUSED = 0, 1, 2
#: float slack so that a move of exactly the tolerance is not a regression through rounding
_SLACK = 1e-12


class IncompatibleRuns(ValueError):
    """The two runs measure different things; comparing their numbers would mislead."""

    def __init__(self, reasons: Sequence[str]):
        self.reasons = list(reasons)
        super().__init__("refusing to compare: " + "; ".join(self.reasons))


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move in its bad direction: ``value`` in the metric's units (absolute), or a fraction of
    ``|baseline|`` when ``relative``."""

    value: float
    relative: bool

    @classmethod
    def parse(cls, spec: "Tolerance | str | float | int") -> "Tolerance":
        """``0.05`` / ``"0.05"`` (absolute) or ``"2%"`` (relative). Raises ValueError for anything else, negative or
        non-finite values."""
        if isinstance(spec, Tolerance):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            tol = cls(float(spec), False)
        else:
            s = str(spec).strip()
            try:
                tol = cls(float(s[:-1]) / 100.0, True) if s.endswith("%") else cls(float(s), False)
            except ValueError:
                raise ValueError(f"tolerance {spec!r}: expected a number (absolute) or a percentage like '2%'") from None
        if not math.isfinite(tol.value) or tol.value < 0:
            raise ValueError(f"tolerance {spec!r} must be a finite, non-negative number")
        return tol

    def allowed(self, baseline: float) -> float:
        """The largest allowed move, in the metric's units, for this baseline value."""
        return self.value * abs(baseline) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


@dataclass
class Row:
    """One metric's verdict: ok | improved | regressed | missing | new | skipped (values NaN when absent)."""

    metric: str
    baseline: float
    current: float
    higher_is_better: bool | None
    tolerance: Tolerance | None
    verdict: str

    @property
    def delta(self) -> float:
        return self.current - self.baseline

    @property
    def allowed(self) -> float:
        return self.tolerance.allowed(self.baseline) if self.tolerance else float("nan")


@dataclass
class Comparison:
    """The rows of a comparison, notes (reported) and warnings (reported on stderr too); exit code 1 on a failure."""

    baseline: str
    current: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    #: worth a look but not a failure (e.g. different reference sets): markdown and stderr, exit status unchanged
    warnings: list[str] = field(default_factory=list)
    #: the runs' labels (``model.label``; the model's name for summaries before it)
    labels: tuple[str, str] = ("", "")

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.verdict in ("regressed", "missing")]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.failed else EXIT_OK


# -- tolerances -----------------------------------------------------------------------------------------------------
def load_tolerances(path: str | os.PathLike) -> dict[str, Tolerance]:
    """``{metric or "default": Tolerance}`` from a YAML/JSON file (``{fad: 5%}`` or ``{tolerances: {...}}``).
    Raises ValueError (not a mapping, bad value) or OSError."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if isinstance(data, dict) and "tolerances" in data:
        data = data["tolerances"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping metric -> tolerance (e.g. 'fad: 5%')")
    return {str(k): Tolerance.parse(v) for k, v in data.items()}


def parse_tol_flags(flags: Sequence[str]) -> dict[str, Tolerance]:
    """``{metric: Tolerance}`` from ``--tol METRIC=VALUE`` flags. Raises ValueError for a malformed flag."""
    out = {}
    for f in flags:
        if "=" not in f:
            raise ValueError(f"--tol {f!r}: expected METRIC=VALUE, e.g. fad=0.05 or clap=2%")
        k, v = f.split("=", 1)
        out[k.strip()] = Tolerance.parse(v)
    return out


def resolve_tolerances(*layers: Mapping[str, Any] | None) -> dict[str, Tolerance]:
    """The user's tolerances: each layer in order (later wins), parsed. The key ``default`` replaces the spec's
    tolerance of metrics no layer names (see :func:`tolerance_for`)."""
    tol: dict[str, Tolerance] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            tol[k] = Tolerance.parse(v)
    return tol


def tolerance_for(name: str, spec: Mapping[str, Any] | None, user: Mapping[str, Tolerance]) -> Tolerance:
    """``user[name]``, else ``user["default"]``, else the spec's ``tolerance``, else :data:`DEFAULT_TOLERANCE`."""
    if name in user:
        return user[name]
    if "default" in user:
        return user["default"]
    return Tolerance.parse((spec or {}).get("tolerance") or DEFAULT_TOLERANCE)


# -- the check ------------------------------------------------------------------------------------------------------
def _flag(d: Mapping[str, Any] | None, key: str) -> bool:
    return bool((d or {}).get(key))


def _spec(entry: Any) -> dict[str, Any]:
    return entry.get("spec") or {} if isinstance(entry, dict) else {}


def generated(summary: Mapping[str, Any]) -> bool:
    """True when the run generated its audio (it has a generator, with weights); False for folder mode, which scores
    existing files (``model.generated``; summaries before it: the model named ``folder``)."""
    model = summary.get("model") or {}
    if not isinstance(model, dict):
        return True
    return bool(model["generated"]) if "generated" in model else model.get("name") != "folder"


def _weights(model: Mapping[str, Any]) -> str:
    return "random weights" if _flag(model, "random_weights") else "released weights"


def check_compatible(baseline: dict, current: dict) -> list[str]:
    """Reasons the two summaries must not be compared (empty when they may be): a placeholder baseline, generators
    with random vs released weights (only when both runs generated: a folder of files has no generator), another
    channel view, and :func:`scoring_differences` (what scores the audio: each metric's protocol, recipe, backbone
    checkpoint and weights, and the generation, post-processing and audit settings both runs record)."""
    reasons = []
    if baseline.get("placeholder"):
        reasons.append(
            "the baseline is a placeholder, not a real run - regenerate it from a run made the way CI makes the "
            "current one and commit that summary.json"
        )
    bm, cm = baseline.get("model") or {}, current.get("model") or {}
    if (isinstance(bm, dict) and isinstance(cm, dict) and generated(baseline) and generated(current)
            and _flag(bm, "random_weights") != _flag(cm, "random_weights")):
        reasons.append(
            f"the generators' weights differ (baseline {run_label(baseline)!r}: {_weights(bm)}, current "
            f"{run_label(current)!r}: {_weights(cm)}): audio from a model with random weights only shows that the "
            "pipeline runs, so a change between the two says nothing about either model")
    bv = baseline.get("channel_view") or DEFAULT_CHANNEL_VIEW
    cv = current.get("channel_view") or DEFAULT_CHANNEL_VIEW
    if bv != cv:
        reasons.append(f"channel_view differs (baseline {bv!r}, current {cv!r}): the metrics were computed on "
                       "different channels of the audio")
    return reasons + scoring_differences(baseline, current)


def scoring_differences(baseline: Mapping[str, Any], current: Mapping[str, Any], said_apart: bool = False,
                        names: tuple[str, str] = ("baseline", "current"),
                        why: str = ": another recipe, not a regression") -> list[str]:
    """What makes two runs' numbers different measurements of their audio: for each metric both hold, its protocol,
    backbone checkpoint (``checkpoint_sha256``) and backbone random weights, direction and recipe constants; then the
    settings both record (generation - a folder run records none -, post-processing, audit). ``said_apart`` leaves
    out what the report's table says on its own: the backbones' random weights (and random backbones' checkpoints:
    its † rows) and protocols (its protocol footnotes). ``names``: how the two runs are called in the reasons;
    ``why`` ends each recipe or setting reason."""
    b_name, c_name = names
    reasons = []
    bmet, cmet = baseline.get("metrics") or {}, current.get("metrics") or {}
    for name in [m for m in bmet if m in cmet]:
        b, c = bmet[name] or {}, cmet[name] or {}
        keys = [] if said_apart else [("protocol", "protocol"), ("random_weights", "backbone random_weights")]
        if not said_apart or not (b.get("random_weights") or c.get("random_weights")):
            keys.append(("checkpoint_sha256", "backbone checkpoint (checkpoint_sha256)"))
        for key, what in keys:
            if key in b and key in c and b[key] != c[key]:
                reasons.append(f"{name}: {what} differs ({b_name} {b[key]!r}, {c_name} {c[key]!r})")
        bh, ch = _spec(b).get("higher_is_better"), _spec(c).get("higher_is_better")
        if bh is not None and ch is not None and bool(bh) != bool(ch):
            reasons.append(f"{name}: higher_is_better differs ({b_name} {bh!r}, {c_name} {ch!r})")
        reasons += _setting_differences(f"{name} recipe", b.get("recipe"), c.get("recipe"), names, why)
    bs, cs = baseline.get("settings") or {}, current.get("settings") or {}
    for group in sorted(set(bs) & set(cs)):
        reasons += _setting_differences(group, bs[group], cs[group], names, why)
    return reasons


#: an embedder block's keys that say where its released weights come from and which digest they are checked against,
#: not what it computes: the weights used are compared as the metric's ``checkpoint_sha256`` (the file's digest), so a
#: digest pinned since an earlier run (conf/embeddings/clap-laion-music.yaml) does not make its runs incomparable
WEIGHT_SOURCE_KEYS = ("checkpoint_file", "checkpoint_url", "checkpoint_sha256", "hub")


def _setting_differences(what: str, b: Any, c: Any, names: tuple[str, str], why: str) -> list[str]:
    """One reason per constant that differs between two recorded settings blocks. A block, or a key, that only one
    of them records is not compared: an evalkit that records more (or less) than the other, e.g. a recipe's input path
    recorded as its own ``input`` steps since protocols own their inputs (the numbers of a protocol did not move:
    ``tests/test_golden.py``)."""
    if not isinstance(b, dict) or not isinstance(c, dict):
        return []
    out = []
    for k in sorted(set(b) & set(c), key=str):
        if k in WEIGHT_SOURCE_KEYS and "module" in b:  # an embedder's block
            continue
        if isinstance(b[k], dict) and isinstance(c[k], dict):
            out += _setting_differences(f"{what} {k}", b[k], c[k], names, why)
        elif b[k] != c[k]:
            out.append(f"{what}: {k} differs ({names[0]} {b[k]!r}, {names[1]} {c[k]!r}){why}")
    return out


def reference_set_warnings(baseline: dict, current: dict) -> list[str]:
    """Warnings when the runs were scored against different inputs: another MusicCaps reference set
    (``reference_set.manifest_sha256``), another reference folder's contents (``reference_set.listing_sha256``),
    another prompt set (``prompt_set_sha256``), or synthesised references on one side only; also when only one of
    them says."""
    def get(s: dict, key: str) -> str | None:
        ref = s.get("reference_set")
        return ref.get(key) if isinstance(ref, dict) else None

    out = []
    for key, what in (("manifest_sha256", "MusicCaps reference sets (manifest_sha256)"),
                      ("listing_sha256", "reference folders (their files' names, sizes, times)")):
        b, c = get(baseline, key), get(current, key)
        if b and c and b != c:
            out.append(f"different reference sets ({what}): {b[:12]}… (baseline) vs {c[:12]}… (current); numbers "
                       "against different references differ by more than run-to-run noise")
        elif bool(b) != bool(c) and key == "manifest_sha256":
            which, other = ("baseline", "current") if b else ("current", "baseline")
            out.append(f"only the {which} run names its reference set (reference_set.manifest_sha256); the {other} "
                       "run's is unknown, so the two may have been scored against different MusicCaps clips")
    bp, cp = baseline.get("prompt_set_sha256"), current.get("prompt_set_sha256")
    if bp and cp and bp != cp:
        out.append(f"different prompt sets (ids and captions): {bp[:12]}… (baseline) vs {cp[:12]}… (current)")
    bsyn, csyn = bool(baseline.get("synthetic_references")), bool(current.get("synthetic_references"))
    if bsyn != csyn:
        which = "baseline" if bsyn else "current"
        out.append(f"only the {which} run scored against synthesised stand-in references (the offline demo's): the "
                   "numbers agree only if the other run's reference folder holds that same audio")
    return out


def _value(entry: Any) -> float:
    if not isinstance(entry, dict):
        return float("nan")
    v = entry.get("value")
    if v is None:
        v = (entry.get("values") or {}).get(_spec(entry).get("primary"))
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _direction(*entries: Any) -> bool | None:
    for e in entries:
        if "higher_is_better" in _spec(e):
            return bool(_spec(e)["higher_is_better"])
    return None


def _why_none(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "not in the run"
    return (f"not applicable: {entry['skipped']}" if entry.get("skipped") else
            f"not computed: {entry['error']}" if entry.get("error") else "no value")


def verdict(baseline: float, current: float, higher_is_better: bool | None, tol: Tolerance) -> str:
    """``missing`` (current not finite), ``new`` (baseline not finite), else ``regressed`` / ``improved`` beyond the
    tolerance, ``ok`` within it. Raises ValueError without a direction."""
    if not math.isfinite(current):
        return "missing"
    if not math.isfinite(baseline):
        return "new"
    if higher_is_better is None:
        raise ValueError("a metric without a direction (higher_is_better) cannot be judged")
    delta = current - baseline
    bad = -delta if higher_is_better else delta
    allowed = tol.allowed(baseline) + _SLACK * max(1.0, abs(baseline), abs(current))
    if bad > allowed:
        return "regressed"
    if -bad > allowed:
        return "improved"
    return "ok"


def compare_summaries(
    baseline: dict,
    current: dict,
    tolerances: Mapping[str, Any] | None = None,
    *,
    baseline_name: str = "baseline",
    current_name: str = "current",
) -> Comparison:
    """Compare two summary dicts; ``tolerances`` as :func:`resolve_tolerances` takes them (``{metric or "default":
    "2%" | 0.05}``). Raises :class:`RunFolderError` for a summary without spec blocks and :class:`IncompatibleRuns`
    when they must not be compared."""
    check_summary(baseline, baseline_name)
    check_summary(current, current_name)
    reasons = check_compatible(baseline, current)
    if reasons:
        raise IncompatibleRuns(reasons)
    user = resolve_tolerances(tolerances)
    bmet, cmet = metric_entries(baseline.get("metrics") or {}), metric_entries(current.get("metrics") or {})
    rows, notes = [], []
    for name in list(bmet) + [m for m in cmet if m not in bmet]:
        b, c = bmet.get(name), cmet.get(name)
        t = tolerance_for(name, _spec(c) or _spec(b), user)
        bv, cv = _value(b), _value(c)
        if name not in bmet or not math.isfinite(bv):
            v = "new" if math.isfinite(cv) else "skipped"
        else:
            v = verdict(bv, cv, _direction(c, b), t)
        if v == "missing":
            notes.append(f"{name} missing in the current run: {_why_none(c)}")
        rows.append(Row(name, bv, cv, _direction(c, b), t, v))
    notes += _run_notes(baseline, current)
    warnings = reference_set_warnings(baseline, current) + coverage_warnings(baseline, current)
    return Comparison(baseline_name, current_name, rows, notes, warnings, (run_label(baseline), run_label(current)))


def coverage_warnings(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """A run that scored fewer clips, or skipped more (silent, NaN, unreadable clips: ``n_skipped``), than its
    baseline: its numbers cover other clips, which a tolerance alone would not show (a model that starts producing
    silence passed a FAD check)."""
    out = []
    nb, nc = baseline.get("n_clips"), current.get("n_clips")
    sb, sc = baseline.get("n_skipped") or 0, current.get("n_skipped") or 0
    if isinstance(nb, int) and isinstance(nc, int) and nc < nb:
        out.append(f"the current run scored {nc} clips, the baseline {nb}: its numbers cover fewer clips")
    if sc > sb:
        out.append(f"the current run skipped {sc} clips (the baseline {sb}): the audit kept them from the metrics "
                   f"(silent, non-finite, unreadable, ...; summary.json skip_reasons names each)")
    bmet, cmet = metric_entries(baseline.get("metrics") or {}), metric_entries(current.get("metrics") or {})
    fewer = [f"{m} {c.get('n_clips')} < {bmet[m].get('n_clips')}" for m, c in cmet.items()
             if isinstance(c, Mapping) and isinstance(bmet.get(m), Mapping)
             and isinstance(c.get("n_clips"), int) and isinstance(bmet[m].get("n_clips"), int)
             and c["n_clips"] < bmet[m]["n_clips"]]
    if fewer:
        out.append(f"clips each number covers, current < baseline: {', '.join(fewer)}")
    return out


def run_label(summary: Mapping[str, Any]) -> str:
    """A summary's label (``model.label``), else its model's name (summaries before it)."""
    model = summary.get("model") or {}
    if not isinstance(model, dict):
        return str(model)
    return str(model.get("label") or model.get("name"))


def _run_notes(baseline: dict, current: dict) -> list[str]:
    notes = []
    bname, cname = run_label(baseline), run_label(current)
    if bname != cname:
        notes.append(f"different models: baseline {bname!r}, current {cname!r}")
    if baseline.get("n_clips") != current.get("n_clips"):
        notes.append(f"different clip counts: baseline {baseline.get('n_clips')}, current {current.get('n_clips')}")
    if generated(baseline) != generated(current):
        gen, files = ("baseline", "current") if generated(baseline) else ("current", "baseline")
        run = baseline if gen == "baseline" else current
        notes.append(f"the {gen} run generated its audio ({run_label(run)}, {_weights(run.get('model') or {})}) and "
                     f"the {files} run scored a folder of files, which has no generator: compared on what scores the "
                     "audio (metric recipes, backbone weights, post-processing), not on the generators' weights")
    if current.get("random_weights"):
        notes.append("random weights: these numbers check the pipeline, not a model's quality")
    return notes


def compare_paths(baseline, current, tolerances: Mapping[str, Any] | None = None) -> Comparison:
    """:func:`compare_summaries` of two run folders or summary.json files (RunFolderError if one cannot be read)."""
    b, c = load_run(baseline), load_run(current)
    return compare_summaries(b.summary, c.summary, tolerances, baseline_name=str(b.summary_file),
                             current_name=str(c.summary_file))


# -- the report -----------------------------------------------------------------------------------------------------
_ICON = {"ok": "✅ ok", "improved": "✅ improved", "regressed": "❌ regressed", "missing": "❌ missing",
         "new": "🆕 new", "skipped": "– skipped"}


def _num(x: float, fmt: str = ".5g") -> str:
    return "–" if not math.isfinite(x) else format(x, fmt)


def to_markdown(cmp: Comparison) -> str:
    """The report for CI: a verdict heading, the rows, then warnings and notes."""
    status = "❌ regression" if cmp.failed else "✅ no regression"
    lines = [
        f"## evalkit regression check: {status}",
        "",
        f"Baseline: `{cmp.baseline}`{_named(cmp.labels[0])}  ",
        f"Current: `{cmp.current}`{_named(cmp.labels[1])}",
        "",
        "| metric | baseline | current | delta | tolerance | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in cmp.rows:
        arrow = {True: " ↑", False: " ↓"}.get(r.higher_is_better, "")
        if math.isfinite(r.baseline) and math.isfinite(r.current):
            d = _num(r.delta, "+.4g")
            if r.baseline != 0:
                d += f" ({r.delta / abs(r.baseline):+.2%})"
        else:
            d = "–"
        tol = "–" if r.tolerance is None else f"±{r.tolerance}"
        if r.tolerance is not None and r.tolerance.relative and math.isfinite(r.baseline):
            tol += f" (±{_num(r.allowed, '.3g')})"
        lines.append(f"| {r.metric}{arrow} | {_num(r.baseline)} | {_num(r.current)} | {d} | {tol} | {_ICON[r.verdict]} |")
    lines.append("")
    lines.append("↑ higher is better, ↓ lower is better (each metric's spec). Fails (exit 1) on `regressed` or "
                 "`missing`.")
    for w in cmp.warnings:
        lines.append(f"- ⚠️ warning: {w}")
    for n in cmp.notes:
        lines.append(f"- note: {n}")
    return "\n".join(lines) + "\n"


def _named(label: str) -> str:
    return f" ({label})" if label else ""


def refusal_markdown(baseline: str, current: str, reasons: Sequence[str], labels: tuple[str, str] = ("", "")) -> str:
    """The report when the runs are not comparable (exit 2): the runs (path and label), the reasons, one per line."""
    return "\n".join(
        ["## evalkit regression check: ⛔ refused", "", f"Baseline: `{baseline}`{_named(labels[0])}  ",
         f"Current: `{current}`{_named(labels[1])}", "", "These runs are not comparable:"] + [f"- {r}" for r in reasons]
    ) + "\n"


# -- command line ---------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evalkit.compare",
        description="Compare a run with a baseline run; exit 1 on a regression beyond tolerance, 2 if not comparable.",
        epilog="Default tolerances: each metric's spec.tolerance in summary.json (--tol default=... replaces them for "
        "the metrics not named). Relative tolerances are fractions of |baseline|.",
    )
    p.add_argument("baseline", help="baseline run folder or summary.json")
    p.add_argument("current", help="current run folder or summary.json")
    p.add_argument("--tol", action="append", default=[], metavar="METRIC=VALUE",
                   help="tolerance for one metric: absolute (fad=0.05) or relative (clap=2%%); default=... sets the fallback")
    p.add_argument("--config", help="YAML/JSON file of tolerances ({fad: 5%%, kld: 0.03} or {tolerances: {...}})")
    p.add_argument("--out", help="also write the markdown report to this file")
    p.add_argument("--json", dest="json_out", help="also write the rows as JSON to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evalkit.compare``; returns the exit status (0 ok, 1 regression or missing, 2 refused/unreadable)."""
    args = build_parser().parse_args(argv)
    try:
        file_tol = load_tolerances(args.config) if args.config else {}
        flag_tol = parse_tol_flags(args.tol)
        b, c = load_run(args.baseline), load_run(args.current)
    except (ValueError, OSError, RunFolderError) as exc:
        print(f"evalkit.compare: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        cmp = compare_summaries(b.summary, c.summary, {**file_tol, **flag_tol},
                                baseline_name=str(b.summary_file), current_name=str(c.summary_file))
    except IncompatibleRuns as exc:
        text = refusal_markdown(str(b.summary_file), str(c.summary_file), exc.reasons,
                                (run_label(b.summary), run_label(c.summary)))
        print(text, end="")
        print(f"evalkit.compare: {exc}", file=sys.stderr)
        if args.out:
            _write(args.out, text)
        return EXIT_REFUSED
    names = [r.metric for r in cmp.rows]
    unused = sorted(set(flag_tol) - {"default"} - set(names))
    if unused:  # a misspelt --tol fda=5% set nothing and said nothing (a tolerances file may list more metrics)
        cmp.warnings.append(f"--tol for {', '.join(unused)} matches no metric of either run (they have "
                            f"{', '.join(names)}): check the spelling")
    text = to_markdown(cmp)
    print(text, end="")
    for w in cmp.warnings:
        print(f"evalkit.compare: warning: {w}", file=sys.stderr)
    if args.out:
        _write(args.out, text)
    if args.json_out:
        def f(x: float) -> float | None:
            return x if math.isfinite(x) else None

        rows = [{"metric": r.metric, "baseline": f(r.baseline), "current": f(r.current), "delta": f(r.delta),
                 "tolerance": str(r.tolerance), "allowed": f(r.allowed), "higher_is_better": r.higher_is_better,
                 "verdict": r.verdict} for r in cmp.rows]
        _write(args.json_out, json.dumps({"exit_code": cmp.exit_code, "baseline": cmp.labels[0],
                                          "current": cmp.labels[1], "rows": rows, "notes": cmp.notes,
                                          "warnings": cmp.warnings}, indent=2) + "\n")
    return cmp.exit_code


def _write(path: str, text: str) -> None:
    from evalkit.io import write_text

    write_text(path, text)
