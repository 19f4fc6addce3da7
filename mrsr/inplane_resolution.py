"""The in-plane resolution a scan was acquired at, which may be coarser than its pixels.

Scanners often reconstruct onto a finer matrix than they acquire ("zero-fill interpolation":
256 x 256 pixels from a 128 x 128 acquisition, k-space padded with zeros), so the stored pixel is
smaller than what the scan resolves. Such a scan's in-plane spectrum stops short: its power
beyond the acquired k-space extent is zero, up to rounding and the magnitude operation, where a
scan acquired at its pixel size has anatomy and noise up to the Nyquist frequency.
:func:`acquired_resolution` finds that edge along each in-plane axis and trusts it only when the
drop is sharp (:data:`SHARP_DROP`), or takes the resolution as given
(``--inplane-acquired-resolution``). Through-plane training (:mod:`mrsr.throughplane`) then
brings the in-plane slices to that resolution first, so that the network does not learn detail
that was never measured, and its fine grid follows it by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrsr.errors import MRSRError
from mrsr.geometry import slice_axis, spacing

__all__ = ["SHARP_DROP", "InPlaneResolution", "acquired_resolution", "acquired_samples"]

# Power just inside the band / power past it (just past, and on average), for a trusted edge:
# at most 2 for the bundled scans, acquired at their pixel size (with noise added or not), about
# 6.5 for the magnitude of a zero-filled complex image whose phase turns 3 radians across the
# field, orders of magnitude more for a real-valued one.
SHARP_DROP = 4.0
MIN_RATIO = 1.1  # stored samples / acquired samples, at least, to count as interpolated
MIN_SAMPLES = 64  # pixels along an axis, at least, to look for an edge in its spectrum


@dataclass(frozen=True)
class InPlaneResolution:
    """The in-plane ``axes`` of a scan, their pixel size (``stored_mm``) and the resolution they
    were acquired at (``acquired_mm``), given by the user or ``estimated`` from the spectrum."""

    axes: tuple[int, int]
    stored_mm: tuple[float, float]
    acquired_mm: tuple[float, float]
    estimated: bool

    @property
    def ratios(self) -> tuple[float, float]:
        """Acquired / stored size along each in-plane axis (1: acquired at the pixel size)."""
        return tuple(max(1.0, a / s) for a, s in zip(self.acquired_mm, self.stored_mm))

    @property
    def interpolated(self) -> bool:
        """Whether the pixels are finer than the acquisition along an in-plane axis."""
        return max(self.ratios) >= MIN_RATIO

    def facts(self) -> dict[str, Any]:
        """For the record (:func:`mrsr.provenance.add_facts`)."""
        return {
            "inplane_acquired_resolution_mm": [round(a, 4) for a in self.acquired_mm],
            "inplane_acquired_resolution_source": "spectrum" if self.estimated else "given",
        }


def acquired_samples(lines: np.ndarray) -> int | None:
    """How many k-space samples ``(N, n)`` real lines were acquired with, when they are
    zero-filled from fewer than ``n / 1.1`` (and at least ``n / 4``), else ``None``: the edge
    of the power spectrum past which the power, both just past it and on average, is below
    ``1 / SHARP_DROP`` of the power just inside it. Lines shorter than :data:`MIN_SAMPLES`
    are not judged."""
    n = lines.shape[-1]
    if n < MIN_SAMPLES:
        return None
    power = (np.abs(np.fft.rfft(lines, axis=-1)) ** 2).mean(axis=0)
    width = max(2, n // 64)
    tail = np.cumsum(power[::-1])[::-1] / np.arange(len(power), 0, -1)  # mean of power[k:]
    edges = np.arange(n // 8 + 1, len(power))
    inside = np.array([power[k - width : k].mean() for k in edges])
    beyond = np.maximum(tail[edges], [power[k : k + width].mean() for k in edges])
    drop = inside / np.maximum(beyond, np.finfo(np.float64).tiny)
    k = int(edges[np.argmax(drop)])
    samples = 2 * (k - 1)
    if drop.max() < SHARP_DROP or samples * MIN_RATIO > n:
        return None
    return samples


def acquired_resolution(
    volume: Any, axis: int | None = None, given: float | Sequence[float] | None = None
) -> InPlaneResolution:
    """The in-plane resolution of the thick-slice ``volume`` (MetaTensor ``(C, X, Y, Z)``, slice
    ``axis`` default :func:`mrsr.geometry.slice_axis`): ``given`` in mm (one value for both
    in-plane axes, or one each, in voxel-axis order), else estimated from each in-plane axis's
    spectrum (:func:`acquired_samples`; the pixel size where no sharp edge is found). A given
    resolution finer than the pixels is refused."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    axis = slice_axis(affine, volume.meta) if axis is None else axis % 3
    axes = tuple(a for a in range(3) if a != axis)
    stored = tuple(float(spacing(affine)[a]) for a in axes)
    if given is not None:
        values = [float(given)] * 2 if np.isscalar(given) else [float(v) for v in given]
        if len(values) == 1:
            values *= 2
        if len(values) != 2:
            raise MRSRError(
                f"the in-plane acquired resolution takes one or two values (mm), got {len(values)}"
            )
        if any(v < s * 0.999 for v, s in zip(values, stored)):
            sizes = " x ".join(f"{s:.3g}" for s in stored)
            raise MRSRError(
                f"in-plane acquired resolution {' x '.join(f'{v:g}' for v in values)} mm is finer "
                f"than the pixels ({sizes} mm); give the resolution the scan was acquired at"
            )
        return InPlaneResolution(axes, stored, tuple(values), False)
    data = volume.as_tensor().detach().cpu().double().numpy()
    acquired = []
    for a, size in zip(axes, stored):
        lines = np.moveaxis(data, a + 1, -1)
        n = lines.shape[-1]
        samples = acquired_samples(lines.reshape(-1, n))
        acquired.append(size * n / samples if samples else size)
    return InPlaneResolution(axes, stored, tuple(acquired), True)
