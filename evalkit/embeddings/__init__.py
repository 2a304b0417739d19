"""Embedding models: what turns audio (or text) into vectors. One module + one conf file each.

``conf/embeddings/<name>.yaml`` holds an embedder's facts (sample rate, dimension, checkpoint file, URL and sha256 or
hub revision, front-end constants, each naming its source) and ``module:``, the file of this package that implements
it (:class:`~evalkit.embeddings.base.Embedder`). A protocol names its embedder (``embedding: vggish``); a run's
config then holds the effective constants under ``metrics.<metric>.embedder``. An embedder defined outside this
package (a plugin, a test) registers its class and its conf with :func:`register_embedder`.

This module is torch-free: the run's config is resolved (:func:`embedder_conf`) before anything heavy is imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from evalkit.errors import InputError

#: ``conf/embeddings/`` beside the package
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "embeddings"

_CLASSES: dict[str, type] = {}
_CONFS: dict[str, dict[str, Any]] = {}


class EmbeddingError(InputError, KeyError):
    """An embedding name that no conf file or registered embedder defines."""

    def __str__(self) -> str:  # KeyError quotes its message
        return str(self.args[0])


def register_embedder(name: str, conf: Mapping[str, Any] | str | Path | None = None) -> Callable[[type], type]:
    """Class decorator: the :class:`~evalkit.embeddings.base.Embedder` subclass for ``name``. ``conf`` (a mapping
    or a YAML file) gives its constants when ``conf/embeddings/<name>.yaml`` does not exist (plugins, tests)."""
    def deco(cls: type) -> type:
        if name in _CLASSES and _CLASSES[name] is not cls:
            raise KeyError(f"embedder {name!r} registered twice")
        _CLASSES[name] = cls
        if not getattr(cls, "name", ""):
            cls.name = name
        if conf is not None:
            _CONFS[name] = _read_conf(conf)
        return cls

    return deco


def _read_conf(conf: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(conf, Mapping):
        return dict(conf)
    import yaml

    return dict(yaml.safe_load(Path(conf).read_text(encoding="utf-8")) or {})


def embedding_names() -> list[str]:
    """Every embedding known now: the conf files of ``conf/embeddings/`` and the registered ones."""
    return sorted({p.stem for p in CONF_DIR.glob("*.yaml")} | set(_CONFS))


def embedder_conf(name: str) -> dict[str, Any]:
    """The constants of embedding ``name`` (``conf/embeddings/<name>.yaml``, or what it was registered with).
    Raises :class:`EmbeddingError` naming the known embeddings."""
    path = CONF_DIR / f"{name}.yaml"
    if path.is_file():
        return _read_conf(path)
    if name in _CONFS:
        return dict(_CONFS[name])
    raise EmbeddingError(f"embedding {name!r}: no conf/embeddings/{name}.yaml and no registered embedder; known: "
                         f"{', '.join(embedding_names())}")


def build_embedder(recipe: Mapping[str, Any], setting: str, device: Any = "cpu"):
    """The :class:`~evalkit.embeddings.base.Embedder` a metric's recipe names (``embedding``), built on ``device``
    with the recipe's constants (``embedder``) and weight settings; ``setting`` (``metrics.fad``) is named in errors."""
    return get_embedder(str(recipe["embedding"])).from_recipe(recipe, setting, device)


def get_embedder(name: str) -> type:
    """The class of embedding ``name``, importing ``evalkit.embeddings.<module>`` (its conf's ``module``) on first
    use."""
    if name not in _CLASSES:
        import importlib

        module = embedder_conf(name).get("module")
        if not module:
            raise EmbeddingError(f"embedding {name!r}: its conf names no module")
        importlib.import_module(module if "." in str(module) else f"evalkit.embeddings.{module}")
    if name not in _CLASSES:
        raise EmbeddingError(f"embedding {name!r}: module {embedder_conf(name).get('module')!r} registers no "
                             f"embedder of that name")
    return _CLASSES[name]
