"""CSSFN: Channel Splitting and Serial Fusion Network.

X. Zhao, Y. Zhang, Y. Qin, Q. Wang, T. Zhang, T. Li, "Single MR Image Super-Resolution via Channel
Splitting and Serial Fusion Network", Knowledge-Based Systems 246:108669, 2022 (arXiv 1901.06484).
No official code exists; this reconstruction reproduces the parameter counts of the paper's
Tables 1 and 3 exactly (see ``spec/architectures.md``, Sec. 4).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mrsr.geometry import Grid

from .blocks import (
    CSSFU,
    MSRB,
    GlobalFusionNetwork,
    Skip,
    conv,
)

__all__ = ["CSSFN", "SerialFusionBlock", "UNITS"]

Unit = Literal["cssfu", "msrb"]
UNITS: tuple[str, ...] = ("cssfu", "msrb")


def make_unit(unit: Unit | str, channels: int, q: int) -> nn.Module:
    """A CSSFB basic unit, ``(B, c, H, W) -> (B, c, H, W)``.

    ``"cssfu"``: :class:`~mrsr.networks.blocks.CSSFU` with ``q`` sub-features. ``"msrb"``: conv1x1
    ``c -> c/4``, an :class:`~mrsr.networks.blocks.MSRB` at width ``c/4``, conv1x1 ``c/4 -> c``
    (``q`` unused); see :class:`CSSFN` for why.
    """
    if unit == "cssfu":
        return CSSFU(channels, q)
    if unit == "msrb":
        width = channels // 4
        return nn.Sequential(conv(channels, width, 1), MSRB(width), conv(width, channels, 1))
    raise ValueError(f"unknown CSSFN unit {unit!r}; expected one of {UNITS}")


class SerialFusionBlock(nn.Module):
    """CSSFB (CSSFN Eqs. 8-11): conv1x1 compression ``in_channels -> c`` giving ``a``, then
    ``n_units`` units in series giving ``b``; output ``a + b``.

    Shapes: ``(B, in_channels, H, W) -> (B, c, H, W)``; ``in_channels`` is ``i * c`` for the
    ``i``-th block (dense global feature fusion).
    """

    def __init__(
        self, in_channels: int, channels: int, n_units: int, q: int, unit: Unit | str
    ) -> None:
        super().__init__()
        self.compress = conv(in_channels, channels, 1)
        self.units = nn.Sequential(*(make_unit(unit, channels, q) for _ in range(n_units)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.compress(x)
        return a + self.units(a)


class CSSFN(GlobalFusionNetwork):
    """Channel splitting and serial fusion network (Zhao et al., KBS 2022).

    Shallow features ``x0`` (conv3x3, conv1x1, conv3x3); ``n_blocks`` CSSFBs with dense global
    feature fusion (block ``i`` reads ``[x(i-1), ..., x1, x0]``, ``i * c`` channels); global fusion
    ``conv3x3(conv1x1([xn, ..., x0])) + x0``; sub-pixel upsampler; conv3x3 ``c -> out_channels``;
    plus the external skip (:class:`~mrsr.networks.blocks.ExternalSkip`). ReLU only inside the
    units; Xavier-uniform initialisation, zero biases (as in the paper).

    Parameters (1 -> 1 channel, defaults): q=2 (CSSFN-B2) 16,400,129 / 19,350,529 / 18,760,449 for
    x2 / x3 / x4; q=4 (CSSFN-B4) 11,091,713 / 14,042,113 / 13,452,033.

    ``unit="msrb"`` swaps every CSSFU for MSRN's multi-scale residual block. At the full width
    ``c = 256`` one MSRB has 11.4 M parameters (16 of them: 15x the network), so each unit is a
    bottleneck instead: conv1x1 ``c -> c/4``, one MSRB at width ``c/4`` (64, MSRN's own width),
    conv1x1 ``c/4 -> c``. The unit stays a drop-in ``c -> c`` map with the paper's ``n`` blocks of
    ``m`` units, dense fusion and local residuals unchanged, and costs 746,240 parameters against
    737,792 for a q=2 CSSFU (+1.1 %). Measured totals: 16,535,297 / 19,485,697 / 18,895,617 for
    x2 / x3 / x4 (1.008x CSSFN-B2, 1.49x CSSFN-B4). ``q`` applies to ``unit="cssfu"`` only.

    Args:
        scale: upscaling factor, ``2**a * 3**b``.
        in_channels: input channels (1, or adjacent slices for 2.5D input).
        out_channels: output channels (1 or ``in_channels``).
        channels: feature width ``c``.
        n_blocks: number of CSSFBs ``n``.
        n_units: units per CSSFB ``m``.
        q: sub-features per CSSFU (``channels`` must be divisible by it).
        unit: ``"cssfu"`` (paper) or ``"msrb"``.
        skip: external skip, ``"bicubic"`` (paper), ``"kspace"`` or ``"none"``.
        grid: sampling grid of the degradation, ``"kspace"`` (truncation) or ``"area"``.
        zero_tail: zero-initialise the last conv, so the untrained network is exactly its skip
            (e.g. zero-filling with ``skip="kspace"``) and training starts from the baseline.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, scale*H, scale*W)``.
    """

    def __init__(
        self,
        scale: int,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 256,
        n_blocks: int = 4,
        n_units: int = 4,
        q: int = 2,
        unit: Unit | str = "cssfu",
        skip: Skip | str = "bicubic",
        grid: Grid | str = "kspace",
        zero_tail: bool = False,
    ) -> None:
        blocks = nn.ModuleList(
            SerialFusionBlock(i * channels, channels, n_units, q, unit)
            for i in range(1, n_blocks + 1)
        )
        super().__init__(scale, in_channels, out_channels, channels, blocks, skip, grid, zero_tail)

    def features(self, x0: torch.Tensor) -> list[torch.Tensor]:
        features = [x0]  # newest first: [x(i-1), ..., x1, x0]
        for block in self.blocks:
            features.insert(0, block(torch.cat(features, dim=1)))
        return features
