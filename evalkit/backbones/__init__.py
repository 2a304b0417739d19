"""Backbone weights (VGGish, PaSST, CLAP): released files with checksums, local paths, random weights for tests."""
