"""The one base class of every error that means "this setting or input cannot work", and evalkit's one warning
category (:class:`RandomWeightsWarning`, public as ``evalkit.RandomWeightsWarning``).

The command line prints such an error as one line (it names the setting or file and the fix) and exits with status
2; anything else is a bug (status 1, with the traceback). Each layer raises its own subclass (``SpecError``,
``RunError``, ``PromptError``, ``CheckpointError``, ...); callers catch :class:`InputError` without knowing them.
"""
from __future__ import annotations


class InputError(Exception):
    """A setting or input that cannot work; the message names it and the fix."""


class RandomWeightsWarning(UserWarning):
    """Warned by :func:`evalkit.evaluate` and :func:`evalkit.score` (and logged) when the run's numbers come from random weights - the
    model's or a metric backbone's - or synthesised references (``summary["random_weights"]``): they show that the
    pipeline works and say nothing about any model. ``warnings.simplefilter("ignore", RandomWeightsWarning)`` silences
    it, e.g. in a test suite built on the offline demo."""
