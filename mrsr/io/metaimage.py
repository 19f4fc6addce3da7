"""MetaImage (``.mha``, and ``.mhd`` with detached data), read by SimpleITK."""

from __future__ import annotations

import re
from pathlib import Path

from mrsr.io.itk import TextHeaderReader

__all__ = ["MetaImageReader"]


class MetaImageReader(TextHeaderReader):
    name = "MetaImage"
    suffixes = (".mha", ".mhd")
    header_end = re.compile(rb"(?im)^\s*ElementDataFile\s*=\s*LOCAL[^\n]*\n")
    data_keys = ("elementdatafile",)
    separator = "="
    attached_data = "LOCAL"

    def encoding(self, lines: list[str], path: Path) -> str:
        return "gzip" if self.value(lines, ("compresseddata",), "false") == "true" else "raw"
