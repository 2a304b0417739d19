"""kadtk 1.1.0 (``microsoft/fadtk`` lineage, ``kadtk/model_loader.py`` and ``kadtk/emb_loader.py``): its own
``VGGishModel`` served given VGGish weights offline, its ``PANNsModel('cnn14-32k')`` around a given ``Cnn14``, and its
audio path written out in memory.

Used by ``tests/test_kad_reference.py`` and ``tests/test_fadtk_parity.py`` (the command-line parity tests) and
``benchmarks/suite_parts/kad.py`` and ``fad_panns.py`` (the reference sides of the KAD timings). Takes from evalkit
only the VGGish network whose *weights* both sides use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def kadtk_model(tmp_path: Path, monkeypatch, network):
    """kadtk's VGGishModel, its torch hub load served a local torchvggish repo holding ``network``'s weights.

    ``monkeypatch``: anything with ``setattr(obj, name, value)`` (pytest's fixture, or a plain setter where the
    served hub is kept for the whole process). The repo is written under ``tmp_path / "torch_hub"``."""
    from kadtk.model_loader import VGGishModel

    from references import google_fad as ref

    repo = tmp_path / "torch_hub" / "harritaylor_torchvggish_master"
    channels = tuple(network.features[i].out_channels for i in (0, 3, 6, 11))
    ref.write_fake_hub(repo, {k: v.clone() for k, v in network.state_dict().items()}, channels,
                       network.embeddings[0].out_features)
    original = torch.hub.load
    monkeypatch.setattr(torch.hub, "load", lambda r, m, *a, **k: original(str(repo), m, source="local"))
    ml = VGGishModel()
    ml.load_model()
    assert ml.model.postprocess is False and len(ml.model.embeddings) == 5  # kadtk's own mutations
    return ml


def kadtk_load_audio(path: Path, sr_out: int = 16000) -> np.ndarray:
    """kadtk/emb_loader.py EmbeddingLoader.load_audio + ModelLoader.load_wav, in memory: torchaudio.load (float32,
    as soundfile's float32 read of 16-bit PCM), torch.mean(x, 0), its Resample, torchaudio.save PCM_S16 (FFmpeg:
    round(x·32768), saturated), soundfile.read(dtype='int16') / 32768.0. Returns mono float64 at ``sr_out`` Hz."""
    import soundfile as sf
    import torchaudio

    data, fs = sf.read(str(path), dtype="float32", always_2d=True)
    x = torch.mean(torch.from_numpy(data.T.copy()), 0).unsqueeze(0)
    y = torchaudio.transforms.Resample(fs, sr_out, lowpass_filter_width=64, rolloff=0.9475937167399596,
                                       resampling_method="sinc_interp_kaiser", beta=14.769656459379492)(x)
    return torch.round(y * 32768).clamp(-32768, 32767).to(torch.int16)[0].numpy() / 32768.0


def cnn14_32k(seed: int = 0) -> torch.nn.Module:
    """kadtk's own ``Cnn14`` as ``PANNsModel('cnn14-32k').load_model`` builds it (``features_list=["2048", "logits"]``,
    32 kHz, window 1024, hop 320, 64 mels, 50-14,000 Hz, 527 classes), with trained-looking random weights: its
    initial weights drawn from ``seed``, then its BatchNorm statistics measured on a batch of synthetic tones and
    noise (:func:`calibration_waves`; the initial mean 0 / variance 1 make every input's embedding nearly the same)
    and their biases perturbed, as ``tests/test_fadtk_parity.py`` does for the shrunken model. The global generator is
    left as it was; eval mode."""
    from kadtk.models.panns import Cnn14

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = Cnn14(features_list=["2048", "logits"], sample_rate=32000, window_size=1024, hop_size=320,
                      mel_bins=64, fmin=50, fmax=14000, classes_num=527)
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None  # a cumulative average over the calibration batch
        with torch.no_grad():
            model.train()
            model(calibration_waves(seed))
            for k, v in model.state_dict().items():
                if k.endswith("bias") and "bn" in k:
                    v.add_(0.05 * torch.randn(v.shape))
    return model.eval()


def calibration_waves(seed: int, n: int = 8, seconds: float = 1.3, sr: int = 32000) -> torch.Tensor:
    """``[2n, T]`` float32: ``n`` chords of four drifting tones and ``n`` bursts of filtered noise (seeded)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    tones = [sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 3000) * t) for _ in range(4))
             for _ in range(n)]
    noise = [0.3 * np.convolve(rng.standard_normal(t.size), np.ones(rng.integers(2, 40)) / 20, mode="same")
             * np.exp(-np.mod(t, rng.uniform(0.2, 0.7)) * 4) for _ in range(n)]
    return torch.tensor(np.stack(tones + noise), dtype=torch.float32)


def panns_model(model: torch.nn.Module, num_features: int = 2048):
    """kadtk's ``PANNsModel('cnn14-32k')`` whose model is ``model`` (kadtk's own ``Cnn14``; its ``load_model``
    download not run); ``num_features``: the embedding width it checks (a shrunken model's)."""
    from kadtk.model_loader import PANNsModel

    ml = PANNsModel("cnn14-32k")
    ml.model, ml.num_features = model.eval().to(ml.device), int(num_features)
    return ml
