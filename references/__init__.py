"""The parity references: transcriptions of the third-party recipes evalkit reproduces, each written from the
published source of the tool it names, so that tests and benchmarks can run "the tool" on the same audio and the same
weights without installing it (or, where the tool is installed, around its own code).

Used by ``tests/`` (the parity tests) and ``benchmarks/`` (the reference side of each timing): neither imports the
other. Not part of the installed ``evalkit`` package (``pyproject.toml`` packages ``evalkit*`` only); run from a
checkout, with the repository root on ``sys.path``.

- :mod:`references.google_fad`: google-research ``frechet_audio_distance`` (reader, windows, statistics, distance),
  tensorflow/models ``vggish`` (log-mel), ``harritaylor/torchvggish`` (layout, front end; the fake torch hub repo
  that serves it to the ``frechet_audio_distance`` package offline), audiocraft's FAD writer;
- :mod:`references.audiocraft_solver`: audiocraft's ``audio_read``, ``convert_audio`` and the MusicGen solver's
  post-processing in ``evaluate_audio_generation`` (crop to the reference, ``normalize_audio(strategy='loudness')``);
- :mod:`references.audiocraft_kld`: ``audiocraft/metrics/kld.py`` (PaSST label distributions, ``kl_divergence``) and
  hear21passt's ``get_basic_model`` around a given network;
- :mod:`references.audiocraft_chroma`: ``audiocraft/metrics/chroma_cosinesim.py`` + ``modules/chroma.py``;
- :mod:`references.stable_audio_metrics`: Stability-AI/stable-audio-metrics ``src/passt_kld.py``, ``src/openl3_fd.py``
  (on torchopenl3) and ``src/clap_score.py`` (on laion_clap);
- :mod:`references.kadtk`: kadtk 1.1.0's ``VGGishModel`` served given weights offline, its ``PANNsModel`` around a
  given ``Cnn14``, and its audio path in memory;
- :mod:`references.fadtk`: fadtk 1.1.0's model loaders around given networks (EnCodec, LAION-CLAP), without their
  checkpoint downloads;
- :mod:`references.laion_clap`: laion_clap's own CLAP model built offline (the extra ``evalkit[reference]``).

What each reference takes from evalkit is named in its module: model *weights* (random, seeded) and the shrunken
test architectures' sizes, never a computation that is being checked.
"""
