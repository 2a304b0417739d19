"""Pinned numbers across refactors and machines (``tests/golden_runs.py`` defines the runs and records them).

Two kinds of recording in ``tests/golden/``:

- ``summaries.json``: the first recording (commit 3207dba, on the machine the project started on; no fingerprint);
  its ``clap`` entries were re-recorded when random-weight CLAP moved to ``transformers.ClapModel`` (issue 14), and its
  three ``fad`` values when the Fréchet step moved to one BLAS thread (``evalkit/statistics/frechet.py``).
- ``machine-<id>.json``: recordings with the fingerprint of the machine and stack that made them
  (``python -m tests.golden_runs``), made before a change that must not move a number. ``folder-music-raw``'s KLD
  (protocol ``stable-audio-metrics``) was re-recorded when its peak step took pyloudnorm's gain rounding (the gain in
  float64 rounded once to float32, as stable-audio-metrics computes it): 0.005180071188 -> 0.005180066725 (8.6e-7
  relative), nearer the tool (``tests/test_kld_passt.py``); the audiocraft protocols' numbers did not move.

Against a recording of this machine's fingerprint every value must be equal bit for bit; against any other, equal to
``REL_TOL``/``ABS_TOL`` (float32 network outputs differ in their last bits between CPU instruction sets: on an AMD
EPYC without AVX-512 the tiny models' KLD moved by 3e-5 relative against ``summaries.json``). A wrong recipe moves
these numbers by far more: a missing loudness step, a swapped KL direction or another window all change them in the
first digits.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden_runs import GOLDEN_DIR, RUNS, fingerprint, run_one, same, values_of

pytestmark = pytest.mark.slow


def _recordings() -> list[tuple[str, dict, bool]]:
    """(file name, {run: values}, exact?) of every recording."""
    here = fingerprint()["id"]
    out = [("summaries.json", json.loads((GOLDEN_DIR / "summaries.json").read_text()), False)]
    for path in sorted(GOLDEN_DIR.glob("machine-*.json")):
        rec = json.loads(path.read_text())
        out.append((path.name, rec["runs"], rec["fingerprint"]["id"] == here))
    return out


RECORDINGS = _recordings()


def test_every_run_has_a_recording_and_recordings_name_known_runs():
    recorded = {name for _, runs, _ in RECORDINGS for name in runs}
    assert recorded == set(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_run_matches_its_recordings(name, tmp_path, music_dir):
    summary, out = run_one(name, tmp_path, music_dir)
    got = values_of(summary, out)
    checked = 0
    for file, runs, exact in RECORDINGS:
        want = runs.get(name)
        if want is None:
            continue
        how = "bit for bit" if exact else f"to rel {1e-4:g} / abs {2e-6:g}"
        for metric, values in want["metrics"].items():
            for k, v in values.items():
                assert same(got["metrics"][metric][k], v, exact), \
                    f"{file} {name}: {metric}.{k} = {got['metrics'][metric][k]!r}, recorded {v!r} ({how})"
                checked += 1
        assert got["ids"] == want["ids"], f"{file} {name}: clip ids"
        for col, values in want["per_clip"].items():
            bad = [(i, a, b) for i, a, b in zip(got["ids"], got["per_clip"][col], values) if not same(a, b, exact)]
            assert not bad, f"{file} {name}: per-clip {col} differs ({how}) at {bad[:3]}"
            checked += len(values)
    assert checked > 0
    if name == "demo":  # the CI example's committed baseline stays comparable with the demo as it runs today
        from evalkit.report.compare import compare_paths, load_tolerances

        root = Path(__file__).resolve().parents[1]
        cmp = compare_paths(root / "examples" / "baseline" / "summary.json", out,
                            load_tolerances(root / "examples" / "tolerances.yaml"))  # raises if refused
        assert not cmp.failed and not cmp.warnings, (cmp.failed, cmp.warnings)


def test_tolerance_catches_a_recipe_change():
    """The cross-machine tolerance is far below what a recipe change moves: the demo's FAD recorded in
    summaries.json against the same number 1e-3 away (a change in the 4th digit) fails; float32 noise passes."""
    v = json.loads((GOLDEN_DIR / "summaries.json").read_text())["demo"]["metrics"]["fad"]["fad"]
    assert same(v * (1 + 8.8e-7), v, exact=False)
    assert not same(v * (1 + 1e-3), v, exact=False)
    assert not same(v * (1 + 8.8e-7), v, exact=True)
