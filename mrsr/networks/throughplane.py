"""The scale-1 network of through-plane super-resolution (:mod:`mrsr.throughplane`).

It is trained on each scan by :func:`mrsr.training.throughplane.train_network`, not built by
name: it refines planes already interpolated onto the fine grid, so it is no in-plane model
and not in :func:`mrsr.networks.available`.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import conv, fusion, shallow_features, xavier_init_
from .cssfn import SerialFusionBlock

__all__ = ["ThroughPlaneNet"]


class ThroughPlaneNet(nn.Module):
    """Scale-1 residual network from CSSFN's parts: ``x + tail(fusion(blocks(x0)) + x0)``.

    Shallow features ``x0`` (conv3x3, conv1x1, conv3x3), ``n_blocks`` serial-fusion blocks
    (:class:`~mrsr.networks.cssfn.SerialFusionBlock` of ``n_units`` CSSFUs) in series, global
    fusion (conv1x1, conv3x3) plus ``x0``, conv3x3 to one channel added to the input. The input
    is the thick-slice plane already interpolated onto the fine grid
    (:meth:`~mrsr.slice_profiles.SliceProfile.interpolation`), so the network only predicts the
    lost detail; the last conv starts at zero, so the untrained network is exactly the cubic
    interpolation. Xavier-uniform weights, zero biases. Receptive field 33 pixels at the
    defaults. Shapes: ``(B, 1, H, W) -> (B, 1, H, W)``.
    """

    def __init__(self, channels: int = 32, n_blocks: int = 2, n_units: int = 2, q: int = 2):
        super().__init__()
        self.head = shallow_features(1, channels)
        self.blocks = nn.Sequential(
            *(SerialFusionBlock(channels, channels, n_units, q, "cssfu") for _ in range(n_blocks))
        )
        self.fusion = fusion(channels, channels)
        self.tail = conv(channels, 1)
        xavier_init_(self)
        nn.init.zeros_(self.tail.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.head(x)
        return x + self.tail(self.fusion(self.blocks(x0)) + x0)
