"""``model=folder model.dir=DIR``: score audio that already exists (any text-to-music model's output), one file per
clip named by clip id (wav/flac/mp3/ogg). Nothing is generated or copied; clips.parquet points at the files."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from evalkit.audio import AUDIO_EXTENSIONS, load_audio
from evalkit.data.prompts import Prompt
from evalkit.generate.base import GeneratedClip
from evalkit.registry import register_generator


@register_generator("folder")
class FolderGenerator:
    name = "folder"
    random_weights = False

    def __init__(self, model_cfg, *_, **__) -> None:
        d = model_cfg.get("dir")
        if not d:
            raise ValueError("model=folder needs model.dir=DIR (a folder of clips named <id>.<ext>)")
        self.root = Path(d).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"model.dir={d}: no such folder")
        self.paths: dict[str, Path] = {}
        for p in sorted(self.root.iterdir()):
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."):
                if p.stem in self.paths:
                    raise ValueError(f"model.dir: two files for id {p.stem!r}: {self.paths[p.stem].name} and {p.name}")
                self.paths[p.stem] = p
        self.model_cfg = dict(model_cfg)

    def path(self, clip_id: str) -> Path | None:
        return self.paths.get(clip_id)

    def describe(self) -> dict[str, Any]:
        return {"name": self.model_cfg.get("name", "folder"), "hub_id": None, "source": str(self.root),
                "random_weights": False}

    def generate(self, prompts: Sequence[Prompt]) -> Iterator[GeneratedClip]:
        for p in prompts:
            path = self.paths.get(p.id)
            if path is None:
                continue
            wav, sr = load_audio(path)
            yield GeneratedClip(p.id, wav, sr, None, {"path": str(path)})
