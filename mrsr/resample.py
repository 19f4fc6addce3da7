"""Resampling a volume onto any world grid: the last step of ``--voxel-size`` and ``--like``.

A target grid is a spatial shape and a 4x4 affine (RAS mm, as MONAI loads it). Every output
voxel's centre is the world point its affine names; its value is the input's interpolated there:

- when the target's axes run along the input's (any spacing, offset, flip or axis order), axis
  by axis: **band-limited** (periodic sinc, the exact interpolator of the k-space sampling
  model, :mod:`mrsr.kspace`) along the axes k-space was measured on, truncated first to the
  target's band where the target is coarser, as a scanner with that matrix measures; **cubic
  B-spline** along the others (the slice axis of a 2D multi-slice scan is not periodic);
- **cubic B-spline** in 3D otherwise (an oblique or rotated target):
  :func:`scipy.ndimage.map_coordinates` of order 3.

Output voxels whose centre lies outside the input's field of view (its voxels' extent) are 0.

>>> import torch
>>> from monai.data import MetaTensor
>>> x = MetaTensor(torch.rand(1, 8, 8, 4), affine=torch.eye(4, dtype=torch.float64))
>>> shape, affine = voxel_size_grid(x.shape[1:], x.affine, [0.5, 0.5, 1.0])
>>> shape
(16, 16, 4)
>>> fine = resample(x, shape, affine)  # 16 x 16 x 4 voxels of 0.5 x 0.5 x 1 mm
>>> back = resample(fine, x.shape[1:], x.affine)
>>> bool(torch.allclose(back, x, atol=1e-5))  # band-limited: nothing lost either way
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

from mrsr.errors import MRSRError
from mrsr.geometry import spacing

__all__ = [
    "aligned_axes",
    "index_map",
    "resample",
    "resample_bytes",
    "sinc_matrix",
    "spline_matrix",
    "step_sizes",
    "voxel_size_grid",
]

_ALIGNED = 1e-6  # off-axis share of a step below which the target counts as axis-aligned
_CHUNK = 1 << 21  # output voxels interpolated at a time by the spline path


def voxel_size_grid(
    shape: Sequence[int], affine: np.ndarray, voxel_size: Sequence[float]
) -> tuple[tuple[int, ...], np.ndarray]:
    """The grid of voxel size ``voxel_size`` (one value per voxel axis, in mm) that covers the
    field of view of ``shape``/``affine``: ``round(n * s / v)`` voxels per axis (at least 1),
    centred on the same point, same direction cosines."""
    a = np.asarray(affine, dtype=np.float64)
    n, s, v = (np.asarray(x, dtype=np.float64) for x in (shape, spacing(a), voxel_size))
    if v.shape != (3,) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise MRSRError(f"voxel size must be 1 or 3 positive numbers (mm), got {list(voxel_size)}")
    count = np.maximum(np.rint(n * s / v), 1).astype(int)
    step = v / s  # new voxel size in input voxels
    index = np.eye(4)
    index[:3, :3] = np.diag(step)
    index[:3, 3] = (n - 1) / 2 - (count - 1) / 2 * step  # same centre
    return tuple(int(c) for c in count), a @ index


def resample_bytes(shape: Sequence[int], target_shape: Sequence[int]) -> int:
    """Estimated peak memory of :func:`resample` per channel: the float64 input, two float64
    intermediates no larger than the per-axis maxima of both shapes, the float32 output."""
    largest = math.prod(max(a, b) for a, b in zip(shape, target_shape))
    return 8 * (math.prod(shape) + 2 * largest) + 4 * math.prod(target_shape)


def index_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 4x4 map from target voxel indices to source voxel indices."""
    return np.linalg.solve(np.asarray(source, np.float64), np.asarray(target, np.float64))


def step_sizes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per source axis, the target's sampling step in source voxels (< 1: finer than the input):
    the length of the target's unit cell projected on that axis, ``max_j |M[a, j]|``."""
    return np.abs(index_map(source, target)[:3, :3]).max(axis=1)


def aligned_axes(source: np.ndarray, target: np.ndarray) -> list[int] | None:
    """The source axis of each target axis when the target's axes follow the source's (the
    index map is a scaled permutation: any spacing, offset, flip or order), else ``None``."""
    magnitude = np.abs(index_map(source, target)[:3, :3])
    axes = [int(np.argmax(magnitude[:, j])) for j in range(3)]
    if sorted(axes) != [0, 1, 2]:
        return None
    off = magnitude.copy()
    off[axes, range(3)] = 0
    return axes if np.all(off.max(axis=0) <= _ALIGNED * magnitude.max(axis=0)) else None


def sinc_matrix(n: int, positions: np.ndarray, step: float = 1.0) -> np.ndarray:
    """``(len(positions), n)``: periodic band-limited interpolation of ``n`` samples at
    ``positions`` (in sample indices), keeping frequencies below ``n / (2 max(step, 1))``.

    Frequencies ``|k| <= n / (2 max(step, 1))`` are kept, the Nyquist pair ``+-n/2`` of an even
    ``n`` (one frequency listed twice) at half weight each, so a real input stays real, a
    constant stays constant, with ``step <= 1`` the input's samples come back exactly at integer
    positions, and a coarser target gets the exact samples of the input truncated to its band.
    """
    cutoff = n / (2 * max(step, 1.0))
    k = np.arange(-(n // 2), n // 2 + 1, dtype=np.float64)  # an even n lists +-n/2 both
    weight = (np.abs(k) <= cutoff) * np.where(np.abs(k) == n / 2, 0.5, 1.0)
    at = np.exp(2j * np.pi * np.outer(positions, k) / n)
    of = np.exp(-2j * np.pi * np.outer(k, np.arange(n)) / n)
    return ((at * weight) @ of).real / n


def _inside(positions: np.ndarray, n: int) -> np.ndarray:
    return (positions >= -0.5 - 1e-6) & (positions <= n - 0.5 + 1e-6)


def spline_matrix(n: int, positions: np.ndarray) -> np.ndarray:
    """``(len(positions), n)``: cubic B-spline interpolation of ``n`` samples at ``positions``
    (mirrored at the ends, so nothing wraps around), the weights of each input sample."""
    unit = np.eye(n)
    columns = [ndimage.map_coordinates(e, [positions], order=3, mode="mirror") for e in unit]
    return np.stack(columns, axis=1)


def _separable(
    data: np.ndarray, m: np.ndarray, shape: Sequence[int], axes: list[int], band: Sequence[int]
) -> np.ndarray:
    """Axis by axis; ``axes[j]`` is the source axis of target axis j, band-limited if in
    ``band``, cubic B-spline otherwise."""
    out = data
    valid = np.ones(shape, dtype=bool)
    for j, a in enumerate(axes):
        positions = m[a, j] * np.arange(shape[j]) + m[a, 3]
        if not np.array_equal(positions, np.arange(data.shape[a])):  # else the axis stays
            n = data.shape[a]
            w = (
                sinc_matrix(n, positions, abs(m[a, j]))
                if a in band
                else spline_matrix(n, positions)
            )
            out = np.moveaxis(np.tensordot(w, np.moveaxis(out, a, 0), axes=(1, 0)), 0, a)
        inside = _inside(positions, data.shape[a])
        valid &= inside.reshape([-1 if i == j else 1 for i in range(3)])
    # out's axes are the source axes, each now as long as its target axis
    return np.transpose(out, axes) * valid


def _spline(data: np.ndarray, m: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    coefficients = ndimage.spline_filter(data, order=3, mode="mirror")
    out = np.empty(int(np.prod(shape)), dtype=np.float64)
    for start in range(0, out.size, _CHUNK):
        flat = np.arange(start, min(start + _CHUNK, out.size))
        index = np.stack(np.unravel_index(flat, shape)).astype(np.float64)
        where = m[:3, :3] @ index + m[:3, 3:4]
        inside = np.all([_inside(where[a], data.shape[a]) for a in range(3)], axis=0)
        values = ndimage.map_coordinates(
            coefficients, where, order=3, mode="mirror", prefilter=False
        )
        out[start : start + flat.size] = values * inside
    return out.reshape(shape)


def resample(
    volume: MetaTensor,
    shape: Sequence[int],
    affine: np.ndarray,
    band_limited: Sequence[int] = (0, 1, 2),
) -> MetaTensor:
    """``volume`` (channels first, ``(C, X, Y, Z)``) on the grid ``shape``/``affine``.

    When the target's axes follow the input's (:func:`aligned_axes`), the input axes in
    ``band_limited`` are interpolated band-limited (:func:`sinc_matrix`; the axes k-space was
    measured along) and the others by cubic B-spline (the slice axis of a 2D multi-slice scan,
    which is not periodic); otherwise everything by 3D cubic B-spline. Returns float32 with
    ``affine`` and the input's other metadata.
    """
    shape = tuple(int(n) for n in shape)
    source, target = (np.asarray(a, dtype=np.float64) for a in (volume.affine, affine))
    m = index_map(source, target)
    axes = aligned_axes(source, target)
    data = np.asarray(volume.as_tensor().detach().cpu(), dtype=np.float64)
    channels = [
        _spline(c, m, shape) if axes is None else _separable(c, m, shape, axes, band_limited)
        for c in data
    ]
    out = MetaTensor(
        torch.from_numpy(np.stack(channels).astype(np.float32)),
        affine=torch.as_tensor(target),
        meta={k: v for k, v in volume.meta.items() if k != "affine"},
    )
    out.meta["spatial_shape"] = np.asarray(shape)
    return out
