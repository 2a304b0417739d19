"""The backbone interface: one way to build, load and describe VGGish, PaSST and CLAP.

A backbone is the network a metric embeds audio (or text) with. :meth:`Backbone.load` is the same for all three:
build the architecture with seeded random weights (the caller's RNG untouched), then, when the resolved
:class:`~evalkit.backbones.weights.Checkpoint` has a file, read it with the one safe reader
(:func:`~evalkit.backbones.weights.read_state_dict`: ``weights_only=True``), adapt it to the network
(:meth:`Backbone.load_weights`) and load it strictly. Where the files come from (release download with sha256, local
path, random) is :func:`~evalkit.backbones.weights.resolve_checkpoint`'s business.

CPU threads (:func:`cpu_threads`, :func:`run_calls`): a backbone's output does not depend on the number of intra-op
threads that computed it (``tests/test_cpu_threads.py`` checks VGGish, PaSST and CLAP at full and tiny size), only on
how its inputs are batched. So the metrics choose the threads by measurement without changing a number: the small
ops of audio preparation run on one thread (on a 2-core machine that is never slower, and a second OpenMP thread
that waits at every op's barrier while another process holds its core made them 5-15x slower, measured), and
independent forward calls of the same batches can run on several threads of one intra-op thread each instead of one
after the other on all of them (PaSST at batch 1: 1.3x on 2 cores under load).
"""
from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from evalkit.backbones.weights import Checkpoint, read_state_dict

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads in the calling thread (torch's OpenMP setting is per thread; other
    threads keep theirs), restored afterwards. ``None``: leave it."""
    before = torch.get_num_threads()
    if not n or int(n) == before:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def all_finite(x: torch.Tensor) -> bool:
    """``bool(torch.isfinite(x).all())`` in one reduction without a mask tensor (~15x faster on audio): ``aminmax``
    propagates NaN and the infinities, so both extremes are finite exactly when every element is."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x.detach())
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


_POOL: Any = None
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()


def _pool(workers: int):
    """One process-wide pool of forward workers, grown on demand and reused: threads created per call would leave a
    malloc arena each behind (peak memory growing with the number of batches)."""
    global _POOL
    from concurrent.futures import ThreadPoolExecutor

    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            old, _POOL = _POOL, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evalkit-forward")
            if old is not None:
                old.shutdown(wait=False)
        return _POOL


def run_calls(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, computed on up to ``workers`` threads with one intra-op thread each (independent
    forward calls side by side instead of one after the other on every core). Results in order; the same values as
    the sequential loop (outputs do not depend on the thread count). ``workers <= 1``, one item, or a call from
    inside a worker: the plain loop."""
    items = list(items)
    if workers <= 1 or len(items) <= 1 or getattr(_LOCAL, "worker", False):
        return [fn(x) for x in items]
    results: list[Any] = [None] * len(items)
    next_item = iter(range(len(items)))
    lock = threading.Lock()

    def runner() -> None:
        _LOCAL.worker = True
        try:
            with torch.inference_mode(), cpu_threads(1):
                while True:
                    with lock:
                        i = next(next_item, None)
                    if i is None:
                        return
                    results[i] = fn(items[i])
        finally:
            _LOCAL.worker = False

    from concurrent.futures import wait

    futures = [_pool(workers).submit(runner) for _ in range(min(int(workers), len(items)))]
    wait(futures)  # every runner has stopped before an error is raised
    for f in futures:
        f.result()
    return results


class Backbone(ABC):
    #: short name (vggish, passt, clap)
    name: str = ""

    def __init__(self, size: str = "full", seed: int = 0) -> None:
        self.size, self.seed = str(size), int(seed)

    @abstractmethod
    def build(self) -> torch.nn.Module:
        """The network with random weights drawn from ``self.seed``."""

    @abstractmethod
    def load_weights(self, module: torch.nn.Module, state: dict, setting: str) -> None:
        """Put a checkpoint's tensors (as :func:`read_state_dict` returns them) into ``module``, strictly."""

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.name, "model_size": self.size}

    def load(self, checkpoint: Checkpoint, *, setting: str, device: str | torch.device = "cpu",
             trust: bool = False) -> torch.nn.Module:
        """The network for ``checkpoint`` (random weights when it has no file), in eval mode on ``device``.
        ``setting`` (e.g. ``metrics.fad.checkpoint``) and the file are named in every error; ``trust`` is the
        metric's ``trust_checkpoint`` (full unpickling of a file that needs it)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = self.build()
        if checkpoint.path is not None:
            state = read_state_dict(checkpoint.path, setting=setting, trust=trust)
            self.load_weights(module, state, f"{setting}={checkpoint.path}")
        return module.to(device).eval()
