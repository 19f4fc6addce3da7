"""CSN: Channel Splitting Network.

X. Zhao, Y. Zhang, T. Zhang, X. Zou, "Channel Splitting Network for Single MR Image
Super-Resolution", IEEE TIP 28(11):5649-5662, 2019 (arXiv 1810.06453). No official code exists;
this reconstruction (final "R3D3" model) reproduces the 13,646,593 parameters of the paper's
Table II exactly (see ``spec/architectures.md``, Sec. 3).
"""

from __future__ import annotations

import torch
from torch import nn

from mrsr.geometry import Grid

from .blocks import (
    ChannelSplittingBlock,
    GlobalFusionNetwork,
    Skip,
)

__all__ = ["CSN"]


class CSN(GlobalFusionNetwork):
    """Channel splitting network (Zhao et al., TIP 2019).

    Shallow features ``x0`` (conv3x3, conv1x1, conv3x3); ``n_blocks`` channel-splitting blocks
    (:class:`~mrsr.networks.blocks.ChannelSplittingBlock`, each ``n_stages`` merge-and-run stages
    on two ``c/2`` branches, conv1x1, local residual); global feature fusion
    ``conv3x3(conv1x1([x0, ..., xn])) + x0``; sub-pixel upsampler; conv3x3 ``c -> out_channels``;
    plus the external skip (:class:`~mrsr.networks.blocks.ExternalSkip`). Xavier-uniform
    initialisation, zero biases (as in the paper).

    The paper also mentions "constant scaling" of residuals but gives neither its value nor where
    it applies; it is omitted here (residual scale 1). It has no parameters.

    Parameters (1 -> 1 channel, defaults): 13,646,593 / 16,596,993 / 16,006,913 for x2 / x3 / x4.

    Args:
        scale: upscaling factor, ``2**a * 3**b``.
        in_channels: input channels (1, or adjacent slices for 2.5D input).
        out_channels: output channels (1 or ``in_channels``).
        channels: feature width ``c`` (even; each branch has ``c/2``).
        n_blocks: number of channel-splitting blocks ``n``.
        n_stages: merge-and-run stages per block ``m``.
        growth: channels of the dense branch's inner conv ``g``.
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
        n_stages: int = 4,
        growth: int = 64,
        skip: Skip | str = "bicubic",
        grid: Grid | str = "kspace",
        zero_tail: bool = False,
    ) -> None:
        blocks = nn.ModuleList(
            ChannelSplittingBlock(channels, n_stages, growth) for _ in range(n_blocks)
        )
        super().__init__(scale, in_channels, out_channels, channels, blocks, skip, grid, zero_tail)

    def features(self, x0: torch.Tensor) -> list[torch.Tensor]:
        features = [x0]
        for block in self.blocks:
            features.append(block(features[-1]))
        return features
