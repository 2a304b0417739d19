"""evalkit: evaluation and benchmarking harness for text-to-music models (MusicGen on MusicCaps, model-card protocols)."""
__version__ = "0.1.0"
