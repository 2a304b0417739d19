"""The one base class of every error that means "this setting or input cannot work".

The command line prints such an error as one line (it names the setting or file and the fix) and exits with status
2; anything else is a bug (status 1, with the traceback). Each layer raises its own subclass (``SpecError``,
``RunError``, ``PromptError``, ``CheckpointError``, ...); callers catch :class:`InputError` without knowing them.
"""
from __future__ import annotations


class InputError(Exception):
    """A setting or input that cannot work; the message names it and the fix."""
