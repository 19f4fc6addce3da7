"""2D super-resolution networks (CSSFN, CSN, MSRN), interpolation baselines, a name registry.

Every network maps ``(B, in_channels, H, W)`` to ``(B, out_channels, scale*H, scale*W)``;
:class:`ThroughPlaneNet`, the scale-1 network trained on each scan by :mod:`mrsr.throughplane`,
is not in the registry.
"""

from .csn import CSN
from .cssfn import CSSFN
from .interpolation import Interpolation, upsample
from .msrn import MSRN
from .registry import BASELINES, available, create, options
from .throughplane import ThroughPlaneNet

__all__ = [
    "BASELINES",
    "CSN",
    "CSSFN",
    "MSRN",
    "Interpolation",
    "ThroughPlaneNet",
    "available",
    "create",
    "options",
    "upsample",
]
