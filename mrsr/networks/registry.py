"""Name registry of the networks: :func:`create` and :func:`available`."""

from __future__ import annotations

from typing import Any

from torch import nn

from .csn import CSN
from .cssfn import CSSFN
from .msrn import MSRN

__all__ = ["available", "create"]

_NETWORKS: dict[str, type[nn.Module]] = {"cssfn": CSSFN, "csn": CSN, "msrn": MSRN}


def available() -> list[str]:
    """Names :func:`create` accepts."""
    return sorted(_NETWORKS)


def create(name: str, scale: int, **options: Any) -> nn.Module:
    """Build network ``name`` (case-insensitive) for ``scale`` with constructor ``options``.

    >>> create("CSN", scale=2, channels=16, n_blocks=1, n_stages=1, growth=8).scale
    2
    """
    try:
        cls = _NETWORKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; available: {', '.join(available())}") from None
    return cls(scale, **options)
