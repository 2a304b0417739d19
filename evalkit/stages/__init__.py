"""The stages of one run, in data-flow order; each is a module with plain inputs and outputs, testable alone, and
:mod:`evalkit.run` composes them:

1. :mod:`~evalkit.stages.inputs`      prompts + reference set (every file accounted for)
2. :mod:`~evalkit.stages.generation`  clips by id (MusicGen, or existing files), content-keyed cache, resume
3. :mod:`~evalkit.stages.decode`      each file decoded once and audited as a file: a
                                      :class:`~evalkit.metrics.base.Clip` or the reason no metric can score it
4. :mod:`~evalkit.stages.scoring`     every metric's input path (:mod:`evalkit.input_path`) and update, in metric
                                      batches: score cache, state, resume, rank merge
5. :mod:`~evalkit.stages.outputs`     clips.parquet, summary.json, reference statistics, the printed table

:mod:`~evalkit.stages.folder` owns the run folder itself (its identity, the manifest).
"""
from __future__ import annotations

from evalkit.errors import InputError


class RunError(InputError, RuntimeError):
    """A run that cannot go on; the message names the setting or file and the fix."""


from evalkit.io import fault_point  # noqa: E402,F401  (crash testing; re-exported)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str, unit: str):
    """A ``tqdm`` bar (a context manager; ``update(n)``) counting ``unit``s with rate and ETA when ``enabled``
    (rank 0 with ``progress=true``), else a silent stand-in with the same methods. When stderr is not a terminal
    (a log file, CI) the bar is redrawn at most every 30 s instead of every 0.1 s, so a log keeps a few lines of
    progress rather than hundreds of carriage returns."""
    if not enabled:
        return _NoBar()
    import sys

    from tqdm.auto import tqdm

    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.1 if interactive else 30.0)
