"""Stage 1: the prompts and the reference set of a run, checked before any generation.

``load_inputs(spec, out_dir) -> Inputs``: the prompts (``dataset``), the reference clips (``reference.dir``, or for
the offline demo clips synthesised into ``<out_dir>/references``), which prompts have no reference, and which
reference files no prompt uses. A run whose selected metrics need reference audio that was not given stops here,
naming the settings to pass, instead of after hours of generation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evalkit.data.prompts import Prompt, load_prompts
from evalkit.data.references import ReferenceSet, synthesize_references
from evalkit.registry import get_metric
from evalkit.spec import RunSpec
from evalkit.stages import RunError


@dataclass
class Inputs:
    prompts: list[Prompt]
    references: ReferenceSet
    missing_reference_ids: list[str] = field(default_factory=list)
    #: reference files that no prompt uses (ids), listed in summary.json
    extra_reference_ids: list[str] = field(default_factory=list)


def metrics_needing_reference_audio(spec: RunSpec) -> list[str]:
    """The selected metrics that compare against reference audio in this run (each metric's own hook decides:
    FAD does not when ``reference.stats`` gives its reference side; a metric that does not apply does not)."""
    ctx = spec.context()
    need = []
    for name, recipe in spec.metrics.items():
        cls = get_metric(name, recipe)
        if cls.run_skip_reason(recipe, ctx) is None and cls.needs_reference_audio(recipe):
            need.append(name)
    return need


def load_inputs(spec: RunSpec, out_dir: str | Path) -> Inputs:
    prompts = load_prompts(spec.dataset)
    rcfg = spec.reference
    if rcfg.get("dir"):
        refs = ReferenceSet.from_dir(rcfg["dir"])
    elif rcfg.get("synthesize"):
        refs = synthesize_references([p.ref_key for p in prompts], Path(out_dir) / "references",
                                     duration=float(spec.generation["duration"]))
    else:
        refs = ReferenceSet.empty()
    keys = [p.ref_key for p in prompts]
    if refs.root is None:
        need = metrics_needing_reference_audio(spec)
        if need:
            raise RunError(
                f"metrics {', '.join(need)} compare with reference audio, and none was given: pass reference.dir=DIR "
                f"(clips named <id>.wav|flac|mp3|ogg; for MusicCaps, <ytid>.wav), reference.stats=FILE for FAD, or "
                f"leave them out (e.g. metrics=[clap])")
        if spec.melody_model and spec.melody_source == "reference":
            raise RunError("a melody model conditions each prompt on its reference clip: give reference.dir=DIR, or "
                           "set melody.source=none for text-only generation (the chroma metric is then skipped)")
    missing = [p.id for p in prompts if refs.get(p.ref_key) is None]
    if refs.root is not None and len(missing) == len(prompts):
        raise RunError(f"reference.dir={rcfg.get('dir')}: none of the {len(prompts)} prompt ids has a reference "
                       f"file (expected names like {keys[0]}.wav)")
    extra = refs.extra(keys) if refs.root is not None else []
    return Inputs(prompts, refs, missing, extra)
