"""2D super-resolution networks (CSSFN, CSN, MSRN), interpolation baselines, a name registry.

Every network maps ``(B, in_channels, H, W)`` to ``(B, out_channels, scale*H, scale*W)``.
"""

from .csn import CSN
from .cssfn import CSSFN
from .interpolation import Interpolation, upsample
from .msrn import MSRN
from .registry import BASELINES, available, create, options

__all__ = [
    "BASELINES",
    "CSN",
    "CSSFN",
    "MSRN",
    "Interpolation",
    "available",
    "create",
    "options",
    "upsample",
]
