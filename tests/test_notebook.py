"""notebooks/analysis.ipynb executes (nbclient, kernel ``python3`` of this interpreter) on fabricated run folders."""
from __future__ import annotations

import json
import os

import pytest

from evalkit.report import card_table, collect_runs
from tests.conftest import REPO
from tests.fake_runs import make_run, make_unfinished_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

CARD = ["Frechet Audio Distance", "KLD", "Text Consistency", "Chroma Cosine Similarity"]


def test_analysis_notebook_executes(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    make_run(runs / "small", "small", n_clips=24, dim=4)
    make_run(runs / "tiny", "tiny-stereo", random_weights=True, n_clips=24, dim=4, metrics=("fad", "kld", "clap"))
    failed = make_unfinished_run(runs / "medium")  # a failed run beside them: listed, left out
    out = tmp_path / "report"
    monkeypatch.setenv("EVALKIT_RUNS", str(runs))
    monkeypatch.setenv("EVALKIT_N_BOOT", "50")
    monkeypatch.setenv("EVALKIT_REPORT_OUT", str(out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the kernel must import this checkout's evalkit, not the one the venv has installed (an editable install of
    # another worktree would otherwise be tested instead)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell("import evalkit; print(evalkit.__file__)"))
    # kernel "python3": jupyter_client starts it with this interpreter (sys.executable), i.e. the .venv's python
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()

    assert nb.cells[1].outputs[0]["text"].strip() == str(REPO / "evalkit" / "__init__.py")
    listed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert "2 run(s):" in listed and f"1 folder(s) skipped:\n  {failed}: failed run (manifest.json)" in listed
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2
    md = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert len(md) == 1 and "| tiny-stereo (random weights) † |" in md[0] and "| small |" in md[0]

    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    got = json.loads(printed.strip().splitlines()[-1])
    table = card_table(collect_runs([runs], ci=False))
    want = {lab: {c: (None if row[c] != row[c] else round(float(row[c]), 4)) for c in CARD}
            for lab, row in table[CARD].iterrows()}
    assert got == want
    assert got["tiny-stereo (random weights)"]["Chroma Cosine Similarity"] is None
    for name in ("card_table.md", "card_table.tex", "card_table.csv", "per_clip.png", "measured_vs_published.png"):
        assert (out / name).stat().st_size > 0, name
