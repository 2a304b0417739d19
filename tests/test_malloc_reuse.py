"""``reuse_freed_memory`` (evalkit/embeddings/base.py): freed large blocks are reused instead of page-faulted afresh.

The workload is the full PaSST's attention at 10 s (12 heads x 1,190 patches): per layer ``q @ k^T``, the scaling and
the softmax each allocate a 67.97 MB matrix (16,594 pages of 4 KiB). Twelve layers in each of two forward workers
(after twelve warm-up layers: two workers share one heap, and how their blocks interleave grows it for a while; with
three warm-up layers the measured twelve still saw 0-7 matrices of heap growth per worker, 1 run in 8 over the 10x
margin below; with twelve, 0 faults in 8 of 8 runs): glibc's default malloc serves every one of those 36 matrices with a fresh ``mmap``
(>= 36 x 16,594 = 597,384 minor faults per worker with 4 KiB pages; >= 36 x 33 with 2 MiB huge pages); with the
blocks kept for reuse they come back from the heap with their pages present. Each case runs in its own interpreter
(the setting is process-wide and acts on threads that have no malloc arena yet)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc malloc and RUSAGE_THREAD only")

MATRICES = 12 * 3  # per worker: 12 layers x (scores, scaled scores, softmax)
HUGE_PAGES_PER_MATRIX = 33  # 67.97 MB / 2 MiB, rounded up: the fewest faults one fresh matrix can cost

SCRIPT = r"""
import json, resource
import torch
from evalkit.cpu import reuse_freed_memory, run_calls

mode = reuse_freed_memory()
q = torch.randn(1, 12, 1190, 64)

def layer():
    a = (q @ q.transpose(-2, -1)) * 0.125
    return a.softmax(-1) @ q

def work(_):
    for _ in range(12):  # until the shared heap has reached its high-water mark (see the docstring)
        layer()
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(12):
        layer()
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

print(json.dumps({"mode": mode, "faults": run_calls(work, [0, 1], 2)}))
"""


def _run(env_value: str | None) -> dict:
    env = dict(os.environ)
    env.pop("EVALKIT_MALLOC", None)
    if env_value is not None:
        env["EVALKIT_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_attention_matrices_come_back_from_the_heap():
    system, reuse = _run("system"), _run(None)
    assert system["mode"] == "system" and reuse["mode"] == "reuse"
    for faults in system["faults"]:  # every matrix mapped afresh: what reuse avoids
        assert faults >= MATRICES * HUGE_PAGES_PER_MATRIX, system
    assert 10 * sum(reuse["faults"]) < sum(system["faults"]), (reuse, system)
