"""MusicGen generation throughput: eager transformers ``generate`` at batch 1 vs evalkit's generator, one process.

Contenders (same model object, same weights, same prompts, same sampling settings: top-k 250, CFG 3):
  * ``eager``: ``model.generate`` at batch 1 as transformers ships it (the baseline issue 9 names: its KV cache grows
    by ``torch.cat`` every step);
  * ``evalkit``: ``MusicGenGenerator.generate_batch`` with the configured fast-path settings
    (``cache_implementation=static``, batch N), exactly as a run calls it;
  * ``evalkit+static``: the same generator with :func:`install_static_cache` applied, the change that
    ``MusicGenGenerator`` needs (see below). On CUDA transformers then compiles the decode step
    (``torch.compile``, mode ``reduce-overhead`` = CUDA graphs) unless ``--no-compile``.

Why the third contender: with transformers 5.x ``MusicgenForConditionalGeneration.generate`` never builds the cache
that ``cache_implementation`` asks for (unlike ``MusicgenForCausalLM.generate`` it does not call
``_prepare_cache_for_generation``): the decoder silently creates a ``DynamicCache``. Passing a cache object instead
hits a second problem: that ``generate`` runs the prefill twice (once itself, once inside ``_sample``), harmless for a
fresh dynamic cache each time but it writes the first frame twice into a cache passed in. The bench records which
cache class the decoder really used for each contender (``cache_in_effect``).

Printed and written (``--json``): decode steps/s (generated frames x batch per second of wall time, text encoding,
prefill and EnCodec decoding included), clips/s, the ratios to eager, a greedy batch-1 check that eager and evalkit
give identical audio for the same seed, and, for a released architecture, the projected wall time of all of MusicCaps
(5,521 clips x 503 steps) against the memory-bandwidth floor of :func:`evalkit.generate.shapes.generation_floor`.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generate.py                                # CPU, tiny-stereo
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generate.py --model stereo-small --duration 0.5 --batch 4
    HF_HUB_OFFLINE=1 python benchmarks/bench_generate.py --device cuda --model stereo-medium      # bf16, batch 128

Random weights throughout: the numbers are about speed; the audio is noise.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evalkit.generate.static_cache import install_static_cache  # noqa: E402

from evalkit.data.prompts import Prompt  # noqa: E402
from evalkit.generate.musicgen import Batch, MusicGenGenerator  # noqa: E402

#: HBM bandwidth (bytes/s) by GPU name fragment, most specific first (vendor datasheets).
GPU_BANDWIDTH = [("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("A100-SXM4-80GB", 2.039e12),
                 ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12), ("L40S", 0.864e12), ("4090", 1.008e12)]
MUSICCAPS_CLIPS = 5521
#: MusicCaps caption lengths (musiccaps-public.csv, 5,521 captions): words mean 49.0, sd 17.3, min 3, max 136.
CAPTION_WORDS = (49.0, 17.3, 3, 136)
WORDS = ("a the with and of in slow fast upbeat mellow jazz rock pop folk ambient electronic orchestral piano guitar "
         "bass drums strings synth pad vocals male female voice choir melody rhythm groove reverb distorted acoustic "
         "electric soft loud bright dark warm happy sad energetic calm tempo beat loop song recording quality low high "
         "playing sings background foreground ").split()
GEN_BASE = {"duration": 10.0, "use_sampling": True, "top_k": 250, "top_p": 0.0, "temperature": 1.0,
            "guidance_scale": 3.0, "sort_by_length": True, "cache_implementation": "static", "compile": False,
            "compile_mode": "reduce-overhead", "attn_implementation": "sdpa"}


# -- the change MusicGenGenerator needs ---------------------------------------------------------------------------
# -- models, tokenizer, prompts -------------------------------------------------------------------------------------
def word_tokenizer(captions):
    """An in-memory word-level tokenizer with T5's special ids (<pad>=0, </s>=1, <unk>=2): one token per word or
    punctuation run, close to T5's length on English captions (MusicCaps: ~56 tokens mean). The full-size random
    models need a tokenizer and none can be downloaded; only the token count matters for speed."""
    import re

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from evalkit.generate.musicgen import TOKENIZER_PROBE

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for text in list(captions) + [TOKENIZER_PROBE]:
        for w in re.findall(r"\w+|[^\w\s]+", text.lower()):
            vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    from tokenizers import normalizers

    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def bench_prompts(n: int, seed: int = 0) -> tuple[list[Prompt], str]:
    """``n`` prompts: real MusicCaps captions when ``../shared/data/musiccaps-public.csv`` is beside the checkout
    (``EVALKIT_MUSICCAPS_CSV`` overrides), else synthetic captions with MusicCaps' length distribution."""
    import csv

    path = Path(os.environ.get("EVALKIT_MUSICCAPS_CSV", ROOT.parent / "shared" / "data" / "musiccaps-public.csv"))
    rng = random.Random(seed)
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(r["ytid"], r["caption"]) for r in csv.DictReader(f)]
        rows = rng.sample(rows, min(n, len(rows)))
        while len(rows) < n:
            rows.append(rows[len(rows) % len(rows)])
        return [Prompt(f"{y}-{i}", c) for i, (y, c) in enumerate(rows)], f"musiccaps ({path.name})"
    mean, sd, lo, hi = CAPTION_WORDS
    out = []
    for i in range(n):
        k = int(min(hi, max(lo, round(rng.gauss(mean, sd)))))
        out.append(Prompt(f"syn{i:05d}", " ".join(rng.choice(WORDS) for _ in range(k)) + "."))
    return out, "synthetic (MusicCaps length distribution)"


class BenchGenerator(MusicGenGenerator):
    """MusicGenGenerator around a model built elsewhere (random weights), so all contenders share one copy."""

    def __init__(self, model, tokenizer, source: str, gen_cfg: dict, **kw) -> None:
        self._prebuilt = (model, tokenizer, None, source)
        super().__init__({"name": source}, gen_cfg, **kw)
        self.random_weights = True

    def _load(self):
        return self._prebuilt


def build_model(name: str, dtype: torch.dtype, device: torch.device, prompts: list[Prompt]):
    if name.startswith("tiny-"):
        from evalkit.generate.tiny import tiny_musicgen

        model, tok, _ = tiny_musicgen(name)
        tok.model_max_length = 4096  # character-level: long captions are long, and T5's relative positions allow it
        return model.to(device, dtype), tok
    from benchmarks.musicgen_shapes import random_released_model

    model = random_released_model(name, dtype=dtype, device=device)
    return model, word_tokenizer([p.caption for p in prompts])


# -- timing --------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class CacheSpy:
    """Records the class of the self-attention cache the decoder returns (eager calls only: not under compile)."""

    def __init__(self, model):
        self.model, self.seen = model, set()

    def __enter__(self):
        self.orig = self.model.decoder.forward

        def spy(*a, **k):
            out = self.orig(*a, **k)
            c = getattr(out, "cache", None)
            self.seen.add(type(getattr(c, "self_attention_cache", c)).__name__)
            return out

        self.model.decoder.forward = spy
        return self

    def __exit__(self, *exc):
        del self.model.decoder.forward  # back to the class's method
        return False


class CodecTimer:
    """Accumulates the wall time of EnCodec decoding (``audio_encoder.decode``, called by ``generate`` after the last
    step, outside any compiled region) so the language model's own rate can be told apart."""

    def __init__(self, model, device: torch.device):
        self.model, self.device, self.seconds = model, device, 0.0

    def __enter__(self):
        orig = self.model.audio_encoder.decode

        def decode(*a, **k):
            sync(self.device)
            t = time.perf_counter()
            out = orig(*a, **k)
            sync(self.device)
            self.seconds += time.perf_counter() - t
            return out

        self.model.audio_encoder.decode = decode
        return self

    def __exit__(self, *exc):
        del self.model.audio_encoder.decode
        return False


def time_batches(gen: MusicGenGenerator, batches: list[Batch], device: torch.device, repeats: int = 1) -> tuple[float, float]:
    """(wall time, of which EnCodec decoding) of generating ``batches``; best of ``repeats`` (a shared CPU slows some
    rounds down)."""
    best = (float("inf"), 0.0)
    for _ in range(max(1, repeats)):
        with CodecTimer(gen.model, device) as codec:
            sync(device)
            t0 = time.perf_counter()
            for b in batches:
                gen.generate_batch(b)
            sync(device)
            t = time.perf_counter() - t0
        if t < best[0]:
            best = (t, codec.seconds)
    return best


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def rate(clips: int, steps: int, timing: tuple[float, float]) -> dict[str, float]:
    seconds, codec = timing
    return {"wall_s": round(seconds, 4), "clips": clips, "clips_per_s": clips / seconds,
            "steps_per_s": clips * steps / seconds, "codec_decode_s": round(codec, 4),
            "lm_steps_per_s": clips * steps / max(seconds - codec, 1e-9)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="tiny-stereo (CPU default), stereo-medium (GPU default), any of "
                    "evalkit.generate.shapes.RELEASED or evalkit.generate.tiny.TINY_MODELS")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--duration", type=float, default=None, help="seconds per clip (default 10 on CUDA, 1 on CPU)")
    ap.add_argument("--batch", default=None, help="evalkit batch (default 128 on CUDA, 8 on CPU); halves on OOM")
    ap.add_argument("--batches", type=int, default=1, help="timed evalkit batches per contender")
    ap.add_argument("--eager-clips", type=int, default=None, help="clips for the batch-1 eager baseline (1 CUDA, 2 CPU)")
    ap.add_argument("--compile", dest="compile", action="store_true", default=None)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--compile-cpu", action="store_true", help="compile the static-cache decode on the CPU too "
                    "(slow to compile; checks the compiled path without a GPU)")
    ap.add_argument("--skip-asis", action="store_true", help="skip evalkit as configured (only eager and +static)")
    ap.add_argument("--parity-duration", type=float, default=None, help="seconds for the greedy parity check (default 1)")
    ap.add_argument("--bandwidth", type=float, default=None, help="HBM bytes/s for the floor (default: from the GPU "
                    "name, 3.35e12 = H100 SXM when unknown)")
    ap.add_argument("--n-prompts", type=int, default=MUSICCAPS_CLIPS, help="clips in the projected full run")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 for tiny models on the "
                    "CPU, where thread barriers cost more than they give and make a shared machine's numbers erratic)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per contender, best kept (1 CUDA, 3 CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here (rewritten after every phase)")
    return ap.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    model_name = args.model or ("stereo-medium" if cuda else "tiny-stereo")
    threads = args.threads if args.threads is not None else (1 if (not cuda and model_name.startswith("tiny-")) else 0)
    if threads:
        torch.set_num_threads(threads)
    repeats = args.repeats or (1 if cuda else 3)
    precision = args.dtype or ("bf16" if cuda else "fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    duration = args.duration if args.duration is not None else (10.0 if cuda else 1.0)
    batch = int(args.batch) if args.batch else (128 if cuda else 8)
    eager_clips = args.eager_clips or (1 if cuda else 2)
    compile_ = (cuda or args.compile_cpu) if args.compile is None else bool(args.compile)
    parity_duration = args.parity_duration if args.parity_duration is not None else (1.0 if cuda else 0.5)
    gpu = torch.cuda.get_device_name() if cuda else None
    bandwidth = args.bandwidth or next((bw for k, bw in GPU_BANDWIDTH if gpu and k in gpu), 3.35e12)

    import transformers

    res: dict[str, Any] = {
        "bench": "generate", "device": str(device), "gpu": gpu,
        "cpu": f"{platform.processor() or platform.machine()} x{os.cpu_count()} ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "transformers": transformers.__version__, "model": model_name,
        "random_weights": True, "precision": precision, "duration_s": duration, "compile": compile_,
        "repeats": repeats,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }

    def dump():
        if args.json:
            from evalkit.io import write_json

            write_json(args.json, res)

    def say(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()
    prompts, source = bench_prompts(max(batch * args.batches, eager_clips, 1), args.seed)
    model, tok = build_model(model_name, dtype, device, prompts)
    res["build_s"] = round(time.perf_counter() - t0, 2)
    res["prompts"] = source
    gen_cfg = dict(GEN_BASE, duration=duration)
    eager_gen = BenchGenerator(model, tok, f"random:{model_name}", dict(gen_cfg, cache_implementation=None),
                               device=str(device), precision=precision, batch_size=1, seed=args.seed)
    steps = eager_gen.max_new_tokens
    res.update(max_new_tokens=steps, decoder_params=sum(p.numel() for p in model.decoder.parameters()),
               decoder_bytes=sum(p.numel() * p.element_size() for p in model.decoder.parameters()))
    say(f"generate bench: {model_name} (random weights) {precision} on {gpu or res['cpu']}, {duration:g} s clips = "
        f"{steps} steps, prompts: {source}, build {res['build_s']} s")
    dump()

    # (a) eager transformers generate, batch 1 -----------------------------------------------------------------------
    warm = Batch(-1, 1, prompts[:1])
    eager_gen.generate_batch(warm, max_new_tokens=4)  # CUDA context, cuBLAS handles, allocator
    eager_batches = [Batch(i, 1000 + i, [p]) for i, p in enumerate(prompts[:eager_clips])]
    with CacheSpy(model) as spy:
        t = time_batches(eager_gen, eager_batches, device, repeats)
    res["eager"] = dict(rate(eager_clips, steps, t), batch=1, cache_in_effect=sorted(spy.seen))
    say(f"  eager generate, batch 1        : {res['eager']['steps_per_s']:9.1f} steps/s  "
        f"{res['eager']['clips_per_s']:8.3f} clips/s  ({t[0]:.2f} s, EnCodec {t[1]:.2f} s, cache {','.join(spy.seen)})")
    dump()
    free(device)

    def run_evalkit(label: str, static_fix: bool) -> None:
        nonlocal batch
        compiled = static_fix and compile_ and (cuda or args.compile_cpu)
        while True:
            gen = BenchGenerator(model, tok, f"random:{model_name}", gen_cfg, device=str(device),
                                 precision=precision, batch_size=batch, seed=args.seed)
            batches = gen.plan(prompts[:batch * args.batches])
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            try:
                tw = time.perf_counter()
                # warm-up; a compiled step is warmed with the timed shapes (compilation, CUDA-graph capture)
                gen.generate_batch(batches[0], max_new_tokens=None if compiled else 4)
                sync(device)
                warm_s = time.perf_counter() - tw
                if compiled:  # no Python spy inside a compiled region (it would also force a recompile)
                    t, seen = time_batches(gen, batches, device, repeats), ["StaticCache (compiled)"]
                else:
                    with CacheSpy(model) as spy:
                        t = time_batches(gen, batches, device, repeats)
                    seen = sorted(spy.seen)
                break
            except torch.cuda.OutOfMemoryError:
                if static_fix:
                    model._evalkit_static["caches"].clear()
                free(device)
                if batch == 1:
                    raise
                batch //= 2
                say(f"  out of memory: batch halved to {batch}")
            except Exception as exc:  # noqa: BLE001 - a failed compilation must not lose the rest of the bench
                if not compiled:
                    raise
                res.setdefault("errors", []).append(f"{label} compiled: {type(exc).__name__}: {exc}"[:2000])
                say(f"  {label}: compiled decode failed ({type(exc).__name__}: {str(exc)[:300]}); retrying uncompiled")
                model._evalkit_static["caches"].clear()
                install_static_cache(model, compile=False)
                compiled = False
                free(device)
        r = dict(rate(len(batches) * batch, steps, t), batch=batch, warmup_s=round(warm_s, 2), cache_in_effect=seen)
        r["ratio_steps_vs_eager"] = r["steps_per_s"] / res["eager"]["steps_per_s"]
        if cuda:
            r["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res[label] = r
        say(f"  {label + (' (compiled)' if compiled else ''):<31s}: {r['steps_per_s']:9.1f} steps/s  "
            f"{r['clips_per_s']:8.3f} clips/s  ({t[0]:.2f} s, EnCodec {t[1]:.2f} s, batch {batch}, warm-up {warm_s:.1f} s, cache "
            f"{','.join(seen)})  x{r['ratio_steps_vs_eager']:.2f} vs eager")
        dump()
        if static_fix:
            model._evalkit_static["caches"].clear()
        free(device)

    # (b) evalkit as configured (cache_implementation=static passed through to generate) -------------------------
    if not args.skip_asis:
        run_evalkit("evalkit", static_fix=False)
    # (c) evalkit with the static cache really in effect (+ compiled decode step on CUDA) --------------------------
    install_static_cache(model, compile=compile_, compile_mode=gen_cfg["compile_mode"], all_devices=args.compile_cpu)
    run_evalkit("evalkit+static", static_fix=True)

    # greedy parity at batch 1: eager generate vs evalkit's static path, same seed ------------------------------------
    pcfg = dict(gen_cfg, duration=parity_duration, use_sampling=False)
    pe = BenchGenerator(model, tok, "p", dict(pcfg, cache_implementation=None), device=str(device),
                        precision=precision, batch_size=1, seed=args.seed)
    ps = BenchGenerator(model, tok, "p", pcfg, device=str(device), precision=precision, batch_size=1, seed=args.seed)
    # on CUDA a compiled parity run would recompile for batch 1: the uncompiled static path is compared instead
    install_static_cache(model, compile=False)
    pb = Batch(0, 7, prompts[:1])
    a = pe.generate_batch(pb)[0].audio
    with CacheSpy(model) as spy:
        b = ps.generate_batch(pb)[0].audio
    res["parity_greedy_batch1"] = {"identical": bool(torch.equal(a, b)), "max_abs_diff": float((a - b).abs().max()),
                                   "duration_s": parity_duration, "static_cache_used": "StaticCache" in spy.seen,
                                   "compiled": False}
    say(f"  greedy batch-1 parity eager vs evalkit+static ({parity_duration:g} s): identical={res['parity_greedy_batch1']['identical']}"
        f" (max |diff| {res['parity_greedy_batch1']['max_abs_diff']:.3g}, static cache used: {'StaticCache' in spy.seen})")
    dump()

    # the whole of MusicCaps vs the bandwidth floor ---------------------------------------------------------------
    best = max((res[k] for k in ("evalkit", "evalkit+static") if k in res), key=lambda r: r["clips_per_s"])
    est = args.n_prompts / best["clips_per_s"]
    res["musiccaps"] = {"n_clips": args.n_prompts, "steps": steps, "projected_wall_s": est,
                        "from": "evalkit+static" if best is res.get("evalkit+static") else "evalkit",
                        "batch": best["batch"]}
    from benchmarks.musicgen_shapes import RELEASED, generation_floor

    if model_name in RELEASED:
        text_len = sum(len(tok(p.caption)["input_ids"]) for p in prompts) / len(prompts)
        floor = generation_floor(model_name, n_clips=args.n_prompts, steps=steps, batch=best["batch"],
                                 text_len=text_len, bandwidth=bandwidth, dtype_bytes=torch.finfo(dtype).bits // 8,
                                 cfg=gen_cfg["guidance_scale"] > 1)
        ratio = est / floor["floor_s"]
        res["musiccaps"].update(floor, text_len=text_len, ratio_to_floor=ratio if cuda else None,
                                goal_within_2x=(ratio <= 2) if cuda else None)
        bw_note = ("" if args.bandwidth else " (from the GPU name)" if gpu and any(k in gpu for k, _ in GPU_BANDWIDTH)
                   else " (H100 SXM default)")
        verdict = (f"ratio {ratio:.2f}x (goal <= 2x: {'met' if ratio <= 2 else 'not met'})" if cuda else
                   "no ratio: the floor is a GPU's, this run is on the CPU")
        say(f"  MusicCaps {args.n_prompts} clips x {steps} steps: projected {est / 60:.1f} min at batch {best['batch']}; "
            f"bandwidth floor {floor['floor_s'] / 60:.2f} min at {bandwidth / 1e12:.2f} TB/s{bw_note} (weights "
            f"{floor['weights_bytes'] / 1e12:.0f} TB, self-attn KV {floor['self_kv_bytes'] / 1e12:.0f} TB, cross-attn "
            f"KV {floor['cross_kv_bytes'] / 1e12:.0f} TB, text {text_len:.0f} tokens); {verdict}; a static cache read "
            f"in full every step puts the floor at {floor['floor_static_cache_s'] / 60:.2f} min")
    else:
        say(f"  MusicCaps {args.n_prompts} clips x {steps} steps at this rate: {est / 60:.1f} min "
            f"(tiny model: no bandwidth floor)")
    res["total_s"] = round(time.perf_counter() - t0, 2)
    dump()
    return res


if __name__ == "__main__":
    out = main()
    if not any(a.startswith("--json") for a in sys.argv[1:]):
        print(json.dumps({k: out[k] for k in ("eager", "evalkit", "evalkit+static") if k in out}, default=float))
