"""Slice profiles: how a 2D multi-slice acquisition measures the anatomy along its slice axis.

Thick slices ``spacing`` fine voxels apart, each integrating the fine voxels under its
profile (:data:`PROFILES`, by name: a ``"box"`` of width ``thickness``, a gap when thinner
than the spacing, or a ``"gaussian"`` of that FWHM). Any real spacing ratio works (4.5,
5.6...): the profile is expressed on the fine grid exactly, fractional overlaps included.
:class:`SliceProfile` holds the acquisition and interpolation operators,
:func:`simulate_thick_slices` acquires a volume with them and :func:`slice_consistency` makes
an estimate agree with measured slices. Adding a profile is one entry of :data:`PROFILES`.

A measured profile (:func:`read_profile`) is a :class:`Profile` of its own: weights on a fine grid
in mm, read from a JSON file ``{"step_mm": 0.1, "weights": [...]}``; weight ``i`` is the
profile's mean over ``[i, i + 1] * step_mm`` of a grid centred on the slice, so the profile is
``len(weights) * step_mm`` wide in all. A file of equal weights is a box of that width.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from scipy.special import ndtr

from mrsr.errors import MRSRError
from mrsr.geometry import resampled_affine, slice_axis
from mrsr.resample import spline_matrix

__all__ = [
    "DEFAULT",
    "PROFILES",
    "Profile",
    "SliceProfile",
    "along",
    "axis_factors",
    "describe",
    "fwhm_mm",
    "read_profile",
    "simulate_thick_slices",
    "slice_consistency",
]

# (fine voxel lower edges, upper edges, slice centres column, thickness) -> unnormalised weights
Weights = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class Profile:
    """One slice profile: its ``name`` (``--profile``), the ``weights`` each slice gives each
    fine voxel, and a one-line ``description`` for help texts. ``width_mm``: a measured
    profile's own full width (:func:`read_profile`), which is then the slice thickness;
    ``None`` for the named profiles, which take the thickness as given."""

    name: str
    weights: Weights
    description: str
    width_mm: float | None = None

    def __str__(self) -> str:
        return self.name


def _box(lo: np.ndarray, hi: np.ndarray, c: np.ndarray, thickness: float) -> np.ndarray:
    half = thickness / 2
    return np.clip(np.minimum(hi, c + half) - np.maximum(lo, c - half), 0.0, None)


def _gaussian(lo: np.ndarray, hi: np.ndarray, c: np.ndarray, thickness: float) -> np.ndarray:
    sigma = thickness / (2 * np.sqrt(2 * np.log(2)))
    return ndtr((hi - c) / sigma) - ndtr((lo - c) / sigma)


# The slice profiles by name (--profile, slice_profile).
def _sampled(
    cumulative: np.ndarray, lo: np.ndarray, hi: np.ndarray, c: np.ndarray, thickness: float
) -> np.ndarray:
    """The weights of a profile that is constant on each of ``len(cumulative) - 1`` equal bins
    across ``thickness`` (``cumulative``: its integral at the bin edges, from 0 to 1)."""
    edges = np.linspace(-0.5, 0.5, len(cumulative))
    return np.interp((hi - c) / thickness, edges, cumulative) - np.interp(
        (lo - c) / thickness, edges, cumulative
    )


MAX_WEIGHTS = 10_000  # of a measured profile
MAX_WIDTH_MM = 100.0  # a measured profile's full width, at most


def read_profile(path: str | os.PathLike) -> Profile:
    """The measured slice profile in the JSON file ``path``: ``{"step_mm": S, "weights": [w0,
    w1, ...]}``, ``S`` > 0 mm, 1 to 10,000 finite weights >= 0, not all 0, at most 100 mm in
    all (module docstring). Any other content is refused with one line naming the file."""
    from mrsr.errors import one_line
    from mrsr.files import read_regular

    name = one_line(path)

    def bad(problem: str) -> MRSRError:
        return MRSRError(
            f'{name}: {problem}; a slice profile file is JSON {{"step_mm": 0.1, "weights": '
            "[...]}: the profile's mean over each step of a grid centred on the slice"
        )

    try:
        content = json.loads(read_regular(path, 1 << 20))
    except (ValueError, UnicodeDecodeError):
        raise bad("not JSON") from None
    if not isinstance(content, dict) or set(content) != {"step_mm", "weights"}:
        raise bad("not an object of step_mm and weights alone")
    step, weights = content["step_mm"], content["weights"]
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
        raise bad(f"step_mm must be a positive number of mm, got {step!r:.40}")
    if not isinstance(weights, list) or not weights:
        raise bad("weights must be a non-empty list of numbers")
    if len(weights) > MAX_WEIGHTS:
        raise bad(f"{len(weights)} weights, more than {MAX_WEIGHTS}")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        raise bad("weights must all be numbers")
    w = np.asarray(weights, dtype=np.float64)
    if not (np.isfinite(w).all() and math.isfinite(step)):
        raise bad("weights and step_mm must be finite")
    if w.min() < 0:
        raise bad(f"weight {int(np.argmin(w))} is negative ({w.min():g})")
    if w.sum() <= 0:
        raise bad("the weights sum to 0")
    width = len(w) * float(step)
    if width > MAX_WIDTH_MM:
        raise bad(f"the profile is {width:g} mm wide, more than {MAX_WIDTH_MM:g}")
    cumulative = np.concatenate([[0.0], np.cumsum(w) / w.sum()])
    return Profile(
        "measured",
        partial(_sampled, cumulative),
        f"measured in {Path(name).name}",
        width,
    )


def fwhm_mm(profile: Profile, thickness_mm: float) -> float:
    """Full width at half maximum in mm of ``profile`` ``thickness_mm`` thick (a measured one:
    its own width), from its weights on a grid of 1/1000 of that width."""
    width = profile.width_mm or thickness_mm
    x = np.linspace(-1.5, 1.5, 3001) * width
    w = profile.weights(x - width / 2000, x + width / 2000, np.zeros(1), width)
    above = x[w >= w.max() / 2 - 1e-12]
    return float(above[-1] - above[0])


# The slice profiles by name (--profile, slice_profile); a measured one is read_profile's.
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("box", _box, "uniform across the slice thickness"),
        Profile("gaussian", _gaussian, "Gaussian whose FWHM is the slice thickness"),
    )
}
DEFAULT = "box"  # the profile when none is named


def describe() -> str:
    """The profiles for a help text: ``name (description), ...``."""
    return ", ".join(f"{p.name} ({p.description})" for p in PROFILES.values())


def along(x: torch.Tensor, matrix: np.ndarray | torch.Tensor, dim: int) -> torch.Tensor:
    """``matrix`` ``(M, N)`` applied to axis ``dim`` of ``x`` (``N`` long, becomes ``M``)."""
    m = torch.as_tensor(matrix, dtype=torch.float32, device=x.device)
    return (x.float().movedim(dim, -1) @ m.T).movedim(-1, dim)


def axis_factors(axis: int, factor: float) -> list[float]:
    """Voxel-size factors of a 3D grid that changes along ``axis`` only."""
    factors = [1.0, 1.0, 1.0]
    factors[axis] = factor
    return factors


@dataclass(frozen=True)
class SliceProfile:
    """A 2D multi-slice acquisition along one axis, as linear operators on a fine grid.

    Lengths are in fine voxels (fine voxel ``n`` spans ``[n - 0.5, n + 0.5]``). Thick slice
    ``k`` is centred at ``first + k * spacing`` and measures the fine voxels under its
    profile ``kind`` (a name of :data:`PROFILES`, or a :class:`Profile` such as a measured one
    from :func:`read_profile`); each slice's weights sum to 1. ``first``
    defaults to ``spacing / 2 - 0.5``: slabs ``spacing`` wide that tile the fine grid from its
    start (the "area" grid of :mod:`mrsr.geometry`).

    >>> SliceProfile(2.5, 2.5).acquisition(5, 2).round(2).tolist()
    [[0.4, 0.4, 0.2, 0.0, 0.0], [0.0, 0.0, 0.2, 0.4, 0.4]]
    """

    spacing: float
    thickness: float
    kind: str | Profile = DEFAULT

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Profile) and self.kind not in PROFILES:
            raise MRSRError(f"slice profile must be one of {', '.join(PROFILES)}, got {self.kind}")
        if not (self.spacing > 0 and self.thickness > 0):
            raise MRSRError("slice spacing and thickness must be positive")

    def centres(self, count: int, first: float | None = None) -> np.ndarray:
        """Where the ``count`` slices are centred, in fine voxels."""
        start = self.spacing / 2 - 0.5 if first is None else first
        return start + self.spacing * np.arange(count)

    def acquisition(self, n_fine: int, count: int, first: float | None = None) -> np.ndarray:
        """``(count, n_fine)``: thick slice values from fine samples along the axis."""
        c = self.centres(count, first)[:, None]
        lo, hi = np.arange(n_fine) - 0.5, np.arange(n_fine) + 0.5
        profile = self.kind if isinstance(self.kind, Profile) else PROFILES[self.kind]
        w = profile.weights(lo, hi, c, self.thickness)
        total = w.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise MRSRError("a slice's profile lies outside the volume")
        return w / total

    def interpolation(self, n_fine: int, count: int, first: float | None = None) -> np.ndarray:
        """``(n_fine, count)``: cubic B-spline interpolation from the slice centres onto the
        fine grid (mirrored at the ends)."""
        start = self.centres(1, first)[0]
        return spline_matrix(count, (np.arange(n_fine) - start) / self.spacing)


def slice_consistency(
    fine: torch.Tensor, thick: torch.Tensor, profile: SliceProfile, dim: int
) -> torch.Tensor:
    """Correct ``fine`` so that the acquisition of it reproduces the measured ``thick``.

    With ``A`` the acquisition and ``B`` the interpolation of ``profile``, ``fine + B (A B)^-1
    (thick - A fine)`` along ``dim``: the smallest correction in the span of the cubic
    interpolants that makes ``A fine == thick`` exactly. Shapes: ``fine (..., N, ...)``,
    ``thick (..., K, ...)`` -> like ``fine``.
    """
    n, k = fine.shape[dim], thick.shape[dim]
    a, b = profile.acquisition(n, k), profile.interpolation(n, k)
    correction = b @ np.linalg.solve(a @ b, np.eye(k))
    return fine + along(thick.float() - along(fine, a, dim), correction, dim)


def simulate_thick_slices(
    volume: MetaTensor,
    factor: float,
    axis: int | None = None,
    thickness: float | None = None,
    profile: str | Profile = DEFAULT,
) -> tuple[MetaTensor, MetaTensor]:
    """Simulate a 2D multi-slice acquisition of ``volume`` ``(C, X, Y, Z)``: ``(thick, ref)``.

    Slices ``factor`` voxels apart (any real >= 1), each ``thickness`` voxels thick (default
    ``factor``: no gap) with the ``profile`` of :class:`SliceProfile`, along ``axis`` (default:
    the slice axis). ``ref`` is ``volume`` centre-cropped to the largest whole number of
    voxels that ``K`` slice spacings span; thick slice ``k`` sits at the centre of its spacing
    (affine ``resampled_affine(ref.affine, factor on axis, "area")``), so
    :func:`mrsr.throughplane.super_resolve_through_plane` of ``thick`` lands on ``ref``'s grid.
    Shapes: ``(C, X, Y, Z) -> (C, X, Y, K)`` for axis 2.
    """
    affine = np.asarray(volume.affine, dtype=np.float64)
    axis = slice_axis(affine, volume.meta) if axis is None else axis % 3
    model = SliceProfile(float(factor), float(thickness or factor), profile)
    n = volume.shape[axis + 1]
    counts = [
        k for k in range(int(n // factor), 1, -1) if abs(k * factor - round(k * factor)) < 1e-6
    ]
    if not counts:
        raise MRSRError(f"no whole number of voxels holds 2 or more slices {factor:g} voxels apart")
    count, span = counts[0], round(counts[0] * factor)
    start = (n - span) // 2
    ref = MetaTensor(volume.as_tensor().narrow(axis + 1, start, span), meta=dict(volume.meta))
    shift = np.eye(4)
    shift[axis, 3] = start
    ref.affine = torch.as_tensor(affine @ shift)
    thick = MetaTensor(
        along(ref.as_tensor(), model.acquisition(span, count), axis + 1), meta=dict(ref.meta)
    )
    thick.affine = torch.as_tensor(
        resampled_affine(np.asarray(ref.affine), axis_factors(axis, factor), "area")
    )
    return thick, ref
