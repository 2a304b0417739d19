"""Name -> class registries, filled where each class is defined (lm-evaluation-harness style)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T")

METRICS: dict[str, type] = {}
GENERATORS: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        if name in table and table[name] is not cls:
            raise KeyError(f"{kind} {name!r} registered twice")
        table[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def register_metric(name: str):
    return _register(METRICS, "metric", name)


def register_generator(name: str):
    return _register(GENERATORS, "generator", name)


def _modules(package) -> list[str]:
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__))


def metric_names() -> list[str]:
    """Every metric evalkit ships: the modules of ``evalkit/metrics/`` that register one (found on disk, so a new
    metric is its module and its conf files, nothing else), then the instances of ``conf/metrics/`` (a metric class
    under another name with its own protocol: :func:`instance_info`)."""
    import evalkit.metrics as pkg

    skip = {"base", "spec"}  # the contract, not metrics
    modules = [m for m in _modules(pkg) if m not in skip]
    return modules + [n for n in sorted(_conf_nodes()) if n not in modules and instance_info(n)]


#: ``conf/metrics/`` beside the package
METRICS_CONF = Path(__file__).resolve().parents[1] / "conf" / "metrics"


def _conf_nodes() -> dict[str, dict]:
    """``{name: the YAML of conf/metrics/<name>.yaml}`` (read once per call; PyYAML only)."""
    import yaml

    out = {}
    for f in sorted(METRICS_CONF.glob("*.yaml")):
        out[f.stem] = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    return out


def instance_info(name: str, recipe: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """``(metric class name, section)`` when ``name`` is an *instance* (a metric class under another name, e.g.
    ``fd_openl3`` = ``fad`` with the stable-audio-metrics protocol): the recipe's ``metric`` and ``section`` keys, or
    else those of ``conf/metrics/<name>.yaml``'s ``<name>`` node. None for a metric under its own name."""
    node = recipe if recipe is not None and recipe.get("metric") else None
    if node is None:
        path = METRICS_CONF / f"{name}.yaml"
        if not path.is_file():
            return None
        import yaml

        node = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(name) or {}
    cls = node.get("metric")
    if not cls or cls == name:
        return None
    return str(cls), str(node.get("section") or name)


def preset_members(name: str) -> list[str] | None:
    """The metrics a preset stands for (``conf/metrics/<name>.yaml`` whose defaults list only other metrics' conf
    files, e.g. ``stable-audio-metrics`` -> fd_openl3, kl_passt, clap_score), or None when ``name`` is no preset."""
    path = METRICS_CONF / f"{name}.yaml"
    if not path.is_file():
        return None
    import yaml

    node = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    members = [d for d in node.get("defaults") or [] if isinstance(d, str) and d != "_self_"]
    return members if members and set(node) == {"defaults"} else None


def get_metric(name: str, recipe: Mapping[str, Any] | None = None) -> type:
    """The metric class of ``name``: registered as ``name`` (importing ``evalkit.metrics.<name>`` on first use), or,
    for an instance (:func:`instance_info`), its metric class under that name
    (:func:`evalkit.metrics.base.metric_instance`)."""
    import importlib

    info = instance_info(name, recipe)
    if info is not None:
        from evalkit.metrics.base import metric_instance

        return metric_instance(get_metric(info[0]), name, info[1])
    if name not in METRICS and name in metric_names():
        importlib.import_module(f"evalkit.metrics.{name}")  # registers it
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {metric_names()}")
    return METRICS[name]


def get_generator(name: str) -> type:
    """The generator class registered as ``name``, importing the modules of ``evalkit/generate/`` on first use."""
    import importlib

    import evalkit.generate as pkg

    if name not in GENERATORS:
        for module in _modules(pkg):
            importlib.import_module(f"evalkit.generate.{module}")
    if name not in GENERATORS:
        raise KeyError(f"unknown generator {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name]
