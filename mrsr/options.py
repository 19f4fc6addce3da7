"""Declared types and ranges of every user-facing option, command-line flag and config key.

One :class:`Option` per value a user can set. The command line uses :meth:`Option.parse` as the
argparse ``type``; :class:`mrsr.Pipeline`, the inference engine, the training config and the
checkpoint loader call :meth:`Option.check`. Either way a bad value gets one message naming the
option and the allowed range, before any work.

>>> OPTIONS["scale"].check(4, "--scale")
4
>>> OPTIONS["scale"].check(0, "--scale")
Traceback (most recent call last):
...
mrsr.errors.MRSRError: --scale must be an integer from 2 to 16, got 0
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mrsr.degradations import DEGRADATIONS
from mrsr.errors import MRSRError, shown
from mrsr.geometry import GRIDS
from mrsr.slice_profiles import PROFILES

__all__ = [
    "NETWORK_OPTIONS",
    "OPTIONS",
    "Option",
    "check_device",
    "check_network",
    "check_network_options",
    "check_options",
    "check_path",
    "check_resolution",
]

# Data types a NIfTI output can hold; "input" means the input file's own type.
# How report figures are oriented (mrsr.orientation).
CONVENTIONS = ("radiological", "neurological")
OUTPUT_DTYPES = ("input", "uint8", "int8", "int16", "uint16", "int32", "float32", "float64")


def check_device(value: Any, name: str = "--device", present: bool = True) -> str:
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``; or a ``torch.device``)
    or ``auto``; with ``present``, one that this machine has (a config may name a GPU of the
    machine it will run on)."""
    import torch

    if isinstance(value, torch.device):
        value = str(value)
    if value == "auto":
        return value
    if not isinstance(value, str):
        raise MRSRError(f"{name} must be auto, cpu, cuda, cuda:N or mps, got {shown(value)}")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise MRSRError(
            f"{name} must be auto, cpu, cuda, cuda:N or mps, got {shown(value)}"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise MRSRError(f"{name} must be auto, cpu, cuda, cuda:N or mps, got {shown(value)}")
    if not present:
        return value
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise MRSRError(f"{name} {value}: this machine has no usable CUDA GPU; use cpu")
        if device.index is not None and device.index >= count:
            raise MRSRError(f"{name} {value}: only {count} CUDA device(s) (0-{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise MRSRError(f"{name} {value}: MPS is not available on this machine; use cpu")
    return value


def check_path(value: Any, name: str) -> str | os.PathLike:
    """A file path: a non-empty ``str`` or ``os.PathLike`` (a ``bytes`` path is refused: decode
    it with ``os.fsdecode``)."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(text, str) and text:
        return value
    hint = "; decode it with os.fsdecode()" if isinstance(text, bytes) else ""
    raise MRSRError(f"{name} must be a str or pathlib.Path, got {shown(value)}{hint}")


def check_resolution(value: Any, name: str) -> float | tuple[float, ...]:
    """A resolution in mm above 0 and at most 100: one number (or its text), or a sequence of
    one or two."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(values) <= 2:
        raise MRSRError(f"{name} takes one or two values in mm, got {shown(value)}")
    checked = []
    for v in values:
        try:
            v, ok = _as_kind(float(v) if isinstance(v, str) else v, float)
        except ValueError:  # text that is no number (the command line's)
            ok = False
        if not (ok and 0 < v <= 100):
            raise MRSRError(f"{name} must be above 0 and at most 100 mm, got {shown(value)}")
        checked.append(v)
    return checked[0] if len(checked) == 1 else tuple(checked)


def check_network(value: Any, name: str) -> Any:
    """A network name of :func:`mrsr.networks.available`, or a ``torch.nn.Module``."""
    from torch import nn

    from mrsr import networks

    if isinstance(value, nn.Module) or (
        isinstance(value, str) and value.lower() in networks.available()
    ):
        return value
    raise MRSRError(
        f"{name} must be a network name ({', '.join(networks.available())}) or a torch module, "
        f"got {shown(value)}; for a checkpoint or a shipped model use Pipeline.from_pretrained"
    )


def check_network_options(network: str, options: Mapping[str, Any], where: str = "") -> None:
    """Each of ``options`` a constructor option of ``network`` within its declared range."""
    from mrsr import networks

    for key, value in options.items():
        if key not in networks.options(network) or key not in NETWORK_OPTIONS:
            raise MRSRError(
                f"{where}{shown(key)} is not an option of {network} (its options: "
                f"{', '.join(networks.options(network)) or 'none'})"
            )
        NETWORK_OPTIONS[key].check(value, f"{where}{key}")


@dataclass(frozen=True)
class Option:
    """A value's type and allowed range: ``low``/``high`` bounds (``above`` makes ``low``
    exclusive), or ``choices``, or a ``custom`` check; ``optional`` allows ``None``."""

    kind: type
    low: float | None = None
    high: float | None = None
    above: bool = False
    choices: Collection | None = None
    optional: bool = False
    custom: Callable[[Any, str], Any] | None = None

    def describe(self) -> str:
        noun = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        text = noun[self.kind]
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.low is not None and self.high is not None:
            text += (
                f" above {self.low} and at most {self.high}"
                if self.above
                else f" from {self.low} to {self.high}"
            )
        elif self.low is not None:
            text += f" above {self.low}" if self.above else f" of at least {self.low}"
        return text + (" (or none)" if self.optional else "")

    def check(self, value: Any, name: str) -> Any:
        """``value`` if it is allowed, else :class:`MRSRError` naming ``name`` and the range."""
        if value is None and self.optional:
            return None
        if self.custom is not None:
            return self.custom(value, name)
        value, ok = _as_kind(value, self.kind)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.low is not None:
            ok = value > self.low if self.above else value >= self.low
        if ok and self.high is not None:
            ok = value <= self.high
        if not ok:
            raise MRSRError(f"{name} must be {self.describe()}, got {shown(value)}")
        return value

    def parse(self, text: str) -> Any:
        """argparse ``type``: the text converted to ``kind`` and checked."""
        try:
            value = self.kind(text) if self.custom is None else text
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {self.describe()}, got {shown(text)}"
            ) from None
        try:
            return self.check(value, "value")
        except MRSRError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None


def _as_kind(value: Any, kind: type) -> tuple[Any, bool]:
    """``(value as kind, whether it is one)``: NumPy numbers count as numbers (an integer is a
    number too), booleans only as booleans, and a number must be finite."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value), kind is bool
    if kind is int and isinstance(value, numbers.Integral):
        return int(value), True
    if kind is float and isinstance(value, numbers.Real):
        return float(value), math.isfinite(value)
    return value, kind not in (bool, int, float) and isinstance(value, kind)


POSITIVE_INT = Option(int, 1, 1_000_000_000)
FLAG = Option(bool)
# live views of the registries: an entry added there is a valid choice here
METHOD = Option(str, choices=DEGRADATIONS.keys())
PROFILE = Option(str, choices=PROFILES.keys(), optional=True)  # None: estimated from the scan
OPTIONS: dict[str, Option] = {
    "network": Option(str, custom=check_network),
    "degradation": METHOD,
    "scale": Option(int, 2, 16),
    "batch_size": Option(int, 1, 4096),
    "data_consistency": Option(float, 0.0, 1.0),
    "axis": Option(int, 0, 2, optional=True),
    "precision": Option(str, choices=("auto", "fp32", "bf16")),
    "dtype": Option(str, choices=OUTPUT_DTYPES),
    "device": Option(str, custom=check_device),
    "max_time": Option(float, 0.0, 7 * 24 * 3600.0, above=True, optional=True),  # s, a cap
    "steps": POSITIVE_INT,
    "seed": Option(int, 0, 2**32 - 1),
    "factor": Option(float, 1.5, 64.0),
    "slice_thickness": Option(float, 0.0, 100.0, above=True, optional=True),  # mm
    "through_plane_steps": Option(int, 0, 1_000_000_000),  # 0: no through-plane network
    "through_plane_max_time": Option(float, 0.0, 7 * 24 * 3600.0, above=True, optional=True),
    "profile": PROFILE,
    "slice_profile": PROFILE,
    "slice_profile_file": Option(str, custom=check_path, optional=True),  # mrsr.slice_profiles
    "inplane_acquired_resolution": Option(float, custom=check_resolution, optional=True),  # mm
    "tta": FLAG,
    "progress": FLAG,
    "overwrite": FLAG,
    "overlap": FLAG,
    "resume": FLAG,
    "nonnegative": Option(bool, optional=True),
    "path": Option(str, custom=check_path),
    "data_range": Option(float, 0.0, above=True, optional=True),
    "slice_axis": Option(int, -3, 2),  # of a metric: 0-based over (X, Y, Z), -1 the last
    "shave": Option(int, 0, 4096),
    "convention": Option(str, choices=CONVENTIONS),
    "voxel_size": Option(float, 0.0, 100.0, above=True),  # mm, each of 1 or 3 values
    "fusion_weight": Option(float, 0.0, 1e3, above=True),  # of the estimates, mrsr.fusion
    "fusion_iterations": Option(int, 1, 1000),
    "register": FLAG,
    # training config keys, by their dotted name
    "degradation.method": METHOD,
    "degradation.scale": Option(int, 2, 16),
    "degradation.noise": Option(float, 0.0, 1.0),
    "augment.hr_noise": Option(float, 0.0, 1.0),
    "augment.gamma": Option(float, 0.0, 2.0),
    "augment.lowpass": Option(float, 0.0, 1.0),
    "augment.phase": Option(float, 0.0, 2 * 3.141592653589793),
    "augment.coils": Option(int, 1, 64),
    "augment.partial_fourier": Option(float, 0.0, 1.0),
    "augment.lr_from": Option(str, choices=("coils", "magnitude")),
    "train.max_steps": POSITIVE_INT,
    "train.batch_size": Option(int, 1, 4096),
    "train.patch_size": Option(int, 4, 1024),
    "train.patches_per_slice": Option(int, 1, 4096),
    "train.lr": Option(float, 0.0, 1.0, above=True),
    "train.lr_step": POSITIVE_INT,
    "train.lr_gamma": Option(float, 0.0, 1.0, above=True),
    "train.seed": Option(int, 0, 2**32 - 1),
    "train.val_every": POSITIVE_INT,
    "train.log_every": POSITIVE_INT,
    "train.device": Option(str, custom=partial(check_device, present=False)),
    "train.num_workers": Option(int, 0, 64),
    "train.degrade_on": Option(str, choices=("auto", "loader", "device")),
    "train.grad_clip": Option(float, 0.0, 1e6, above=True, optional=True),
    "train.ema": Option(float, 0.0, 1.0, above=True, optional=True),
    "train.precision": Option(str, choices=("fp32", "bf16")),
    "train.loss": Option(str, choices=("l1", "l2")),
    "train.init": Option(str, optional=True),
}
# Constructor options of the networks (a checkpoint's spec and the config's model section):
# bounds far above any published size, so that a crafted file cannot build a 40 GB network.
NETWORK_OPTIONS: dict[str, Option] = {
    "in_channels": Option(int, 1, 15),
    "out_channels": Option(int, 1, 1),
    "channels": Option(int, 1, 1024),
    "n_blocks": Option(int, 1, 64),
    "n_units": Option(int, 1, 64),
    "n_stages": Option(int, 1, 64),
    "growth": Option(int, 1, 1024),
    "q": Option(int, 1, 16),
    "unit": Option(str, choices=("cssfu", "msrb")),
    "skip": Option(str, choices=("bicubic", "kspace", "none")),
    "grid": Option(str, choices=GRIDS),
    "zero_tail": Option(bool),
    "mode": Option(str, choices=("nearest", "linear", "bicubic", "kspace")),
}


def check_options(values: Mapping[str, Any], table: Mapping[str, Option], where: str) -> None:
    """Check each of ``values`` declared in ``table``; messages read ``where`` + key."""
    for key, value in values.items():
        if key in table:
            table[key].check(value, f"{where}{key}")
