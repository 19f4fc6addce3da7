"""The model zoo: the default models that ship with mrsr, in ``mrsr/data/weights``.

Each shipped model is a checkpoint ``<name>.safetensors`` (:mod:`mrsr.checkpoint`) with its
model card ``<name>.md`` beside it (data, protocol, held-out scores), both written by
``pipelines/default_models/package.py``; ``mrsr models`` lists them. A model named here ships
once its weights are in the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mrsr import degradations, networks
from mrsr.errors import MRSRError

__all__ = [
    "MODELS",
    "WEIGHTS",
    "ShippedModel",
    "covering",
    "default",
    "find",
    "shipped",
    "shipped_weights",
    "weights_path",
]

WEIGHTS = Path(str(resources.files("mrsr") / "data" / "weights"))  # weights and cards


@dataclass(frozen=True)
class ShippedModel:
    """A default model: ``network`` trained to undo ``degradation`` at ``scale``."""

    network: str
    degradation: str
    scale: int

    @property
    def name(self) -> str:
        """``<network>-<degradation>-x<scale>``, what ``--model`` and ``from_pretrained`` take."""
        return f"{self.network}-{self.degradation}-x{self.scale}"

    @property
    def weights(self) -> Path:
        return WEIGHTS / f"{self.name}.safetensors"

    @property
    def card(self) -> Path:
        return WEIGHTS / f"{self.name}.md"


# The shipped models: network, degradation, scale (each ships once its weights are in WEIGHTS).
MODELS = (
    ShippedModel("cssfn", "bicubic", 2),
    ShippedModel("cssfn", "kspace", 2),
    ShippedModel("cssfn", "kspace", 3),
    ShippedModel("cssfn", "kspace", 4),
)


def shipped() -> dict[str, ShippedModel]:
    """The models of :data:`MODELS` whose weights are installed, by name."""
    return {m.name: m for m in MODELS if m.weights.is_file()}


def shipped_weights() -> dict[str, Path]:
    """The weights files of the installed default models, by name."""
    return {name: m.weights for name, m in shipped().items()}


def find(name: str) -> ShippedModel:
    """The entry of :data:`MODELS` called ``name``, installed or not."""
    for model in MODELS:
        if model.name == name:
            return model
    names = ", ".join(m.name for m in MODELS)
    raise MRSRError(f"{name}: not a default model ({names}); add it to mrsr.zoo.MODELS first")


def weights_path(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint file a shipped model's name or a path stands for; an error naming both
    kinds when it is neither."""
    weights = shipped_weights()
    path = weights.get(str(name_or_path), Path(name_or_path))
    if not path.exists():
        names = ", ".join(sorted(weights)) or "none yet"
        raise MRSRError(f"{name_or_path}: neither a checkpoint file nor a shipped model ({names})")
    return path


def default(scale: int, degradation: str = degradations.DEFAULT) -> ShippedModel:
    """The shipped default model for ``scale`` and ``degradation`` (the first of
    :data:`MODELS` that fits)."""
    found = (m for m in shipped().values() if (m.scale, m.degradation) == (scale, degradation))
    model = next(found, None)
    if model is None:
        raise MRSRError(
            f"no default model ships for {degradation} x{scale} yet; pass --model CHECKPOINT, "
            f"or a network or baseline name ({', '.join(networks.available())})"
        )
    return model


def covering(scale: int, degradation: str = degradations.DEFAULT) -> ShippedModel:
    """The shipped model for ``degradation`` of the smallest scale at or above ``scale`` (the
    largest when none is)."""
    models = sorted(
        (m for m in shipped().values() if m.degradation == degradation), key=lambda m: m.scale
    )
    if not models:
        raise MRSRError(f"no default model ships for {degradation} yet; pass --model CHECKPOINT")
    return next((m for m in models if m.scale >= scale), models[-1])
