"""stable-audio-metrics as one preset (``metrics=stable-audio-metrics``: fd_openl3, kl_passt, clap_score), its metrics
as instances beside the card's (``metrics=[fad,kld,clap,stable-audio-metrics]``), and KL_passt's reference side read
from stable-audio-metrics' reference probabilities file instead of reference audio. Everything from the command line
as a user types it (tiny random weights; the parity of each number with stable-audio-metrics' own loops is in
tests/test_openl3.py, tests/test_clap_fusion.py and tests/test_kld_passt.py)."""
from __future__ import annotations

import glob
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from evalkit.registry import get_metric, metric_names, preset_members
from evalkit.spec import RunSpec, SpecError, rewrite_overrides
from tests.conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
SAM = ["fd_openl3", "kl_passt", "clap_score"]


def cli(*args, timeout=1200):
    return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_the_preset_and_the_card_compose_in_one_run():
    spec = RunSpec.from_overrides(["metrics=stable-audio-metrics"])
    assert list(spec.metrics) == SAM and preset_members("stable-audio-metrics") == SAM
    both = RunSpec.from_overrides(["metrics=[fad,kld,clap,stable-audio-metrics]"])
    assert list(both.metrics) == ["fad", "kld", "clap", *SAM]
    assert [both.metrics[m]["protocol"] for m in both.metrics] == ["audiocraft"] * 3 + ["stable-audio-metrics"] * 3
    assert (both.metrics["fd_openl3"]["embedding"], both.metrics["kl_passt"]["embedding"],
            both.metrics["clap_score"]["embedding"]) == ("openl3-mel256-music", "passt-10s", "clap-laion-audioset-fusion")
    assert both.metrics["kld"]["embedding"] == "passt-20s" and both.metrics["clap"]["embedding"] == "clap-laion-music"
    # an instance's protocol is chosen among its class's files, as the metric's own
    assert rewrite_overrides(["metrics.kl_passt.protocol=audiocraft"]) == ["metrics/kld@metrics.kl_passt=audiocraft"]
    swapped = RunSpec.from_overrides(["metrics=[kld,kl_passt]", "metrics.kl_passt.protocol=audiocraft"])
    assert swapped.metrics["kl_passt"]["direction"] == "reference_generated" == swapped.metrics["kld"]["direction"]
    assert set(SAM) <= set(metric_names())


def test_an_edited_label_and_an_unknown_key_are_refused():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from evalkit.spec import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose("config", overrides=["metrics=[clap_score]", "metrics.clap_score.protocol=audiocraft"],
                            return_hydra_config=True)  # no rewrite: a plain value override of the label
    with pytest.raises(SpecError, match=r"constants are those of conf/metrics/clap/stable-audio-metrics\.yaml: "
                                        r"choose a protocol with metrics/clap@metrics\.clap_score=<file>"):
        RunSpec.from_config(cfg)
    with pytest.raises(SpecError, match=r"metrics\.fd_openl3\.hop: not a setting"):
        RunSpec.from_overrides(["metrics=[fd_openl3]", "+metrics.fd_openl3.hop=1"])


def test_an_instance_is_its_class_under_its_own_name():
    cls = get_metric("kl_passt")
    base = get_metric("kld")
    assert issubclass(cls, base) and cls is get_metric("kl_passt")
    s = cls.spec
    assert (s.name, s.primary, s.value_column, s.weight, s.section, s.card_column) == (
        "kl_passt", "kl_passt", "kl_passt", "kl_passt_rows", "stable-audio-metrics", None)
    assert s.per_clip == ("kl_passt", "kl_passt_pq", "kl_passt_qp", "kl_passt_both", "kl_passt_rows")
    assert get_metric("fd_openl3").spec.arrays == ("fd_openl3_gen_emb", "fd_openl3_ref_emb")
    assert get_metric("clap_score").spec.higher_is_better and base.spec.card_column == "KLD"  # the class unchanged


def _clips(root, name, kinds, seed):
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir()
    for i, (sr, ch, sec) in enumerate(kinds):
        t = np.arange(int(sr * sec)) / sr
        x = [sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(60, 4000) * t) for _ in range(3))
             + 0.05 * rng.standard_normal(t.size) for _ in range(ch)]
        sf.write(folder / f"c{i}.wav", np.stack(x, 1).astype(np.float32), sr, subtype="FLOAT")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam")
    gen = _clips(root, "gen", [(44100, 2, 6.0), (48000, 1, 12.0), (32000, 2, 4.0), (44100, 2, 10.0)], 0)
    ref = _clips(root, "ref", [(48000, 2, 10.0), (44100, 1, 10.0), (48000, 2, 10.0)], 1)  # c3: no reference
    return root, gen, ref


def _run(root, name, *args):
    out = root / name
    p = cli("model=folder", "backbone_weights=random", "backbone_size=tiny", f"hydra.run.dir={out}",
            "progress=false", f"cache.dir={root / 'cache'}", *args)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), pd.read_parquet(out / "clips.parquet").set_index("id"), out


def test_kl_passt_beside_the_cards_kld_equals_kld_with_its_protocol(sets):
    """One run: the card's KLD (audiocraft) and KL_passt; another: KLD with the stable-audio-metrics protocol. The
    instance gives exactly the class's numbers, under its own column names."""
    root, gen, ref = sets
    s1, df1, out1 = _run(root, "both", f"model.dir={gen}", f"reference.dir={ref}", "metrics=[kld,kl_passt]",
                         "metrics.kl_passt.save_probs=true")
    s2, df2, _ = _run(root, "class", f"model.dir={gen}", f"reference.dir={ref}", "metrics=[kld]",
                      "metrics.kld.protocol=stable-audio-metrics")
    a, b = s1["metrics"]["kl_passt"], s2["metrics"]["kld"]
    assert a["value"] == b["value"] and a["values"]["kl_passt_pq"] == b["values"]["kld_pq"]
    assert a["n_clips"] == b["n_clips"] == 3
    assert s1["metrics"]["kld"]["protocol"] == "audiocraft" and s1["metrics"]["kld"]["value"] != a["value"]
    np.testing.assert_array_equal(df1.loc[["c0", "c1", "c2"], "kl_passt"], df2.loc[["c0", "c1", "c2"], "kld"])
    assert df1.loc["c3", "kl_passt_skipped"] == "no reference clip"


def test_reference_probabilities_replace_reference_audio(sets):
    """stable-audio-metrics' reference probabilities (a pickle of {id: FloatTensor[527]}) as KL_passt's reference
    side: the same number without reference audio; an id the file lacks is skipped with the reason."""
    root, gen, ref = sets
    # one segment per PaSST pass in both runs: the file run passes the generated side alone, and another batch
    # composition changes float32 rounding (measured: 0.0051576262 vs 0.0051576521 with the default batches)
    one = "metrics.kl_passt.batch_size=1"
    s1, _, out1 = _run(root, "probs", f"model.dir={gen}", f"reference.dir={ref}", "metrics=[kl_passt]",
                       "metrics.kl_passt.save_probs=true", one)
    rows = {}
    for f in sorted(glob.glob(str(out1 / "embeddings" / "batch-*.npz"))):
        z = np.load(f)
        rows.update({k.split("/")[0]: torch.from_numpy(z[k][0]) for k in z.files if k.endswith("kl_passt_ref_probs")})
    assert sorted(rows) == ["c0", "c1", "c2"]
    pkl = root / "musiccaps-public__collectmean__reference_probabilities.pkl"
    with open(pkl, "wb") as fp:  # as passt_kld saves it
        pickle.dump(rows, fp)
    s2, df2, _ = _run(root, "from-file", f"model.dir={gen}", "metrics=[kl_passt]",
                      f"metrics.kl_passt.reference_probabilities={pkl}", one)  # no reference.dir
    got = s2["metrics"]["kl_passt"]
    assert got["value"] == s1["metrics"]["kl_passt"]["value"] and got["n_clips"] == 3
    assert got["reference_probabilities"]["ids"] == 3 and len(got["reference_probabilities"]["sha256"]) == 64
    assert df2.loc["c3", "kl_passt_skipped"].startswith("no reference probabilities for id 'c3' in ")


def test_reference_probabilities_need_one_row_per_clip(tmp_path):
    pkl = tmp_path / "p.pkl"
    with open(pkl, "wb") as fp:
        pickle.dump({"a": torch.softmax(torch.randn(527), 0)}, fp)
    gen = _clips(tmp_path, "gen", [(32000, 1, 10.0)], 2)  # a folder a user has: the setting is refused, not the input
    p = cli("model=folder", f"model.dir={gen}", "metrics=[kld]", f"metrics.kld.reference_probabilities={pkl}",
            "backbone_weights=random", "backbone_size=tiny", f"hydra.run.dir={tmp_path / 'o'}")
    assert p.returncode == 2 and "one row per 640000-sample chunk" in p.stderr, p.stderr[-2000:]


def test_mono_clips_explain_fd_openl3s_half_rank():
    """FD_openl3 gives a mono file to its stereo embedder as two equal channels (stable-audio-metrics' "fake stereo"):
    that side's covariance has rank at most half the 2 x 512 (here 2 x 16) dimensions. The warning says so and why,
    instead of blaming repeated or stationary audio; the stereo side of the same size is full rank and not warned."""
    from evalkit.metrics.base import Clip
    from evalkit.metrics.fad import FAD
    from evalkit.spec import recipe_from_files

    m = FAD(recipe_from_files("fad", "stable-audio-metrics", model_size="tiny", checkpoint="random", random_seed=0,
                              backbone_weights="random", postprocess="none"))
    g = torch.Generator().manual_seed(0)
    m.update([Clip(f"c{i}", "", 0.1 * torch.randn(1, 44100 * 6, generator=g), 44100,
                   0.1 * torch.randn(2, 44100 * 6, generator=g), 44100) for i in range(4)])
    values = m.compute()
    assert m.dim == 32 and values["n_gen_windows"] == values["n_ref_windows"] == 48
    assert len(m.warnings) == 1, m.warnings
    assert m.warnings[0].startswith("the generated side's covariance has rank 16 < 32 (48 embeddings)")
    assert "4 of its clips are mono, given to the 2-channel openl3-mel256-music embedder as 2 equal channels" \
        in m.warnings[0] and "stationary" not in m.warnings[0]
