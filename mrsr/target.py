"""Any grid in one call: the target of ``--voxel-size`` or ``--like``, and how to reach it.

:func:`target_grid` turns the user's request into a shape and an affine; :func:`plan_grid`
decides, per axis of the input, what gets there, and says it in one line:

- in-plane, where the target is finer than the input by a ratio ``r > 1.05``: the 2D network at
  an integer scale (the smallest at or above ``r`` for the default models; a given model's own
  scale otherwise), then band-limited resampling from the network's grid to the target;
- in-plane where ``r <= 1.05`` (the same or a coarser grid): band-limited resampling only,
  truncated to the target's band where the target is coarser;
- through-plane, where the slices are at least 1.5 fine voxels apart: the self-supervised
  network of :mod:`mrsr.throughplane` trained on the scan (any real ratio, gaps, box or
  Gaussian profile), then cubic B-spline resampling to the target; elsewhere cubic B-spline
  interpolation only;
- cubic B-spline resampling in 3D wherever the target's axes do not follow the input's (an
  oblique reference; :mod:`mrsr.resample`).

>>> import numpy as np
>>> plan = plan_grid((180, 180, 30), np.diag([1.2, 1.2, 5.0, 1]), 2, *voxel_size_grid(
...     (180, 180, 30), np.diag([1.2, 1.2, 5.0, 1]), [1.0, 1.0, 1.0]))
>>> plan.scale, plan.aligned, plan.shape
(2, True, (216, 216, 150))
>>> print(plan.describe())
onto 216x216x150 at 1x1x1 mm: in-plane x1.20 by the network x2 then band-limited resampling; \
through-plane x5.00 (axis 2) by the network trained on the scan (to 1 mm) then cubic B-spline \
resampling
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrsr.errors import MRSRError, one_line
from mrsr.geometry import THICK, spacing
from mrsr.options import OPTIONS
from mrsr.resample import aligned_axes, step_sizes, voxel_size_grid

__all__ = [
    "GridPlan",
    "RATIO_TOLERANCE",
    "check_scale",
    "needed_scale",
    "plan_grid",
    "suited_scales",
    "target_grid",
]

RATIO_TOLERANCE = 0.05  # a target at most 5 % finer than the input needs no network


def target_grid(
    volume: Any, voxel_size: float | Sequence[float] | None = None, like: Any = None
) -> tuple[tuple[int, int, int], np.ndarray] | None:
    """``(shape, affine)`` asked for: ``voxel_size`` (mm, one value or one per voxel axis,
    covering the field of view of ``volume``), or the grid of ``like`` (a volume file or a
    MetaTensor, or anything else :func:`mrsr.io.as_volume` takes: its shape and affine,
    whatever its orientation). ``None`` when neither is given.
    """
    if voxel_size is not None and like is not None:
        raise MRSRError("give a voxel size or a reference grid (--like), not both")
    shape = tuple(int(n) for n in volume.shape[1:])
    if voxel_size is not None:
        sizes = _voxel_sizes(voxel_size)
        return voxel_size_grid(shape, np.asarray(volume.affine), sizes)
    if like is None:
        return None
    from mrsr.io import as_volume, inspect_volume, read_bytes
    from mrsr.memory import check_fits

    if isinstance(like, (str, os.PathLike)):
        check_fits(read_bytes(inspect_volume(like)), f"{one_line(like)}: reading the reference")
    like = as_volume(like, name="like")
    return tuple(int(n) for n in like.shape[1:]), np.asarray(like.affine, dtype=np.float64)


def _voxel_sizes(voxel_size: Any) -> list[float]:
    """The three voxel sizes in mm of ``--voxel-size``: one number or one per voxel axis."""
    sizes = [voxel_size] * 3 if np.ndim(voxel_size) == 0 else list(np.ravel(voxel_size))
    sizes = sizes * 3 if len(sizes) == 1 else sizes
    if len(sizes) != 3:
        raise MRSRError(f"--voxel-size needs 1 or 3 values (mm), got {len(sizes)}")
    return [OPTIONS["voxel_size"].check(v, "--voxel-size") for v in sizes]


def suited_scales(ratio: float) -> list[int]:
    """The network scales that suit an in-plane ratio: none where no network is needed
    (:func:`needed_scale` 1), else the integers on either side of it (one within
    :data:`RATIO_TOLERANCE` of an integer): resampling bridges the rest."""
    if needed_scale(ratio) == 1:
        return []
    return sorted({s for s in (math.floor(ratio + RATIO_TOLERANCE), needed_scale(ratio)) if s > 1})


def check_scale(plan: GridPlan, scale: int, voxel_size: Any = None, like: Any = None) -> None:
    """Refuse a network scale asked for explicitly (``--scale``, ``Pipeline(scale=...)``) that
    does not suit the target grid of ``voxel_size`` or ``like`` (:func:`suited_scales`): it
    would be silently unused (the target is not finer in-plane) or contradict the target."""
    suited = suited_scales(plan.in_plane)
    if scale in suited:
        return
    if voxel_size is not None:
        target = "--voxel-size " + " ".join(f"{v:g}" for v in _voxel_sizes(voxel_size))
    else:
        target = f"--like {one_line(like) if isinstance(like, (str, os.PathLike)) else 'REF'}"
    needs = (
        "the network at " + " or ".join(f"x{s}" for s in suited)
        if suited
        else "no network (the target is not finer in-plane: resampling only)"
    )
    raise MRSRError(
        f"--scale {scale} and {target} disagree: {target} is x{plan.in_plane:.2f} in-plane from "
        f"this input, which needs {needs}, not the network at x{scale}; give one of them "
        f"({target} alone chooses the scale)"
    )


def needed_scale(ratio: float) -> int:
    """The integer network scale at or above an in-plane ratio (1: no network needed)."""
    if ratio <= 1 + RATIO_TOLERANCE:
        return 1
    return max(2, math.ceil(ratio - RATIO_TOLERANCE))


@dataclass(frozen=True)
class GridPlan:
    """What :func:`plan_grid` decided: the target, the input's slice ``axis``, the ratios
    ``in_plane`` (largest of the two in-plane axes) and ``through`` (input spacing over target
    step; > 1 is finer), the network ``scale`` (1: none), whether the target's axes follow
    the input's (``aligned``: separable resampling, band-limited in-plane), and the fine
    voxel size in mm of the through-plane network step along the slice axis (``None``: no
    such step)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    axis: int
    in_plane: float
    through: float
    scale: int
    aligned: bool
    through_plane: float | None = None

    @property
    def in_plane_axes(self) -> tuple[int, int]:
        return tuple(a for a in range(3) if a != self.axis)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in spacing(self.affine))

    def describe(self) -> str:
        """The plan in one line, said before work and kept in the output's provenance."""
        way = "band-limited" if self.aligned else "cubic B-spline"
        size = "x".join(f"{s:.3g}" for s in self.voxel_size)
        grid = f"onto {'x'.join(map(str, self.shape))} at {size} mm"
        if self.scale > 1:
            first = f"in-plane x{self.in_plane:.2f} by the network x{self.scale} then {way} "
            first += "resampling"
        else:
            first = f"in-plane x{self.in_plane:.2f} by {way} resampling"
        through = f"through-plane x{self.through:.2f} (axis {self.axis})"
        if self.through_plane:
            through += (
                f" by the network trained on the scan (to {self.through_plane:.3g} mm) then "
                "cubic B-spline resampling"
            )
        else:
            verb = "interpolation" if self.through > 1 + RATIO_TOLERANCE else "resampling"
            through += f" by cubic B-spline {verb}"
        return f"{grid}: {first}; {through}"


def plan_grid(
    shape: Sequence[int],
    affine: np.ndarray,
    axis: int,
    target_shape: Sequence[int],
    target_affine: np.ndarray,
    scale: int | None = None,
    through_plane: bool = True,
) -> GridPlan:
    """The plan from the input grid (``shape``, ``affine``, slice ``axis``) to the target.

    ``scale``: the network's scale when a model is fixed (used whenever the in-plane ratio
    exceeds 1.05, even if it is smaller or larger than needed); ``None``: :func:`needed_scale`.
    With ``through_plane``, slices at least 1.5 times (:data:`mrsr.geometry.THICK`) the
    fine voxel size apart are super-resolved by :mod:`mrsr.throughplane`, onto the coarser of
    the in-plane voxel size (after the in-plane step) and the target's step along the slice
    axis: finer than the in-plane data cannot be learnt from them.
    """
    source = np.asarray(affine, dtype=np.float64)
    target = np.asarray(target_affine, dtype=np.float64)
    if target.shape != (4, 4) or not np.all(np.isfinite(target)):
        raise MRSRError("the target grid needs a finite 4x4 affine")
    if abs(np.linalg.det(target[:3, :3])) < 1e-12:
        raise MRSRError("the target grid's affine is singular")
    ratios = 1 / step_sizes(source, target)
    in_plane = float(max(ratios[a] for a in range(3) if a != axis))
    wanted = needed_scale(in_plane)
    used = 1 if wanted == 1 else (wanted if scale is None else scale)
    sizes = spacing(source)
    in_plane_mm = float(np.mean(np.delete(sizes, axis))) / used
    fine = max(in_plane_mm, sizes[axis] / float(ratios[axis]))
    thick = through_plane and sizes[axis] / fine >= THICK
    return GridPlan(
        shape=tuple(int(n) for n in target_shape),
        affine=target,
        axis=axis,
        in_plane=in_plane,
        through=float(ratios[axis]),
        scale=used,
        aligned=aligned_axes(source, target) is not None,
        through_plane=fine if thick else None,
    )
