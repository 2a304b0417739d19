"""evalkit: evaluation and benchmarking harness for text-to-music models (MusicGen on MusicCaps, model-card protocols)."""
__version__ = "0.1.0"


def evaluate(*args, **kwargs):
    from evalkit.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
