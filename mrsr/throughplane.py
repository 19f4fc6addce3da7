"""Through-plane super-resolution of thick-slice volumes, trained on the scan itself.

A clinical 2D multi-slice scan (say 0.9 x 0.9 x 5 mm, or 0.47 x 0.47 x 6 mm with a 1 mm gap) is
sharp in-plane and blurred along the slice axis. Its in-plane slices show what the anatomy looks
like at the fine resolution, so they make the training data: degrade them along one in-plane
axis with the acquisition model, learn to undo that with a small 2D network, then apply the
network to the planes that contain the slice axis, in both orientations, and average
(SMORE-style self-supervision; Zhao et al., "SMORE: a self-supervised anti-aliasing and
super-resolution algorithm for MRI using deep learning", IEEE TMI 2021). A last correction makes
the result consistent with the measurement (:func:`slice_consistency`).

Acquisition model (:mod:`mrsr.slice_profiles`): thick slices ``spacing`` fine voxels apart, each
integrating the fine voxels under a box of width ``thickness`` (a gap when thinner than the
spacing) or a Gaussian of that FWHM. Any real spacing ratio works (4.5, 5.6...): the fine grid
has ``round(K * ratio)`` voxels along the slice axis for ``K`` slices, and the profile is
expressed on it exactly, fractional overlaps included.

Geometry (docs/geometry.md): the fine voxels subdivide the slices' spacing, so the output
covers exactly the slabs of the input (affine ``resampled_affine(A, [1, 1, K/N], "area")``,
slice axis last here; any axis works). Simulating thick slices from an isotropic volume
(:func:`~mrsr.slice_profiles.simulate_thick_slices`) and super-resolving them gives back the
reference's grid exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from mrsr.errors import MRSRError
from mrsr.geometry import THICK, resampled_affine, slice_axis, spacing
from mrsr.inference import super_resolve
from mrsr.inplane_resolution import acquired_resolution
from mrsr.intensity import (
    clamps,
    project_in_range,
    range_facts,
    relative_residual,
)
from mrsr.io import as_volume
from mrsr.labels import refuse_label_map
from mrsr.machine import resolve_device
from mrsr.profile_estimation import slice_profile_for
from mrsr.provenance import add_facts
from mrsr.settings import THROUGH_PLANE_STEPS
from mrsr.slice_profiles import Profile, SliceProfile, along, axis_factors, slice_consistency
from mrsr.training.throughplane import train_network, training_slices

__all__ = ["apply_network", "resolve_factor", "super_resolve_through_plane"]


def resolve_factor(
    affine: np.ndarray, axis: int, factor: float | None = None, fine_spacing: float | None = None
) -> float:
    """Fine voxels per slice spacing: ``factor`` checked, else slice spacing / ``fine_spacing``
    (default: the mean in-plane spacing). Any real ratio from 1.5
    (:data:`mrsr.geometry.THICK`) up; below it :class:`~mrsr.errors.MRSRError` ("no thick
    axis")."""
    sp = spacing(affine)
    ratio = (
        float(factor)
        if factor is not None
        else sp[axis] / (fine_spacing or float(np.mean(np.delete(sp, axis))))
    )
    if ratio < THICK:
        sizes = " x ".join(f"{s:.3g}" for s in sp)
        raise MRSRError(
            f"no thick axis: voxels are {sizes} mm (slice axis {axis}), {ratio:.3g} fine voxels "
            f"per slice; through-plane super-resolution needs at least {THICK}"
        )
    return ratio


def apply_network(
    fine: MetaTensor,
    network: nn.Module,
    axes: Sequence[int],
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> MetaTensor:
    """Run ``network`` on the planes that contain the slice axis and average the orientations.

    ``fine`` is the interpolated volume ``(C, X, Y, N)`` (:meth:`SliceProfile.interpolation`);
    for each in-plane axis in ``axes`` the volume is cut into planes across that axis (x: the
    y-z planes; y: the x-z planes) and super-resolved at scale 1 by
    :func:`mrsr.inference.super_resolve` (its normalisation, batching and memory handling); the
    results are averaged voxel by voxel.
    The grid and affine are ``fine``'s.
    """
    outputs = [
        super_resolve(
            fine,
            network,
            1,
            "area",
            axis=a,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        for a in axes
    ]
    return sum(outputs[1:], outputs[0]) / len(outputs)


def super_resolve_through_plane(
    volume: Any,
    factor: float | None = None,
    steps: int = THROUGH_PLANE_STEPS,
    *,
    max_time: float | None = None,
    thickness: float | None = None,
    profile: str | Profile | None = None,
    fine_spacing: float | None = None,
    inplane_resolution: float | Sequence[float] | None = None,
    seed: int = 0,
    axis: int | None = None,
    consistency: bool = True,
    nonnegative: bool | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **network_options: Any,
) -> MetaTensor:
    """Super-resolve a thick-slice volume along its slice axis, trained on its own slices.

    ``volume``: anything :func:`mrsr.pipeline.as_volume` takes (path, nibabel image, MetaTensor
    ``(C, X, Y, Z)``). ``axis``: the slice axis (default :func:`mrsr.geometry.slice_axis`).
    The slices are the affine's spacing apart, each ``thickness`` mm thick (default: the
    spacing, no gap) with the ``profile``, a name of :data:`mrsr.slice_profiles.PROFILES` (default
    box), or a measured :class:`~mrsr.slice_profiles.Profile`
    (:func:`~mrsr.slice_profiles.read_profile`, its own width); with neither ``thickness`` nor
    ``profile`` both are estimated from the scan
    (:func:`mrsr.profile_estimation.slice_profile_for`). ``inplane_resolution``: the in-plane
    resolution acquired, mm (one value, or one per in-plane axis), default estimated from the
    in-plane spectrum (:func:`mrsr.inplane_resolution.acquired_resolution`); where it is coarser
    than the pixels (scanner zero-fill interpolation) the training slices are brought to it first
    and the fine grid follows it by default.
    The output's fine voxels along the slice axis are ``fine_spacing`` mm (default: the mean
    in-plane spacing, or acquired resolution), or ``factor`` per slice spacing
    (:func:`resolve_factor`), any real ratio, rounded so that a whole number of them spans the
    slices. Steps:

    1. interpolate the slices onto the fine grid (cubic B-spline, :class:`SliceProfile`);
    2. normalise each channel as :func:`mrsr.inference.super_resolve` will (percentile window
       of the interpolated volume), resample the in-plane slices to the fine voxel size when it
       differs from theirs (band-limited), and train
       :func:`~mrsr.training.throughplane.train_network` on them for ``steps`` steps from
       ``seed`` (the same output for the same input and settings under any machine load), or
       fewer when the optional cap of ``max_time`` seconds runs out first;
    3. :func:`apply_network` across both in-plane axes and average;
    4. with ``consistency``, :func:`slice_consistency`: the acquisition of the output then
       reproduces the input slices (switch it off when the real profile is far from the model);
    5. the range rule of every command (:func:`mrsr.intensity.clamps`): channels of a magnitude
       input (``nonnegative`` ``None``) are clamped at 0, alternating with the consistency
       (:func:`mrsr.intensity.project_in_range`) so that the result is both as far as they
       agree; the relative RMS difference between the input slices and the output's acquisition
       is noted as ``consistency_residual`` (:func:`mrsr.provenance.add_facts`), beside
       ``through_plane_steps_trained``, ``through_plane_time_capped`` (whether the cap cut the
       training short), ``through_plane_seed`` and ``through_plane_profile``, the slice profile
       trained for.

    ``network_options`` go to :class:`~mrsr.networks.throughplane.ThroughPlaneNet`.

    Returns float32 ``(C, X, Y, N)`` (for slice axis 2) with ``N = round(Z * ratio)`` and
    affine ``resampled_affine(A, Z / N on the slice axis, "area")``: the fine voxels
    subdivide the slices' spacing and the output covers exactly the input's slabs.
    """
    volume = as_volume(volume)
    refuse_label_map(volume, "super-resolving")
    device = resolve_device(str(device))
    affine = np.asarray(volume.affine, dtype=np.float64)
    axis = slice_axis(affine, volume.meta) if axis is None else axis % 3
    resolution = acquired_resolution(volume, axis, inplane_resolution)
    if resolution.interpolated and fine_spacing is None:
        fine_spacing = float(np.mean(resolution.acquired_mm))
    ratio = resolve_factor(affine, axis, factor, fine_spacing)
    count = volume.shape[axis + 1]
    n_fine = max(count, round(count * ratio))
    per_slice = n_fine / count  # fine voxels per slice spacing, after rounding
    profile, thickness, profile_facts = slice_profile_for(volume, axis, thickness, profile)
    gap = 1.0 if thickness is None else thickness / spacing(affine)[axis]
    model = SliceProfile(per_slice, gap * per_slice, profile)
    fine = MetaTensor(
        along(volume.as_tensor(), model.interpolation(n_fine, count), axis + 1),
        meta=dict(volume.meta),
    )
    fine.affine = torch.as_tensor(
        resampled_affine(affine, axis_factors(axis, 1 / per_slice), "area")
    )
    fine_mm = spacing(affine)[axis] / per_slice
    in_plane = [a for a in range(3) if a != axis]
    step = fine_mm / float(np.mean(spacing(affine)[in_plane]))
    network, losses = train_network(
        training_slices(volume.as_tensor(), fine.as_tensor(), axis, step, resolution.ratios),
        model,
        steps,
        max_time=max_time,
        seed=seed,
        device=device,
        progress=progress,
        **network_options,
    )
    sr = apply_network(
        fine, network, in_plane, batch_size=batch_size, device=device, progress=progress
    )
    sr = _consistent(sr, volume.as_tensor().float(), model, axis, consistency, nonnegative)
    add_facts(
        sr,
        {
            "through_plane_steps_trained": len(losses),
            "through_plane_time_capped": len(losses) < steps,
            "through_plane_seed": seed,
            "through_plane_profile": _profile_facts(model, fine_mm),
        },
    )
    add_facts(sr, profile_facts | resolution.facts())
    return sr


def _profile_facts(model: SliceProfile, fine_mm: float) -> dict[str, Any]:
    """The slice profile trained for, in mm, for the record."""
    return {
        "kind": model.kind,
        "thickness_mm": round(model.thickness * fine_mm, 6),
        "spacing_mm": round(model.spacing * fine_mm, 6),
    }


def _consistent(
    sr: MetaTensor,
    thick: torch.Tensor,
    model: SliceProfile,
    axis: int,
    consistency: bool,
    nonnegative: bool | None,
) -> MetaTensor:
    """Steps 4 and 5 of :func:`super_resolve_through_plane`: each channel of ``sr`` made
    consistent with the measured ``thick`` slices of ``model`` and clamped by the range rule,
    with the facts noted."""
    n_fine, count = sr.shape[axis + 1], thick.shape[axis + 1]
    out, error, norm, clamped = [], 0.0, 0.0, []
    for fine_channel, measured in zip(sr.as_tensor(), thick):
        clamped.append(clamps(measured, nonnegative))
        floor = 0.0 if clamped[-1] else None
        if consistency:
            fine_channel = project_in_range(
                fine_channel,
                partial(slice_consistency, thick=measured, profile=model, dim=axis),
                floor,
            )
            e, n = relative_residual(
                measured, along(fine_channel, model.acquisition(n_fine, count), axis)
            )
            error, norm = error + e, norm + n
        elif floor is not None:
            fine_channel = fine_channel.clamp(min=floor)
        out.append(fine_channel)
    sr = MetaTensor(torch.stack(out), meta=dict(sr.meta))
    facts = range_facts(clamped)
    if consistency:
        facts["consistency_residual"] = round(math.sqrt(error / max(norm, 1e-30)), 6)
    add_facts(sr, facts)
    return sr
