"""2D super-resolution networks (CSSFN, CSN, MSRN) and their name registry.

Every network maps ``(B, in_channels, H, W)`` to ``(B, out_channels, scale*H, scale*W)``.
"""

from .csn import CSN
from .cssfn import CSSFN
from .msrn import MSRN
from .registry import available, create

__all__ = ["CSN", "CSSFN", "MSRN", "available", "create"]
