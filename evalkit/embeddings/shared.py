"""Embeddings computed once per clip for every metric that asks for the same ones.

Two metrics of a run whose embedder identity (name, constants, checkpoint sha256 or random seed, size, device), input
path (:attr:`~evalkit.input_path.InputPath.key`) and windows (``window_s``/``hop_s``/``window_pad``) are equal see
the same vectors: FAD and KAD on the audiocraft protocol embed the same 19 VGGish windows per clip side. The first
metric to embed a clip side keeps the result in the clip's memo (:attr:`~evalkit.metrics.base.Clip.memo`, which
lives as long as the batch) under :func:`embedding_key`; the second reads it there (:func:`embed_shared`).
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import torch


def embedding_key(embedder, input_key: str | None, windows: Sequence[Any]) -> str:
    """What decides a clip side's embeddings: the embedder's identity and device, the input path, the windows."""
    return "embedding:" + json.dumps([embedder.identity(), str(embedder.device), input_key, list(windows)],
                                     sort_keys=True, default=str)


def embed_shared(embedder, key: str, items: Sequence[tuple[Any, str, torch.Tensor]]) -> list[np.ndarray]:
    """One array per ``(clip, side, input)`` item: the clip's memo entry ``(key, side)`` when another metric already
    embedded it, else ``embedder.embed`` (one batched call for all of those), kept in the memo."""
    out: list[np.ndarray | None] = [None] * len(items)
    todo = []
    for i, (clip, side, _) in enumerate(items):
        got = clip.memo.get((key, side))
        if got is None:
            todo.append(i)
        else:
            out[i] = got
    if todo:
        for i, e in zip(todo, embedder.embed([items[i][2] for i in todo])):
            clip, side, _ = items[i]
            clip.memo[(key, side)] = out[i] = e
    return out  # type: ignore[return-value]


__all__ = ["embed_shared", "embedding_key"]
