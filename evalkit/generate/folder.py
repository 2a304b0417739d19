"""``model=folder model.dir=DIR``: score audio that already exists (any text-to-music model's output), one file per
clip named by clip id (wav/flac/mp3/ogg). Nothing is generated or copied; clips.parquet points at the files. The
run's name in tables is ``model.label`` (default: :func:`folder_label` of the folder), not ``folder``.

It goes through the same generation stage as MusicGen: a plan of batches (chunks of the prompts, no seeds), and per
batch the existing file of each prompt (``GeneratedClip.path``) or a skip naming the missing file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from evalkit.audio import AUDIO_EXTENSIONS
from evalkit.data.prompts import Prompt
from evalkit.data.references import ReferenceError, list_audio_files
from evalkit.errors import InputError
from evalkit.generate.base import Batch, GeneratedClip, Generator
from evalkit.registry import register_generator

#: prompts per planned batch (only the granularity of generation/batch-*.json; nothing is loaded here)
FOLDER_BATCH = 256
#: folder names that say nothing about the model: a run folder's own audio/, Hydra's time-stamped run folders
_UNNAMED = re.compile(r"^(audio|\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)$")


def folder_label(folder: str | Path) -> str:
    """The default ``model.label`` of a folder of clips: its name, or the first folder above it whose name says
    something (folders named ``audio`` - a run folder's own - and Hydra's ``YYYY-MM-DD_HH-MM-SS`` run folders are
    skipped): ``outputs/musicgen-small/audio`` -> ``musicgen-small``; the folder's own name when every name above it
    is of that kind."""
    path = Path(str(folder)).expanduser().absolute()
    return next((p.name for p in (path, *path.parents) if p.name and not _UNNAMED.match(p.name)), path.name)


class FolderError(InputError, ValueError):
    pass


@register_generator("folder")
class FolderGenerator(Generator):
    name = "folder"
    random_weights = False
    writes_audio = False

    def __init__(self, model_cfg: Mapping[str, Any], *_, **__) -> None:
        d = model_cfg.get("dir")
        if not d or d == "???":
            raise FolderError("model=folder needs model.dir=DIR (a folder of clips named <id>.wav|flac|mp3|ogg)")
        from evalkit.io import folder_problem

        self.root = Path(str(d)).expanduser()
        problem = folder_problem(self.root)
        if problem:
            raise FolderError(f"model.dir={d}: {problem}")
        try:
            self.paths, self.unusable = list_audio_files(self.root, "model.dir")
        except ReferenceError as exc:
            raise FolderError(str(exc)) from exc
        if not self.paths:
            raise FolderError(f"model.dir={d}: no audio files named <id>.<ext> ({', '.join(AUDIO_EXTENSIONS)})")
        self.model_cfg = dict(model_cfg)

    def path(self, clip_id: str) -> Path | None:
        """The clip file of ``clip_id``; ids match in Unicode NFC form (``references.id_key``)."""
        from evalkit.data.references import id_key

        return self.paths.get(clip_id) or {id_key(i): p for i, p in self.paths.items()}.get(id_key(clip_id))

    def describe(self) -> dict[str, Any]:
        label = self.model_cfg.get("label")
        return {"name": self.model_cfg.get("name", "folder"), "hub_id": None, "source": str(self.root),
                "random_weights": False, "label": str(label) if label else folder_label(self.root)}

    def plan(self, prompts: Sequence[Prompt]) -> list[Batch]:
        prompts = list(prompts)
        return [Batch(i // FOLDER_BATCH, None, prompts[i:i + FOLDER_BATCH]) for i in range(0, len(prompts), FOLDER_BATCH)]

    def unused_files(self, ids) -> list[dict[str, str]]:
        from evalkit.data.references import id_key

        ids = {id_key(i) for i in ids}
        out = [{"file": str(p), "reason": "no prompt id (not in the prompt set)"} for i, p in self.paths.items()
               if id_key(i) not in ids]
        return out + [{"file": str(p), "reason": why} for p, why in self.unusable]

    def generate_batch(self, batch: Batch, melodies=None, on_step=None) -> list[GeneratedClip]:
        out = []
        for p in batch.prompts:
            path = self.path(p.id)
            out.append(GeneratedClip(p.id, path=path, skipped=None if path else f"no file {p.id}.<ext> in model.dir"))
        return out
