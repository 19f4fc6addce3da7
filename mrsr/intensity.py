"""Intensities: the normalisation shared by training and inference (recorded in every checkpoint),
and the one output-range rule of every command.

A volume is mapped linearly so that its ``lower`` percentile goes to 0 and its ``upper``
percentile to 1; inference applies the inverse map to the network's output, so the result keeps
the input's intensity units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

DEFAULT_NORMALISATION = {"kind": "percentile", "lower": 0.0, "upper": 99.5}

__all__ = [
    "DEFAULT_NORMALISATION",
    "clamp_nonnegative",
    "clamp_volume",
    "clamps",
    "intensity_window",
    "is_magnitude",
    "project_in_range",
    "range_facts",
    "relative_residual",
]


def intensity_window(
    x: torch.Tensor | np.ndarray, normalisation: Mapping = DEFAULT_NORMALISATION
) -> tuple[float, float]:
    """``(lo, hi)`` such that ``(x - lo) / (hi - lo)`` is the normalised volume.

    A constant volume gets ``hi = lo + 1`` so that the map stays invertible.

    >>> intensity_window(np.arange(201.0), {"kind": "percentile", "lower": 0, "upper": 50})
    (0.0, 100.0)
    """
    if normalisation.get("kind") != "percentile":
        raise ValueError(f"unknown intensity normalisation {dict(normalisation)}")
    values = np.asarray(torch.as_tensor(x).detach().cpu(), dtype=np.float32).ravel()
    lo, hi = np.percentile(values, [normalisation["lower"], normalisation["upper"]])
    lo, hi = float(lo), float(hi)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def is_magnitude(x: torch.Tensor | np.ndarray) -> bool:
    """Whether ``x`` has no negative voxel: a magnitude image, the usual MR volume.

    The one range rule of every command: an output made from a magnitude channel is clamped at
    0 (ringing against a zero background would go below it), and a signed channel (phase,
    difference maps) keeps its sign.
    """
    return float(torch.as_tensor(x).min()) >= 0


def clamps(source: torch.Tensor, nonnegative: bool | None) -> bool:
    """Whether an output made from ``source`` is clamped at 0: ``nonnegative`` when given
    (``False``: ``--negative``), else when ``source`` is a magnitude image."""
    return bool(nonnegative) if nonnegative is not None else is_magnitude(source)


def clamp_nonnegative(out: torch.Tensor, source: torch.Tensor, nonnegative: bool | None) -> bool:
    """Clamp ``out`` at 0 in place when :func:`clamps` says so; return whether it did."""
    clamped = clamps(source, nonnegative)
    if clamped:
        out.clamp_(min=0.0)
    return clamped


def clamp_volume(result: Any, source: Any, nonnegative: bool | None) -> list[bool]:
    """:func:`clamp_nonnegative` on each channel of ``result`` ``(C, ...)``, made from the
    same channel of ``source``, in place; returns which channels were clamped."""
    return [
        clamp_nonnegative(out, channel, nonnegative)
        for out, channel in zip(torch.as_tensor(result), torch.as_tensor(source))
    ]


def range_facts(clamped: list[bool]) -> dict[str, Any]:
    """What the range rule did, for the record: one flag, or one per channel when they differ."""
    return {"clamped_at_zero": clamped[0] if len(set(clamped)) == 1 else clamped}


def project_in_range(
    x: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    floor: float | None,
    iterations: int = 10,
) -> torch.Tensor:
    """Alternate ``project`` (onto the outputs consistent with the measurement) and the clamp at
    ``floor`` (``None``: no clamp), ending with the clamp: the result is in range, and as
    consistent as the two constraints allow (both sets are convex, so the alternation approaches
    a point of their intersection when there is one). One pass when ``floor`` is ``None``.
    """
    for _ in range(iterations if floor is not None else 1):
        x = project(x)
        if floor is not None:
            x = x.clamp(min=floor)
    return x


def relative_residual(measured: torch.Tensor, remeasured: torch.Tensor) -> tuple[float, float]:
    """``(squared error, squared norm)`` of ``remeasured`` against ``measured``, summed, so that
    batches add up; ``sqrt(error / norm)`` is the relative RMS residual of a consistency."""
    measured, remeasured = measured.double(), remeasured.double()
    return float(((remeasured - measured) ** 2).sum()), float((measured**2).sum())
