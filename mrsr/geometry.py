"""World-space geometry of super-resolution: the slice axis and the affine of a resampled grid.

Two sampling grids relate a coarse volume to a fine one (``s`` = coarse voxel / fine voxel):

``"kspace"``
    Centred k-space truncation (the MR acquisition model, :mod:`mrsr.kspace`): coarse voxel ``i``
    sits at fine voxel ``i * s``; voxel 0 keeps its world position.
``"area"``
    Area sampling (antialiased bicubic, slab subdivision of thick slices): coarse voxel ``i``
    covers fine voxels ``[i * s, (i + 1) * s)`` and sits at their centre ``i * s + (s - 1) / 2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

Grid = Literal["kspace", "area"]
GRIDS: tuple[str, ...] = ("kspace", "area")

__all__ = ["GRIDS", "THICK", "Grid", "in_plane_axes", "resampled_affine", "slice_axis", "spacing"]

THICK = 1.5  # slice spacing / fine voxel size from which slices count as thick (through-plane SR)


def spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis: the norms of the affine's columns."""
    a = np.asarray(affine, dtype=np.float64)
    return np.linalg.norm(a[:-1, :-1], axis=0)


def _header_slice_dim(meta: Mapping | None) -> int | None:
    if not meta:
        return None
    if meta.get("slice_dim") is not None:
        return int(meta["slice_dim"])
    dim_info = meta.get("dim_info")
    if dim_info is None:
        return None
    code = (int(np.asarray(dim_info)) >> 4) & 3  # NIfTI-1: bits 4-5 hold slice_dim + 1
    return code - 1 if code else None


def slice_axis(affine: np.ndarray, meta: Mapping | None = None, rtol: float = 1e-3) -> int:
    """The spatial axis a 2D network does not act on (docs/geometry.md).

    The NIfTI header's ``slice_dim`` when set; else the one axis whose spacing differs from the
    other two (a 0.5x0.5x5 mm scan, or a degraded 2x2x1 mm volume); else the last axis.

    >>> slice_axis(np.diag([0.5, 0.5, 5.0, 1.0]))
    2
    >>> slice_axis(np.diag([2.0, 1.0, 1.0, 1.0]))
    0
    """
    from_header = _header_slice_dim(meta)
    if from_header is not None:
        return from_header
    sp = spacing(affine)
    if len(sp) == 3:
        for a in range(3):
            b, c = (x for x in range(3) if x != a)
            if np.isclose(sp[b], sp[c], rtol=rtol) and not np.isclose(sp[a], sp[b], rtol=rtol):
                return a
    return len(sp) - 1


def in_plane_axes(affine: np.ndarray, meta: Mapping | None = None) -> tuple[int, ...]:
    """The spatial axes other than :func:`slice_axis` (both axes of a 2D image)."""
    n = np.asarray(affine).shape[0] - 1
    if n < 3:
        return tuple(range(n))
    axis = slice_axis(affine, meta)
    return tuple(a for a in range(n) if a != axis)


def resampled_affine(
    affine: np.ndarray, factors: Sequence[float], grid: Grid | str = "kspace"
) -> np.ndarray:
    """Affine of a grid whose voxels are ``factors`` times the size of ``affine``'s voxels.

    ``factors[a] > 1`` coarsens axis ``a`` (degradation), ``< 1`` refines it (super-resolution);
    direction cosines are kept. New voxel ``j`` sits at old continuous index
    ``j * f + offset`` with ``offset = 0`` on the ``"kspace"`` grid and ``(f - 1) / 2`` on the
    ``"area"`` grid, so coarsening then refining by the same factor returns the same affine.

    >>> resampled_affine(np.eye(4), [2, 2, 1], "area")[:3, 3].tolist()
    [0.5, 0.5, 0.0]
    """
    if grid not in GRIDS:
        raise ValueError(f"unknown sampling grid {grid!r}; expected one of {GRIDS}")
    a = np.asarray(affine, dtype=np.float64)
    f = np.asarray(factors, dtype=np.float64)
    if f.shape != (a.shape[0] - 1,) or np.any(f <= 0):
        raise ValueError(f"need one positive factor per spatial axis, got {list(factors)}")
    step = np.eye(a.shape[0])
    step[:-1, :-1] = np.diag(f)
    if grid == "area":
        step[:-1, -1] = (f - 1) / 2
    return a @ step
