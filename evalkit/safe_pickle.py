"""Reading a pickle of tensors and arrays without running anything else: :func:`load_tensor_pickle`.

stable-audio-metrics ships its reference PaSST probabilities as plain pickles (``load/passt_kld/<set>__collectmean__
reference_probabilities.pkl``: ``pickle.dump`` of ``{id: torch.FloatTensor[527]}``; ids are YouTube ids as ``str``
for MusicCaps, ``int`` caption ids for Song Describer). ``pickle.load`` of a file from elsewhere runs whatever the
file names: any importable callable with any arguments. Here the unpickler admits exactly what such a file needs
and refuses everything else by name, before calling it:

- plain containers and scalars (the pickle opcodes themselves: dict, list, tuple, str, bytes, int, float, bool, None);
- a torch tensor as ``pickle`` writes one: ``torch._utils._rebuild_tensor_v2`` over a storage from
  ``torch.storage._load_from_bytes(b)``, whose bytes are read with ``torch.load(weights_only=True)`` (torch's own
  restricted unpickler; ``_load_from_bytes`` itself would unpickle them fully), and an empty
  ``collections.OrderedDict`` (the tensor's backward hooks);
- a numpy array (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``), not of dtype object.

Any other global (``os.system``, ``builtins.eval``, a class with a ``__reduce__``) raises
:class:`UnsafePickleError` naming it, and nothing of it runs (``tests/test_safe_pickle.py`` proves it with a
pickle whose payload would write a file). The result is checked too: containers of tensors and arrays only, no
gradients, no hooks.
"""
from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

from evalkit.errors import InputError


class UnsafePickleError(InputError, ValueError):
    """A pickle that names something other than tensors, arrays and plain containers (or is not a pickle)."""


def _load_storage_bytes(b: bytes):
    """``torch.storage._load_from_bytes`` with torch's restricted unpickler (``weights_only=True``)."""
    import torch

    if not isinstance(b, (bytes, bytearray)):
        raise UnsafePickleError("a tensor's storage is not bytes")
    try:
        return torch.load(io.BytesIO(bytes(b)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(f"a tensor's storage names something torch refuses to load: {exc}") from None


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    import torch
    from torch._utils import _rebuild_tensor_v2

    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"a tensor built on a {type(storage).__name__}, not a storage")
    if backward_hooks:
        raise UnsafePickleError("a tensor with backward hooks (code to run)")
    if requires_grad or metadata:
        raise UnsafePickleError("a tensor with gradients or metadata: not a plain probability tensor")
    return _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())


def _ordered_dict(*args):
    if args:
        raise UnsafePickleError("an OrderedDict with contents where a tensor's empty backward hooks belong")
    return OrderedDict()


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    out = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = _reconstruct
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    return out


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
                   ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
                   ("collections", "OrderedDict"): _ordered_dict, **_numpy_allowed()}
        fn = allowed.get((module, name))
        if fn is None:
            raise UnsafePickleError(f"the pickle names {module}.{name}, which is not a tensor, an array or a plain "
                                    f"container: refused (nothing of it was run)")
        return fn

    def persistent_load(self, pid):
        raise UnsafePickleError("the pickle refers to persistent objects: not a plain pickle of tensors")


def _check(obj: Any, where: str = "the file") -> None:
    import numpy as np
    import torch

    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise UnsafePickleError(f"{where}: a key of type {type(k).__name__}")
            _check(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check(v, f"{where}[{i}]")
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise UnsafePickleError(f"{where}: an array of Python objects")
    elif not isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, type(None))):
        raise UnsafePickleError(f"{where}: a {type(obj).__name__}")


def load_tensor_pickle(path: str | Path, setting: str = "file") -> Any:
    """The object pickled in ``path`` (see the module doc), if it is made of tensors, arrays and plain containers
    only; else :class:`UnsafePickleError` naming ``setting``, the file and what was refused. ``numpy`` arrays come
    back as arrays, tensors as CPU tensors without gradients."""
    path = Path(path)
    if not path.is_file():
        raise UnsafePickleError(f"{setting}={path}: no such file")
    try:
        with open(path, "rb") as f:
            obj = _Restricted(f).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{setting}={path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise UnsafePickleError(f"{setting}={path}: not a readable pickle of tensors ({type(exc).__name__}: "
                                f"{exc})") from None
    _check(obj, f"{setting}={path}")
    return obj
