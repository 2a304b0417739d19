"""FAD on more embeddings (issue 24.2) and peers' shipped statistics (issue 24.3), in evalkit's own environment.

What needs no reference package is checked here: the input-path steps fadtk and kadtk need (torchaudio's Kaiser
resampler, the 3-minute cut (the 16-bit round trip: ``tests/test_kad.py``), the 1-second pad), fadtk's statistics (``stats: online``: per-file
float16 means merged by Chan's rule) against that rule written out here, a run from the command line's path on
user files (44.1 kHz stereo, 48 kHz mono) whose number is recomputed from its saved arrays, where the report places
a FAD on another embedding than the card's, and statistics files in fadtk's layout (written here) used or refused.
Parity with fadtk's and kadtk's own code on identical weights: ``tests/test_fadtk_parity.py`` (reference extra).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from evalkit import audio as A
from evalkit.input_path import InputPath, InputPathError, Side
from evalkit.spec import SpecError, metric_recipe

FADTK_KAISER = dict(lowpass_filter_width=64, rolloff=0.9475937167399596, resampling_method="sinc_interp_kaiser",
                    beta=14.769656459379492)  # fadtk/fad.py load_audio, kadtk/emb_loader.py load_audio


# ---------------------------------------------------------------------------------------------------------------
# Input-path steps
# ---------------------------------------------------------------------------------------------------------------
def _path(both):
    return InputPath({"reference": [], "generated": [], "both": both}, setting="metrics.fad.input", embedder_rate=24000)


def _apply(path, wav, sr):
    s = Side(wav, sr, sr)
    for st in path.shared + path.scale:
        from evalkit.input_path import STEPS, Context

        s = STEPS[st.name][0](s, st.arg, Context(None, None))
    return s


@pytest.mark.parametrize("rates", [(44100, 48000), (48000, 24000), (32000, 16000), (44100, 32000)])
def test_torchaudio_kaiser_is_fadtks_resample_transform(rates):
    """fadtk builds ``torchaudio.transforms.Resample(fs, sr, **params)`` (kernel in float64, cast to float32), not
    ``torchaudio.functional.resample`` on float32 (kernel in float32: other bits); the step is the former."""
    import torchaudio

    src, dst = rates
    x = A.to_channels(torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, src // 3)).astype(np.float32)),
                      1)
    ours = A.resample_with(x, src, dst, "torchaudio_kaiser")
    theirs = torchaudio.transforms.Resample(src, dst, **FADTK_KAISER)(torch.mean(x, 0).unsqueeze(0))
    assert ours.dtype == torch.float32 and torch.equal(ours, theirs)
    assert ours.shape[-1] == -(-x.shape[-1] * dst // src)  # ceil(n * new / orig)
    functional = torchaudio.functional.resample(x, src, dst, **{k: v for k, v in FADTK_KAISER.items()})
    assert not torch.equal(functional, theirs)  # the trap the step avoids


def test_truncate_and_minimum_length_pad():
    wav = torch.ones(1, 24000 * 181)
    assert _apply(_path([{"truncate": 180.0}]), wav, 24000).wav.shape == (1, 24000 * 180)
    short = torch.ones(1, 8000)
    padded = _apply(_path([{"pad": {"min_s": 1.0}}]), short, 16000).wav
    assert padded.shape == (1, 16000) and torch.equal(padded[0, :8000], short[0]) and padded[0, 8000:].abs().sum() == 0
    long = torch.ones(1, 20000)
    assert _apply(_path([{"pad": {"min_s": 1.0}}]), long, 16000).wav is long


@pytest.mark.parametrize("step, message", [
    ({"write_int16": "torchaudio"}, r"write_int16: 'torchaudio'; expected audiocraft or pcm16"),
    ({"truncate": -3}, r"truncate: -3; expected a positive number of seconds"),
    ({"pad": {"min_s": "x"}}, r"pad: .*expected reference or \{min_s: seconds\}"),
    ({"resample": {"rate": 16000, "with": "kaiser"}}, r"known: julius, resampy, soxr_hq, torchaudio_hann, torchaudio_kaiser"),
])
def test_bad_steps_are_refused_by_name(step, message):
    with pytest.raises(InputPathError, match=message):
        _path([step])


# ---------------------------------------------------------------------------------------------------------------
# fadtk's statistics
# ---------------------------------------------------------------------------------------------------------------
def fadtk_online(files: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """fadtk/utils.py calculate_embd_statistics_online over per-file float16 embeddings, written out: per file
    ``np.mean`` (float16 in, float16 out), ``np.cov * (n - 1)``, merged by Chan's rule."""
    mu, S, n = np.zeros(files[0].shape[1]), np.zeros((files[0].shape[1],) * 2), 0
    for e in files:
        _mu, _S, _n = np.mean(e, axis=0), np.cov(e, rowvar=False) * (e.shape[0] - 1), e.shape[0]
        delta = _mu - mu
        mu += _n / (n + _n) * delta
        S += _S + delta[:, None] * delta[None, :] * n * _n / (n + _n)
        n += _n
    return mu, S / (n - 1)


@pytest.fixture(scope="module")
def encodec_fad():
    from evalkit.metrics.fad import FAD

    def make(**over):
        recipe = metric_recipe("fad", ["metrics.fad.protocol=encodec-emb", "backbone_weights=random",
                                       "backbone_size=tiny"])
        recipe.update(over)
        return FAD(recipe)

    return make


def test_online_statistics_are_fadtks_per_file_merge(encodec_fad):
    """Files of 1 to 40 frames with a common offset (so float16 means lose digits): the metric's mean and covariance
    equal fadtk's merge of float16 file means to 1e-12, and differ from the pooled statistics."""
    m = encodec_fad()
    rng = np.random.default_rng(3)
    files = [(3.0 + 0.7 * rng.standard_normal((n, 128))).astype(np.float32) for n in (40, 7, 23, 2, 31, 40, 19, 40)]
    stored = [m.stored(e) for e in files]
    assert all(np.array_equal(s, e.astype(np.float16).astype(np.float32)) for s, e in zip(stored, files))
    for e in stored:
        m._accumulate("gen", e)
    mu, sigma = m._stats("gen").mean_cov()
    want_mu, want_sigma = fadtk_online([e.astype(np.float16) for e in stored])
    assert np.abs(mu - want_mu).max() <= 1e-12 * np.abs(want_mu).max()
    assert np.abs(sigma - want_sigma).max() <= 1e-12 * np.abs(want_sigma).max()
    pooled = np.concatenate(stored).astype(np.float64)
    assert np.abs(mu - pooled.mean(0)).max() > 1e-5  # the float16 file means are what differs
    assert m.state["n_gen_single"] == 0


def test_float16_overflow_and_single_frame_files_are_said(encodec_fad):
    from evalkit.statistics.frechet import FrechetError

    m = encodec_fad()
    with pytest.raises(FrechetError, match="beyond float16's range"):
        m.stored(np.full((3, 128), 7e4, np.float32))
    m._accumulate("gen", m.stored(np.ones((1, 128), np.float32)))
    assert m.state["n_gen_single"] == 1


# ---------------------------------------------------------------------------------------------------------------
# A run from the command line's path
# ---------------------------------------------------------------------------------------------------------------
def write_user_files(folder, seeds, sr, channels, seconds, fmt="WAV", gain=0.5):
    folder.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        rng = np.random.default_rng(s)
        t = np.arange(int(sr * seconds)) / sr
        x = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t * (1 + 0.01 * np.sin(t)))
                for _ in range(4))
        x = gain * (x + 0.03 * rng.standard_normal(t.size))
        chans = np.stack([x * (1 - 0.2 * c) for c in range(channels)], 1).astype(np.float32)
        sf.write(str(folder / f"c{s % 100:02d}.{fmt.lower()}"), chans, sr, subtype="PCM_16", format=fmt)


@pytest.fixture(scope="module")
def encodec_run(tmp_path_factory):
    from evalkit import evaluate

    tmp = tmp_path_factory.mktemp("encodec-run")
    write_user_files(tmp / "gen", range(100, 104), 44100, 2, 3.1)
    write_user_files(tmp / "ref", range(0, 4), 48000, 1, 2.7, fmt="FLAC", gain=0.3)
    summary = evaluate(["model=folder", f"model.dir={tmp / 'gen'}", f"reference.dir={tmp / 'ref'}", "metrics=[fad]",
                        "metrics.fad.protocol=encodec-emb", "backbone_weights=random", "backbone_size=tiny",
                        f"cache.dir={tmp / 'cache'}", "progress=false"], out_dir=tmp / "run")
    return tmp, summary


def test_run_records_the_recipe_and_recomputes_from_its_arrays(encodec_run):
    """The summary names the protocol, fadtk's model name, float16 storage and online statistics; its number is the
    Fréchet distance of fadtk's merge (written out above) of the saved per-clip arrays, which hold float16 values;
    each clip has ceil(n / 320) frames of the file resampled to 24 kHz."""
    from evalkit.report.rundir import load_run
    from evalkit.statistics.frechet import frechet_distance

    tmp, summary = encodec_run
    entry = summary["metrics"]["fad"]
    assert (entry["protocol"], entry["embedding"], entry["fadtk_model"]) == ("encodec-emb",) * 3
    assert (entry["recipe"]["stats"], entry["recipe"]["embedding_dtype"]) == ("online", "float16")
    assert entry["spec"]["label"] == "FAD (encodec-emb)" and entry["spec"]["card_column"] is None
    run = load_run(tmp / "run")
    gen, ref = run.clip_arrays("fad_gen_emb"), run.clip_arrays("fad_ref_emb")
    assert sorted(gen) == sorted(ref) == [f"c{i:02d}" for i in range(4)]
    assert all(a.shape == (-(-int(3.1 * 24000) // 320), 128) for a in gen.values())
    assert all(a.shape == (-(-int(2.7 * 24000) // 320), 128) for a in ref.values())
    for a in (*gen.values(), *ref.values()):
        assert np.array_equal(a, a.astype(np.float16).astype(np.float32))
    mu_g, s_g = fadtk_online([gen[k].astype(np.float16) for k in sorted(gen)])
    mu_r, s_r = fadtk_online([ref[k].astype(np.float16) for k in sorted(ref)])
    assert entry["value"] == pytest.approx(frechet_distance(mu_g, s_g, mu_r, s_r), rel=1e-9)
    assert entry["value"] > 0


def test_report_puts_another_embeddings_fad_in_evalkits_own_table(encodec_run):
    from evalkit.report.table import card_table, collect_runs

    tmp, summary = encodec_run
    card = card_table(collect_runs([tmp / "run"], ci=False))
    assert card["Frechet Audio Distance"].isna().all()  # not the card's FAD (VGGish)
    own = card.attrs["sections"]["beyond-the-card"]  # with KAD: evalkit's own table
    assert own.loc[own.index[0], "FAD (encodec-emb)"] == pytest.approx(summary["metrics"]["fad"]["value"])


# ---------------------------------------------------------------------------------------------------------------
# Peers' shipped statistics
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fadtk_layout_npz(tmp_path_factory):
    """A small statistics file in fadtk's layout (fadtk/stats/fma_pop.npz: <model>.mu, <model>.cov, float64)."""
    rng = np.random.default_rng(7)
    arrays = {}
    for name, d in (("encodec-emb", 128), ("vggish", 128), ("clap-laion-music", 512)):
        a = rng.standard_normal((3 * d, d))
        arrays[f"{name}.mu"], arrays[f"{name}.cov"] = a.mean(0), np.cov(a, rowvar=False)
    path = tmp_path_factory.mktemp("peer") / "fma_pop.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_reader_takes_the_embeddings_arrays_of_fadtks_layout(fadtk_layout_npz):
    from evalkit.statistics.stats_file import StatsFileError, read_stats_file

    path, arrays = fadtk_layout_npz
    found = read_stats_file(path, embedding="encodec-emb")
    assert (found.kind, found.model, found.identity, found.n) == ("fadtk", "encodec-emb", None, None)
    assert np.array_equal(found.mu, arrays["encodec-emb.mu"]) and np.array_equal(found.sigma, arrays["encodec-emb.cov"])
    with pytest.raises(StatsFileError, match=r"statistics of 3 embeddings \(clap-laion-music, encodec-emb, vggish\)"):
        read_stats_file(path)
    with pytest.raises(StatsFileError, match=r"no statistics for the panns-cnn14-32k embedding \(it has: "
                                             r"clap-laion-music, encodec-emb, vggish\)"):
        read_stats_file(path, embedding="panns-cnn14-32k")


def test_fadtk_name_without_fadtk_says_where_the_file_comes_from(monkeypatch):
    import importlib.util

    from evalkit.statistics.stats_file import StatsFileError, resolve_stats_path

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fadtk" else real(name, *a))
    with pytest.raises(StatsFileError, match=r"fadtk is not installed.*pip install --no-deps fadtk.*"
                                             r"fadtk/stats/fma_pop\.npz.*or pass that file's path"):
        resolve_stats_path("fadtk:fma_pop")


def _refusal(tmp, overrides):
    import tempfile

    from evalkit import evaluate

    with pytest.raises(SpecError) as info:
        evaluate(["model=folder", f"model.dir={tmp / 'gen'}", "metrics=[fad]", f"cache.dir={tmp / 'cache'}",
                  "progress=false", *overrides], out_dir=tempfile.mkdtemp(dir=tmp))
    return str(info.value)


def test_peer_statistics_are_refused_naming_what_differs_and_the_fix(encodec_run, fadtk_layout_npz):
    tmp, _ = encodec_run
    path, _ = fadtk_layout_npz
    msg = _refusal(tmp, [f"reference.stats={path}", "metrics.fad.protocol=encodec-emb", "backbone_weights=random",
                         "backbone_size=tiny"])
    assert "fadtk's statistics of encodec-emb were made with the released weights and fadtk's recipe" in msg
    assert "random weights (backbone_weights=random)" in msg and "model_size=tiny: use backbone_size=full" in msg
    msg = _refusal(tmp, [f"reference.stats={path}", "metrics.fad.protocol=audiocraft", "postprocess=none",
                         "backbone_weights=random", "backbone_size=tiny"])
    assert "protocol 'audiocraft' is not fadtk's recipe for vggish: set metrics.fad.protocol=vggish" in msg
    msg = _refusal(tmp, [f"reference.stats={path}", "metrics.fad.protocol=encodec-emb", "metrics.fad.stats=pooled",
                         "metrics.fad.embedding_dtype=float32", "backbone_weights=random", "backbone_size=tiny"])
    assert "metrics.fad.embedding_dtype='float32', fadtk's recipe 'float16'" in msg
    assert "metrics.fad.stats='pooled', fadtk's recipe 'online'" in msg
    msg = _refusal(tmp, [f"reference.stats={path}", "metrics.fad.protocol=panns-cnn14-32k", "backbone_weights=random",
                         "backbone_size=tiny"])
    assert "no statistics for the panns-cnn14-32k embedding" in msg


def test_peer_statistics_are_used_for_the_released_weights_and_fadtks_recipe(fadtk_layout_npz, monkeypatch):
    """With the released checkpoint (here: its identity, the weights drawn at random) and fadtk's recipe, the
    reference side is the file's own mu and cov, and the number is the Fréchet distance against them."""
    from evalkit.embeddings.base import Embedder
    from evalkit.embeddings.weights import Checkpoint
    from evalkit.metrics.base import Clip
    from evalkit.metrics.fad import FAD
    from evalkit.statistics.frechet import frechet_distance

    path, arrays = fadtk_layout_npz
    released = Checkpoint(name="encodec_24khz-d7cc33bc.th", path=None, sha256="d7cc33bc" + "0" * 56, random=False)
    monkeypatch.setattr(Embedder, "checkpoint", property(lambda self: released))
    recipe = metric_recipe("fad", ["metrics.fad.protocol=encodec-emb", "backbone_size=full",
                                   f"reference.stats={path}"])
    m = FAD(recipe)
    assert m.peer_differences("fadtk") == [] and not FAD.needs_reference_audio(recipe)
    clips = [Clip(f"c{i}", "", torch.from_numpy(np.random.default_rng(i).uniform(-0.3, 0.3, (1, 48000))
                                                 .astype(np.float32)), 24000, None, None) for i in range(3)]
    m.update(clips)
    out = m.compute()
    mu, sigma = m._stats("gen").mean_cov()
    assert out["fad"] == pytest.approx(frechet_distance(mu, sigma, arrays["encodec-emb.mu"], arrays["encodec-emb.cov"]),
                                       rel=1e-12)
    other = Checkpoint(name="mine.th", path=None, sha256="ab" * 32, random=False)
    monkeypatch.setattr(Embedder, "checkpoint", property(lambda self: other))
    assert FAD(dict(recipe, reference_stats=None)).peer_differences("fadtk") == [
        f"checkpoint mine.th (sha256 {'ab' * 32}) is not the released file (sha256 d7cc33bc...): leave "
        f"metrics.fad.checkpoint unset"]


def test_clap_windows_are_one_input_each():
    """fadtk's CLAP protocol hands the embedder [N, 480000] windows: one 512-d row per window (not one per clip)."""
    from evalkit.embeddings import build_embedder, embedder_conf

    e = build_embedder(dict(embedding="clap-laion-audio", embedder=embedder_conf("clap-laion-audio"),
                            backbone_weights="random", model_size="tiny"), "metrics.fad")
    x = torch.from_numpy(np.random.default_rng(0).uniform(-0.2, 0.2, (3, 480000)).astype(np.float32))
    rows = e.embed([x, x[1]])
    assert rows[0].shape == (3, 512) and rows[1].shape == (1, 512)
    assert np.allclose(rows[0][1], rows[1][0], atol=1e-6) and not np.allclose(rows[0][0], rows[0][1], atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# FAD and KAD on one embedding, from the command line
# ---------------------------------------------------------------------------------------------------------------
def _kadtk_kad(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """kadtk 1.1.0 ``calc_kernel_audio_distance(x=baseline, y=eval)`` written out (float64 here): bandwidth = the
    lower middle of ``torch.pdist(y)`` (``torch.median``), Gaussian kernel ``exp(-d² / (2 bw² + 1e-8))``, unbiased
    within-set means, the cross mean over all pairs, x100."""
    bw = float(torch.median(torch.pdist(torch.from_numpy(y.astype(np.float32)))))
    gamma = 1.0 / (2 * bw ** 2 + 1e-8)

    def k(a, b):
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-gamma * d2)

    x, y = x.astype(np.float64), y.astype(np.float64)
    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return 100.0 * (within - 2 * k(x, y).mean()), bw


@pytest.mark.slow
# clap-laion-audio is not run here: at backbone_size=tiny both CLAP embeddings build the same shrunken HTSAT (the
# tiny layout replaces the audio model's), so its run repeated clap-laion-music's ~5 minutes for nothing; its own
# layout is checked against fadtk's at full size (tests/test_fadtk_parity.py, reference environment)
@pytest.mark.parametrize("embedding, seconds", [("clap-laion-music", 45.0), ("encodec-emb", 11.5),
                                                ("panns-cnn14-32k", 6.5)])
def test_fad_and_kad_on_one_embedding_from_the_command_line(tmp_path, embedding, seconds):
    """``metrics=[fad,kad] metrics.fad.embedding=X metrics.kad.embedding=X`` as a user types it (tiny random
    weights; 44.1 kHz stereo against 48 kHz mono files): both metrics see the same window embeddings (computed once
    per clip side), FAD is the Fréchet distance of the saved arrays, KAD is kadtk's formula on them, and both land
    in evalkit's own table under the embedding's name. Windows: the audiocraft protocols' 1 s every 0.5 s, enough of
    them for the embedding's covariance."""
    import os
    import subprocess
    import sys

    from evalkit.report.rundir import load_run
    from evalkit.report.table import card_table, collect_runs
    from evalkit.statistics.frechet import frechet_distance
    from tests.conftest import REPO

    for folder, sr, ch, gain in (("gen", 44100, 2, 0.5), ("ref", 48000, 1, 0.9)):
        (tmp_path / folder).mkdir()
        for i in range(6):
            rng = np.random.default_rng(i + (100 if folder == "gen" else 0))
            t = np.arange(int(sr * seconds)) / sr
            x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) for _ in range(3))
            x = gain * (x + 0.05 * rng.standard_normal(t.size)) * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(.2, 2) * t))
            sf.write(str(tmp_path / folder / f"c{i:02d}.wav"), np.stack([x] * ch, 1) / 2, sr, subtype="PCM_16")
    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", EVALKIT_OFFLINE="1", PYTHONPATH=str(REPO),
               EVALKIT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "model=folder", f"model.dir={tmp_path / 'gen'}",
         f"reference.dir={tmp_path / 'ref'}", "metrics=[fad,kad]", f"metrics.fad.embedding={embedding}",
         f"metrics.kad.embedding={embedding}", "metrics.kad.precision=float64", "backbone_weights=random",
         "backbone_size=tiny",
         f"hydra.run.dir={out}", "progress=false"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"FAD ({embedding})" in proc.stdout and f"KAD ({embedding})" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    run = load_run(out)
    emb = {side: run.clip_arrays(f"fad_{side}_emb") for side in ("gen", "ref")}
    for side in ("gen", "ref"):
        kept = run.clip_arrays(f"kad_{side}_emb")
        assert sorted(kept) == sorted(emb[side]) == [f"c{i:02d}" for i in range(6)]
        assert all(np.array_equal(kept[k], emb[side][k]) for k in kept)  # the same embeddings
    g, r = (np.concatenate([emb[s][k] for k in sorted(emb[s])]).astype(np.float64) for s in ("gen", "ref"))
    per_window = 75 if embedding == "encodec-emb" else 1  # EnCodec: ceil(24000 / 320) frames per 1 s window
    windows = 6 * (1 + int((seconds - 1.0) / 0.5))
    assert g.shape[0] == r.shape[0] == windows * per_window > g.shape[1]
    fad = summary["metrics"]["fad"]
    assert (fad["embedding"], fad["protocol"]) == (embedding, "audiocraft")
    want = frechet_distance(g.mean(0), np.cov(g, rowvar=False), r.mean(0), np.cov(r, rowvar=False))
    assert fad["value"] == pytest.approx(want, rel=1e-9) and fad["value"] > 0
    kad = summary["metrics"]["kad"]
    value, bw = _kadtk_kad(r, g)
    # float64 (kadtk's precision=torch.float64): in float32 (the protocol's default) both tools form d² as
    # ‖a‖² + ‖b‖² − 2a·b, and on tiny random PANNs embeddings that cancellation put evalkit's float32 KAD at 1.237
    # against 1.086 in float64 (measured); with float64 the written-out form and evalkit's blocked sums agree
    assert kad["value"] == pytest.approx(value, rel=1e-6) and kad["values"]["bandwidth"] == pytest.approx(bw)
    assert abs(kad["value"]) > 1e-3  # the two sets differ visibly
    own = card_table(collect_runs([out], ci=False)).attrs["sections"]["beyond-the-card"]
    assert own.loc[own.index[0], f"FAD ({embedding})"] == pytest.approx(fad["value"])
    assert own.loc[own.index[0], f"KAD ({embedding})"] == pytest.approx(kad["value"])
