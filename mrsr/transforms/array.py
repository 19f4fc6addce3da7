"""Degradation transforms that simulate a low-resolution MR acquisition (array versions).

Each transform takes a channel-first image ``(C, *spatial)`` (a MONAI ``MetaTensor`` from
:class:`mrsr.io.transforms.LoadVolume`, or a plain tensor/array), acts on some spatial ``axes``
(0-based, channel excluded) and returns the same type. A MetaTensor comes back with the affine of
its new grid: voxel size times ``N / M`` on each reduced axis (exactly the scale when ``N`` is a
multiple of it) and voxel 0 placed per the transform's sampling grid (:mod:`mrsr.geometry`).
``axes=None`` picks the in-plane axes of :func:`mrsr.geometry.slice_axis` (all axes of a 2D image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import SpatialCrop, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from mrsr import kspace
from mrsr.geometry import Grid, in_plane_axes, resampled_affine
from mrsr.intensity import is_magnitude

__all__ = [
    "BicubicDownsample",
    "CropToMultiple",
    "Downsample",
    "KSpaceTruncation",
    "resolve_axes",
]


def resolve_axes(img: NdarrayOrTensor, axes: Sequence[int] | None) -> tuple[int, ...]:
    """The spatial axes a transform acts on: ``axes`` checked, or the in-plane axes by default."""
    n_spatial = img.ndim - 1
    if axes is None:
        if isinstance(img, MetaTensor) and n_spatial == 3:
            return in_plane_axes(np.asarray(img.affine), img.meta)
        return tuple(range(min(n_spatial, 2)))
    if not axes or any(not -n_spatial <= int(a) < n_spatial for a in axes):
        raise ValueError(f"axes {list(axes)} do not fit an image with {n_spatial} spatial axes")
    return tuple(sorted({int(a) % n_spatial for a in axes}))


class Downsample(Transform):
    """A degradation's transform: picks axes and sizes, calls :meth:`_apply` (what a subclass
    defines, with its ``grid``), writes the new affine."""

    backend = [TransformBackends.TORCH]
    grid: Grid

    def __init__(self, scale: int, axes: Sequence[int] | None = None) -> None:
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.axes = axes

    def _apply(self, x: torch.Tensor, sizes: list[int], dims: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())
        axes = resolve_axes(img, self.axes)
        x = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        dims = [a + 1 for a in axes]
        sizes = [x.shape[d] // self.scale for d in dims]
        if min(sizes) < 1:
            raise ValueError(
                f"image of spatial shape {tuple(x.shape[1:])} is smaller than scale {self.scale} "
                f"along axes {axes}"
            )
        out = convert_to_dst_type(self._apply(x, sizes, dims), dst=img)[0]
        if isinstance(out, MetaTensor) and list(out.shape) != list(img.shape):
            factors = np.ones(img.affine.shape[-1] - 1)
            for a, d, m in zip(axes, dims, sizes):
                factors[a] = x.shape[d] / m
            out.affine = torch.as_tensor(
                resampled_affine(np.asarray(img.affine), factors, self.grid)
            )
        return out


class KSpaceTruncation(Downsample):
    """k-space truncation (TD): keep the centre of k-space, as a scanner with a smaller matrix.

    Per the CSN/CSSFN protocol (Zhao et al., IEEE TIP 2019; KBS 2022): a centred FFT over the
    ``axes`` (two in-plane axes for the 2D protocol, one axis for a through-plane simulation),
    keep the central ``N // scale`` frequencies of each, inverse FFT on the small grid, magnitude,
    scaled so that a flat region keeps its value. An image with negative values (phase,
    difference maps) keeps its sign: the real part replaces the magnitude
    (:func:`mrsr.intensity.is_magnitude` decides). Works for every integer scale and odd sizes:
    low-resolution voxel ``i`` is the band-limited input at index ``i * N / M`` (grid
    ``"kspace"``: voxel 0 stays in place). ``zero_filled=True`` returns the truncated image on the
    original grid instead (display or VDSR-style input), affine unchanged.

    Shapes: ``(C, X, Y, Z) -> (C, X // s, Y // s, Z)`` for in-plane axes ``(0, 1)``.

    >>> import torch
    >>> KSpaceTruncation(scale=2, axes=(0, 1))(torch.ones(1, 8, 6, 3)).shape
    torch.Size([1, 4, 3, 3])
    """

    grid: Grid = "kspace"

    def __init__(
        self, scale: int, axes: Sequence[int] | None = None, zero_filled: bool = False
    ) -> None:
        super().__init__(scale, axes)
        self.zero_filled = zero_filled

    def _apply(self, x: torch.Tensor, sizes: list[int], dims: list[int]) -> torch.Tensor:
        magnitude = is_magnitude(x)
        return kspace.truncate(x, sizes, dims, zero_filled=self.zero_filled, magnitude=magnitude)


class BicubicDownsample(Downsample):
    """Bicubic downsampling in image space (BD), antialiased by default (MATLAB ``imresize``-like).

    Area sampling (grid ``"area"``): low-resolution voxel ``i`` covers input voxels
    ``[i * s, (i + 1) * s)`` and sits at their centre. Uses ``F.interpolate(mode="bicubic",
    align_corners=False)`` on the ``axes`` (one or two of them).

    >>> import torch
    >>> BicubicDownsample(scale=3, axes=(1,))(torch.ones(1, 4, 9)).shape
    torch.Size([1, 4, 3])
    """

    grid: Grid = "area"

    def __init__(
        self, scale: int, axes: Sequence[int] | None = None, antialias: bool = True
    ) -> None:
        super().__init__(scale, axes)
        self.antialias = antialias

    def _apply(self, x: torch.Tensor, sizes: list[int], dims: list[int]) -> torch.Tensor:
        if len(dims) > 2:
            raise ValueError("bicubic downsampling acts on one or two axes")
        if len(dims) == 1:
            # a 2D resize whose second axis is the line twice, kept at width 2: an axis of
            # width 1 makes antialiased bicubic return one constant
            x = x.unsqueeze(-1).expand(*x.shape, 2)
            return self._apply(x, sizes + [2], dims + [x.ndim - 1])[..., 0]
        rest = [d for d in range(x.ndim) if d not in dims]
        moved = x.permute(*rest, *dims)
        planes = moved.reshape(-1, 1, *moved.shape[-2:])
        small = F.interpolate(
            planes, size=sizes, mode="bicubic", align_corners=False, antialias=self.antialias
        )
        small = small.reshape(*moved.shape[:-2], *sizes)
        return small.permute(*np.argsort([*rest, *dims]).tolist())


class CropToMultiple(Transform):
    """Centre-crop the ``axes`` to a multiple of ``scale`` (affine updated by MONAI's crop).

    Makes a high-resolution reference whose grid a ``scale``-times upsampling of its degraded
    version reproduces exactly. Shapes: ``(C, 181, 217, Z) -> (C, 180, 216, Z)`` for scale 2.
    """

    backend = SpatialCrop.backend

    def __init__(self, scale: int, axes: Sequence[int] | None = None) -> None:
        self.scale = int(scale)
        self.axes = axes

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())
        axes = resolve_axes(img, self.axes)
        slices = []
        for a, n in enumerate(img.shape[1:]):
            keep = n - n % self.scale if a in axes else n
            start = (n - keep) // 2
            slices.append(slice(start, start + keep))
        return SpatialCrop(roi_slices=slices)(img)
