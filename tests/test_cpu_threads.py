"""CPU thread use (evalkit/embeddings/base.py) and the per-device batch defaults: threads never change a number.

The metrics run audio preparation on one intra-op thread and some forward passes side by side on one thread each;
that is only allowed because a backbone's output does not depend on the thread count that computed it (checked
here for VGGish, PaSST and CLAP), only on how inputs are batched (which the defaults below fix per device)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from evalkit.cpu import all_finite, cpu_threads, run_calls
from evalkit.metrics.base import Clip
from evalkit.spec import recipe_from_files


def _both_thread_counts(fn):
    with cpu_threads(1):
        one = fn()
    with cpu_threads(2):
        two = fn()
    return one, two


def test_cpu_threads_is_per_thread_and_restored():
    before = torch.get_num_threads()
    seen = {}

    def other():
        seen["other"] = torch.get_num_threads()

    with cpu_threads(1):
        assert torch.get_num_threads() == 1
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_run_calls_keeps_order_and_values():
    xs = [torch.randn(50, 60, generator=torch.Generator().manual_seed(i)) for i in range(7)]
    w = torch.randn(60, 40, generator=torch.Generator().manual_seed(9))
    seq = [x @ w for x in xs]
    par = run_calls(lambda x: x @ w, xs, workers=3)
    assert all(torch.equal(a, b) for a, b in zip(seq, par))
    assert run_calls(lambda x: x + 1, [], workers=2) == []


def test_all_finite_is_isfinite_all():
    x = torch.randn(2, 1000)
    assert all_finite(x) and all_finite(torch.zeros(0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[1, 500] = bad
        assert not all_finite(y)
        assert all_finite(y) == bool(torch.isfinite(y).all())


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_vggish_output_does_not_depend_on_threads(size):
    from evalkit.embeddings.vggish import build_vggish

    m = build_vggish(model_size=size)
    x = torch.randn(24, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = _both_thread_counts(lambda: m(x))
    assert torch.equal(a, b)


def test_passt_output_does_not_depend_on_threads():
    from evalkit.metrics.kld import KLD

    m = KLD(recipe_from_files("kld", model_size="tiny", checkpoint="random", backbone_weights="random")).embedder.network
    x = 0.1 * torch.randn(2, 64000, generator=torch.Generator().manual_seed(1))
    a, b = _both_thread_counts(lambda: m(x))
    assert torch.equal(a, b)


def test_clap_output_does_not_depend_on_threads():
    from evalkit.metrics.clap import ClapScore

    emb = ClapScore(recipe_from_files("clap", model_size="tiny", checkpoint="random", backbone_weights="random")).embedder
    waves = [0.1 * torch.randn(480000, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    a, b = _both_thread_counts(lambda: emb.clap.embed_audio(waves))
    assert torch.equal(a, b)
    a, b = _both_thread_counts(lambda: emb.clap.embed_text(["a slow piano", "organ chords"]))
    assert torch.equal(a, b)


def test_aesthetics_output_does_not_depend_on_threads():
    from evalkit.metrics.aesthetics import Aesthetics

    net = Aesthetics(recipe_from_files("aesthetics", model_size="tiny", checkpoint="random",
                                       backbone_weights="random")).embedder.network
    wav = 0.1 * torch.randn(2, 160000, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 160000, dtype=torch.bool)
    mask[1, 91000:] = False
    with torch.inference_mode():
        a, b = _both_thread_counts(lambda: net(wav, mask))
    assert torch.equal(a, b)


def test_batch_defaults_per_device():
    """conf/metrics/*.yaml leave batch sizes that matter for speed to the device: KLD 1 on a CPU for the full-size
    PaSST (16 for tiny, whose numbers the golden runs pin), 16 on CUDA; chroma 1 on a CPU, 16 on CUDA; an explicit
    setting always wins."""
    from evalkit.metrics.chroma import ChromaCosineSimilarity
    from evalkit.embeddings.passt import default_batch_size

    assert recipe_from_files("kld")["batch_size"] is None
    assert default_batch_size(None, torch.device("cpu"), "full") == 1
    assert default_batch_size(None, torch.device("cpu"), "tiny") == 16
    assert default_batch_size(None, torch.device("cuda"), "full") == 16
    assert default_batch_size(4, torch.device("cpu"), "full") == 4
    from evalkit.metrics.kld import KLD

    assert KLD(recipe_from_files("kld", model_size="full", checkpoint="random", backbone_weights="random")
               ).embedder.batch_size == 1
    assert recipe_from_files("chroma")["batch_size"] is None
    assert ChromaCosineSimilarity(recipe_from_files("chroma")).batch_size == 1
    assert ChromaCosineSimilarity(recipe_from_files("chroma", batch_size=4)).batch_size == 4


def test_fad_prepares_sides_in_parallel_with_the_same_result(music_dir):
    """FAD's sides prepared on two workers give the statistics of the one-thread loop, bit for bit."""
    from evalkit.audio import load_audio
    from evalkit.metrics.fad import FAD

    wav, sr = load_audio(music_dir / "shared00_bach_bwv66-6.flac")
    ref, rsr = load_audio(music_dir / "shared01_bach_bwv269.flac")
    clips = [Clip(f"c{i}", "", wav * (0.5 + 0.1 * i), sr, ref * (1 - 0.1 * i), rsr) for i in range(3)]
    rec = recipe_from_files("fad", "frechet-audio-distance", model_size="tiny", checkpoint="random",
                            backbone_weights="random", reference_stats=None)
    states = []
    for threads in (1, 2):
        m = FAD(rec)
        with cpu_threads(threads):
            m.update(clips)
        states.append(m.state_dict())
    for k in states[0]:
        assert np.array_equal(states[0][k], states[1][k]), k
