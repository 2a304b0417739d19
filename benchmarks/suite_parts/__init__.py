"""The parts of ``benchmarks/suite.py``: the clip set, shared timing helpers, and one module per metric, each with
three contenders (``reference``, ``evalkit``, ``floor``) that return :class:`~suite_parts.common.Outcome`."""
