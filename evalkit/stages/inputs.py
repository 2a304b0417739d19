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
    #: prompts without a generated clip for the extra reference files, scored for their reference alone
    #: (:attr:`~evalkit.metrics.base.Clip.reference_only`) when the prompt set is the generated folder
    #: (``dataset=folder``) and a metric of the run reads a folder of references (``references: distinct``): the tool
    #: it follows counts every file of the reference folder
    reference_only: list[Prompt] = field(default_factory=list)


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


def metrics_reading_reference_folder(spec: RunSpec) -> list[str]:
    """The selected metrics whose reference set is a folder of distinct reference files (``references: distinct``:
    :attr:`~evalkit.metrics.base.Metric.reads_reference_folder`)."""
    return [name for name in metrics_needing_reference_audio(spec)
            if spec.metrics[name].get("references", "per_prompt") == "distinct"]


def scores_two_sets(spec: RunSpec) -> bool:
    """Whether names need not match: folder mode (``dataset=folder``) where every metric that reads reference audio
    scores the two folders as sets (``references: distinct``, ``pairing: unpaired``: fadtk, kadtk, FD_openl3 ...)."""
    need = metrics_needing_reference_audio(spec)
    return spec.dataset.get("name") == "folder" and bool(need) and all(
        spec.metrics[n].get("references") == "distinct" and spec.metrics[n].get("pairing") == "unpaired" for n in need)


def layout_hint(prompts: list[Prompt], refs: ReferenceSet) -> str:
    """Why no reference file matched, when the folder tells: files named by prompt id where the prompts name another
    reference (Song Describer: the caption-id folder given for the track-id folder), the release's
    ``<id>.2min.<ext>`` names, or clips in subfolders; "" otherwise."""
    from evalkit.data.references import RELEASE_SUFFIX, flatten_command, id_key, nested_hint

    names = {id_key(k) for k in refs.paths}
    by_prompt = [p.id for p in prompts if p.reference_id and p.reference_id != p.id and id_key(p.id) in names]
    if by_prompt:
        return (f"; {len(by_prompt)} files are named by prompt id (e.g. {by_prompt[0]}), but each prompt's reference "
                f"is named by its reference id (Song Describer: the track_id, e.g. {prompts[0].ref_key}): give the "
                f"folder of <track_id>.<ext> files (stable-audio-metrics' reference_path_trackid), not the caption-id "
                f"folder")
    release = sum(id_key(k[:-len(RELEASE_SUFFIX)]) in {id_key(p.ref_key) for p in prompts}
                  for k in refs.paths if k.endswith(RELEASE_SUFFIX))
    if release:
        return (f"; {release} files are named <id>{RELEASE_SUFFIX}.<ext> (the Song Describer release's names): link "
                f"them as <id>.<ext> (`{flatten_command(refs.root, nested=False)}`, or rename them) and pass that "
                f"folder")
    return nested_hint(refs.root)


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
    if refs.root is not None and len(missing) == len(prompts) and not scores_two_sets(spec):
        raise RunError(f"reference.dir={rcfg.get('dir')}: none of the {len(prompts)} prompts has a reference file "
                       f"(expected names like {keys[0]}.wav){layout_hint(prompts, refs)}")
    extra = refs.extra(keys) if refs.root is not None else []
    alone = []
    if extra and spec.dataset.get("name") == "folder" and metrics_reading_reference_folder(spec):
        alone = [Prompt(i, "", i) for i in sorted(extra)]
    return Inputs(prompts, refs, missing, extra, alone)
