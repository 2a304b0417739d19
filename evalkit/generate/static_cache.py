"""A real static KV cache (and optionally a compiled / CUDA-graph decode step) for transformers' MusicGen.

transformers 5.24's ``MusicgenForConditionalGeneration.generate`` ignores ``cache_implementation="static"``: it never
prepares a cache, so the decoder builds a ``DynamicCache`` that grows with ``torch.cat`` every step. Passing a cache
object in hits a second quirk: ``generate`` runs the prefill itself and ``_sample`` runs it again, writing the first
frame twice. :func:`install_static_cache` patches one model object so that ``generate(..., cache_implementation=
"static")`` decodes with ``EncoderDecoderCache(StaticCache, StaticCache)``, reused across calls of the same shape,
with the prefill run once. Same samples as the eager path for the same seed (tests/test_fast_path.py asserts both
the equality and that a StaticCache was written).
"""
from __future__ import annotations

import types
from typing import Any


def install_static_cache(model, *, compile: bool, compile_mode: str = "reduce-overhead", all_devices: bool = False) -> None:
    """Make ``model.generate(..., cache_implementation="static")`` really decode with a static KV cache (and, on
    CUDA with ``compile``, a compiled / CUDA-graph decode step). Patches this model object only.

    * builds ``EncoderDecoderCache(StaticCache(max_new_tokens + 1), StaticCache(text length))``, reused (reset, same
      tensor addresses, so captured CUDA graphs stay valid) while batch, length and text length stay the same;
    * runs the prefill once: ``MusicgenForConditionalGeneration.generate`` calls ``_prefill`` and then ``_sample``
      calls it again; the second call gets the first call's outputs;
    * ``compile`` -> ``compile_config=CompileConfig(mode=compile_mode)``; otherwise ``disable_compile=True`` (on
      CUDA transformers compiles any static-cache decode by default; ``all_devices`` compiles on the CPU too, to
      test the compiled path without a GPU). Calling it again changes these settings.
    Same samples as the eager path for the same seed (tested on CPU, greedy and sampling, with CFG and padding)."""
    if hasattr(model, "_evalkit_static"):
        model._evalkit_static.update(compile=compile, compile_mode=compile_mode, all_devices=all_devices)
        return
    import inspect

    original_generate = model.generate
    original_prefill = model._prefill  # transformers >= 5.x (the project pins 5.24)
    # the cache keyword: ``cache`` (transformers 5.2x; ``past_key_values`` is deprecated) or ``past_key_values``
    cache_kw = "cache" if "cache" in inspect.signature(model.decoder.forward).parameters else "past_key_values"
    state: dict[str, Any] = {"compile": compile, "compile_mode": compile_mode, "all_devices": all_devices, "caches": {}}

    def _prefill(self, input_ids, generation_config, model_kwargs, is_first_iteration=True):
        if "prefill" in state:
            return state.pop("prefill")
        out = original_prefill(input_ids, generation_config, model_kwargs, is_first_iteration=is_first_iteration)
        if state.get("armed"):
            state["armed"] = False
            state["prefill"] = out
        return out

    def generate(self, *args, **kwargs):
        if kwargs.get("cache_implementation") != "static":
            return original_generate(*args, **kwargs)
        kwargs.pop("cache_implementation")
        ids = kwargs["input_ids"]
        cfg = (kwargs.get("guidance_scale") or 0) > 1
        key = (ids.shape[0] * (2 if cfg else 1), int(kwargs["max_new_tokens"]), ids.shape[1], str(ids.device))
        cache = _reusable_cache(state, key, self.decoder.config)
        kwargs.update(_compile_kwargs(state))
        state["armed"] = True
        state.pop("prefill", None)
        try:
            return original_generate(*args, **{cache_kw: cache}, **kwargs)
        finally:
            state["armed"] = False
            state.pop("prefill", None)

    model._prefill = types.MethodType(_prefill, model)
    model.generate = types.MethodType(generate, model)
    model._evalkit_static = state


def _reusable_cache(state: dict, key: tuple, decoder_config):
    """The static cache for this (batch, length, text length, device), reset; one is kept (a new shape frees the
    old tensors), reused at the same addresses so captured CUDA graphs stay valid."""
    from transformers import EncoderDecoderCache, StaticCache

    cache = state["caches"].get(key)
    if cache is None:
        state["caches"].clear()
        cache = EncoderDecoderCache(StaticCache(config=decoder_config, max_cache_len=key[1] + 1),
                                    StaticCache(config=decoder_config, max_cache_len=key[2]))
        state["caches"][key] = cache
    else:
        cache.reset()
    return cache


def _compile_kwargs(state: dict) -> dict[str, Any]:
    """``compile_config`` (compiled / CUDA-graph decode step) or ``disable_compile=True``."""
    if not state["compile"]:
        return {"disable_compile": True}
    from transformers import CompileConfig

    cc = CompileConfig(mode=state["compile_mode"])
    cc._compile_all_devices = state["all_devices"] or None
    return {"compile_config": cc}
