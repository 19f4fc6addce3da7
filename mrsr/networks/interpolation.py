"""Grid-aware interpolation: the external skip of CSN/CSSFN and the parameter-free baselines.

High-resolution pixel ``n`` reads the low-resolution image at ``n / s`` on the ``"kspace"`` grid
(k-space truncation keeps coarse voxel ``i`` at fine voxel ``i * s``) and at
``(n + 0.5) / s - 0.5`` on the ``"area"`` grid (what ``F.interpolate(align_corners=False)``
does). Mode ``"kspace"`` is band-limited (sinc) interpolation by k-space zero-filling
(:func:`mrsr.kspace.zero_fill`), the exact inverse model of truncation; it lives on the
``"kspace"`` grid only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mrsr.geometry import GRIDS, Grid
from mrsr.kspace import zero_fill

__all__ = ["MODES", "Interpolation", "upsample"]

Mode = Literal["nearest", "linear", "bicubic", "kspace"]
MODES: tuple[str, ...] = ("nearest", "linear", "bicubic", "kspace")
_GRID_SAMPLE = {"nearest": "nearest", "linear": "bilinear", "bicubic": "bicubic"}


def check_mode(mode: str, grid: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown interpolation {mode!r}; expected one of {MODES}")
    if grid not in GRIDS:
        raise ValueError(f"unknown sampling grid {grid!r}; expected one of {GRIDS}")
    if mode == "kspace" and grid != "kspace":
        raise ValueError('k-space interpolation lives on the k-space grid; it needs grid="kspace"')


def _coordinates(n_in: int, scale: int, offset: float, like: torch.Tensor) -> torch.Tensor:
    """Normalised (``align_corners=True``) coordinates of ``p(n) = n / scale + offset``."""
    p = torch.arange(n_in * scale, dtype=like.dtype, device=like.device) / scale + offset
    return 2 * p / max(n_in - 1, 1) - 1


def upsample(
    x: torch.Tensor, scale: int, grid: Grid | str = "kspace", mode: Mode | str = "bicubic"
) -> torch.Tensor:
    """Upsample every channel of ``x`` by ``scale`` on ``grid``: ``(B, C, H, W) -> (B, C, sH, sW)``.

    Spatial modes use ``F.grid_sample`` with border padding.
    """
    check_mode(mode, grid)
    s, (h, w) = scale, x.shape[-2:]
    if mode == "kspace":
        return zero_fill(x, sizes=(s * h, s * w), dims=(-2, -1))
    offset = 0.0 if grid == "kspace" else (1 / s - 1) / 2
    gy = _coordinates(h, s, offset, x)
    gx = _coordinates(w, s, offset, x)
    coords = torch.stack([gx.expand(s * h, -1), gy[:, None].expand(-1, s * w)], dim=-1)
    return F.grid_sample(
        x,
        coords.expand(x.shape[0], -1, -1, -1),
        mode=_GRID_SAMPLE[mode],
        padding_mode="border",
        align_corners=True,
    )


class Interpolation(nn.Module):
    """A parameter-free baseline with the networks' interface (``"zerofill"``, ``"bicubic"``, …).

    With several input channels (adjacent slices) the centre one is interpolated.
    Shapes: ``(B, in_channels, H, W) -> (B, 1, scale*H, scale*W)``.

    >>> import torch
    >>> Interpolation(2, mode="kspace")(torch.ones(1, 1, 3, 4)).shape
    torch.Size([1, 1, 6, 8])
    """

    def __init__(
        self,
        scale: int,
        mode: Mode | str = "bicubic",
        grid: Grid | str = "kspace",
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        check_mode(mode, grid)
        self.scale, self.mode, self.grid, self.in_channels = int(scale), mode, grid, in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = self.in_channels // 2
        return upsample(x[:, centre : centre + 1], self.scale, self.grid, self.mode)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode!r}, grid={self.grid!r}"
