"""Name registry of the networks: :func:`create` and :func:`available`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from .csn import CSN
from .cssfn import CSSFN
from .interpolation import Interpolation
from .msrn import MSRN

__all__ = ["BASELINES", "available", "create", "options"]

# Parameter-free interpolators, run like networks so every command can compare against them.
BASELINES: dict[str, Callable[..., nn.Module]] = {
    "nearest": partial(Interpolation, mode="nearest"),
    "linear": partial(Interpolation, mode="linear"),
    "bicubic": partial(Interpolation, mode="bicubic"),
    "zerofill": partial(Interpolation, mode="kspace"),
}
_NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "cssfn": CSSFN,
    "csn": CSN,
    "msrn": MSRN,
    **BASELINES,
}


def available() -> list[str]:
    """Names :func:`create` accepts."""
    return sorted(_NETWORKS)


def options(name: str) -> list[str]:
    """Constructor keywords of network ``name`` (besides ``scale``)."""
    factory = _lookup(name)
    fixed = factory.keywords if isinstance(factory, partial) else {}
    target = factory.func if isinstance(factory, partial) else factory
    params = inspect.signature(target).parameters
    return [p for p in params if p not in ("self", "scale", *fixed)]


def _lookup(name: str) -> Callable[..., nn.Module]:
    try:
        return _NETWORKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; available: {', '.join(available())}") from None


def create(name: str, scale: int, **options: Any) -> nn.Module:
    """Build network ``name`` (case-insensitive) for ``scale`` with constructor ``options``.

    >>> create("CSN", scale=2, channels=16, n_blocks=1, n_stages=1, growth=8).scale
    2
    """
    return _lookup(name)(scale, **options)
