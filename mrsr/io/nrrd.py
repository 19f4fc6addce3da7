"""NRRD (``.nrrd``, and ``.nhdr`` with detached data), read by SimpleITK.

Besides the checks of :mod:`mrsr.io.itk`, bzip2 data is refused: ITK's NRRD reader cannot read it.
"""

from __future__ import annotations

import re
from pathlib import Path

from mrsr.errors import MRSRError
from mrsr.io.itk import TextHeaderReader

__all__ = ["NrrdReader"]

_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
_ENCODINGS |= {"hex": "hex", "ascii": "text", "text": "text", "txt": "text"}


class NrrdReader(TextHeaderReader):
    name = "NRRD"
    suffixes = (".nrrd", ".nhdr")
    header_end = re.compile(rb"\r?\n\r?\n")
    data_keys = ("data file", "datafile")
    separator = ":"

    def encoding(self, lines: list[str], path: Path) -> str:
        encoding = _ENCODINGS.get(self.value(lines, ("encoding",), "raw"), "other")
        if encoding == "bzip2":
            raise MRSRError(
                f"{path}: bzip2-compressed NRRD data cannot be read (ITK's NRRD reader has no "
                "bzip2); save it with gzip or raw encoding (e.g. unu save -e gzip)"
            )
        return encoding
