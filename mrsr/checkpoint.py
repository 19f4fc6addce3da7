"""Model checkpoints: safetensors weights with the model's description in the file's metadata.

One ``.safetensors`` file holds the weights and, under the metadata key ``"mrsr"``, a JSON
:class:`ModelSpec`: network name and options, scale, degradation and sampling grid, intensity
normalisation and library version. Loading never unpickles: pickle-based ``.pt``/``.pth`` files
are refused, since loading them can run arbitrary code.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mrsr import __version__
from mrsr.errors import MRSRError
from mrsr.geometry import GRIDS
from mrsr.intensity import DEFAULT_NORMALISATION
from mrsr.io import atomic_path

__all__ = ["ModelSpec", "load_checkpoint", "save_checkpoint"]

DEGRADATION_GRID = {"kspace": "kspace", "bicubic": "area"}
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")


@dataclass
class ModelSpec:
    """What a set of weights is: enough to rebuild the network and use it correctly."""

    network: str
    scale: int
    options: dict = field(default_factory=dict)
    degradation: str = "kspace"
    grid: str = "kspace"
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    version: str = __version__
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ValueError(f"unknown sampling grid {self.grid!r}; expected one of {GRIDS}")
        if self.degradation not in DEGRADATION_GRID:
            raise ValueError(f"unknown degradation {self.degradation!r}")

    @classmethod
    def create(
        cls,
        network: str,
        scale: int,
        degradation: str = "kspace",
        options: dict | None = None,
        **fields,
    ) -> ModelSpec:
        """A spec whose network samples on ``degradation``'s grid (its ``grid`` option, if any)."""
        from mrsr import networks

        grid = DEGRADATION_GRID[degradation]
        options = dict(options or {})
        known = network.lower() in networks.available()
        if known and "grid" in networks.options(network):
            options.setdefault("grid", grid)
        return cls(network.lower(), int(scale), options, degradation, grid, **fields)

    def build(self) -> torch.nn.Module:
        """The network, untrained, as this spec describes it."""
        from mrsr.networks import create

        return create(self.network, scale=self.scale, **self.options)


def save_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, spec: ModelSpec, overwrite: bool = True
) -> Path:
    """Write ``model``'s weights and ``spec`` to one safetensors file, atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata={"mrsr": json.dumps(asdict(spec))})
    return Path(path)


def _major(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def load_checkpoint(path: str | os.PathLike) -> tuple[ModelSpec, torch.nn.Module]:
    """Read a checkpoint: its spec and the network with the weights loaded (eval mode)."""
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise MRSRError(
            f"{p}: pickle-based checkpoints are refused (loading them can run code); "
            "use a .safetensors checkpoint written by mrsr"
        )
    if not p.is_file():
        raise MRSRError(f"{p}: no such checkpoint file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = (f.metadata() or {}).get("mrsr")
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    except (SafetensorError, OSError, ValueError) as exc:
        raise MRSRError(f"{p}: not a readable safetensors checkpoint ({exc})") from exc
    if meta is None:
        raise MRSRError(f"{p}: safetensors file without mrsr metadata; not an mrsr checkpoint")
    try:
        spec = ModelSpec(**json.loads(meta))
    except (TypeError, ValueError) as exc:
        raise MRSRError(f"{p}: unreadable mrsr metadata ({exc})") from exc
    if _major(spec.version) > _major(__version__):
        raise MRSRError(
            f"{p}: written by mrsr {spec.version}, newer than this mrsr {__version__}; upgrade mrsr"
        )
    model = spec.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MRSRError(f"{p}: weights do not match network {spec.network!r} ({first})") from exc
    return spec, model.eval()
