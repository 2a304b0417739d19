"""kadtk 1.1.0 (``microsoft/fadtk`` lineage, ``kadtk/model_loader.py`` and ``kadtk/emb_loader.py``): its own
``VGGishModel`` served given VGGish weights offline, and its audio path written out in memory.

Used by ``tests/test_kad_reference.py`` (the command-line parity test) and ``benchmarks/suite_parts/kad.py`` (the
reference side of the KAD timing). Takes from evalkit only the VGGish network whose *weights* both sides use."""
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
