"""Through-plane super-resolution of thick-slice volumes, trained on the scan itself.

A clinical 2D multi-slice scan (say 0.5 x 0.5 x 5 mm) is sharp in-plane and blurred along the
slice axis. Its in-plane slices show what the anatomy looks like at the fine resolution, so they
make the training data: degrade them along one in-plane axis with the slice-profile model, learn
to undo that with a small 2D network, then apply the network to the planes that contain the
slice axis, in both orientations, and average (SMORE-style self-supervision; Zhao et al., "SMORE:
a self-supervised anti-aliasing and super-resolution algorithm for MRI using deep learning",
IEEE TMI 2021). A last correction makes the result consistent with the measurement: its slab
averages reproduce the input slices (:func:`slab_consistency`).

Slice-profile model: a thick slice is a slab, so thick voxel ``k`` is the mean of the ``f`` fine
voxels ``[f*k, f*k + f)`` (area sampling, :func:`slab_average`), ``f`` = slice spacing /
in-plane spacing.

Geometry (design.md, "Geometry"): the fine voxels that replace a slab subdivide it, so the first
one sits ``(f - 1) / 2`` fine voxels before the centre of the first thick slice and the output
covers exactly the slabs of the input: shape ``f * Z`` along the slice axis and affine
``resampled_affine(A, [1, 1, 1/f], "area")`` (slice axis last here; any axis works). Simulating
thick slices from an isotropic volume (:func:`simulate_thick_slices`) and super-resolving them
gives back the reference's grid exactly.

Factors: ``f`` is an integer >= 2, the spacing ratio rounded when it is within 5 % of an
integer; other ratios raise :class:`~mrsr.errors.MRSRError` (non-integer factors are not
supported yet) unless ``factor`` is given, which subdivides each slab into ``factor`` voxels and
assumes the slab spans ``factor`` in-plane voxels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

from mrsr.errors import MRSRError
from mrsr.geometry import resampled_affine, slice_axis, spacing
from mrsr.inference import super_resolve
from mrsr.intensity import intensity_window
from mrsr.networks.blocks import conv, fusion, shallow_features, xavier_init_
from mrsr.networks.cssfn import SerialFusionBlock
from mrsr.pipeline import as_volume
from mrsr.progress import bar as progress_bar
from mrsr.training.data import FOREGROUND
from mrsr.transforms import CropToMultiple

__all__ = [
    "ThroughPlaneNet",
    "apply_network",
    "interpolate_along",
    "resolve_factor",
    "simulate_thick_slices",
    "slab_average",
    "slab_consistency",
    "super_resolve_through_plane",
    "train_network",
]

RATIO_TOLERANCE = 0.05  # relative distance of the spacing ratio to the nearest integer


def slab_average(x: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """Mean of each run of ``factor`` consecutive samples along ``dim`` (a multiple of it).

    Shapes: ``(..., f*n, ...) -> (..., n, ...)``.
    """
    dim = dim % x.ndim
    return x.unflatten(dim, (x.shape[dim] // factor, factor)).mean(dim + 1)


def interpolate_along(x: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """Cubic interpolation ``factor`` times finer along ``dim`` only, on the area grid.

    Fine sample ``n`` reads the coarse signal at ``(n + 0.5) / f - 0.5`` (slab subdivision):
    ``F.interpolate(mode="bicubic", align_corners=False)`` of size ``(rest, f*n)``, whose
    other axis is an exact identity; edges replicated. Shapes: ``(..., n, ...) ->
    (..., f*n, ...)``.
    """
    moved = x.float().movedim(dim, -1)
    planes = moved.reshape(1, 1, -1, moved.shape[-1])
    size = (planes.shape[-2], factor * planes.shape[-1])
    fine = F.interpolate(planes, size=size, mode="bicubic", align_corners=False)
    return fine.reshape(*moved.shape[:-1], -1).movedim(-1, dim)


def slab_consistency(
    fine: torch.Tensor, thick: torch.Tensor, factor: int, dim: int, iterations: int = 10
) -> torch.Tensor:
    """Correct ``fine`` so that its slab averages reproduce the measured ``thick`` slices.

    Iterated back-projection along ``dim``: ``y <- y + interpolate_along(thick -
    slab_average(y))``, ``iterations`` times. It converges to the projection of ``fine`` onto
    the volumes the acquisition model maps to ``thick`` (along smooth, cubic corrections);
    10 iterations leave a relative slab error near 1e-6. Shapes: ``fine (..., f*n, ...)``,
    ``thick (..., n, ...)`` -> like ``fine``.
    """
    for _ in range(iterations):
        fine = fine + interpolate_along(thick - slab_average(fine, factor, dim), factor, dim)
    return fine


def _factors(axis: int, factor: float) -> list[float]:
    factors = [1.0, 1.0, 1.0]
    factors[axis] = factor
    return factors


def simulate_thick_slices(
    volume: MetaTensor, factor: int, axis: int | None = None
) -> tuple[MetaTensor, MetaTensor]:
    """Simulate a thick-slice acquisition of ``volume`` ``(C, X, Y, Z)``: returns ``(thick, ref)``.

    ``ref`` is ``volume`` centre-cropped to a multiple of ``factor`` along ``axis`` (default: its
    slice axis); thick voxel ``k`` is the mean of ``ref``'s voxels ``[f*k, f*k + f)`` along
    ``axis`` and sits at their centre (affine ``resampled_affine(ref.affine, f on axis,
    "area")``), so :func:`super_resolve_through_plane` of ``thick`` lands on ``ref``'s grid.
    Shapes: ``(C, X, Y, Z) -> (C, X, Y, Z // f)`` for axis 2.
    """
    affine = np.asarray(volume.affine, dtype=np.float64)
    axis = slice_axis(affine, volume.meta) if axis is None else axis % 3
    ref = CropToMultiple(factor, axes=(axis,))(volume)
    thick = MetaTensor(slab_average(ref.as_tensor().float(), factor, axis + 1), meta=dict(ref.meta))
    thick.affine = torch.as_tensor(
        resampled_affine(np.asarray(ref.affine), _factors(axis, factor), "area")
    )
    return thick, ref


def resolve_factor(affine: np.ndarray, axis: int, factor: int | None = None) -> int:
    """The through-plane factor: ``factor`` checked, else slice spacing / in-plane spacing.

    The ratio (to the mean in-plane spacing) is rounded when within 5 % of an integer >= 2;
    otherwise :class:`~mrsr.errors.MRSRError`: "no thick axis" below 2, and non-integer ratios
    are not supported yet (resample in-plane first, or pass ``factor``).
    """
    if factor is not None:
        if int(factor) != factor or factor < 2:
            raise MRSRError(f"the through-plane factor must be an integer >= 2, got {factor}")
        return int(factor)
    sp = spacing(affine)
    ratio = sp[axis] / np.mean(np.delete(sp, axis))
    n = int(round(ratio))
    sizes = " x ".join(f"{s:.3g}" for s in sp)
    if n < 2:
        raise MRSRError(
            f"no thick axis: voxels are {sizes} mm (slice axis {axis}); through-plane "
            "super-resolution needs slices at least twice as thick as the in-plane voxels"
        )
    if abs(ratio - n) > RATIO_TOLERANCE * n:
        raise MRSRError(
            f"slice spacing / in-plane spacing is {ratio:.3f} ({sizes} mm), not within 5 % of "
            "an integer; non-integer factors are not supported yet: resample in-plane to "
            "slice spacing / N first, or give the factor N to subdivide each slab into N voxels"
        )
    return n


class ThroughPlaneNet(nn.Module):
    """Scale-1 residual network from CSSFN's parts: ``x + tail(fusion(blocks(x0)) + x0)``.

    Shallow features ``x0`` (conv3x3, conv1x1, conv3x3), ``n_blocks`` serial-fusion blocks
    (:class:`~mrsr.networks.cssfn.SerialFusionBlock` of ``n_units`` CSSFUs) in series, global
    fusion (conv1x1, conv3x3) plus ``x0``, conv3x3 to one channel added to the input. The input
    is the thick-slice plane already interpolated onto the fine grid (:func:`interpolate_along`),
    so the network only predicts the lost detail; the last conv starts at zero, so the untrained
    network is exactly the cubic interpolation. Xavier-uniform weights, zero biases.
    Receptive field 33 pixels at the defaults. Shapes: ``(B, 1, H, W) -> (B, 1, H, W)``.
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


def _batch(
    slices: torch.Tensor, factor: int, side: int, batch_size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs ``(input, target)``, each ``(B, 1, side, side)``, from in-plane slices.

    Each target is a random ``side``-square patch of a slice (mostly foreground), flipped and
    transposed at random; its input is the patch slab-averaged along its last axis and cubically
    interpolated back (:func:`interpolate_along`); half the pairs are then transposed, so the
    network sees the thick axis both ways. A patch's edges are the simulated volume's edges,
    as at the ends of the slice axis.
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
    source = interpolate_along(slab_average(target, factor, -1), factor, -1)
    swap = torch.from_numpy(rng.random(batch_size) < 0.5)
    source[swap], target[swap] = source[swap].mT, target[swap].mT
    return source, target


def train_network(
    slices: torch.Tensor,
    factor: int,
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
    """Train a :class:`ThroughPlaneNet` on in-plane ``slices`` ``(S, H, W)``, normalised to ~[0, 1].

    Pairs come from :func:`_batch` with patches of ``patch_size`` rounded down to a multiple of
    ``factor`` (smaller for small slices); L1 loss, Adam at ``lr``. Stops after ``steps`` steps
    or ``time_budget`` seconds, whichever comes first. Deterministic given ``seed`` and the
    number of steps taken (the weights and every batch come from the seed; a time budget stops
    at a machine-dependent step). Returns the network (in eval mode) and the loss of every step.
    """
    side = min(patch_size, *slices.shape[1:]) // factor * factor
    if side < 2 * factor:
        raise MRSRError(
            f"in-plane slices of {tuple(slices.shape[1:])} voxels are too small to learn a "
            f"x{factor} slice profile (need at least {2 * factor})"
        )
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
    while steps is None or len(losses) < steps:
        elapsed = time.monotonic() - start
        if elapsed >= time_budget:
            break
        source, target = (t.to(device) for t in _batch(slices, factor, side, batch_size, rng))
        loss = F.l1_loss(network(source), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        done = max(elapsed / time_budget, len(losses) / steps if steps else 0.0)
        bar.update(int(100 * min(done, 1.0)) - bar.n)
        bar.set_postfix(step=len(losses), loss=f"{losses[-1]:.4f}", refresh=False)
    bar.update(100 - bar.n)  # the budget or the steps are used up: training is complete
    bar.close()
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

    ``fine`` is the interpolated volume ``(C, X, Y, f*Z)`` (:func:`interpolate_along`); for each
    in-plane axis in ``axes`` the volume is cut into planes across that axis (x: the y-z planes;
    y: the x-z planes) and super-resolved at scale 1 by :func:`mrsr.inference.super_resolve`
    (its normalisation, batching and memory handling); the results are averaged voxel by voxel.
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
    factor: int | None = None,
    time_budget: float = 180.0,
    *,
    steps: int | None = None,
    seed: int = 0,
    axis: int | None = None,
    consistency: bool = True,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **network_options: Any,
) -> MetaTensor:
    """Super-resolve a thick-slice volume along its slice axis, trained on its own slices.

    ``volume``: anything :func:`mrsr.pipeline.as_volume` takes (path, nibabel image, MetaTensor
    ``(C, X, Y, Z)``). ``axis``: the slice axis (default :func:`mrsr.geometry.slice_axis`).
    ``factor``: see :func:`resolve_factor`. Steps:

    1. interpolate the volume ``f`` times along the slice axis on the area grid (cubic);
    2. normalise each channel as :func:`mrsr.inference.super_resolve` will (percentile window
       of the interpolated volume) and train :func:`train_network` on the thick volume's
       in-plane slices, for ``time_budget`` seconds or ``steps`` steps;
    3. :func:`apply_network` across both in-plane axes and average;
    4. with ``consistency``, :func:`slab_consistency`: the output's slab averages then reproduce
       the input (switch it off when the real slice profile is far from a box).

    ``network_options`` go to :class:`ThroughPlaneNet`.

    Returns float32 ``(C, X, Y, f*Z)`` (for slice axis 2) with affine
    ``resampled_affine(A, 1/f on the slice axis, "area")``: the fine voxels subdivide each slab
    and the output covers exactly the input's slabs.
    """
    volume = as_volume(volume)
    affine = np.asarray(volume.affine, dtype=np.float64)
    axis = slice_axis(affine, volume.meta) if axis is None else axis % 3
    factor = resolve_factor(affine, axis, factor)
    fine = MetaTensor(
        interpolate_along(volume.as_tensor(), factor, axis + 1), meta=dict(volume.meta)
    )
    fine.affine = torch.as_tensor(resampled_affine(affine, _factors(axis, 1 / factor), "area"))
    slices = []
    for thick, interpolated in zip(volume.as_tensor().float(), fine.as_tensor()):
        lo, hi = intensity_window(interpolated)
        slices.append(((thick - lo) / (hi - lo)).movedim(axis, 0))
    network, _ = train_network(
        torch.cat(slices),
        factor,
        time_budget=time_budget,
        steps=steps,
        seed=seed,
        device=device,
        progress=progress,
        **network_options,
    )
    in_plane = [a for a in range(3) if a != axis]
    sr = apply_network(
        fine, network, in_plane, batch_size=batch_size, device=device, progress=progress
    )
    if consistency:
        thick = volume.as_tensor().float()
        sr = MetaTensor(
            slab_consistency(sr.as_tensor(), thick, factor, axis + 1), meta=dict(sr.meta)
        )
    return sr
