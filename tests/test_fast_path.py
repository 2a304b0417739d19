"""The generation fast path: static KV cache gives the eager path's samples for the same seed; batch_size=auto
backs off on out-of-memory and is kept for a resumed run."""
import json

import pytest
import torch

from evalkit.data.prompts import Prompt
from evalkit.generate.musicgen import MusicGenGenerator
from tests.test_generate import GEN, PROMPTS


@pytest.mark.parametrize("sampling", [False, True])
def test_static_cache_matches_eager(sampling):
    cfg = {**GEN, "duration": 1.0, "use_sampling": sampling}
    eager = MusicGenGenerator({"name": "t", "tiny": "tiny-stereo"}, cfg, device="cpu", batch_size=2)
    static = MusicGenGenerator({"name": "t", "tiny": "tiny-stereo"}, {**cfg, "cache_implementation": "static"}, device="cpu", batch_size=2)
    b2 = static.generate_batch(static.plan(PROMPTS)[0])  # a second call reuses (resets) the same cache
    del b2
    assert static._sampling_kwargs()["cache_implementation"] == "static"
    (batch,) = eager.plan(PROMPTS)
    a, b = eager.generate_batch(batch), static.generate_batch(batch)
    for x, y in zip(a, b):
        assert torch.equal(x.audio, y.audio)
    # and the static cache really was the one written (transformers alone silently keeps a DynamicCache)
    from transformers import StaticCache

    (cache,) = static.model._evalkit_static["caches"].values()
    assert isinstance(cache.self_attention_cache, StaticCache)
    assert any(float(layer.keys.abs().sum()) > 0 for layer in cache.self_attention_cache.layers)
    assert "_evalkit_static" not in vars(eager.model)


def test_auto_batch_size_backs_off_on_oom(monkeypatch):
    g = MusicGenGenerator({"name": "t", "tiny": "tiny-mono"}, {**GEN, "duration": 0.2}, device="cpu", batch_size="auto")
    real = g.generate_batch
    seen = []

    def fake(batch, melodies=None, max_new_tokens=None):
        seen.append(len(batch.prompts))
        if len(batch.prompts) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch, melodies, max_new_tokens=max_new_tokens)

    monkeypatch.setattr(g, "generate_batch", fake)
    prompts = [Prompt(f"p{i}", f"caption number {i}") for i in range(20)]
    assert g.find_batch_size(prompts, start=32) == 4
    assert seen == [16, 8, 4]
    assert [len(b.prompts) for b in g.plan(prompts)] == [4] * 5


def test_auto_batch_size_is_recorded_and_reused(tmp_path):
    from hydra import compose, initialize_config_dir

    from tests.test_run import CONF
    from evalkit.run import run

    with initialize_config_dir(config_dir=CONF, version_base=None):
        c = compose("config", overrides=["generation.duration=0.2", "dataset.limit=3", "batch_size=auto", "metrics=[]", "progress=false"])
    run(c, tmp_path)
    plan = json.loads((tmp_path / "generation" / "plan.json").read_text())
    assert plan["batch_size"] == 2  # 3 prompts -> largest power of two <= 3 that fits
    (tmp_path / "generation" / "plan.json").write_text(json.dumps({"batch_size": 1}))
    for f in (tmp_path / "generation").glob("batch-*.json"):
        f.unlink()
    run(c, tmp_path)  # resumed: keeps the recorded batch size
    assert len(list((tmp_path / "generation").glob("batch-*.json"))) == 3
