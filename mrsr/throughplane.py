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
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

from mrsr.errors import MRSRError
from mrsr.geometry import THICK, resampled_affine, slice_axis, spacing
from mrsr.inference import super_resolve
from mrsr.intensity import (
    clamps,
    intensity_window,
    project_in_range,
    range_facts,
    relative_residual,
)
from mrsr.io import as_volume
from mrsr.labels import refuse_label_map
from mrsr.machine import resolve_device
from mrsr.networks.blocks import conv, fusion, shallow_features, xavier_init_
from mrsr.networks.cssfn import SerialFusionBlock
from mrsr.progress import bar as progress_bar
from mrsr.provenance import add_facts
from mrsr.resample import sinc_matrix
from mrsr.slice_profiles import SliceProfile, along, axis_factors, slice_consistency
from mrsr.training.data import FOREGROUND

__all__ = [
    "ThroughPlaneNet",
    "apply_network",
    "resolve_factor",
    "super_resolve_through_plane",
    "train_network",
]

_LOSS_WINDOW = 50  # steps in the running mean of the loss that progress shows


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


class ThroughPlaneNet(nn.Module):
    """Scale-1 residual network from CSSFN's parts: ``x + tail(fusion(blocks(x0)) + x0)``.

    Shallow features ``x0`` (conv3x3, conv1x1, conv3x3), ``n_blocks`` serial-fusion blocks
    (:class:`~mrsr.networks.cssfn.SerialFusionBlock` of ``n_units`` CSSFUs) in series, global
    fusion (conv1x1, conv3x3) plus ``x0``, conv3x3 to one channel added to the input. The input
    is the thick-slice plane already interpolated onto the fine grid
    (:meth:`SliceProfile.interpolation`), so the network only predicts the lost detail; the
    last conv starts at zero, so the untrained network is exactly the cubic interpolation.
    Xavier-uniform weights, zero biases. Receptive field 33 pixels at the defaults.
    Shapes: ``(B, 1, H, W) -> (B, 1, H, W)``.
    """

    def __init__(self, channels: int = 32, n_blocks: int = 2, n_units: int = 2, q: int = 2):
        super().__init__()
        self.head = shallow_features(1, channels)
        self.blocks = nn.Sequential(
            *(SerialFusionBlock(channels, channels, n_units, q, "cssfu") for _ in range(n_blocks))
        )
        self.fusion = fusion(channels, channels)
        self.tail = conv(channels, 1)
        xavier_init_(self)
        nn.init.zeros_(self.tail.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.head(x)
        return x + self.tail(self.fusion(self.blocks(x0)) + x0)


def _operators(profile: SliceProfile, side: int, phases: int = 8) -> list[torch.Tensor]:
    """``(side, side)`` degradations of a patch row, ``B A``, one per sub-voxel phase of the
    slice grid (the phases the volume's own slices take against the fine grid, up to
    ``phases`` of them): acquire thick slices, interpolate them back."""
    offsets = sorted({round(float(k * profile.spacing) % 1.0, 6) for k in range(phases)})
    out = []
    for offset in offsets:
        first = profile.spacing / 2 - 0.5 + offset
        count = int(np.floor((side - 0.5 - first - profile.spacing / 2) / profile.spacing)) + 1
        a, b = profile.acquisition(side, count, first), profile.interpolation(side, count, first)
        out.append(torch.as_tensor(b @ a, dtype=torch.float32))
    return out


def _batch(
    slices: torch.Tensor,
    operators: Sequence[torch.Tensor],
    side: int,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs ``(input, target)``, each ``(B, 1, side, side)``, from in-plane slices.

    Each target is a random ``side``-square patch of a slice (mostly foreground), flipped and
    transposed at random; its input is the patch acquired along its last axis by the slice
    profile and interpolated back (one of ``operators``, at random); half the pairs are then
    transposed, so the network sees the thick axis both ways.
    """
    n, h, w = slices.shape
    patches = []
    for _ in range(batch_size):
        for _ in range(10):  # a few tries for a patch on the object
            s, i, j = (int(rng.integers(m)) for m in (n, h - side + 1, w - side + 1))
            patch = slices[s, i : i + side, j : j + side]
            if patch.mean() > FOREGROUND:
                break
        patch = patch.flip([d for d in (0, 1) if rng.random() < 0.5])
        patches.append(patch.T if rng.random() < 0.5 else patch)
    target = torch.stack(patches)[:, None]
    which = rng.integers(len(operators), size=batch_size)
    source = torch.stack([target[b] @ operators[k].T for b, k in enumerate(which)])
    swap = torch.from_numpy(rng.random(batch_size) < 0.5)
    source[swap], target[swap] = source[swap].mT, target[swap].mT
    return source, target


def train_network(
    slices: torch.Tensor,
    profile: SliceProfile,
    *,
    time_budget: float = 180.0,
    steps: int | None = None,
    seed: int = 0,
    patch_size: int = 48,
    batch_size: int = 16,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **network_options: Any,
) -> tuple[ThroughPlaneNet, list[float]]:
    """Train a :class:`ThroughPlaneNet` on in-plane ``slices`` ``(S, H, W)``, normalised to ~[0, 1],
    sampled on the fine grid of ``profile`` (its lengths in the slices' voxels).

    Pairs come from :func:`_batch` with patches of ``patch_size`` (smaller for small slices);
    L1 loss, Adam at ``lr``. Stops after ``steps`` steps or ``time_budget`` seconds, whichever
    comes first. Deterministic given ``seed`` and the number of steps taken (the weights and
    every batch come from the seed; a time budget stops at a machine-dependent step). Returns
    the network (in eval mode) and the loss of every step.
    """
    side = min(patch_size, *slices.shape[1:])
    if side < 2 * profile.spacing:
        raise MRSRError(
            f"in-plane slices of {tuple(slices.shape[1:])} voxels are too small to learn a "
            f"slice profile {profile.spacing:.3g} voxels apart (need at least "
            f"{math.ceil(2 * profile.spacing)})"
        )
    operators = _operators(profile, side)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ThroughPlaneNet(**network_options).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    start = time.monotonic()
    bar = progress_bar(
        100,
        "training",
        "%",
        enabled=progress,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
    )
    with bar:
        while steps is None or len(losses) < steps:
            elapsed = time.monotonic() - start
            if elapsed >= time_budget:
                break
            pair = _batch(slices, operators, side, batch_size, rng)
            source, target = (t.to(device) for t in pair)
            loss = F.l1_loss(network(source), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            done = max(elapsed / time_budget, len(losses) / steps if steps else 0.0)
            recent = losses[-_LOSS_WINDOW:]
            loss_shown = f"{sum(recent) / len(recent):.4f}"
            bar.set_postfix(step=len(losses), loss=loss_shown, refresh=False)
            bar.update(int(100 * min(done, 1.0)) - bar.n)
        bar.update(100 - bar.n)  # the budget or the steps are used up: training is complete
    return network.eval(), losses


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


def _in_plane_resampled(slices: torch.Tensor, step: float) -> torch.Tensor:
    """``(S, H, W)`` slices band-limited resampled to ``step`` times their voxel size."""
    if abs(step - 1) < 0.05:
        return slices
    h, w = (max(2, round(n / step)) for n in slices.shape[1:])
    rows = sinc_matrix(slices.shape[1], (np.arange(h) + 0.5) * slices.shape[1] / h - 0.5, step)
    cols = sinc_matrix(slices.shape[2], (np.arange(w) + 0.5) * slices.shape[2] / w - 0.5, step)
    return along(along(slices, rows, 1), cols, 2)


def super_resolve_through_plane(
    volume: Any,
    factor: float | None = None,
    time_budget: float = 180.0,
    *,
    thickness: float | None = None,
    profile: str = "box",
    fine_spacing: float | None = None,
    steps: int | None = None,
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
    spacing, no gap) with the ``profile`` ``"box"`` or ``"gaussian"`` (FWHM ``thickness``).
    The output's fine voxels along the slice axis are ``fine_spacing`` mm (default: the mean
    in-plane spacing), or ``factor`` per slice spacing (:func:`resolve_factor`), any real
    ratio, rounded so that a whole number of them spans the slices. Steps:

    1. interpolate the slices onto the fine grid (cubic B-spline, :class:`SliceProfile`);
    2. normalise each channel as :func:`mrsr.inference.super_resolve` will (percentile window
       of the interpolated volume), resample the in-plane slices to the fine voxel size when it
       differs from theirs (band-limited), and train :func:`train_network` on them, for
       ``time_budget`` seconds or ``steps`` steps;
    3. :func:`apply_network` across both in-plane axes and average;
    4. with ``consistency``, :func:`slice_consistency`: the acquisition of the output then
       reproduces the input slices (switch it off when the real profile is far from the model);
    5. the range rule of every command (:func:`mrsr.intensity.clamps`): channels of a magnitude
       input (``nonnegative`` ``None``) are clamped at 0, alternating with the consistency
       (:func:`mrsr.intensity.project_in_range`) so that the result is both as far as they
       agree; the relative RMS difference between the input slices and the output's acquisition
       is noted as ``consistency_residual`` (:func:`mrsr.provenance.add_facts`).

    ``network_options`` go to :class:`ThroughPlaneNet`.

    Returns float32 ``(C, X, Y, N)`` (for slice axis 2) with ``N = round(Z * ratio)`` and
    affine ``resampled_affine(A, Z / N on the slice axis, "area")``: the fine voxels
    subdivide the slices' spacing and the output covers exactly the input's slabs.
    """
    volume = as_volume(volume)
    refuse_label_map(volume, "super-resolving")
    device = resolve_device(str(device))
    affine = np.asarray(volume.affine, dtype=np.float64)
    axis = slice_axis(affine, volume.meta) if axis is None else axis % 3
    ratio = resolve_factor(affine, axis, factor, fine_spacing)
    count = volume.shape[axis + 1]
    n_fine = max(count, round(count * ratio))
    per_slice = n_fine / count  # fine voxels per slice spacing, after rounding
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
    slices = []
    for thick, interpolated in zip(volume.as_tensor().float(), fine.as_tensor()):
        lo, hi = intensity_window(interpolated)
        slices.append(_in_plane_resampled(((thick - lo) / (hi - lo)).movedim(axis, 0), step))
    network, _ = train_network(
        torch.cat(slices),
        model,
        time_budget=time_budget,
        steps=steps,
        seed=seed,
        device=device,
        progress=progress,
        **network_options,
    )
    sr = apply_network(
        fine, network, in_plane, batch_size=batch_size, device=device, progress=progress
    )
    out, error, norm, clamped = [], 0.0, 0.0, []
    for fine_channel, thick in zip(sr.as_tensor(), volume.as_tensor().float()):
        clamped.append(clamps(thick, nonnegative))
        floor = 0.0 if clamped[-1] else None
        if consistency:
            fine_channel = project_in_range(
                fine_channel,
                partial(slice_consistency, thick=thick, profile=model, dim=axis),
                floor,
            )
            e, n = relative_residual(
                thick, along(fine_channel, model.acquisition(n_fine, count), axis)
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
