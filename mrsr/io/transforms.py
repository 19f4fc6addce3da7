"""MONAI transforms that read volumes the way every mrsr command does (:func:`load_volume`).

Use them in place of MONAI's ``LoadImage``/``LoadImaged`` for MR volumes: MONAI's NIfTI reader
replaces an sform that a registration tool rewrote by the qform, which places the volume
elsewhere; :func:`load_volume` chooses the affine as nibabel and FSL do, checks the header before
any voxel is read, and refuses what it cannot read with one line naming the file.

>>> from mrsr.io import sample_path
>>> LoadVolumed("image")({"image": sample_path()})["image"].shape
torch.Size([1, 180, 216, 24])
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from mrsr.io.load import load_volume

__all__ = ["LoadVolume", "LoadVolumed"]


class LoadVolume(Transform):
    """Read a volume file or DICOM folder as a channel-first float32 MetaTensor ``(C, X, Y, Z)``
    with its RAS affine (:func:`mrsr.io.load_volume`)."""

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        return load_volume(path)


class LoadVolumed(MapTransform):
    """Dictionary version of :class:`LoadVolume`: ``d[key]`` (a path) becomes its volume."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.load = LoadVolume()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.load(d[key])
        return d
