"""What an input volume claims, read from its header alone, and the checks every format shares.

Each reader (:mod:`mrsr.io.formats`) probes its own header and returns a :class:`VolumeInfo`
(grid size, channels, data type, and every file the volume is made of), or raises
:class:`~mrsr.errors.MRSRError` when the header cannot be trusted. Shared by all formats:

- claimed sizes the file cannot hold: uncompressed data shorter than dimensions × type size,
  compressed data that would expand more than deflate's maximum ratio (1032:1);
- non-finite geometry (NaN or infinite voxel sizes, orientations or origins);
- complex or RGB voxels, which have no single intensity to super-resolve.

:func:`failure_reason` turns a reader's exception into the problem in words, without ITK's
source locations.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrsr.errors import MRSRError
from mrsr.memory import human

__all__ = [
    "VolumeInfo",
    "check_dtype",
    "check_finite",
    "check_size",
    "describe",
    "failure_reason",
    "spatial",
    "unreadable",
]

DEFLATE_MAX_RATIO = 1032  # the most a deflate stream can expand (RFC 1951: 258 bytes per 2 bits)


@dataclass
class VolumeInfo:
    """A volume's header facts: ``shape`` is spatial ``(X, Y, Z)``, ``channels`` the rest."""

    path: Path
    shape: tuple[int, int, int]
    channels: int
    dtype: np.dtype
    files: list[Path] = field(default_factory=list)
    slice_thickness: float | None = None  # mm, where the header records it (DICOM)
    slice_spacing: float | None = None  # mm, DICOM SpacingBetweenSlices, where recorded

    @property
    def voxels(self) -> int:
        return math.prod(self.shape) * self.channels

    @property
    def nbytes(self) -> int:
        return self.voxels * self.dtype.itemsize


_ITK_NOISE = re.compile(
    r"Exception thrown in SimpleITK \w+: |\S+\.(?:cxx|hxx|txx|cpp|h):\d+:?|(?:ITK |itk::)ERROR: |"
    r"\w+\(0x[0-9a-fA-F]+\):? ?|\[(?:nrrd|biff)\] \w+:"
)


def failure_reason(exc: Exception) -> str:
    """A reader's failure as one short line: no ITK source location, object address or teem
    function name; teem's last (most specific) line, else the first line."""
    lines = [(line, _ITK_NOISE.sub("", line).strip(" :")) for line in str(exc).splitlines()]
    teem = [text for line, text in lines if line.startswith("[") and text]
    plain = [text for _, text in lines if text]
    return (teem[-1:] or plain[:1] or [type(exc).__name__])[0][:200]


def unreadable(path: Path, exc: Exception) -> MRSRError:
    """The error for a file a reader failed on, with the reader's reason in words."""
    return MRSRError(f"{path}: cannot be read as a volume ({failure_reason(exc)})")


def spatial(dims: tuple[int, ...], path: Path) -> tuple[tuple[int, int, int], int]:
    """``(X, Y, Z)`` and the number of channels of a header's dimensions."""
    if not dims or min(dims) < 1:
        raise MRSRError(f"{path}: the header gives no voxels (dimensions {dims})")
    shape = (tuple(dims[:3]) + (1, 1))[:3]
    return shape, math.prod(dims[3:]) if len(dims) > 3 else 1


def describe(shape: tuple[int, ...], channels: int, dtype: np.dtype) -> str:
    dims = "x".join(map(str, shape)) + (f"x{channels}" if channels > 1 else "")
    return f"{dims} voxels of {dtype.name} ({human(math.prod(shape) * channels * dtype.itemsize)})"


def check_size(
    claimed: int, stored: int, compressed: bool, path: Path, what: str, offset: int = 0
) -> None:
    """Refuse a header that claims more data than ``stored`` bytes can hold."""
    if compressed and claimed + offset > DEFLATE_MAX_RATIO * stored + (1 << 20):
        raise MRSRError(
            f"{path}: the header claims {what}, more than {human(stored)} of compressed data can "
            "hold; the header is wrong or the file is a decompression bomb"
        )
    if not compressed and claimed + offset > stored:
        raise MRSRError(
            f"{path}: the header claims {what}, but the data holds only {human(stored)}; the "
            "file is truncated or its header is wrong"
        )


def check_dtype(dtype: np.dtype, path: Path) -> None:
    if dtype.kind == "c":
        raise MRSRError(
            f"{path}: complex voxels ({dtype.name}); save the magnitude image (abs) and give that"
        )
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise MRSRError(f"{path}: {dtype} voxels (RGB or records) are not a single intensity")


def check_finite(values: dict[str, object], path: Path) -> None:
    for name, value in values.items():
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise MRSRError(f"{path}: the header's {name} is NaN or infinite; fix the geometry")
