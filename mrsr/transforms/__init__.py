"""MONAI-style degradation transforms: array classes and ``…d`` dictionary wrappers."""

from mrsr.transforms.array import (
    BicubicDownsample,
    CropToMultiple,
    KSpaceTruncation,
    degrade,
    resolve_axes,
)
from mrsr.transforms.dictionary import (
    BicubicDownsampled,
    CropToMultipled,
    KSpaceTruncationd,
    MakePaird,
    RandKSpaceTruncationd,
)

__all__ = [
    "BicubicDownsample",
    "BicubicDownsampled",
    "CropToMultiple",
    "CropToMultipled",
    "KSpaceTruncation",
    "KSpaceTruncationd",
    "MakePaird",
    "RandKSpaceTruncationd",
    "degrade",
    "resolve_axes",
]
