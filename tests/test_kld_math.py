"""KLD arithmetic and segmentation, without a model: closed forms, the eps effect, chunk and window rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evalkit.metrics.kld import collect_rows, kl_rows, sliding_windows, split_chunks

EPS = 1e-6


def audiocraft_kl_divergence(pred_probs, target_probs, epsilon=1e-6):
    """audiocraft/metrics/kld.py kl_divergence, transcribed: float32, F.kl_div."""
    kl_div = torch.nn.functional.kl_div((pred_probs + epsilon).log(), target_probs, reduction="none")
    return kl_div.sum(-1)


# ---------------------------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------------------------
def test_two_point_distributions_closed_form():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.25, 0.75]])
    expected = 0.5 * math.log(0.5 / (0.25 + EPS)) + 0.5 * math.log(0.5 / (0.75 + EPS))
    assert kl_rows(p, q, EPS)[0] == pytest.approx(expected, rel=1e-12)
    # without eps this is 0.5 ln(4/3); eps moves it by ~ +1.3e-6
    assert kl_rows(p, q, 0.0)[0] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert kl_rows(p, q, EPS)[0] - kl_rows(p, q, 0.0)[0] == pytest.approx(-0.5 * (math.log1p(EPS / 0.25)
                                                                                   + math.log1p(EPS / 0.75)), rel=1e-6)
    # and the other direction is a different number (KL is not symmetric)
    reverse = 0.25 * math.log(0.25 / (0.5 + EPS)) + 0.75 * math.log(0.75 / (0.5 + EPS))
    assert kl_rows(q, p, EPS)[0] == pytest.approx(reverse, rel=1e-12)


def test_identical_uniform_527_gives_minus_log1p_527_eps():
    """KL(p ‖ p) with the eps is -sum p log(1 + eps/p); for the uniform 527-class distribution that is
    -log(1 + 527e-6) = -5.26861e-4, not 0."""
    p = torch.full((3, 527), 1 / 527, dtype=torch.float64)
    value = kl_rows(p, p, EPS)
    assert np.allclose(value, -math.log1p(527 * EPS), rtol=1e-10)
    assert value[0] == pytest.approx(-5.268612e-4, rel=1e-6)


def test_identical_inputs_lie_between_minus_527_eps_and_zero():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 527, generator=gen, dtype=torch.float64) * 3
    p = torch.softmax(logits, -1)
    value = kl_rows(p, p, EPS)
    exact = -(p * torch.log1p(EPS / p)).sum(-1).numpy()
    assert np.allclose(value, exact, rtol=1e-9, atol=1e-15)
    assert np.all(value < 0) and np.all(value > -527 * EPS)


def test_zero_probabilities():
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float64)
    # p_k = 0 terms count 0; q_k = 0 under p_k = 1 costs log(1 / eps)
    assert kl_rows(p, q, EPS)[0] == pytest.approx(math.log(1 / EPS), rel=1e-12)
    assert kl_rows(q, p, EPS)[0] == pytest.approx(2 * 0.5 * math.log(0.5 / EPS), rel=1e-12)


def test_matches_audiocraft_float32_kl_div():
    gen = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(32, 527, generator=gen) * 4, -1)
    q = torch.softmax(torch.randn(32, 527, generator=gen) * 4, -1)
    ours = kl_rows(p, q, EPS)  # KL(p ‖ q) with eps on q
    theirs = audiocraft_kl_divergence(q, p).double().numpy()  # kl_divergence(pred=q, target=p)
    assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours.dtype == np.float64


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        kl_rows(torch.ones(2, 3) / 3, torch.ones(1, 3) / 3)


# ---------------------------------------------------------------------------------------------------------------
# audiocraft chunks: torch.split(640000), keep > 4800 samples, no padding since 2454f80
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, lengths",
    [
        (320_000, [320_000]),                 # a 10 s clip is one chunk, not padded
        (640_000, [640_000]),
        (800_000, [640_000, 160_000]),        # 25 s: 20 s + 5 s
        (640_000 + 4_800, [640_000]),         # a trailing 0.15 s is dropped
        (640_000 + 4_801, [640_000, 4_801]),  # one more sample is kept
        (4_801, [4_801]),
        (4_800, []),                          # too short: nothing to score
    ],
)
def test_split_chunks(n, lengths):
    wav = torch.arange(n, dtype=torch.float32)
    chunks = split_chunks(wav, 640_000, 4_800, pad=False)
    assert [c.shape[-1] for c in chunks] == lengths
    if chunks:
        assert torch.equal(torch.cat(chunks), wav[: sum(lengths)])
    padded = split_chunks(wav, 640_000, 4_800, pad=True)
    assert [c.shape[-1] for c in padded] == [640_000] * len(lengths)
    for c, k in zip(padded, lengths):
        assert torch.count_nonzero(c[k:]) == 0


# ---------------------------------------------------------------------------------------------------------------
# stable-audio-metrics windows
# ---------------------------------------------------------------------------------------------------------------
def sam_windows(audio: np.ndarray, window_size=10, overlap=5, sr=32000):
    """src/passt_kld.py return_probabilities' window loop, transcribed."""
    step_size = int((window_size - overlap) * sr)
    out = []
    for i in range(0, max(step_size, len(audio) - step_size), step_size):
        window = audio[i:i + int(window_size * sr)]
        if len(window) < int(window_size * sr):
            if len(window) > int(window_size * sr * 0.15):
                tmp = np.zeros(int(window_size * sr))
                tmp[:len(window)] = window
                window = tmp
        out.append(window.astype(np.float32))
    return out


@pytest.mark.parametrize("n", [40_000, 48_000, 48_001, 100_000, 320_000, 330_000, 480_000, 490_000, 1_000_000])
def test_sliding_windows_match_stable_audio_metrics(n):
    audio = np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
    ours = sliding_windows(torch.from_numpy(audio), 320_000, 160_000, 0.15)
    theirs = sam_windows(audio)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape[-1] == len(b)
        assert np.array_equal(a.numpy(), b)


def test_sliding_window_counts():
    lens = {n: [w.shape[-1] for w in sliding_windows(torch.zeros(n), 320_000, 160_000, 0.15)]
            for n in (320_000, 330_000, 490_000, 40_000)}
    assert lens == {320_000: [320_000], 330_000: [320_000, 320_000], 490_000: [320_000] * 3, 40_000: [40_000]}


# ---------------------------------------------------------------------------------------------------------------
# collecting rows
# ---------------------------------------------------------------------------------------------------------------
def test_collect_rows():
    logits = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    rows = collect_rows(logits, "rows")
    assert torch.allclose(rows, torch.softmax(logits, -1))
    # mean of probabilities of symmetric rows is uniform; so is softmax of the mean logits, but not in general
    assert torch.allclose(collect_rows(logits, "mean_probs"), torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(collect_rows(logits, "mean_logits"), torch.tensor([[0.5, 0.5]]))
    logits = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    mp = collect_rows(logits, "mean_probs")[0, 1].item()
    ml = collect_rows(logits, "mean_logits")[0, 1].item()
    assert mp == pytest.approx((1 / (1 + math.exp(-4)) + 0.5) / 2, rel=1e-6)
    assert ml == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-6)
    with pytest.raises(ValueError, match="collect"):
        collect_rows(logits, "max")
