"""CPU execution, measured: intra-op threads per call, independent calls side by side, malloc that keeps freed blocks.

A network's output does not depend on the number of intra-op threads that computed it (``tests/test_cpu_threads.py``
checks VGGish, PaSST and CLAP at full and tiny size), only on how its inputs are batched. So the embedders and the
input path choose threads by measurement without changing a number: the small ops of audio preparation run on one
thread (on a 2-core machine that is never slower, and a second OpenMP thread that waits at every op's barrier while
another process holds its core made them 5-15x slower, measured), and independent forward calls of the same batches
run on several threads of one intra-op thread each instead of one after the other on all of them (PaSST at batch 1:
1.3x on 2 cores under load). :func:`reuse_freed_memory` keeps glibc from unmapping large freed blocks (see there).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

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


#: glibc ``mallopt`` parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_MALLOC_STATE: dict[str, Any] = {}


def reuse_freed_memory() -> str:
    """Let glibc's malloc keep freed blocks for reuse instead of handing every large one back to the kernel: one
    arena (``M_ARENA_MAX=1``), blocks up to 1 GiB from the heap (``M_MMAP_THRESHOLD``), the heap trimmed only
    above 2 GiB free (``M_TRIM_THRESHOLD``). Process-wide, once; values are unchanged (only where memory comes from).

    Why: torch's CPU tensors come from ``malloc``, and glibc serves any block over 32 MiB (and, in a thread's own
    arena, over 64 MiB) with a fresh ``mmap`` that is unmapped on ``free``. The full PaSST's attention matrices at
    10 s are 68 MB each (12 heads x 1,190^2 patches, three per layer), so every forward pass page-faulted ~1.5 GB of
    new zeroed pages: 5.4 M minor faults and 9.8 s of system time for 9 passes, ~30 % of KLD's CPU time, and worse
    with two passes side by side (measured: ``benchmarks/README.md``, issue 16). Only effective for threads that have
    not picked an arena yet, hence called at the start of a run and before a backbone is loaded.

    Returns what was done: ``"reuse"``, ``"system"`` (``EVALKIT_MALLOC=system``: leave malloc as it is) or
    ``"unavailable"`` (not glibc)."""
    if "mode" in _MALLOC_STATE:
        return _MALLOC_STATE["mode"]
    import os
    import platform

    mode = "system" if os.environ.get("EVALKIT_MALLOC", "").lower() == "system" else "unavailable"
    if mode != "system" and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        import ctypes

        try:
            mallopt = ctypes.CDLL(None).mallopt
            ok = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_THRESHOLD, 1 << 30),
                  mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)]
            mode = "reuse" if all(ok) else "unavailable"
        except (OSError, AttributeError):
            mode = "unavailable"
    _MALLOC_STATE["mode"] = mode
    return mode


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
