"""Slice-wise super-resolution of volumes with a 2D network, and the affine of the result.

The volume is cut into 2D slices along its slice axis (docs/geometry.md), normalised the way
the network was trained, run through the network in batches (memory bounded by the batch, not
the volume), reassembled, de-normalised, and given the affine of the fine grid: voxel size
divided by the scale on the two in-plane axes, voxel 0 placed per the model's sampling grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial

import numpy as np
import torch
from monai.data import MetaTensor

from mrsr import kspace
from mrsr.degradations import consistent_grids
from mrsr.errors import MRSRError
from mrsr.geometry import Grid, resampled_affine, slice_axis
from mrsr.intensity import (
    DEFAULT_NORMALISATION,
    clamp_nonnegative,
    clamps,
    intensity_window,
    project_in_range,
    range_facts,
    relative_residual,
)
from mrsr.memory import check_fits, device_bytes, human
from mrsr.networks.footprint import footprint
from mrsr.progress import bar as progress_bar
from mrsr.progress import note
from mrsr.provenance import add_facts
from mrsr.settings import InferenceSettings

__all__ = [
    "PRECISIONS",
    "InferenceSettings",
    "SliceInferer",
    "peak_bytes",
    "super_resolve",
    "sr_affine",
]

PRECISIONS = ("fp32", "bf16")  # the precisions a network runs in ("auto" chooses one)


_CONSISTENCY_ITERATIONS = 10  # alternations of data consistency and the clamp at 0
_BATCH_VOXELS = 1 << 20  # output voxels per batch at most: bounds the transients of big slices


def peak_bytes(voxels: int, channels: int, scale: int) -> int:
    """Estimated memory :func:`super_resolve` allocates for ``voxels`` input voxels (all
    ``channels``) beyond the input: the float32 output, the percentile's copy of one channel,
    and the batch transients (at most ``_BATCH_VOXELS`` output voxels, a few copies each)."""
    return 4 * voxels * scale**2 + 4 * voxels // max(channels, 1) + 64 * _BATCH_VOXELS


def sr_affine(affine: np.ndarray, axis: int, scale: int, grid: Grid | str) -> np.ndarray:
    """Affine of the volume super-resolved ``scale`` times on every spatial axis but ``axis``."""
    factors = np.full(np.asarray(affine).shape[0] - 1, 1.0 / scale)
    factors[axis] = 1.0
    return resampled_affine(affine, factors, grid)


def _augmentations(square: bool) -> list[tuple[bool, tuple[int, ...]]]:
    """(transpose, flipped axes) of the self-ensemble; transposes only for square pixels."""
    flips = [(), (-1,), (-2,), (-2, -1)]
    return [(t, f) for t in ((False, True) if square else (False,)) for f in flips]


def _run(network: torch.nn.Module, batch: torch.Tensor, tta: bool, square: bool, shift: int):
    """Network output, or its self-ensemble average when ``tta``.

    A flip mirrors the coarse grid about its own centre; on the ``"kspace"`` grid (coarse voxel
    ``i`` at fine voxel ``i*s``) the fine grid's mirror image is then ``shift = s - 1`` voxels
    off, which a circular roll (the truncation model is periodic) puts back.
    """
    if not tta:
        return network(batch)
    augmentations = _augmentations(square)
    total = torch.zeros(())
    for transpose, flips in augmentations:
        x = batch.flip(flips) if flips else batch
        y = network(x.transpose(-2, -1) if transpose else x)
        y = y.transpose(-2, -1) if transpose else y
        if flips:
            y = y.flip(flips).roll([-shift] * len(flips), flips)
        total = total + y
    return total / len(augmentations)


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError)
        or "out of memory" in text
        or ("can't allocate memory" in text)
    )


def _neighbourhoods(slices: torch.Tensor, start: int, stop: int, k: int) -> torch.Tensor:
    """Slices ``start..stop-1`` each with its ``k`` neighbours as channels, edges replicated."""
    centre = torch.arange(start, stop)
    offsets = torch.arange(k) - k // 2
    index = (centre[:, None] + offsets[None, :]).clamp(0, slices.shape[0] - 1)
    return slices[index]


def _batch_that_fits(
    network: torch.nn.Module,
    slices: tuple[int, int, int],
    scale: int,
    batch_size: int,
    forward: Callable,
    device: str,
    reserved: int,
    name: str,
) -> int:
    """``batch_size``, or less when that many ``(k, h, w)`` slices would not fit in the memory
    ``device`` has left beside the ``reserved`` bytes of the output (on the CPU): the peak is
    traced without running the network (:func:`mrsr.networks.footprint.footprint`, ``forward``
    run on the ``meta`` device). Lowering is said; refused when one slice does not fit. A
    network that cannot run on ``meta`` tensors keeps ``batch_size`` (a batch that runs out of
    memory is then retried in halves)."""
    try:
        one = footprint(network, (1, *slices), forward=forward)
    except (NotImplementedError, RuntimeError):
        return batch_size
    beside = reserved if torch.device(device).type != "cuda" else 0
    _, h, w = slices
    check_fits(
        one.peak + beside,
        f"{name}: {type(network).__name__} x{scale} on one {h}x{w} slice "
        f"({human(one.per_pixel)} per output pixel)",
        device,
        "use a smaller scale or network, or a machine with more memory",
    )
    left = device_bytes(device) - beside
    fits = int(left // max(one.peak, 1))
    if fits < batch_size:
        note(
            f"{name}: {fits} slices per batch instead of {batch_size}, to fit in memory "
            f"({human(one.peak)} each, {human(left)} free on {device})"
        )
    return min(batch_size, fits)


_DEFAULTS = InferenceSettings()


class SliceInferer:
    """Super-resolve channel-first volumes ``(C, X, Y, Z)`` slice by slice with a 2D network.

    Each channel (each volume of a 4D series) is processed on its own. ``network`` maps
    ``(B, k, H, W)`` to ``(B, 1, scale*H, scale*W)``, where ``k`` is its ``in_channels``
    attribute (adjacent slices as channels, 1 by default), trained on ``grid``'s sampling and
    ``normalisation``. Calling it returns float32 on the fine grid with the input's meta and
    the new affine. The batch size is lowered, saying so, to what fits in memory by the
    network's peak traced beforehand (:func:`_batch_that_fits`), and a volume of which one
    slice does not fit is refused before anything runs; a batch that still runs out of memory
    is retried in halves. ``precision="bf16"`` runs the network under bfloat16 autocast.
    ``data_consistency`` (``"kspace"`` grid only) puts the input's k-space back into the block
    of the output's spectrum that the acquisition measured (:func:`mrsr.kspace.data_consistency`);
    1 makes the output reproduce the input exactly when degraded again. ``nonnegative`` clamps
    the output at 0 (``None``: for each channel whose input has no negative voxel, as magnitude
    MR data; the ringing of a sharp edge against a zero background would otherwise go below 0).
    With both, the output alternates between the two (:func:`mrsr.intensity.project_in_range`),
    ending clamped; how consistent it is, the relative RMS difference between the input and the
    output degraded again, is recorded as ``meta["mrsr_facts"]["consistency_residual"]``, with
    ``"clamped_at_zero"``.

    Shapes: ``(C, X, Y, Z) -> (C, s*X, s*Y, Z)`` for slice axis 2.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        scale: int,
        grid: Grid | str = "kspace",
        normalisation: Mapping = DEFAULT_NORMALISATION,
        settings: InferenceSettings = _DEFAULTS,
    ) -> None:
        allowed = consistent_grids()
        if settings.data_consistency and grid not in allowed:
            grids = " or ".join(map(repr, sorted(allowed)))
            raise MRSRError(f"data consistency needs a model of k-space truncation (grid {grids})")
        self.network, self.scale, self.grid = network, scale, grid
        self.normalisation, self.settings = normalisation, settings.resolved()

    def __call__(self, volume: MetaTensor) -> MetaTensor:
        if volume.ndim != 4:
            raise MRSRError(
                f"expected a channel-first volume (C, X, Y, Z), got {tuple(volume.shape)}"
            )
        s, scale = self.settings, self.scale
        affine = np.asarray(volume.affine, dtype=np.float64)
        axis = slice_axis(affine, volume.meta) if s.axis is None else int(s.axis) % 3
        in_plane = [a for a in range(3) if a != axis]
        sp = np.linalg.norm(affine[:3, :3], axis=0)
        square = bool(np.isclose(sp[in_plane[0]], sp[in_plane[1]], rtol=1e-3))
        k = int(getattr(self.network, "in_channels", 1))
        # channels-last suits oneDNN and cuDNN convolutions: same numbers, less time. Converted
        # outside inference mode: the parameters must stay usable for training afterwards.
        network = self.network.to(s.device, memory_format=torch.channels_last).eval()

        data = volume.as_tensor()
        fine = [scale * n if a != axis else n for a, n in enumerate(data.shape[1:])]
        name = volume.meta.get("filename_or_obj") or "the volume"
        reserved = peak_bytes(data.numel(), data.shape[0], scale)
        check_fits(reserved, f"{name}: super-resolving to {'x'.join(map(str, fine))}")
        shift = scale - 1 if self.grid == "kspace" else 0
        h, w = (data.shape[1 + a] for a in in_plane)
        forward = partial(_run, tta=s.tta, square=square, shift=shift)
        per_batch = _batch_that_fits(
            network,
            (k, h, w),
            scale,
            max(1, min(s.batch_size, _BATCH_VOXELS // (scale * scale * h * w))),
            forward,
            s.device,
            reserved,
            name,
        )
        result = torch.empty(data.shape[0], *fine)  # a normal tensor: callers may edit it in place
        total = data.shape[0] * data.shape[1 + axis]
        bar = progress_bar(total, "super-resolving", "slice", enabled=s.progress)
        run = _Slices(network, forward, k, per_batch, s, bar)
        with torch.inference_mode(), bar:
            for channel, target in zip(data.float(), result):
                run.channel(channel, target, axis, self.normalisation)
        if run.bad:
            raise MRSRError(
                f"{name}: the network gave {run.bad} NaN or infinite voxels (broken weights, or "
                "input values beyond float32 range); nothing was written"
            )
        result = MetaTensor(result, meta=dict(volume.meta))
        result.affine = torch.as_tensor(sr_affine(affine, axis, scale, self.grid))
        facts = range_facts(run.clamped)
        if s.data_consistency:
            error, norm = run.residual
            facts["consistency_residual"] = round(math.sqrt(error / max(norm, 1e-30)), 6)
        add_facts(result, facts)
        return result


class _Slices:
    """The batch loop over one volume's channels; counts what the volume's facts need."""

    def __init__(self, network, forward, k, per_batch, settings, bar) -> None:
        self.network, self.forward, self.k, self.per_batch = network, forward, k, per_batch
        self.settings, self.bar = settings, bar
        self.autocast = torch.autocast(
            torch.device(settings.device).type, torch.bfloat16, settings.precision == "bf16"
        )
        self.bad, self.residual, self.clamped = 0, [0.0, 0.0], []

    def channel(
        self, channel: torch.Tensor, target: torch.Tensor, axis: int, normalisation: Mapping
    ) -> None:
        """Super-resolve ``channel`` into ``target`` (in place), de-normalised and clamped."""
        s, k = self.settings, self.k
        lo, hi = intensity_window(channel, normalisation)
        self.clamped.append(clamps(channel, s.nonnegative))
        floor = -lo / (hi - lo) if self.clamped[-1] else None
        slices = channel.movedim(axis, 0)  # (S, H, W), a view: normalised batch by batch
        n, h, w = slices.shape
        out = target.movedim(axis, 0)  # (S, sH, sW), a view: written in place
        start, size = 0, self.per_batch
        while start < n:
            stop = min(start + size, n)
            batch = (_neighbourhoods(slices, start, stop, k).to(s.device) - lo) / (hi - lo)
            batch = batch.contiguous(memory_format=torch.channels_last)
            try:
                with self.autocast:
                    y = self.forward(self.network, batch)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _out_of_memory(exc):
                    raise
                if size == 1:
                    raise MRSRError(
                        f"one {h}x{w} slice does not fit in memory on {s.device}; try another "
                        "device or a smaller volume"
                    ) from exc
                size = max(1, size // 2)  # the same slices again, in smaller batches
                continue
            y = y[:, :1].float()
            if s.data_consistency:
                y = self._consistent(
                    y, batch[:, k // 2 : k // 2 + 1].float(), floor, lo / (hi - lo)
                )
            self.bad += int((~torch.isfinite(y)).sum())
            out[start:stop] = y[:, 0].cpu()
            self.bar.update(stop - start)
            start = stop
        target.mul_(hi - lo).add_(lo)
        clamp_nonnegative(target, channel, s.nonnegative)

    def _consistent(
        self, y: torch.Tensor, centre: torch.Tensor, floor: float | None, offset: float
    ) -> torch.Tensor:
        """``y`` with the measured k-space block of ``centre`` put back; adds to the residual.
        ``offset`` brings normalised values to input units up to a factor: the ratio is exact."""
        weight = self.settings.data_consistency
        y = project_in_range(
            y,
            partial(kspace.data_consistency, lr=centre, dims=(-2, -1), weight=weight),
            floor,
            iterations=_CONSISTENCY_ITERATIONS if weight == 1 else 1,
        )
        again = kspace.truncate(y + offset, centre.shape[-2:], (-2, -1))
        error, norm = relative_residual(centre + offset, again)
        self.residual[0] += error
        self.residual[1] += norm
        return y


def super_resolve(
    volume: MetaTensor,
    network: torch.nn.Module,
    scale: int,
    grid: Grid | str = "kspace",
    *,
    axis: int | None = _DEFAULTS.axis,
    normalisation: Mapping = DEFAULT_NORMALISATION,
    batch_size: int = _DEFAULTS.batch_size,
    device: str | torch.device = "cpu",
    tta: bool = _DEFAULTS.tta,
    precision: str = "fp32",
    data_consistency: float = _DEFAULTS.data_consistency,
    nonnegative: bool | None = _DEFAULTS.nonnegative,
    progress: bool = _DEFAULTS.progress,
) -> MetaTensor:
    """Super-resolve a channel-first volume ``(C, X, Y, Z)`` slice by slice: a
    :class:`SliceInferer` with these :class:`InferenceSettings` (on the CPU in fp32 unless
    ``device`` and ``precision`` say otherwise; ``"auto"`` is resolved by :mod:`mrsr.machine`).

    Shapes: ``(C, X, Y, Z) -> (C, s*X, s*Y, Z)`` for slice axis 2.
    """
    settings = InferenceSettings(
        batch_size=batch_size,
        device=str(device),
        axis=axis,
        tta=tta,
        precision=precision,
        data_consistency=data_consistency,
        nonnegative=nonnegative,
        progress=progress,
    )
    return SliceInferer(network, scale, grid, normalisation, settings)(volume)
