"""Process groups for ``torchrun --nproc-per-node=N -m evalkit ...``: rank, world size, barriers.

One process (no ``WORLD_SIZE`` in the environment) needs none of it. Under torchrun each rank generates and scores
its share (every N-th batch), writes its own clips, rows and statistics into the one run folder, and rank 0 merges
the statistics (sums) and writes the summary. gloo on CPU, nccl on GPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized: bool = False

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj):
        """rank 0's ``obj`` on every rank."""
        if not self.initialized:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


_DIST: Dist | None = None


def init() -> Dist:
    """Initialise the process group once when launched by torchrun; a no-op otherwise."""
    global _DIST
    if _DIST is not None:
        return _DIST
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _DIST = Dist()
        return _DIST
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local)
    _DIST = Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, initialized=True)
    return _DIST


def device_for(device: str, dist) -> str:
    """The run's ``device`` setting (``auto``: cuda if available) for this process; under torchrun on GPUs each rank
    takes ``cuda:LOCAL_RANK``."""
    import torch

    if dist.world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{dist.local_rank}"
    if device in ("auto", "None", ""):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
