"""stable-audio-metrics' MusicCaps id lists (Stability-AI/stable-audio-metrics, MIT): the clips it leaves out and its
no-singing subset, as named lists for ``dataset=musiccaps``.

- ``dataset.exclude=[stable-audio-metrics-missing]``: :data:`NOT_IN_MUSICCAPS`, the 87 ytids stable-audio-metrics
  "could not download from Youtube" and ignores in every MusicCaps example (``src/passt_kld.py`` ``__main__`` and
  ``examples/musiccaps*.py``: ``no_ids=NOT_IN_MUSICCAPS``): 5,521 - 87 = 5,434 clips.
- ``dataset.subset=nosinging dataset.subset_file=musiccaps-public-nosinging.csv``: the rows of stable-audio-metrics'
  ``load/musiccaps-public-nosinging.csv`` (2,218 rows, MusicCaps' columns; its captions are MusicCaps', CC BY-SA 4.0,
  so the file is not shipped here: the user's copy of it is read, and only its ``ytid`` column is used).
"""
from __future__ import annotations

from pathlib import Path

#: ``NOT_IN_MUSICCAPS`` of stable-audio-metrics ``src/passt_kld.py`` (HEAD fd55536c), in its order: 87 ytids
NOT_IN_MUSICCAPS: tuple[str, ...] = (
    "NXuB3ZEpM5U", "C7OIuhWSbjU", "Rqv5fu1PCXA", "WvEtOYCShfM", "25Ccp8usBtE", "idVCpQaByc4", "tpamd6BKYU4",
    "bpwO0lbJPF4", "We0WIPYrtRE", "kiu-40_T5nY", "5Y_mT93tkvQ", "zCrpaLEq1VQ", "8olHAhUKkuk", "6xxu6f0f0e4",
    "B7iRvj8y9aU", "rrAIuGMTqtA", "UdA6I_tXVHE", "m-e3w2yZ6sM", "Xy7KtmHMQzU", "d6-bQMCz7j0", "BeFzozm_H5M",
    "t5fW1-6iXZY", "jd1IS7N3u0I", "_hYBs0xee9Y", "EhFWLbNBOxc", "63rqIYPHvlc", "Jk2mvFrdZTU", "IbJh1xeBFcI",
    "HAHn_zB47ig", "j9hAUlz5kQs", "Vu7ZUUl4VPc", "asYb6iDz_kM", "fZyq2pM2-dI", "vOAXAoHtl7o", "go_7i6WvfeE",
    "iXgEQj1Fs7g", "dcY062mkf9g", "_ACyiKGpD8Y", "_DHMdtRRJzE", "zSSIGv82318", "2dyxjGTXSpA", "7WZwlOrRELI",
    "g8USMvt9np0", "374R7te0ra0", "CCFYOw8keiI", "eHeUipPZHIc", "0J_2K1Gvruk", "MYtq46rNsCA", "NIcsJ8sEd0M",
    "8vFJX7NcSbI", "TkclVqlyKx4", "T6iv9GFIVyU", "ChqJYrmQIN4", "ZZrvO__SNtA", "fwXh_lMOqu0", "0khKvVDyYV4",
    "-sevczF5etI", "qc1DaM4kdO0", "wBe5tW8iJew", "vQHKa69Mkzo", "Fv9swdLA-lo", "Ah_aYOGnQ_I", "nTtxF9Wyw6o",
    "7B1OAtD_VIA", "OS4YFp3DiEE", "lTLsL94ABRs", "jmPmqzxlOTY", "k-LkhT4HAiE", "Hvs6Xwc6-gc", "xxCnmao8FAs",
    "BiQik0xsWxk", "L5Uu_0xEZg4", "cADT8fUucLQ", "ed-1zAOr9PQ", "zSq2D_GF00o", "gdtw54I8soM", "lrk00BNiuD4",
    "RQ0-sjpAPKU", "SLq-Co_szYo", "0fqtA_ZBn_8", "Xoke1wUwEXY", "LRfVQsnaVQE", "p_-lKpxLK3g", "AaUZb-iRStE",
    "0pewITE1550", "JNw0A8pRnsQ", "vVNWjq9byoQ",
)

#: ``dataset.exclude`` names -> the ids they drop
EXCLUSIONS: dict[str, tuple[str, ...]] = {"stable-audio-metrics-missing": NOT_IN_MUSICCAPS}

#: ``dataset.subset`` names read from a file the user has (``dataset.subset_file``) -> what the file is
FILE_SUBSETS: dict[str, str] = {
    "nosinging": "stable-audio-metrics' load/musiccaps-public-nosinging.csv (2,218 rows; column ytid)"}


def excluded_ids(names, setting: str = "dataset.exclude") -> set[str]:
    """The union of the named lists ``names`` (a list of :data:`EXCLUSIONS` keys); ``ValueError`` naming
    ``setting`` for an unknown name."""
    out: set[str] = set()
    for name in names or ():
        if name not in EXCLUSIONS:
            raise ValueError(f"{setting}: {name!r} is not a named exclusion; known: {', '.join(sorted(EXCLUSIONS))}")
        out.update(EXCLUSIONS[name])
    return out


def subset_ids(subset: str, path, setting: str = "dataset.subset_file") -> set[str]:
    """The ids of a file subset: the ``ytid`` column of the user's copy of the file :data:`FILE_SUBSETS` names.
    ``ValueError`` naming ``setting`` when the path is not set, absent, or the table has no ``ytid`` column or no
    rows."""
    import csv

    if not path:
        raise ValueError(f"dataset.subset={subset} reads {FILE_SUBSETS[subset]}: set {setting}=FILE.csv (your copy "
                         f"of it; it is not shipped with evalkit: its captions are MusicCaps', CC BY-SA 4.0)")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ValueError(f"{setting}={path}: no such file")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "ytid" not in (reader.fieldnames or []):
            raise ValueError(f"{setting}={path}: no ytid column (expected {FILE_SUBSETS[subset]})")
        ids = {str(r["ytid"]).strip() for r in reader if r.get("ytid")}
    if not ids:
        raise ValueError(f"{setting}={path}: no rows")
    return ids


__all__ = ["EXCLUSIONS", "FILE_SUBSETS", "NOT_IN_MUSICCAPS", "excluded_ids", "subset_ids"]
