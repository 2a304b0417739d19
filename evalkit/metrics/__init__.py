"""Metrics: one file per recipe (fad, kld, clap, chroma), found by name through :mod:`evalkit.registry`.

Importing this package is cheap on purpose: the metric modules (and the torch-heavy backbones behind them) load
when a metric is asked for by name, so ``evalkit.metrics.frechet`` serves reports and CI checks without torch.
"""

#: the metric modules the registry loads on demand
METRIC_MODULES = ("fad", "kld", "clap", "chroma", "stereo")
