"""RunSpec: the frozen, validated description of one run, built once from the Hydra config.

One resolved config = one run = one folder. ``RunSpec`` is that config (``conf/`` composed with the user's overrides,
every interpolation resolved, Hydra's own node removed), checked before any work, and read-only afterwards:

- ``RunSpec.from_overrides(["model=stereo-medium", "metrics.fad.protocol=frechet-audio-distance"])`` composes
  ``conf/`` with overrides as the command line would (no Hydra app needed: notebooks, tests, training loops);
- ``RunSpec.from_config(cfg)`` takes a composed ``DictConfig`` (what ``python -m evalkit`` gets from ``@hydra.main``);
- ``RunSpec.from_dict(d)`` rebuilds one from a saved ``config.yaml`` (a plain mapping).

Each metric's node (``spec.metrics["fad"]``) is the metric's *recipe*: the protocol file's constants
(``conf/metrics/<metric>/<protocol>.yaml``, each with the reference it comes from) merged with the run settings of
``conf/metrics/<metric>.yaml``. ``config.yaml`` shows exactly these effective values, and any of them can be
overridden from the command line, to null too (``metrics.fad.checkpoint_sha256=null``).

Identity (what decides whether a folder may be resumed): the whole config except :data:`VOLATILE_KEYS`, settings
that change no number (progress bars, workers, the device, caches, ``overwrite``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from evalkit.errors import InputError

#: The ``conf/`` folder beside the package.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
#: Config keys that change no number: they may differ between a run and its resumption.
VOLATILE_KEYS = ("progress", "num_workers", "overwrite", "device", "cache", "allow_missing_metrics")
PRECISIONS = ("fp32", "fp16", "bf16")
BACKBONE_WEIGHTS = ("released", "random")
CHANNEL_VIEWS = ("mono", "left", "right", "mid", "side")
BACKBONE_SIZES = ("full", "tiny")


class SpecError(InputError, ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# Read-only nested mappings
# ----------------------------------------------------------------------------------------------------------------
def freeze(obj: Any) -> Any:
    """Dicts -> read-only ``MappingProxyType``, lists -> tuples, recursively."""
    if isinstance(obj, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(freeze(v) for v in obj)
    return obj


def thaw(obj: Any) -> Any:
    """The inverse of :func:`freeze`: plain dicts and lists (for YAML/JSON)."""
    if isinstance(obj, Mapping):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [thaw(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Overrides
# ----------------------------------------------------------------------------------------------------------------
_PROTOCOL_OVERRIDE = re.compile(r"^(?P<prefix>[~+]{0,2})metrics\.(?P<metric>[A-Za-z0-9_-]+)\.protocol=(?P<value>.*)$")


def rewrite_overrides(overrides: Iterable[str], conf_dir: str | Path | None = None) -> list[str]:
    """``metrics.<m>.protocol=<p>`` -> ``metrics/<m>=<p>``: the protocol is a config group (a file in
    ``conf/metrics/<m>/``), so choosing it swaps every constant of the recipe, not just the label. For an instance of
    another metric's class (``fd_openl3``: ``fad`` under another name, :func:`metric_class`), the group is that
    class's, at the instance's package: ``metrics/fad@metrics.fd_openl3=<p>``."""
    out = []
    for o in overrides:
        m = _PROTOCOL_OVERRIDE.match(o)
        if m and not m["prefix"]:
            out.append(f"{protocol_group(m['metric'], conf_dir)}={m['value']}")
        else:
            out.append(o)
    return out


def metric_class(name: str, conf_dir: str | Path | None = None) -> str:
    """The metric class a ``conf/metrics/<name>.yaml`` runs: its node's ``metric`` key for an instance
    (``fd_openl3`` -> ``fad``), else ``name`` itself (PyYAML only; :func:`evalkit.registry.instance_info` is the
    same rule for code that builds the metric)."""
    import yaml

    path = Path(conf_dir or CONF_DIR) / "metrics" / f"{name}.yaml"
    if not path.is_file():
        return name
    node = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(name) or {}
    return str(node.get("metric") or name) if isinstance(node, Mapping) else name


def protocol_group(name: str, conf_dir: str | Path | None = None) -> str:
    """The config group that chooses metric ``name``'s protocol: ``metrics/<name>``, or for an instance
    ``metrics/<class>@metrics.<name>`` (how Hydra names a group chosen at another package)."""
    cls = metric_class(name, conf_dir)
    return f"metrics/{name}" if cls == name else f"metrics/{cls}@metrics.{name}"


def compose(overrides: Sequence[str] = (), conf_dir: str | Path | None = None):
    """``conf/config.yaml`` composed with ``overrides`` (command-line syntax), as a ``DictConfig`` with Hydra's node
    (``return_hydra_config``: the choices of every config group, used to check protocol labels)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        if GlobalHydra.instance().is_initialized():  # inside @hydra.main or another compose: leave it as it is
            return hydra_compose("config", overrides=rewrite_overrides(overrides), return_hydra_config=True)
        with initialize_config_dir(config_dir=str(Path(conf_dir or CONF_DIR).resolve()), version_base=None):
            return hydra_compose("config", overrides=rewrite_overrides(overrides, conf_dir), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise SpecError(composition_message(exc, conf_dir)) from None


def composition_message(exc: Exception, conf_dir: str | Path | None = None) -> str:
    """Hydra's composition error in one line, with the choices where it names a group (and, for a key that does not
    exist, why ``+key=`` is not the fix: a key nothing reads is refused anyway); for a value it cannot read as
    written, the quoting to use (:func:`evalkit.overrides.quoting_message`)."""
    import re

    text = str(exc)
    first = text.strip().splitlines()[0]
    from evalkit.overrides import quoting_message

    quoting = quoting_message(exc)  # a value Hydra cannot read as written: the quoting to use
    if quoting:
        return quoting
    m = re.search(r"Could not (?:load|find) '([\w/.-]+)/([\w.-]+)'", text)
    if m:
        group = Path(conf_dir or CONF_DIR) / m[1]
        options = sorted(f.stem for f in group.glob("*.yaml")) if group.is_dir() else []
        return f"{m[1]}={m[2]}: no such choice; known: {', '.join(options)}"
    m = re.search(r"Could not override '([\w.]+)'", text)
    if m:
        return f"{m[1]}: no such setting{_nearest_setting(m[1])} (a run's config.yaml lists every setting)"
    return first


def _nearest_setting(key: str) -> str:
    """`` (did you mean X?)`` for a mistyped ``metrics.<m>.<key>`` or ``generation.<key>``, else ''. A constant of the
    metric's embedding (``conf/embeddings/``) lives under ``metrics.<m>.embedder``: that is the hint then."""
    import difflib

    import yaml

    parts = key.split(".")
    try:
        if parts[0] == "metrics" and len(parts) == 3:
            recipe = recipe_from_files(parts[1])
            if parts[2] in (recipe.get("embedder") or {}):
                return (f" here: it is a constant of the {recipe['embedding']} embedding "
                        f"(conf/embeddings/{recipe['embedding']}.yaml), set with +metrics.{parts[1]}.embedder.{parts[2]}=")
            known = set(recipe)
        elif parts[0] == "generation" and len(parts) == 2:
            known = {k for f in (CONF_DIR / "generation").glob("*.yaml") for k in (yaml.safe_load(f.read_text()) or {})}
        else:
            return ""
    except (OSError, StopIteration, KeyError, SpecError):
        return ""
    near = difflib.get_close_matches(parts[-1], sorted(known), n=1)
    return f" (did you mean {'.'.join(parts[:-1] + near)}?)" if near else ""


def metric_recipe(name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The effective recipe of one metric (``spec.metrics[name]`` as a plain dict), composed from ``conf/`` with
    ``overrides`` (e.g. ``["metrics.fad.protocol=frechet-audio-distance", "backbone_weights=random"]``)."""
    spec = RunSpec.from_overrides([f"metrics=[{name}]", *overrides])
    return thaw(spec.metrics[name])


_RUN_LEVEL = {"backbone_weights": "released", "backbone_size": "full", "reference.stats": None}


def recipe_from_files(name: str, protocol: str | None = None, conf_dir: str | Path | None = None,
                      postprocess: str = "audiocraft", **settings: Any) -> dict[str, Any]:
    """The recipe :func:`metric_recipe` composes, read from the YAML files without Hydra (for benchmark scripts on
    machines that carry only PyYAML): ``conf/metrics/<name>/<protocol>.yaml`` under the run settings of
    ``conf/metrics/<name>.yaml``, then ``settings``, with its embedding's constants filled in
    (:func:`resolve_recipe`). Run-level interpolations (``${backbone_weights}``, ``${backbone_size}``,
    ``${reference.stats}``) take their defaults unless ``settings`` gives the key; the input path's
    ``${postprocess.<side>}`` comes from ``conf/postprocess/<postprocess>.yaml``.
    ``tests/test_spec.py`` checks it equals the composed recipe for every metric and protocol."""
    import yaml

    conf = Path(conf_dir or CONF_DIR)
    root = conf / "metrics"
    node = yaml.safe_load((root / f"{name}.yaml").read_text(encoding="utf-8"))
    cls = metric_class(name, conf)
    entry = name if cls == name else f"{cls}@{name}"  # an instance chooses among its class's protocol files
    default = next(d[entry] for d in node["defaults"] if isinstance(d, dict) and entry in d)
    protocol = protocol or default
    recipe = yaml.safe_load((root / cls / f"{protocol}.yaml").read_text(encoding="utf-8"))
    recipe.update(node.get(name) or {})
    post = yaml.safe_load((conf / "postprocess" / f"{postprocess}.yaml").read_text(encoding="utf-8"))
    for k, v in recipe.items():
        if isinstance(v, str) and v.startswith("${") and v.endswith("}"):
            ref = v[2:-1]
            if ref not in _RUN_LEVEL:
                raise SpecError(f"conf/metrics/{name}.yaml: {k}: {v} is not a run-level setting recipe_from_files knows")
            recipe[k] = settings.get(k, _RUN_LEVEL[ref])
    for side, v in dict(recipe.get("input") or {}).items():
        if isinstance(v, str) and v.startswith("${postprocess.") and v.endswith("}"):
            recipe["input"][side] = post[v[len("${postprocess."):-1]]
    recipe.update(settings)
    return resolve_recipe(name, recipe)


def resolve_recipe(name: str, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A metric's recipe with its embedding's constants filled in: ``embedder`` = ``conf/embeddings/<embedding>.yaml``
    (or a registered embedder's conf) under the recipe's own ``embedder`` entries, which win (the command line's
    ``+metrics.<m>.embedder.<key>=``, or a saved config's values). A metric without ``embedding`` is returned as it
    is. Raises :class:`SpecError` for an unknown embedding or an ``embedder`` key the embedding does not have."""
    recipe = dict(recipe)
    emb = recipe.get("embedding")
    if not emb:
        return recipe
    from evalkit.embeddings import EmbeddingError, embedder_conf

    try:
        base = embedder_conf(str(emb))
    except EmbeddingError as exc:
        raise SpecError(f"metrics.{name}.embedding={emb}: {exc}") from None
    own = dict(recipe.get("embedder") or {})
    unknown = sorted(set(own) - set(base))
    if unknown:
        raise SpecError(f"metrics.{name}.embedder.{unknown[0]}: not a constant of the {emb} embedding "
                        f"(conf/embeddings/{emb}.yaml); known: {', '.join(sorted(base))}")
    recipe["embedder"] = {**base, **own}
    return recipe


# ----------------------------------------------------------------------------------------------------------------
# The spec
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run, frozen. Groups (``model``, ``dataset``, ...) are read-only mappings; ``metrics`` maps each metric's
    name to its recipe, in the order the config lists them."""

    model: Mapping[str, Any]
    dataset: Mapping[str, Any]
    generation: Mapping[str, Any]
    postprocess: Mapping[str, Any]
    reference: Mapping[str, Any]
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    melody: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    cache: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int | str = 16
    metric_batch_size: int = 8
    num_workers: int = 0
    overwrite: bool = False
    progress: bool = True
    backbone_weights: str = "released"
    backbone_size: str = "full"
    audit: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    channel_view: str = "mono"
    allow_missing_metrics: bool = False

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, config: Mapping[str, Any], choices: Mapping[str, str] | None = None) -> "RunSpec":
        """From a plain, resolved config mapping (``config.yaml``). Unknown top-level keys are an error."""
        cfg = dict(config)
        cfg.pop("hydra", None)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise SpecError(f"unknown settings {unknown}; known: {sorted(names)}")
        cfg["metrics"] = {name: resolve_recipe(name, recipe) for name, recipe in (cfg.get("metrics") or {}).items()}
        cfg["melody"] = cfg.get("melody") or {}
        spec = cls(**{k: freeze(v) for k, v in cfg.items()})
        spec.validate(choices)
        return spec

    @classmethod
    def from_config(cls, cfg) -> "RunSpec":
        """From a composed Hydra ``DictConfig`` (interpolations resolved here; Hydra's node dropped)."""
        from omegaconf import OmegaConf

        choices = None
        if "hydra" in cfg and cfg.hydra.get("runtime") is not None:
            choices = dict(cfg.hydra.runtime.choices)
        else:
            try:
                from hydra.core.hydra_config import HydraConfig

                if HydraConfig.initialized():
                    choices = dict(HydraConfig.get().runtime.choices)
            except Exception:  # not inside a Hydra app
                choices = None
        if "hydra" in cfg:  # Hydra's own node holds values only an app run can resolve: not part of the run
            from omegaconf import open_dict

            cfg = cfg.copy()
            with open_dict(cfg):
                del cfg["hydra"]
        return cls.from_dict(OmegaConf.to_container(cfg, resolve=True), choices)

    @classmethod
    def from_overrides(cls, overrides: Sequence[str] = (), conf_dir: str | Path | None = None) -> "RunSpec":
        """Compose ``conf/`` with command-line style overrides and build the spec."""
        return cls.from_config(compose(list(overrides), conf_dir))

    # -- views -------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data: what ``config.yaml`` holds."""
        return {f.name: thaw(getattr(self, f.name)) for f in fields(self)}

    def identity(self) -> dict[str, Any]:
        """Everything that decides a number: the config without :data:`VOLATILE_KEYS`."""
        return {k: v for k, v in self.to_dict().items() if k not in VOLATILE_KEYS}

    def identity_diff(self, other: Mapping[str, Any]) -> list[str]:
        """Dotted keys whose values differ between this spec's identity and ``other`` (a saved config)."""
        theirs = {k: v for k, v in dict(other).items() if k not in VOLATILE_KEYS and k != "hydra"}
        return _diff_keys(self.identity(), theirs)

    @property
    def melody_model(self) -> bool:
        return bool(self.model.get("melody"))

    @property
    def melody_source(self) -> str:
        """``reference`` (condition on each prompt's reference clip) or ``none``; always ``none`` for a text model."""
        return str(self.melody.get("source", "none")) if self.melody_model else "none"

    @property
    def generator_name(self) -> str:
        return str(self.model.get("generator", "musicgen"))

    def context(self):
        """What the metrics may ask about this run (:class:`~evalkit.metrics.spec.RunContext`)."""
        from evalkit.metrics.spec import RunContext

        captions = not (self.dataset.get("name") == "folder" and not self.dataset.get("captions"))
        return RunContext(melody_model=self.melody_model, melody_source=self.melody_source, captions=captions,
                          channel_view=str(self.channel_view), audit=self.audit)

    # -- validation --------------------------------------------------------------------------------------------------
    def validate(self, choices: Mapping[str, str] | None = None) -> None:
        """Out-of-range settings, values of the wrong type and keys that no code reads stop the run before any work,
        each naming the setting (:class:`SpecError`)."""
        for ok, msg in self._checks():
            if not ok:
                raise SpecError(msg)
        from evalkit.audit import AuditSettings

        try:
            AuditSettings.from_config(self.audit)
        except (TypeError, ValueError) as exc:
            raise SpecError(str(exc)) from exc
        self._check_known_keys()
        for name, recipe in self.metrics.items():
            group = protocol_group(name)
            chosen = (choices or {}).get(group)
            if chosen is not None and chosen != recipe.get("protocol"):
                folder = group.split("@")[0]
                raise SpecError(
                    f"metrics.{name}.protocol={recipe.get('protocol')} but the constants are those of "
                    f"conf/{folder}/{chosen}.yaml: choose a protocol with {group}=<file> (or "
                    f"metrics.{name}.protocol=<file> on the command line), not by editing its label")

    def _checks(self) -> list[tuple[bool, str]]:
        g = self.generation
        num = lambda key, cast=float: _number(g.get(key), f"generation.{key}", cast)  # noqa: E731
        return [
            (num("duration") > 0, f"generation.duration={g['duration']}: must be > 0 seconds"),
            (num("guidance_scale") >= 1 or num("guidance_scale") == 0,
             f"generation.guidance_scale={g['guidance_scale']}: must be >= 1 (1 or 0 = no guidance)"),
            (num("top_k", int) >= 0, f"generation.top_k={g['top_k']}: must be >= 0"),
            (0 <= num("top_p") <= 1, f"generation.top_p={g['top_p']}: must be in [0, 1] (0 = off, audiocraft)"),
            (num("temperature") > 0, f"generation.temperature={g['temperature']}: must be > 0"),
            (str(self.batch_size) == "auto" or _int(self.batch_size) >= 1,
             f"batch_size={self.batch_size}: must be >= 1 or auto"),
            (_int(self.metric_batch_size) >= 1, f"metric_batch_size={self.metric_batch_size}: must be >= 1"),
            (str(self.precision) in PRECISIONS, f"precision={self.precision}: one of {', '.join(PRECISIONS)}"),
            (str(self.backbone_weights) in BACKBONE_WEIGHTS,
             f"backbone_weights={self.backbone_weights}: released or random"),
            (str(self.backbone_size) in BACKBONE_SIZES, f"backbone_size={self.backbone_size}: full or tiny"),
            (self.melody_source in ("reference", "none"), f"melody.source={self.melody_source}: reference or none"),
            (self.channel_view in CHANNEL_VIEWS, f"channel_view={self.channel_view}: one of {', '.join(CHANNEL_VIEWS)}"),
            (_is_int(self.seed), f"seed={self.seed}: must be an integer"),
            (_is_int(self.num_workers) and int(self.num_workers) >= 0,
             f"num_workers={self.num_workers}: must be an integer >= 0"),
        ] + [(isinstance(getattr(self, k), bool), f"{k}={getattr(self, k)!r}: must be true or false")
             for k in ("progress", "overwrite", "allow_missing_metrics")]

    def _check_known_keys(self) -> None:
        """A key added with ``+key=value`` that no code reads would be recorded in config.yaml and do nothing: refused,
        with the nearest known key (``+metrics.kld.pad_chunk=true`` -> did you mean pad_chunks?)."""
        import difflib

        known = _known_keys(self.metrics)
        for group, allowed in known.items():
            node = self.metrics.get(group[len("metrics."):], {}) if group.startswith("metrics.") else \
                getattr(self, group)
            unknown = sorted(set(node) - allowed)
            if unknown:
                near = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
                hint = f" (did you mean {group}.{near[0]}?)" if near else ""
                raise SpecError(f"{group}.{unknown[0]}: not a setting of {group}, so it would do nothing{hint}; "
                                f"known: {', '.join(sorted(allowed))}")


def _known_keys(metrics: Mapping[str, Any]) -> dict[str, set[str]]:
    """The keys each checked group may hold: its conf files' keys (a metric: its run settings and its protocol's
    constants; generation and audit: config.yaml's and conf/generation/'s)."""
    import yaml

    out: dict[str, set[str]] = {}
    for name, recipe in metrics.items():
        try:
            out[f"metrics.{name}"] = set(recipe_from_files(name, str(recipe.get("protocol") or "")))
        except (OSError, KeyError, StopIteration):
            continue  # a metric defined outside conf/ (tests): nothing to check against
    gen = {k for f in (CONF_DIR / "generation").glob("*.yaml") for k in (yaml.safe_load(f.read_text()) or {})}
    out["generation"] = gen
    base = yaml.safe_load((CONF_DIR / "config.yaml").read_text(encoding="utf-8"))
    out["audit"] = set(base.get("audit") or {})
    return out


def _number(value: Any, setting: str, cast=float) -> float:
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise SpecError(f"{setting}={value}: not a number") from None


def _is_int(v: Any) -> bool:
    """An integer setting: an int (not a bool) or a string of one (``seed="7"`` from a command line)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, str) and v.strip().lstrip("+-").isdigit()


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
