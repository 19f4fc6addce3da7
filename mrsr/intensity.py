"""Intensity normalisation shared by training and inference (recorded in every checkpoint).

A volume is mapped linearly so that its ``lower`` percentile goes to 0 and its ``upper``
percentile to 1; inference applies the inverse map to the network's output, so the result keeps
the input's intensity units.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

DEFAULT_NORMALISATION = {"kind": "percentile", "lower": 0.0, "upper": 99.5}

__all__ = ["DEFAULT_NORMALISATION", "intensity_window"]


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
