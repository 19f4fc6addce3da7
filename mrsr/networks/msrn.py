"""MSRN: Multi-scale Residual Network.

J. Li, F. Fang, K. Mei, G. Zhang, "Multi-scale Residual Network for Image Super-Resolution",
ECCV 2018. Structure of the current official code (MIVRC/MSRN-PyTorch, ``MSRN/Train/model/
msrn.py``) with ``n_colors`` input/output channels and without the RGB mean shift.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import MSRB, conv, fusion, reconstruction

__all__ = ["MSRN"]


class MSRN(nn.Module):
    """Multi-scale residual network (Li et al., ECCV 2018), 1-channel variant of the official code.

    Head conv3x3 ``in_channels -> c`` giving ``x0``; ``n_blocks`` MSRBs in series
    (:class:`~mrsr.networks.blocks.MSRB`); hierarchical feature fusion
    ``conv3x3(conv1x1([M1, ..., Mn, x0]))`` (MSRB outputs first, as in the code); sub-pixel
    upsampler; conv3x3 ``c -> out_channels``. No mean shift, no global residual, no bicubic skip;
    ReLU inside the MSRBs; PyTorch default initialisation.

    Parameters (1 -> 1 channel, defaults): 5,928,001 / 6,112,641 / 6,075,713 for x2 / x3 / x4.

    Args:
        scale: upscaling factor, ``2**a * 3**b``.
        in_channels: input channels.
        out_channels: output channels.
        channels: feature width ``c``.
        n_blocks: number of MSRBs.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, scale*H, scale*W)``.
    """

    def __init__(
        self,
        scale: int,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 64,
        n_blocks: int = 8,
    ) -> None:
        super().__init__()
        self.scale, self.in_channels = scale, in_channels
        self.head = conv(in_channels, channels)
        self.blocks = nn.ModuleList(MSRB(channels) for _ in range(n_blocks))
        self.fusion = fusion((n_blocks + 1) * channels, channels)
        self.tail = reconstruction(channels, out_channels, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.head(x)
        features = []
        h = x0
        for block in self.blocks:
            h = block(h)
            features.append(h)
        return self.tail(self.fusion(torch.cat(features + [x0], dim=1)))
