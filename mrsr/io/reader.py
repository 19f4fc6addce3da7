"""What one volume format provides: the names it reads, its header probe and its read.

A format is one :class:`Reader` subclass in its own module, registered in the table of
:mod:`mrsr.io.formats`; loading, inspecting, folder listing and output names all go through
that table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from mrsr.io.header import VolumeInfo

__all__ = ["Reader", "metatensor"]


class Reader:
    """One volume format. ``suffixes`` (lower case, longest first where one ends another) name
    its files; ``name`` is how messages call it."""

    name: str = ""
    suffixes: tuple[str, ...] = ()

    def claims(self, path: Path) -> bool:
        """Whether this reader reads ``path``: by default a file with one of its suffixes."""
        return path.name.lower().endswith(self.suffixes) and path.is_file()

    def files(self, path: Path) -> list[Path]:
        """Every file the volume at ``path`` is made of (none may be written over)."""
        return [path]

    def probe(self, path: Path) -> VolumeInfo:
        """The checked header facts; :class:`~mrsr.errors.MRSRError` for a header that cannot
        be trusted. No voxel is read."""
        raise NotImplementedError

    def read(self, info: VolumeInfo) -> MetaTensor:
        """The voxels of the probed volume ``info`` as :func:`metatensor` makes them."""
        raise NotImplementedError


def metatensor(data: np.ndarray, affine: np.ndarray, path: Path, **meta: Any) -> MetaTensor:
    """Channel-first ``data`` as float32 with its RAS ``affine`` and the reader's ``meta``."""
    meta.update(
        affine=torch.as_tensor(affine),
        original_affine=affine,
        spatial_shape=np.asarray(data.shape[1:4]),
        filename_or_obj=str(path),
        space="RAS",
    )
    return MetaTensor(torch.from_numpy(data.astype(np.float32, copy=False)), meta=meta)
