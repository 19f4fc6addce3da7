"""MONAI-style degradation transforms: array classes and ``…d`` dictionary wrappers.

``degrade`` and ``MakePaird``, which pick a transform by the degradation's name, live in
:mod:`mrsr.degradations` (the table of names, built on these classes), and ``LoadVolume`` /
``LoadVolumed``, which read volumes as every mrsr command does, in :mod:`mrsr.io.transforms`;
all four are found here too.
"""

from mrsr.transforms.array import (
    BicubicDownsample,
    CropToMultiple,
    Downsample,
    KSpaceTruncation,
    resolve_axes,
)
from mrsr.transforms.dictionary import (
    BicubicDownsampled,
    CropToMultipled,
    KSpaceTruncationd,
    RandKSpaceTruncationd,
)

__all__ = [
    "BicubicDownsample",
    "BicubicDownsampled",
    "CropToMultiple",
    "CropToMultipled",
    "Downsample",
    "KSpaceTruncation",
    "KSpaceTruncationd",
    "LoadVolume",
    "LoadVolumed",
    "MakePaird",
    "RandKSpaceTruncationd",
    "degrade",
    "resolve_axes",
]


def __getattr__(name: str):
    # on first use: those modules import this package, directly or through mrsr.options
    if name in ("degrade", "MakePaird"):
        from mrsr import degradations

        return getattr(degradations, name)
    if name in ("LoadVolume", "LoadVolumed"):
        from mrsr.io import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'mrsr.transforms' has no attribute {name!r}")
