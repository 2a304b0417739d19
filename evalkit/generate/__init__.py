"""Generators: MusicGen (text, melody), a folder of existing audio; tiny random-weight configs for tests."""
from evalkit.generate import folder, musicgen  # noqa: F401  (register)
from evalkit.generate.base import GeneratedClip, Generator  # noqa: F401
