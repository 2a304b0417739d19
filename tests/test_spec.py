"""RunSpec: built once from the config, frozen, validated; protocols are config groups whose every constant can be
overridden (null too); the recipe a metric gets is the file's constants plus the run settings, nothing unused."""
from __future__ import annotations

import dataclasses

import pytest

import evalkit.metrics.base as base
from evalkit.data.references import synth_clip
from evalkit.metrics.base import Clip
from evalkit.registry import get_metric
from evalkit.spec import RunSpec, SpecError, compose, metric_recipe, recipe_from_files, rewrite_overrides

PROTOCOLS = [("fad", "audiocraft"), ("fad", "frechet-audio-distance"), ("fad", "clap-laion-audio"),
             ("fad", "clap-laion-music"), ("fad", "encodec-emb"), ("fad", "vggish"), ("fad", "panns-cnn14-32k"),
             ("kld", "audiocraft"), ("kld", "stable-audio-metrics"), ("clap", "audiocraft"), ("chroma", "audiocraft"),
             ("aesthetics", "audiobox-aesthetics"), ("mauve", "mauve-text"),
             ("fad", "stable-audio-metrics"), ("clap", "stable-audio-metrics"),
             ("fd_openl3", "stable-audio-metrics"), ("kl_passt", "stable-audio-metrics"),
             ("clap_score", "stable-audio-metrics")]


@pytest.fixture(scope="module")
def demo() -> RunSpec:
    return RunSpec.from_overrides([])


def test_protocol_override_swaps_every_constant_not_just_the_label():
    assert rewrite_overrides(["metrics.fad.protocol=frechet-audio-distance", "seed=1", "+metrics.x.protocol=y"]) == [
        "metrics/fad=frechet-audio-distance", "seed=1", "+metrics.x.protocol=y"]
    ac = metric_recipe("fad")
    pk = metric_recipe("fad", ["metrics.fad.protocol=frechet-audio-distance"])
    assert (ac["protocol"], ac["embedding"], ac["hop_s"], ac["fd_eps"]) == ("audiocraft", "vggish", 0.5, 1e-7)
    assert ac["input"]["generated"][1] == {"loudness": {"lufs": -14.0, "energy_floor": 0.002}}  # the solver's
    assert ac["input"]["both"] == [{"resample": {"rate": 32000, "with": "julius"}}, {"crop": "reference"},
                                   {"resample": {"rate": "embedder", "with": "julius"}}, {"channels": 1},
                                   {"peak": -1.0}, {"write_int16": "audiocraft"}, {"max_normalize": 0.1}]
    assert (pk["protocol"], pk["embedding"], pk["hop_s"], pk["fd_eps"]) == ("frechet-audio-distance", "vggish", None,
                                                                           1e-6)
    assert pk["input"] == {"reference": [], "generated": [], "both": [
        {"channels": 1}, {"resample": {"rate": "embedder", "with": "resampy"}}]}  # no post-processing of its own
    sam = metric_recipe("kld", ["metrics/kld=stable-audio-metrics"])  # the group syntax works as well
    assert (sam["direction"], sam["embedder"]["input_tdim"], sam["collect"]) == ("generated_reference", 998,
                                                                                "mean_logits")
    assert sam["input"]["both"][-1] == {"peak": {"dbfs": -1.0, "gain": "pyloudnorm"}} and sam["input"]["generated"] == []


def test_any_constant_overrides_to_null_and_config_shows_effective_values(demo):
    spec = RunSpec.from_overrides(["metrics.fad.checkpoint_sha256=null", "metrics.kld.pad_chunks=true",
                                   "metrics.fad.hop_s=0.25", "+metrics.fad.embedder.log_offset=0.001"])
    assert spec.metrics["fad"]["checkpoint_sha256"] is None and demo.metrics["fad"]["checkpoint_sha256"] == "pinned"
    assert spec.metrics["kld"]["pad_chunks"] is True and spec.metrics["fad"]["hop_s"] == 0.25
    saved = spec.to_dict()  # config.yaml: every protocol constant at metrics.<m>.<key>, interpolations resolved
    assert saved["metrics"]["fad"]["embedder"]["stft_window"] == 400 and saved["metrics"]["fad"]["model_size"] == "tiny"
    assert saved["metrics"]["fad"]["embedder"]["log_offset"] == 0.001  # the embedding's constant, overridden
    assert saved["metrics"]["fad"]["embedder"]["checkpoint_sha256"] == "10086976"  # what `pinned` pins
    assert saved["metrics"]["fad"]["input"]["reference"] == [{"resample": {"rate": 32000, "with": "julius"}},
                                                             {"channels": "model"}]  # ${postprocess...} resolved
    assert saved["metrics"]["fad"]["backbone_weights"] == "random" and "protocols" not in saved["metrics"]["fad"]
    assert spec.identity_diff(demo.to_dict()) == ["metrics.fad.checkpoint_sha256", "metrics.fad.embedder.log_offset",
                                                  "metrics.fad.hop_s", "metrics.kld.pad_chunks"]
    assert RunSpec.from_dict(saved) == spec  # a saved config.yaml rebuilds the same spec


def test_spec_is_frozen_and_identity_ignores_volatile_keys(demo):
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo.seed = 3
    with pytest.raises(TypeError):
        demo.metrics["fad"]["hop_s"] = 1
    with pytest.raises(TypeError):
        demo.generation["top_k"] = 1
    other = RunSpec.from_overrides(["progress=false", "device=cpu", "num_workers=3", "overwrite=true"])
    assert other.identity() == demo.identity() and other.to_dict() != demo.to_dict()
    assert RunSpec.from_overrides(["seed=5"]).identity_diff(demo.to_dict()) == ["seed"]


@pytest.mark.parametrize("override, setting", [
    ("generation.duration=0", "generation.duration=0"), ("generation.top_p=1.5", "generation.top_p=1.5"),
    ("batch_size=0", "batch_size=0"), ("metric_batch_size=0", "metric_batch_size=0"),
    ("precision=fp8", "precision=fp8"), ("backbone_weights=maybe", "backbone_weights=maybe"),
    ("generation.guidance_scale=0.5", "generation.guidance_scale=0.5"),
])
def test_validation_names_the_setting(override, setting):
    with pytest.raises(SpecError, match=setting.replace(".", r"\.")):
        RunSpec.from_overrides([override])


def test_a_protocol_label_edited_by_hand_is_refused():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from evalkit.spec import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):  # no rewrite: a plain value override
        cfg = hydra_compose("config", overrides=["metrics.fad.protocol=frechet-audio-distance"], return_hydra_config=True)
    with pytest.raises(SpecError, match="constants are those of conf/metrics/fad/audiocraft.yaml"):
        RunSpec.from_config(cfg)
    with pytest.raises(SpecError, match="unknown settings"):
        RunSpec.from_dict({**RunSpec.from_overrides([]).to_dict(), "sed": 1})


@pytest.mark.parametrize("name, protocol", PROTOCOLS)
def test_recipe_from_files_equals_the_composed_recipe(name, protocol):
    composed = metric_recipe(name, [f"metrics.{name}.protocol={protocol}", "backbone_weights=released",
                                    "backbone_size=full"])
    assert recipe_from_files(name, protocol) == composed


class _Tracked(dict):
    seen: set = set()

    def __getitem__(self, k):
        _Tracked.seen.add(k)
        return super().__getitem__(k)

    def get(self, k, d=None):
        _Tracked.seen.add(k)
        return super().get(k, d)

    def __contains__(self, k):
        _Tracked.seen.add(k)
        return super().__contains__(k)


class _TrackedEmbedder(_Tracked):
    seen: set = set()

    def __getitem__(self, k):
        _TrackedEmbedder.seen.add(k)
        return dict.__getitem__(self, k)

    def get(self, k, d=None):
        _TrackedEmbedder.seen.add(k)
        return dict.get(self, k, d)

    def __contains__(self, k):
        _TrackedEmbedder.seen.add(k)
        return dict.__contains__(self, k)


#: read only on the released-weights path (a checkpoint file to download, unpickle or tokenise for), which random
#: weights do not take
RELEASED_PATH_ONLY = {"checkpoint_url", "drop_state_keys", "trust_checkpoint", "tokenizer_name", "checkpoint_sha256",
                      "checkpoint_file", "hub", "module"}


@pytest.mark.parametrize("name, protocol", PROTOCOLS)
def test_every_recipe_key_is_read(name, protocol, monkeypatch):
    """Keys that do nothing are removed: building, updating, computing and describing a metric reads every key of
    its recipe (the released-weights-only keys aside)."""
    from evalkit.embeddings.base import Embedder

    init, emb_init = base.Metric.__init__, Embedder.__init__

    def tracked_init(self, recipe, device="cpu", context=None):
        init(self, recipe, device, context)
        self.recipe = _Tracked(self.recipe)

    def tracked_embedder(self, config, *args, **kwargs):
        emb_init(self, _TrackedEmbedder(config), *args, **kwargs)

    monkeypatch.setattr(base.Metric, "__init__", tracked_init)
    monkeypatch.setattr(Embedder, "__init__", tracked_embedder)
    _Tracked.seen, _TrackedEmbedder.seen = set(), set()
    recipe = metric_recipe(name, [f"metrics.{name}.protocol={protocol}", "backbone_weights=random",
                                  "backbone_size=tiny"])
    m = get_metric(name)(recipe)
    clips = [Clip(f"c{i}", "a piano chord", synth_clip(f"c{i}", 32000, 10.0), 32000, synth_clip(f"r{i}", 32000, 10.0),
                  32000) for i in range(14 if name == "fad" else 2)]  # FAD: >= 128 windows with either protocol
    m.update(clips)
    try:
        m.compute()
    except ValueError:
        pass
    m.describe()
    # `embedding: null` (chroma, stereo: no network) is read by the spec when it resolves the recipe, not the metric
    unread_ok = RELEASED_PATH_ONLY | ({"embedding"} if not recipe["embedding"] else set())
    assert sorted(set(recipe) - _Tracked.seen - unread_ok) == []
    assert sorted(set(recipe.get("embedder") or {}) - _TrackedEmbedder.seen - RELEASED_PATH_ONLY) == []


def test_compose_outside_and_inside_hydra(demo):
    cfg = compose(["model=tiny-mono"])
    assert cfg.model.name == "tiny-mono" and "metrics/fad" in cfg.hydra.runtime.choices
    assert RunSpec.from_config(cfg).model["channels"] == 1
    assert demo.melody_source == "none" and RunSpec.from_overrides(["model=tiny-melody"]).melody_source == "reference"


@pytest.mark.parametrize("override, message", [
    ("+metrics.kld.pad_chunk=true", r"metrics\.kld\.pad_chunk: not a setting of metrics\.kld, so it would do nothing "
                                    r"\(did you mean metrics\.kld\.pad_chunks\?\)"),
    ("+generation.topk=50", r"generation\.topk: .*did you mean generation\.top_k\?"),
    ("metrics.kld.pad_chunk=true", r"metrics\.kld\.pad_chunk: no such setting \(did you mean metrics\.kld\.pad_chunks\?\)"),
    ("metrics=[fadd]", r"metrics=fadd: no such choice; known: aesthetics, chroma, clap, clap_score, fad, fd_openl3, "
                       r"kad, kl_passt, kld, mauve, stable-audio-metrics, stereo"),
    ("metrics.fad.protocol=fad-package", r"metrics/fad=fad-package: no such choice; known: audiocraft, "
                                         r"clap-laion-audio, clap-laion-music, encodec-emb, frechet-audio-distance, "
                                         r"panns-cnn14-32k, stable-audio-metrics, vggish"),
    ("generation.guidance_scale=abc", r"generation\.guidance_scale=abc: not a number"),
    ("backbone_size=small", r"backbone_size=small: full or tiny"),
    ("audit.silent_below_dbfs=abc", r"audit\.silent_below_dbfs=abc: not a number"),
])
def test_a_key_that_does_nothing_and_a_typo_are_named_errors(override, message):
    """Hydra's own advice for a typo (`+key=value`) would record a key no code reads: refused, with the nearest key."""
    with pytest.raises(SpecError, match=message):
        RunSpec.from_overrides([override])
