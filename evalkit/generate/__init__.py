"""Generators: MusicGen (text, melody), a folder of existing audio; tiny random-weight configs for tests.

Each module registers its generators by name (:func:`evalkit.registry.register_generator`); the registry imports this
package's modules when a name is asked for, so importing the package itself loads nothing.
"""
