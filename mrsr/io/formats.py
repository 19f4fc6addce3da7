"""The one table of volume formats, and the name rules it implies.

Every reader of :data:`READERS` brings its suffixes, header probe and read
(:class:`~mrsr.io.reader.Reader`); loading, inspecting, folder listing and every name derived
from an input (output names, sidecars, evaluation pairing) go through this table. A name with
no suffix of the table (``x.mgz``) is not a volume path: folder listings skip it, loading it
is refused as an unsupported format, and a name derived from it keeps the whole name.

>>> volume_stem("sub-01.ses-1.T1w.nrrd"), volume_stem("a.NII.GZ"), volume_stem("x.mgz")
('sub-01.ses-1.T1w', 'a', 'x.mgz')
"""

from __future__ import annotations

import os
from pathlib import Path

from mrsr.io.dicom import DicomReader
from mrsr.io.metaimage import MetaImageReader
from mrsr.io.nifti import NiftiReader
from mrsr.io.nrrd import NrrdReader
from mrsr.io.reader import Reader

__all__ = [
    "FORMATS",
    "READERS",
    "is_volume_path",
    "list_volumes",
    "reader_for",
    "volume_stem",
    "volume_suffix",
]

READERS: list[Reader] = [NiftiReader(), NrrdReader(), MetaImageReader(), DicomReader()]


def _formats() -> str:
    names = [f"{r.name} ({', '.join(r.suffixes)})" if r.suffixes else r.name for r in READERS]
    return ", ".join(names[:-1]) + " or " + names[-1]


FORMATS = _formats()  # for messages: what mrsr reads


def volume_suffix(path: str | os.PathLike) -> str:
    """The volume suffix ``path``'s name ends with (any case; the longest that fits), else ''."""
    name = Path(path).name.lower()
    known = (s for r in READERS for s in r.suffixes if name.endswith(s))
    return max(known, key=len, default="")


def volume_stem(path: str | os.PathLike) -> str:
    """The name of ``path`` without its volume suffix: the key that pairs volumes by name and
    the stem of every name derived from an input (a folder or ``x.mgz`` keeps its whole name)."""
    name = Path(path).name
    return name[: len(name) - len(volume_suffix(path))]


def reader_for(path: Path) -> Reader | None:
    """The reader of the table that reads ``path``, if any."""
    return next((r for r in READERS if r.claims(path)), None)


def is_volume_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named as a volume (a suffix of the table) or is a folder a reader
    takes (a DICOM series)."""
    p = Path(path)
    return bool(volume_suffix(p)) or reader_for(p) is not None


def list_volumes(folder: Path) -> list[Path]:
    """The volumes of ``folder``, sorted by name; hidden files (temporaries, ``._`` copies)
    are not volumes. One that cannot be looked at is listed, so that its read names why."""

    def taken(path: Path) -> bool:
        try:
            return is_volume_path(path)
        except OSError:
            return True

    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and taken(p))
