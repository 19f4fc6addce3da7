"""Several thick-slice stacks of one subject fused into one volume on any grid.

A clinical protocol often acquires one contrast as thick axial, coronal and sagittal stacks:
each is sharp in its own plane and blurred along its own slice axis, so together they resolve
all three directions. :func:`fuse_stacks` puts them on one grid (``voxel_size``: covering the
first stack's field of view in its orientation; or exactly ``like``'s grid):

1. optionally, :func:`mrsr.registration.register_rigid` of every stack to the first (the
   motion found corrects the stack's affine, nothing is resampled);
2. each stack's estimate on the target grid: its own self-trained through-plane network
   (:func:`mrsr.throughplane.super_resolve_through_plane`) onto the target's step along its
   slice axis, then world-space resampling (:func:`mrsr.resample.resample`); the estimates
   are averaged over the stacks that cover each voxel into ``x0``. Each stack's slice profile
   is the one given, else estimated from that stack, and serves both its network and its
   operator;
3. the joint data-consistency solve (:func:`solve`): the ``x`` on the target grid that
   minimises ``sum_k w_k ||A_k x - y_k||^2 + weight ||x - x0||^2``, where ``y_k`` are stack
   ``k``'s voxels and ``A_k`` its acquisition from the target grid (:class:`Acquisition`: the
   target interpolated at the stack's in-plane pixels and at fine points subdividing its
   slices, then its slice profile along its own slice axis); ``w_k`` scales each stack's
   operator to unit-norm rows, so that ``weight`` compares one measured voxel with one voxel
   of the estimate. Conjugate gradients on the normal equations from ``x0``, matrix-free:
   ``A_k`` and its transpose are 1D matrices along each axis where the stack's axes follow the
   target's, else :func:`torch.nn.functional.grid_sample` and its gradient;
4. the range rule of every command: a magnitude input (no negative voxel) is clamped at 0.

Each stack's relative RMS residual ``||A_k x - y_k|| / ||y_k||`` over its voxels inside the
target grid is noted (``stack_residuals``, :func:`mrsr.provenance.add_facts`), with the motions
found by the registration. This is slice-to-volume reconstruction (Gholipour et al., "Robust
super-resolution volume reconstruction from slice acquisitions", IEEE TMI 2010) with a learned
prior: the estimates of the per-stack networks instead of a smoothness penalty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from mrsr.errors import MRSRError, one_line
from mrsr.geometry import resampled_affine, slice_axis, spacing
from mrsr.intensity import clamps, relative_residual
from mrsr.io import as_volume
from mrsr.labels import refuse_label_map
from mrsr.memory import check_fits
from mrsr.profile_estimation import slice_profile_for
from mrsr.progress import note
from mrsr.provenance import add_facts
from mrsr.registration import corrected, register_rigid
from mrsr.resample import aligned_axes, index_map, resample, step_sizes
from mrsr.slice_profiles import Profile, SliceProfile, along, axis_factors
from mrsr.target import GridPlan, plan_grid, target_grid

__all__ = ["ITERATIONS", "WEIGHT", "Acquisition", "fuse_stacks", "solve", "through_plane_estimate"]

WEIGHT = 0.1  # of the estimates against the measurements (docs/geometry.md: measured)
ITERATIONS = 30  # conjugate-gradient iterations at most
TOLERANCE = 1e-3  # ... or until the normal equations' residual is this fraction of the first

# (stack, its plan onto the target grid, its slice thickness in mm and profile) -> its estimate
Estimate = Callable[[MetaTensor, GridPlan, "float | None", "str | Profile"], MetaTensor]


def _linear(positions: np.ndarray, n: int) -> torch.Tensor | None:
    """``(len(positions), n)``: linear interpolation of ``n`` samples at ``positions`` (held at
    the ends), or ``None`` where the positions are the samples themselves."""
    if len(positions) == n and np.allclose(positions, np.arange(n), rtol=0, atol=1e-6):
        return None
    at = np.clip(positions, 0, n - 1)
    low = np.minimum(np.floor(at).astype(int), max(n - 2, 0))
    share = at - low
    rows = np.arange(len(at))
    matrix = np.zeros((len(at), n))
    np.add.at(matrix, (rows, low), 1 - share)
    np.add.at(matrix, (rows, np.minimum(low + 1, n - 1)), share)
    return torch.as_tensor(matrix, dtype=torch.float32)


def _positions(where: np.ndarray, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Per axis of the grid that the index map ``where`` leads to, the float64 position there of
    every voxel of a grid of ``sizes``."""
    ranges = [torch.arange(n, dtype=torch.float64) for n in sizes]
    return [
        torch.broadcast_to(
            float(where[c, 3])
            + sum(
                float(where[c, a]) * ranges[a].reshape([-1 if b == a else 1 for b in range(3)])
                for a in range(3)
            ),
            tuple(sizes),
        )
        for c in range(3)
    ]


def _within(at: Any, n: int) -> Any:
    """Whether positions ``at`` (voxel indices) lie within a field of view of ``n`` voxels."""
    return (at >= -0.5 - 1e-6) & (at <= n - 0.5 + 1e-6)


@dataclass(frozen=True)
class Acquisition:
    """How one stack measures a volume on the target grid: a linear map ``A`` from the target
    ``(X, Y, Z)`` to the stack's voxels ``(I, J, K)`` (for a stack sliced along its axis 2).

    The target is first interpolated (linearly, held at its edges) at fine points: the stack's
    in-plane pixels, and ``N`` points subdividing its slices. When the stack's axes follow the
    target's (any spacing, offset, flip or order), axis by axis: ``lines`` holds, per fine
    axis, its interpolation matrix from target axis ``order[j]`` (``None``: the same points);
    otherwise in 3D, ``points`` ``(1, I, J, N, 3)`` as :func:`torch.nn.functional.grid_sample`
    takes them. Then ``profile`` ``(K, N)``, the slice profile
    (:meth:`SliceProfile.acquisition`), along ``axis``. ``inside``: the stack's voxels whose
    whole profile lies inside the target's field of view (the others are left out of ``A``:
    they measure what the target does not hold); ``scale``: ``w``, the inverse mean squared
    norm of the profile's rows.
    """

    profile: torch.Tensor
    axis: int
    inside: torch.Tensor
    scale: float
    target: tuple[int, int, int]
    lines: tuple[torch.Tensor | None, ...] | None = None
    order: tuple[int, ...] | None = None
    points: torch.Tensor | None = None

    @classmethod
    def of(
        cls,
        stack: MetaTensor,
        axis: int,
        per_slice: float,
        gap: float,
        kind: str | Profile,
        shape: Sequence[int],
        affine: np.ndarray,
    ) -> Acquisition:
        """The acquisition of ``stack`` sliced along ``axis`` from the grid ``shape``/``affine``:
        about ``per_slice`` fine points per slice spacing (a whole number of them spans the
        slices), slices ``gap`` spacings thick with the profile ``kind``."""
        count = stack.shape[axis + 1]
        n_fine = max(count, round(count * per_slice))
        per_slice = n_fine / count
        model = SliceProfile(per_slice, gap * per_slice, kind)
        fine = resampled_affine(
            np.asarray(stack.affine, dtype=np.float64), axis_factors(axis, 1 / per_slice), "area"
        )
        sizes = list(stack.shape[1:])
        sizes[axis] = n_fine
        where = index_map(affine, fine)  # fine voxel index -> target voxel index
        matrix = torch.as_tensor(model.acquisition(n_fine, count), dtype=torch.float32)
        order = aligned_axes(affine, fine)
        parts: dict[str, Any] = {}
        valid = torch.ones(sizes, dtype=torch.bool)
        if order is not None:
            lines = []
            for j, a in enumerate(order):
                at = where[a, j] * np.arange(sizes[j]) + where[a, 3]
                lines.append(_linear(at, shape[a]))
                inside = torch.as_tensor(_within(at, shape[a]))
                valid &= inside.reshape([-1 if b == j else 1 for b in range(3)])
            parts = {"lines": tuple(lines), "order": tuple(order)}
        else:
            coords = []
            for at, n in zip(_positions(where, sizes), shape):
                valid &= _within(at, n)
                coords.append((2 * at / max(n - 1, 1) - 1).float())
            parts = {"points": torch.stack(coords[::-1], dim=-1)[None]}
        inside = along(valid.float(), matrix, axis) >= 1 - 1e-4
        scale = 1 / float((matrix**2).sum(1).mean())
        return cls(matrix, axis, inside, scale, tuple(int(n) for n in shape), **parts)

    def _sample(self, x: torch.Tensor) -> torch.Tensor:
        """The target ``x`` at the fine points."""
        if self.points is not None:
            fine = F.grid_sample(x[None, None], self.points, "bilinear", "border", True)
            return fine[0, 0]
        for line, a in zip(self.lines, self.order):
            x = x if line is None else along(x, line, a)
        return x.permute(self.order)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: ``x`` ``(X, Y, Z)`` on the target grid -> the stack's voxels (0 outside)."""
        return along(self._sample(x), self.profile, self.axis) * self.inside

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: the stack's voxels -> the target grid."""
        fine = along(y * self.inside, self.profile.T, self.axis)
        if self.points is not None:  # the transpose of grid_sample: its gradient
            x = torch.zeros(self.target, requires_grad=True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self._sample(x), x, grad_outputs=fine)
            return grad
        x = fine.permute(tuple(int(a) for a in np.argsort(self.order)))
        for line, a in zip(self.lines, self.order):
            x = x if line is None else along(x, line.T, a)
        return x


def _conjugate_gradients(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x: torch.Tensor,
    iterations: int,
    tolerance: float,
) -> tuple[torch.Tensor, int]:
    """``x`` solving ``apply(x) = b`` (symmetric positive definite) from the start ``x``, and
    the iterations taken: at most ``iterations``, fewer once the residual is ``tolerance``
    times the first."""
    r = b - apply(x)
    p, rs = r.clone(), float((r * r).sum())
    limit = tolerance**2 * rs
    for done in range(iterations):
        if rs <= limit:
            return x, done
        q = apply(p)
        alpha = rs / float((p * q).sum())
        x, r = x + alpha * p, r - alpha * q
        rs, previous = float((r * r).sum()), rs
        p = r + (rs / previous) * p
    return x, iterations


def solve(
    stacks: Sequence[torch.Tensor],
    operators: Sequence[Acquisition],
    prior: torch.Tensor,
    weight: float = WEIGHT,
    iterations: int = ITERATIONS,
) -> tuple[torch.Tensor, int]:
    """Step 3 of the module: ``argmin_x sum_k w_k ||A_k x - y_k||^2 + weight ||x - x0||^2``
    for one channel (``stacks`` ``y_k``, ``operators`` ``A_k``, ``prior`` ``x0``
    ``(X, Y, Z)``), and the conjugate-gradient iterations taken."""
    measured = [y.float() * op.inside for y, op in zip(stacks, operators)]

    def normal(x: torch.Tensor) -> torch.Tensor:
        out = weight * x
        for op in operators:
            out = out + op.scale * op.adjoint(op(x))
        return out

    b = weight * prior
    for y, op in zip(measured, operators):
        b = b + op.scale * op.adjoint(y)
    return _conjugate_gradients(normal, b, prior.clone(), iterations, TOLERANCE)


def through_plane_estimate(
    stack: MetaTensor,
    plan: GridPlan,
    thickness: float | None,
    profile: str | Profile,
    **options: Any,
) -> MetaTensor:
    """One stack's estimate on the plan's grid: its through-plane network
    (:func:`~mrsr.throughplane.super_resolve_through_plane` with ``options``, for slices
    ``thickness`` mm thick with the ``profile``) onto the plan's fine voxel size along its
    slice axis, where its slices are thick, then resampling (band-limited in-plane, cubic
    B-spline along the slices)."""
    from mrsr.throughplane import super_resolve_through_plane

    if plan.through_plane:
        stack = super_resolve_through_plane(
            stack,
            thickness=None if isinstance(profile, Profile) else thickness,
            profile=profile,
            fine_spacing=plan.through_plane,
            axis=plan.axis,
            **options,
        )
    return resample(stack, plan.shape, plan.affine, band_limited=plan.in_plane_axes)


def _name(stack: MetaTensor, k: int) -> str:
    return one_line(str(stack.meta.get("filename_or_obj") or f"stacks[{k}]"))


def _checked(stacks: Sequence[Any]) -> list[MetaTensor]:
    """The stacks as volumes: at least two, none a label map, all with the same channels."""
    if isinstance(stacks, (str, bytes)) or not isinstance(stacks, Sequence) or len(stacks) < 2:
        raise MRSRError(
            "stacks must be a list of two or more volumes of one subject; for one stack use "
            "mrsr.throughplane.super_resolve_through_plane or Pipeline(...)(x, voxel_size=...)"
        )
    volumes = [as_volume(s, name=f"stacks[{k}]") for k, s in enumerate(stacks)]
    for k, volume in enumerate(volumes):
        refuse_label_map(volume, "fusing", _name(volume, k))
        if volume.shape[0] != volumes[0].shape[0]:
            raise MRSRError(
                f"{_name(volume, k)}: {volume.shape[0]} channels, but {_name(volumes[0], 0)} has "
                f"{volumes[0].shape[0]}; every stack must hold the same channels (one contrast)"
            )
    return volumes


def _thicknesses(thickness: Any, count: int) -> list[float | None]:
    if thickness is None or np.ndim(thickness) == 0:
        return [thickness] * count
    thickness = list(thickness)
    if len(thickness) != count:
        raise MRSRError(f"thickness: one value per stack ({count}), got {len(thickness)}")
    return thickness


def _coverage(stack: MetaTensor, shape: Sequence[int], affine: np.ndarray) -> torch.Tensor:
    """Which target voxels lie inside the stack's field of view."""
    where = index_map(np.asarray(stack.affine, dtype=np.float64), affine)
    inside = torch.ones(tuple(shape), dtype=torch.bool)
    for at, n in zip(_positions(where, shape), stack.shape[1:]):
        inside &= _within(at, n)
    return inside


def fuse_stacks(
    stacks: Sequence[Any],
    voxel_size: float | Sequence[float] | None = None,
    like: Any = None,
    *,
    register: bool = False,
    thickness: float | Sequence[float | None] | None = None,
    profile: str | Profile | None = None,
    weight: float = WEIGHT,
    iterations: int = ITERATIONS,
    nonnegative: bool | None = None,
    axis: int | None = None,
    estimate: Estimate | None = None,
    scale: int = 1,
    through_plane: bool = True,
    progress: bool = False,
    **options: Any,
) -> MetaTensor:
    """Several stacks of one subject and contrast, in one scanner space, fused into one volume
    on the grid of ``voxel_size`` (mm, covering the first stack's field of view) or ``like``
    (exactly its grid); see the module's description for the steps.

    ``stacks``: two or more of anything :func:`mrsr.io.as_volume` takes, with the same
    channels. ``register``: register each stack rigidly to the first one before (without it,
    stacks whose field of view misses the target are refused). ``thickness`` (mm; one for all
    or one per stack) and ``profile`` (a name of :data:`mrsr.slice_profiles.PROFILES` or a
    measured :class:`~mrsr.slice_profiles.Profile`): every stack's slice profile; with neither,
    each stack's is estimated from it (:func:`mrsr.profile_estimation.slice_profile_for`, as
    the through-plane step does), and the stack's network and operator both use it.
    ``weight``: of the estimates against the measurements (:data:`WEIGHT`); ``iterations``:
    of conjugate gradients at most. ``axis``: every stack's slice axis (default: each one's,
    :func:`mrsr.geometry.slice_axis`). ``options``: of
    :func:`~mrsr.throughplane.super_resolve_through_plane` (``steps``, ``seed``,
    ``batch_size``, ``device``...). ``estimate``: how one stack is brought onto the grid (its
    arguments: the stack, its :class:`~mrsr.target.GridPlan` (:func:`~mrsr.target.plan_grid`
    with the in-plane network ``scale`` and ``through_plane``) and its slice thickness;
    default: :func:`through_plane_estimate`; :meth:`mrsr.Pipeline.fuse` passes its own).

    Returns float32 ``(C, X, Y, Z)`` on the target grid, with ``stack_residuals`` (one per
    stack, in order), ``fusion_iterations`` and, with ``register``, ``registration`` (each
    stack's 4x4 RAS motion) noted (:func:`mrsr.provenance.add_facts`).
    """
    from mrsr.options import OPTIONS

    volumes = _checked(stacks)
    weight = OPTIONS["fusion_weight"].check(weight, "weight")
    iterations = OPTIONS["fusion_iterations"].check(iterations, "iterations")
    register = OPTIONS["register"].check(register, "register")
    thicknesses = _thicknesses(thickness, len(volumes))
    facts: dict[str, Any] = {}
    if register:
        motions = [np.eye(4)]
        for k, moving in enumerate(volumes[1:], 1):
            motion, metric = register_rigid(volumes[0], moving)
            volumes[k] = corrected(moving, motion)
            motions.append(motion)
            if progress:
                note(one_line(f"registered {_name(moving, k)}: Mattes MI {metric:.4f}"))
        facts["registration"] = [np.round(m, 6).tolist() for m in motions]
    grid = target_grid(volumes[0], voxel_size, like)
    if grid is None:
        raise MRSRError("fusing stacks needs a target grid: give voxel_size or like")
    shape, affine = grid
    axes = [slice_axis(np.asarray(v.affine), v.meta) if axis is None else axis for v in volumes]
    models = [  # (profile, thickness in mm or None, facts) of each stack
        slice_profile_for(v, a, t, profile) for v, a, t in zip(volumes, axes, thicknesses)
    ]
    operators = [
        _operator(v, a, t, kind, shape, affine, k)
        for k, (v, a, (kind, t, _)) in enumerate(zip(volumes, axes, models))
    ]
    voxels = math.prod(shape) * volumes[0].shape[0]
    fine = sum(op.inside.numel() * op.profile.shape[1] // op.profile.shape[0] for op in operators)
    check_fits(
        4 * 12 * voxels + 24 * fine,  # a dozen float32 copies of the target
        f"fusing {len(volumes)} stacks onto {'x'.join(map(str, shape))}",
    )
    estimate = estimate or partial(
        through_plane_estimate, nonnegative=nonnegative, progress=progress, **options
    )
    meta = dict(volumes[0].meta)
    total = torch.zeros((volumes[0].shape[0], *shape))
    cover = torch.zeros(shape)
    for k, (volume, a, (kind, t, _)) in enumerate(zip(volumes, axes, models)):
        plan = plan_grid(
            volume.shape[1:], np.asarray(volume.affine), a, shape, affine, scale, through_plane
        )
        if progress:
            note(one_line(f"stack {k + 1}/{len(volumes)} {_name(volume, k)}: {plan.describe()}"))
        inside = _coverage(volume, shape, affine)
        total += estimate(volume, plan, t, kind).as_tensor().float() * inside
        cover += inside
    prior = total / cover.clamp(min=1)
    out, residuals, clamped, taken = [], [], [], 0
    for c in range(prior.shape[0]):
        channel = [v.as_tensor()[c].float() for v in volumes]
        x, steps = solve(channel, operators, prior[c], weight, iterations)
        clamped.append(all(clamps(y, nonnegative) for y in channel))
        out.append(x.clamp(min=0.0) if clamped[-1] else x)
        taken = max(taken, steps)
    fused = torch.stack(out)
    for volume, op in zip(volumes, operators):
        error = norm = 0.0
        for c in range(fused.shape[0]):
            e, n = relative_residual(volume.as_tensor()[c] * op.inside, op(fused[c]))
            error, norm = error + e, norm + n
        residuals.append(round(math.sqrt(error / max(norm, 1e-30)), 6))
    result = MetaTensor(
        fused, affine=torch.as_tensor(affine), meta={k: v for k, v in meta.items() if k != "affine"}
    )
    result.meta["spatial_shape"] = np.asarray(shape)
    facts |= {
        "clamped_at_zero": clamped[0] if len(set(clamped)) == 1 else clamped,
        "stacks": [_name(v, k) for k, v in enumerate(volumes)],
        "stack_residuals": residuals,
        "stack_profiles": [facts for _, _, facts in models],
        "fusion_weight": weight,
        "fusion_iterations": taken,
    }
    add_facts(result, facts)
    if progress:
        note("re-acquisition residuals: " + ", ".join(f"{r:.4f}" for r in residuals))
    return result


def _operator(
    volume: MetaTensor,
    axis: int,
    thickness: float | None,
    profile: str | Profile,
    shape: Sequence[int],
    affine: np.ndarray,
    k: int,
) -> Acquisition:
    """Stack ``k``'s :class:`Acquisition` from the target grid, refused when none of its
    voxels lies inside the target's field of view."""
    source = np.asarray(volume.affine, dtype=np.float64)
    per_slice = max(1.0, 1 / float(step_sizes(source, affine)[axis]))
    gap = 1.0 if thickness is None else thickness / spacing(source)[axis]
    op = Acquisition.of(volume, axis, per_slice, gap, profile, shape, affine)
    if not bool(op.inside.any()):
        raise MRSRError(
            f"{_name(volume, k)}: its field of view does not overlap the target grid (the first "
            "stack's field of view, or the reference's); stacks must be of one subject in one "
            "scanner space: check the headers, or register them (--register)"
        )
    return op
