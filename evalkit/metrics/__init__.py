"""Metrics: one file per recipe (fad, kld, clap, chroma, stereo, aesthetics, mauve), found by name through :mod:`evalkit.registry`
(which lists the modules of this folder: a new metric is its module, ``conf/metrics/<name>.yaml`` with its protocol
file(s) in ``conf/metrics/<name>/``, and its tests).

Importing this package is cheap on purpose: the metric modules (and the torch-heavy backbones behind them) load
when a metric is asked for by name, so ``evalkit.statistics.frechet`` serves reports and CI checks without torch.
"""
