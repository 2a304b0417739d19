"""evalkit: evaluation and benchmarking harness for text-to-music models (MusicGen on MusicCaps, model-card protocols).

Python API (lazy: importing evalkit loads neither torch nor any backbone)::

    import evalkit
    summary = evalkit.evaluate(["model=tiny-stereo"], out_dir="outputs/demo")       # = python -m evalkit ...
    summary = evalkit.score("gen/", "refs/", captions={"a": "..."}, metrics=("fad", "kld", "clap"))

A run with random weights (the demo, tests) warns :class:`RandomWeightsWarning`.
"""
__version__ = "0.1.0"

__all__ = ["evaluate", "score", "RunSpec", "RandomWeightsWarning", "__version__"]


from evalkit.errors import RandomWeightsWarning  # noqa: E402  (the public name: evalkit.RandomWeightsWarning)


def evaluate(*args, **kwargs):
    from evalkit.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


evaluate.__doc__ = "See :func:`evalkit.api.evaluate`."


def score(*args, **kwargs):
    from evalkit.api import score as _score

    return _score(*args, **kwargs)


score.__doc__ = "See :func:`evalkit.api.score`."


def __getattr__(name):
    if name == "RunSpec":
        from evalkit.spec import RunSpec

        return RunSpec
    raise AttributeError(name)
