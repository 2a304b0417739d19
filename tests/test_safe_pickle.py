"""evalkit.safe_pickle: stable-audio-metrics' reference probabilities (a plain pickle of ``{id: FloatTensor[527]}``)
are read with an unpickler that admits tensors, arrays and plain containers, and refuses anything else by name
before running it: a pickle whose payload would write a file is refused, and the file is never written."""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch

from evalkit.safe_pickle import UnsafePickleError, load_tensor_pickle


def sam_pickle(path, keys, seed=0):
    """What stable-audio-metrics' passt_kld writes: ``pickle.dump(ref_p, fp)`` of softmaxed CPU float32 tensors."""
    g = torch.Generator().manual_seed(seed)
    table = {k: torch.softmax(torch.randn(527, generator=g), 0) for k in keys}
    with open(path, "wb") as fp:
        pickle.dump(table, fp)
    return table


@pytest.mark.parametrize("keys", [["-0Gj8-vB1q4", "_0-2meOf9qY"], [859, 990, 810]])  # MusicCaps ytids; SDD ids
def test_reads_what_stable_audio_metrics_writes(tmp_path, keys):
    path = tmp_path / "ref.pkl"
    table = sam_pickle(path, keys)
    got = load_tensor_pickle(path)
    assert list(got) == keys
    for k in keys:
        assert got[k].dtype == torch.float32 and got[k].shape == (527,) and not got[k].requires_grad
        assert torch.equal(got[k], table[k])


def test_arrays_and_containers(tmp_path):
    path = tmp_path / "np.pkl"
    with open(path, "wb") as fp:
        pickle.dump({"a": np.arange(5.0, dtype=np.float32), "b": [1, 2.5, "x", None], "c": (True,)}, fp)
    got = load_tensor_pickle(path)
    np.testing.assert_array_equal(got["a"], np.arange(5.0, dtype=np.float32))
    assert got["b"] == [1, 2.5, "x", None] and got["c"] == (True,)


class _Payload:
    """Unpickling this runs ``os.system(command)``: the classic pickle exploit."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fp:
        pickle.dump({"-0Gj8-vB1q4": _Payload(f"touch {marker}")}, fp)
    with pytest.raises(UnsafePickleError, match=r"names (posix|os|nt)\.system.*refused \(nothing of it was run\)"):
        load_tensor_pickle(path, "metrics.kl_passt.reference_probabilities")
    assert not marker.exists()
    pickle.load(open(path, "rb"))  # what pickle.load would have done: the check above can fail
    assert marker.exists()


def test_a_payload_hidden_in_a_tensor_storage_is_refused(tmp_path):
    """A tensor's storage is itself a pickle (``torch.storage._load_from_bytes``, which runs ``torch.load`` with full
    unpickling): it is read with torch's restricted unpickler instead."""
    marker = tmp_path / "pwned2"
    inner = io.BytesIO()
    torch.save(_Payload(f"touch {marker}"), inner, _use_new_zipfile_serialization=False)

    class Storage:
        def __reduce__(self):
            import torch.storage

            return (torch.storage._load_from_bytes, (inner.getvalue(),))

    path = tmp_path / "evil2.pkl"
    with open(path, "wb") as fp:
        pickle.dump({"x": Storage()}, fp)
    with pytest.raises(UnsafePickleError, match="storage"):
        load_tensor_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("obj, why", [
    ({"x": np.array([object()], dtype=object)}, "(refused|Python objects)"),
    ({"x": torch.ones(3, requires_grad=True)}, "gradients"),
    ({("a", 1): torch.ones(3)}, "key of type tuple"),
])
def test_not_plain_tensors_are_refused(tmp_path, obj, why):
    path = tmp_path / "x.pkl"
    with open(path, "wb") as fp:
        pickle.dump(obj, fp)
    with pytest.raises(UnsafePickleError, match=why):
        load_tensor_pickle(path)


def test_not_a_pickle(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"PK\x03\x04 not a pickle")
    with pytest.raises(UnsafePickleError, match="not a readable pickle"):
        load_tensor_pickle(path, "setting")
    with pytest.raises(UnsafePickleError, match="no such file"):
        load_tensor_pickle(tmp_path / "none.pkl", "setting")
