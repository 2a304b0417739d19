"""KAD through the run as a user types it: on an embedder that exists only in this test (kadtk's audio path, files
at other rates, channels and loudness), embeddings shared with FAD, the report's interval, KAD∞, own table and
compare; and a sharded run and a killed-and-resumed run giving the one-process number bit for bit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from evalkit import evaluate
from evalkit.embeddings import register_embedder
from evalkit.embeddings.base import Backbone, Embedder
from evalkit.metrics.kad import TorchPdist
from evalkit.statistics import kernel as K

REPO = Path(__file__).resolve().parents[1]
TOY_CONF = {"sample_rate": 16000, "dim": 6, "band_hz": 8000.0, "frame": 400, "hop": 200, "bands": 12,
            "checkpoint_file": None, "checkpoint_url": None, "checkpoint_sha256": None}


class ToyBackbone(Backbone):
    name = "toy-kad"

    def build(self) -> torch.nn.Module:
        return torch.nn.Linear(12, 6)

    def load_weights(self, module, state, setting) -> None:
        module.load_state_dict(state)


def toy_features(x: torch.Tensor) -> torch.Tensor:
    """``[T]`` -> ``[frames, 12]``: log mean magnitude of 12 linear bands of 400-sample Hann frames every 200."""
    spec = torch.fft.rfft(x.double().unfold(-1, 400, 200) * torch.hann_window(400, dtype=torch.float64)).abs()
    edges = np.linspace(0, spec.shape[-1], 13).astype(int)
    return torch.log(torch.stack([spec[:, a:b].mean(-1) for a, b in zip(edges[:-1], edges[1:])], -1) + 1e-6).float()


@register_embedder("toy-kad", conf=TOY_CONF)
class ToyKadEmbedder(Embedder):
    def backbone(self) -> Backbone:
        return ToyBackbone("full", self.weights.seed)

    def embed(self, items):
        with torch.no_grad():
            return [self.network(toy_features(x.reshape(-1))).numpy() for x in items]


def write_clips(folder: Path, seeds, sr: int, channels: int, seconds: float, gain: float) -> None:
    folder.mkdir(parents=True)
    for s in seeds:
        rng = np.random.default_rng(s)
        t = np.arange(int(sr * seconds)) / sr
        x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) for _ in range(3))
        x = gain * (x + 0.05 * rng.standard_normal(t.size))
        sf.write(str(folder / f"c{s % 100:02d}.wav"), np.stack([x] * channels, 1), sr, subtype="PCM_16")


def kadtk_audio(path: Path) -> torch.Tensor:
    """kadtk's EmbeddingLoader.load_audio written out (its torchaudio.load/save need torchcodec here): the channel
    mean, torchaudio's Kaiser Resample to 16 kHz, a 16-bit wav (round(x·32768), saturated) read as int16 / 32768."""
    import torchaudio

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = torch.mean(torch.from_numpy(data.T.copy()), 0).unsqueeze(0)
    if sr != 16000:
        x = torchaudio.transforms.Resample(sr, 16000, lowpass_filter_width=64, rolloff=0.9475937167399596,
                                           resampling_method="sinc_interp_kaiser", beta=14.769656459379492)(x)
    return torch.round(x * 32768).clamp(-32768, 32767)[0].double() / 32768.0


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kad-toy")
    write_clips(tmp / "gen", range(100, 108), 44100, 2, 2.0, 0.5)
    write_clips(tmp / "ref", range(0, 8), 48000, 1, 2.5, 0.9)
    out = tmp / "run"
    summary = evaluate(["model=folder", f"model.dir={tmp / 'gen'}", f"reference.dir={tmp / 'ref'}", "metrics=[kad]",
                        "metrics/kad=kadtk", "metrics.kad.embedding=toy-kad", "backbone_weights=random",
                        f"cache.dir={tmp / 'cache'}", "progress=false"], out_dir=out)
    return tmp, out, summary


def toy_embeddings(folder: Path) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    net = torch.nn.Linear(12, 6)  # the seeded random weights Backbone.load draws
    with torch.no_grad():
        return {f.stem: net(toy_features(kadtk_audio(f))).numpy().astype(np.float16).astype(np.float32)
                for f in sorted(folder.glob("*.wav"))}


def test_kad_on_an_embedder_that_lives_in_a_test(toy_run):
    """The number is kadtk's KAD of the toy's embeddings of the files taken through kadtk's own audio path (float16
    embeddings), recomputed here from the audio; per clip, kadtk's score_individual."""
    tmp, out, summary = toy_run
    entry = summary["metrics"]["kad"]
    assert entry["embedding"] == "toy-kad" and entry["random_weights"] is True and entry["protocol"] == "kadtk"
    gen, ref = toy_embeddings(tmp / "gen"), toy_embeddings(tmp / "ref")
    x, y = np.concatenate(list(ref.values())), np.concatenate(list(gen.values()))
    want = K.kad(x, y, distances=TorchPdist())
    assert entry["values"]["bandwidth"] == want.bandwidth == torch.median(torch.pdist(torch.from_numpy(y))).item()
    assert entry["value"] == pytest.approx(want.value, rel=1e-6)
    assert entry["values"]["n_gen_windows"] == y.shape[0] == 8 * (1 + (32000 - 400) // 200)
    clips = pd.read_parquet(out / "clips.parquet").set_index("id")
    for cid, e in gen.items():
        alone = K.kad(x, e, distances=TorchPdist())
        assert clips.loc[cid, "kad_bandwidth"] == alone.bandwidth
        assert clips.loc[cid, "kad"] == pytest.approx(alone.value, abs=1e-5)
    assert entry["spec"]["section"] == "beyond-the-card" and entry["spec"]["higher_is_better"] is False


def test_interval_infinity_table_and_compare_from_the_run_folder(toy_run, tmp_path):
    from evalkit.report import bootstrap as bs
    from evalkit.report.compare import compare_summaries
    from evalkit.report.rundir import load_run
    from evalkit.report.table import card_table, collect_runs, to_markdown

    tmp, out, summary = toy_run
    run = load_run(out)
    assert sorted(run.clip_arrays("kad_gen_emb")) == [f"c{i:02d}" for i in range(8)]
    iv = bs.metric_interval(run, "kad", n_boot=200)
    assert iv.value == pytest.approx(summary["metrics"]["kad"]["value"], rel=1e-6)
    assert iv.low < iv.value < iv.high and "bandwidth fixed" in iv.method
    assert bs.infinity_metrics(run) == ["kad"] and bs.frechet_metrics(run) == []
    inf = bs.run_infinity(run, "kad", steps=4, min_n=100)
    assert [p[0] for p in inf.points] == [int(v) for v in np.linspace(100, 8 * 159, 4)] and np.isfinite(inf.score)
    table = card_table(collect_runs([run], n_boot=100))
    own = table.attrs["sections"]["beyond-the-card"]  # evalkit's own table, not a card column
    col = "KAD (toy-kad)"  # KAD on another embedding than VGGish names it
    assert own[col].iloc[0] == pytest.approx(summary["metrics"]["kad"]["value"])
    assert own[f"{col} CI low"].iloc[0] < own[col].iloc[0] < own[f"{col} CI high"].iloc[0]
    assert f"| {col} ↓ |" in to_markdown(table)  # lower is better
    worse = json.loads(json.dumps(summary))
    worse["metrics"]["kad"]["value"] *= 1.2
    rows = {r.metric: r for r in compare_summaries(summary, worse).rows}
    assert rows["kad"].verdict == "regressed" and str(rows["kad"].tolerance) in ("5%", "5.0%")


def test_the_report_command_extrapolates_kad(toy_run, tmp_path, capsys):
    from evalkit.report.__main__ import main

    _, out, _ = toy_run
    assert main([str(out), "--out", str(tmp_path / "rep"), "--n-boot", "50", "--no-plots", "--inf", "--inf-steps",
                 "3", "--inf-min-n", "100"]) == 0
    printed = capsys.readouterr().out
    assert "### KAD∞ (kadtk score_inf" in printed and "### FAD∞" not in printed
    (points,) = json.loads((tmp_path / "rep" / "inf.json").read_text()).values()  # {run label: {metric: ...}}
    assert set(points) == {"kad"} and len(points["kad"]["points"]) == 3
    assert not (tmp_path / "rep" / "fad_inf.json").exists()


def test_fad_and_kad_embed_each_clip_side_once(tmp_path, monkeypatch):
    """metrics=[fad,kad] with the card's protocols: VGGish runs once per clip side, and both keep the same vectors;
    with KAD on kadtk's path (another input path) each metric embeds its own."""
    from evalkit.embeddings.vggish import VGGishEmbedder

    write_clips(tmp_path / "gen", range(100, 104), 32000, 1, 2.0, 0.5)
    write_clips(tmp_path / "ref", range(0, 4), 32000, 1, 2.0, 0.7)
    seen = []
    original = VGGishEmbedder.embed
    monkeypatch.setattr(VGGishEmbedder, "embed", lambda self, items: seen.extend(items) or original(self, items))
    common = ["model=folder", f"model.dir={tmp_path / 'gen'}", f"reference.dir={tmp_path / 'ref'}",
              "backbone_weights=random", "backbone_size=tiny", "cache.scores=false", "progress=false"]
    evaluate([*common, "metrics=[fad,kad]"], out_dir=tmp_path / "both")
    assert len(seen) == 8  # 4 clips x 2 sides, once
    from evalkit.report.rundir import load_run

    run = load_run(tmp_path / "both")
    for side in ("gen", "ref"):
        fad, kad = run.clip_arrays(f"fad_{side}_emb"), run.clip_arrays(f"kad_{side}_emb")
        assert sorted(fad) == sorted(kad) and all(np.array_equal(fad[c], kad[c]) for c in fad)
    from evalkit.report.table import card_table, collect_runs, to_markdown

    md = to_markdown(card_table(collect_runs([run], n_boot=20)))
    assert "| KAD ↓ |" in md and "| kad ↓ |" not in md  # its column is titled as papers write it
    seen.clear()
    evaluate([*common, "metrics=[fad,kad]", "metrics/kad=kadtk"], out_dir=tmp_path / "apart")
    assert len(seen) == 16


@pytest.mark.parametrize("embedding", ["vggish", "panns-cnn14-32k", "encodec-emb", "clap-laion-music",
                                       "openl3-mel256-music"])
def test_every_distance_runs_an_embedding_at_its_own_batch_size(embedding):
    """FAD, KAD and MAUVE on one embedding give it the same inputs per forward pass: the embedding's own default
    (PANNs and EnCodec one file per pass on a CPU, as fadtk and kadtk run them) unless the user sets one. A batched
    pass moves float16 embeddings one step from the tools' (KAD's conf once set 128 for every embedding, so
    `metrics=[kad] metrics/kad=panns-cnn14-32k` alone stopped equalling kadtk while `[fad,kad]` did)."""
    from evalkit.embeddings import build_embedder
    from evalkit.spec import metric_recipe

    sizes = {}
    for metric in ("fad", "kad", "mauve"):
        recipe = metric_recipe(metric, [f"metrics.{metric}.embedding={embedding}", "backbone_weights=random",
                                        "backbone_size=tiny"])
        assert recipe["batch_size"] is None, (metric, recipe["batch_size"])
        sizes[metric] = build_embedder(recipe, f"metrics.{metric}").batch_size
    own = {"vggish": 128, "panns-cnn14-32k": 1, "encodec-emb": 1, "clap-laion-music": 8, "openl3-mel256-music": 32}
    assert sizes == dict.fromkeys(sizes, own[embedding])
    recipe = metric_recipe("kad", [f"metrics.kad.embedding={embedding}", "metrics.kad.batch_size=3",
                                   "backbone_weights=random", "backbone_size=tiny"])
    assert build_embedder(recipe, "metrics.kad").batch_size == 3  # the user's setting still wins


def test_kad_alone_on_panns_embeds_as_fad_alone(tmp_path):
    """`metrics=[kad] metrics/kad=panns-cnn14-32k` and `metrics=[fad] metrics/fad=panns-cnn14-32k` (each alone, so
    nothing is shared) keep bit-identical embeddings of equal-length files, at full size (Cnn14's 80 M parameters, random
    weights): a batched pass over them moves float32 values (and, with trained weights, float16 ones one step), as
    KAD's old default of 128 inputs per pass did."""
    from evalkit.report.rundir import load_run

    write_clips(tmp_path / "gen", range(100, 106), 32000, 1, 1.5, 0.5)
    write_clips(tmp_path / "ref", range(0, 6), 44100, 2, 1.5, 0.7)
    common = ["model=folder", f"model.dir={tmp_path / 'gen'}", f"reference.dir={tmp_path / 'ref'}",
              "backbone_weights=random", "backbone_size=full", "cache.scores=false", "progress=false"]
    # float32 embeddings: random weights give small outputs whose float16 roundings hide the batching (measured:
    # 1 vs 6 files per pass differ in ~600 of 2048 float32 values, by <= 6e-9)
    evaluate([*common, "metrics=[kad]", "metrics/kad=panns-cnn14-32k", "metrics.kad.embedding_dtype=float32"],
             out_dir=tmp_path / "kad")
    evaluate([*common, "metrics=[fad]", "metrics/fad=panns-cnn14-32k", "metrics.fad.embedding_dtype=float32"],
             out_dir=tmp_path / "fad")
    kad, fad = load_run(tmp_path / "kad"), load_run(tmp_path / "fad")
    for side in ("gen", "ref"):
        a, b = kad.clip_arrays(f"kad_{side}_emb"), fad.clip_arrays(f"fad_{side}_emb")
        assert sorted(a) == sorted(b) and len(a) == 6
        assert all(np.array_equal(a[c], b[c]) for c in a), side


def test_kad_audiocraft_protocol_has_fads_input_path():
    from evalkit.spec import recipe_from_files

    fad, kad = recipe_from_files("fad", "audiocraft"), recipe_from_files("kad", "audiocraft")
    for key in ("input", "window_s", "hop_s", "window_pad", "embedding", "embedder"):
        assert kad[key] == fad[key], key


# -- shards and resume ------------------------------------------------------------------------------------------------
ARGS = ["generation.duration=2.0", "dataset.limit=4", "batch_size=2", "metric_batch_size=1", "metrics=[kad]",
        "progress=false", "cache.generations=false", "cache.scores=false"]


def launch(out: Path, kill_at: str | None = None, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("EVALKIT_KILL_AT", None)
    if kill_at:
        env["EVALKIT_KILL_AT"] = kill_at
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] \
        if nproc > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "evalkit", *ARGS, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def kad_outputs(out: Path):
    s = json.loads((out / "summary.json").read_text())["metrics"]["kad"]
    clips = pd.read_parquet(out / "clips.parquet").set_index("id").sort_index()
    return s["values"], clips[["kad", "kad_bandwidth", "kad_windows", "kad_ref_windows"]]


@pytest.mark.slow
def test_kad_killed_mid_scoring_then_resumed_and_two_ranks_equal_one_process(tmp_path):
    """KAD is computed at the end from the kept arrays, not from sums: a run SIGKILLed after a batch's rows (before
    its state is saved) and resumed, and a run on 2 ranks (torchrun, gloo), give the one-process values and per-clip
    columns bit for bit."""
    p = launch(tmp_path / "one")
    assert p.returncode == 0, p.stderr[-3000:]
    one_values, one_clips = kad_outputs(tmp_path / "one")
    assert one_values["n_gen_windows"] == 4 * 3 and np.isfinite(one_clips["kad"]).all()

    p = launch(tmp_path / "killed", "score:rows:3")
    assert p.returncode == -9, p.stderr[-2000:]
    assert not (tmp_path / "killed" / "summary.json").exists()
    p = launch(tmp_path / "killed")
    assert p.returncode == 0, p.stderr[-3000:]
    values, clips = kad_outputs(tmp_path / "killed")
    assert values == one_values
    pd.testing.assert_frame_equal(clips, one_clips, check_exact=True)

    p = launch(tmp_path / "two", nproc=2)
    assert p.returncode == 0, p.stderr[-3000:]
    values, clips = kad_outputs(tmp_path / "two")
    assert values == one_values
    pd.testing.assert_frame_equal(clips, one_clips, check_exact=True)
    assert len(list((tmp_path / "two" / "embeddings").glob("batch-*.npz"))) == 4  # each rank wrote its own batches
