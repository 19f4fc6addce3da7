"""Building blocks shared by :class:`~mrsr.networks.CSSFN`, :class:`~mrsr.networks.CSN` and
:class:`~mrsr.networks.MSRN`.

References
----------
* MSRN: J. Li, F. Fang, K. Mei, G. Zhang, "Multi-scale Residual Network for Image
  Super-Resolution", ECCV 2018; official code MIVRC/MSRN-PyTorch (``MSRN/Train/model``).
* CSN: X. Zhao, Y. Zhang, T. Zhang, X. Zou, "Channel Splitting Network for Single MR Image
  Super-Resolution", IEEE TIP 28(11):5649-5662, 2019.
* CSSFN: X. Zhao et al., "Single MR Image Super-Resolution via Channel Splitting and Serial Fusion
  Network", Knowledge-Based Systems 246:108669, 2022.

All convolutions have a bias and "same" padding; all tensors are ``(B, C, H, W)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mrsr.geometry import Grid
from mrsr.networks.interpolation import check_mode, upsample

__all__ = [
    "CSSFU",
    "MSRB",
    "SKIPS",
    "Skip",
    "ChannelSplittingBlock",
    "ExternalSkip",
    "GlobalFusionNetwork",
    "MergeAndRun",
    "Upsampler",
    "conv",
    "fusion",
    "reconstruction",
    "scale_factors",
    "shallow_features",
    "xavier_init_",
]

Skip = Literal["bicubic", "kspace", "none"]
SKIPS: tuple[str, ...] = ("bicubic", "kspace", "none")


def conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """``kernel_size`` x ``kernel_size`` convolution with bias and "same" padding."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def xavier_init_(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every convolution in ``module`` (CSN, CSSFN)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def scale_factors(scale: int) -> list[int]:
    """Factorise ``scale`` into the 2s and 3s of the sub-pixel upsampler's stages (2s first).

    >>> scale_factors(4), scale_factors(6)
    ([2, 2], [2, 3])
    """
    if int(scale) != scale or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    rest, factors = int(scale), []
    for p in (2, 3):
        while rest % p == 0:
            factors.append(p)
            rest //= p
    if rest != 1:
        raise ValueError(
            f"scale {scale} is not supported: the sub-pixel upsampler is built from x2 and x3 "
            f"stages, so the scale must be 2**a * 3**b (prime factor {rest} is not)"
        )
    return factors


class Upsampler(nn.Sequential):
    """EDSR-style sub-pixel upsampler: per factor ``r`` of ``scale``, conv3x3 ``c -> r*r*c`` then
    ``PixelShuffle(r)``, no activation. x4 is two x2 stages, x6 a x2 then a x3 stage.

    Shapes: ``(B, channels, H, W) -> (B, channels, scale*H, scale*W)``.
    """

    def __init__(self, channels: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for r in scale_factors(scale):
            layers += [conv(channels, r * r * channels), nn.PixelShuffle(r)]
        super().__init__(*layers)


def shallow_features(in_channels: int, channels: int) -> nn.Sequential:
    """CSN/CSSFN feature extraction: conv3x3, conv1x1, conv3x3, no activation (CSN Table I)."""
    return nn.Sequential(
        conv(in_channels, channels), conv(channels, channels, 1), conv(channels, channels)
    )


def fusion(in_channels: int, channels: int) -> nn.Sequential:
    """Global feature fusion (CSN GFF, CSSFN Eq. 5, MSRN HFFS): conv1x1 then conv3x3."""
    return nn.Sequential(conv(in_channels, channels, 1), conv(channels, channels))


def reconstruction(channels: int, out_channels: int, scale: int) -> nn.Sequential:
    """Sub-pixel :class:`Upsampler` then conv3x3 ``channels -> out_channels``.

    Shapes: ``(B, channels, H, W) -> (B, out_channels, scale*H, scale*W)``.
    """
    return nn.Sequential(Upsampler(channels, scale), conv(channels, out_channels))


class MSRB(nn.Module):
    """Multi-scale residual block (MSRN, Sec. 3.1; ``MSRB`` in the official ``msrn.py``).

    ``S1 = ReLU(conv3x3(M))``, ``P1 = ReLU(conv5x5(M))``; ``S2 = ReLU(conv3x3([S1, P1]))``,
    ``P2 = ReLU(conv5x5([S1, P1]))``; output ``conv1x1([S2, P2]) + M``.
    713,152 parameters at ``channels=64``. Shapes: ``(B, c, H, W) -> (B, c, H, W)``.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        self.conv3_1, self.conv5_1 = conv(c, c, 3), conv(c, c, 5)
        self.conv3_2, self.conv5_2 = conv(2 * c, 2 * c, 3), conv(2 * c, 2 * c, 5)
        self.confusion = conv(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.cat([F.relu(self.conv3_1(x)), F.relu(self.conv5_1(x))], dim=1)
        v = torch.cat([F.relu(self.conv3_2(u)), F.relu(self.conv5_2(u))], dim=1)
        return self.confusion(v) + x


class CSSFU(nn.Module):
    """Channel splitting and serial fusion unit (CSSFN, Eqs. 12-13).

    The input ``h`` is split into ``q`` chunks of ``c/q`` channels; ``z1 = ReLU(conv3x3(h1))``,
    ``zk = ReLU(conv3x3([hk, z(k-1)]))`` for ``k = 2..q``; output ``conv3x3(zq)``, ``c/q -> c``
    (channel extension, no activation). No residual inside the unit.
    Shapes: ``(B, c, H, W) -> (B, c, H, W)``.
    """

    def __init__(self, channels: int = 256, q: int = 2) -> None:
        super().__init__()
        if q < 1 or channels % q:
            raise ValueError(f"channels ({channels}) must split into q ({q}) equal chunks")
        w = channels // q
        self.q = q
        self.fuse = nn.ModuleList([conv(w if k == 0 else 2 * w, w) for k in range(q)])
        self.extend = conv(w, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.chunk(self.q, dim=1)
        z = F.relu(self.fuse[0](chunks[0]))
        for k, layer in enumerate(self.fuse[1:], start=1):
            z = F.relu(layer(torch.cat([chunks[k], z], dim=1)))
        return self.extend(z)


class MergeAndRun(nn.Module):
    """One merge-and-run stage of a CSN channel-splitting block (CSN Eq. 9, Table I, "R3D3").

    Residual (top) branch ``H_top = conv3x3 -> ReLU -> conv3x3``; dense (bottom) branch
    ``u = ReLU(conv3x3(b))`` (``c -> growth``), ``H_bot = conv3x3([b, u])`` (``c + growth -> c``).
    With ``m = (t + b) / 2``: returns ``(H_top(t) + m, H_bot(b) + m)``.
    Shapes: two ``(B, c, H, W)`` tensors in and out (``c`` = half the CSN width).
    """

    def __init__(self, channels: int = 128, growth: int = 64) -> None:
        super().__init__()
        self.top = nn.Sequential(conv(channels, channels), nn.ReLU(), conv(channels, channels))
        self.grow = conv(channels, growth)
        self.bottom = conv(channels + growth, channels)

    def forward(self, top: torch.Tensor, bottom: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = 0.5 * (top + bottom)
        dense = self.bottom(torch.cat([bottom, F.relu(self.grow(bottom))], dim=1))
        return self.top(top) + mean, dense + mean


class ChannelSplittingBlock(nn.Module):
    """CSN channel-splitting block (CSB, CSN Sec. III-B).

    Splits the input into a top and a bottom half, runs ``n_stages`` :class:`MergeAndRun` stages,
    concatenates the halves, applies conv1x1 ``c -> c`` and adds the block input.
    Shapes: ``(B, c, H, W) -> (B, c, H, W)``.
    """

    def __init__(self, channels: int = 256, n_stages: int = 4, growth: int = 64) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"channels ({channels}) must be even to split into two branches")
        self.stages = nn.ModuleList(MergeAndRun(channels // 2, growth) for _ in range(n_stages))
        self.merge = conv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = x.chunk(2, dim=1)
        for stage in self.stages:
            top, bottom = stage(top, bottom)
        return x + self.merge(torch.cat([top, bottom], dim=1))


class ExternalSkip(nn.Module):
    """External skip connection (ESC, CSN Eq. 5 / CSSFN Eq. 6): ``sr + upsample(lr)``.

    ``kind``: ``"bicubic"`` (the papers), ``"kspace"`` (band-limited sinc interpolation by k-space
    zero-filling, :func:`mrsr.kspace.zero_fill`) or ``"none"``. The interpolant samples on the
    ``grid`` of the degradation the network is trained for (:mod:`mrsr.geometry`): high-resolution
    pixel ``n`` reads the low-resolution image at ``n / s`` on the ``"kspace"`` grid and at
    ``(n + 0.5) / s - 0.5`` on the ``"area"`` grid (what ``F.interpolate(mode="bicubic",
    align_corners=False)`` does). The k-space interpolant lives on the ``"kspace"`` grid only.

    Channels: with ``in_channels == out_channels`` every channel is interpolated; with several
    input channels (adjacent slices) and one output channel, the centre one
    (``in_channels // 2``). No parameters.
    Shapes: ``forward(lr (B, in_channels, H, W), sr (B, out_channels, sH, sW))`` -> like ``sr``.
    """

    def __init__(
        self,
        kind: Skip | str = "bicubic",
        scale: int = 2,
        grid: Grid | str = "kspace",
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if kind not in SKIPS:
            raise ValueError(f"unknown skip {kind!r}; expected one of {SKIPS}")
        check_mode("kspace" if kind == "kspace" else "bicubic", grid)
        if kind != "none" and out_channels not in (1, in_channels):
            raise ValueError(
                f"the skip needs out_channels == 1 or == in_channels, got {in_channels} -> "
                f"{out_channels}"
            )
        self.kind, self.scale, self.grid = kind, scale, grid
        first = in_channels // 2 if out_channels == 1 else 0
        self.channels = slice(first, first + out_channels)

    def interpolate(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample every channel of ``x`` by ``scale``: ``(B, C, H, W) -> (B, C, sH, sW)``."""
        return upsample(x, self.scale, self.grid, "kspace" if self.kind == "kspace" else "bicubic")

    def forward(
        self, lr: torch.Tensor, sr: torch.Tensor, upsampled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sr`` plus the interpolated ``lr``, or plus ``upsampled`` when given (training on
        patches passes the interpolation of the whole slice, as inference computes it)."""
        if self.kind == "none":
            return sr
        return sr + (self.interpolate(lr[:, self.channels]) if upsampled is None else upsampled)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, scale={self.scale}, grid={self.grid!r}"


class GlobalFusionNetwork(nn.Module):
    """The frame CSN and CSSFN share (Zhao et al., TIP 2019 and KBS 2022).

    Shallow features ``x0``; the ``blocks`` (built by the subclass, which says in
    :meth:`features` how they are chained); global fusion ``conv3x3(conv1x1([features])) + x0``;
    sub-pixel upsampler; conv3x3 to ``out_channels``; plus the :class:`ExternalSkip`.
    Xavier-uniform weights and zero biases (the papers); ``zero_tail`` zeroes the last conv so the
    untrained network is exactly its skip.
    """

    def __init__(
        self,
        scale: int,
        in_channels: int,
        out_channels: int,
        channels: int,
        blocks: nn.ModuleList,
        skip: str,
        grid: str,
        zero_tail: bool,
    ) -> None:
        super().__init__()
        self.scale, self.skip, self.grid = scale, skip, grid
        self.in_channels = in_channels  # adjacent slices the inference engine feeds
        self.esc = ExternalSkip(skip, scale, grid, in_channels, out_channels)
        self.head = shallow_features(in_channels, channels)
        self.blocks = blocks
        self.fusion = fusion((len(blocks) + 1) * channels, channels)
        self.tail = reconstruction(channels, out_channels, scale)
        xavier_init_(self)
        if zero_tail:
            nn.init.zeros_(self.tail[-1].weight)

    def features(self, x0: torch.Tensor) -> list[torch.Tensor]:
        """``x0`` and every block's output, in the order the global fusion reads them."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, upsampled: torch.Tensor | None = None) -> torch.Tensor:
        """``upsampled``: the skip's interpolation of ``x``, when computed elsewhere."""
        x0 = self.head(x)
        fused = self.fusion(torch.cat(self.features(x0), dim=1)) + x0
        return self.esc(x, self.tail(fused), upsampled)
