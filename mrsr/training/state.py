"""Training state (optimizer, scheduler, step, RNG, EMA) in one safetensors file, never pickled.

Nested dicts and lists of tensors and plain values are split into the tensors (safetensors) and
a JSON skeleton (the file's metadata) in which each tensor is ``{"__tensor__": key}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from mrsr.errors import MRSRError
from mrsr.files import atomic_write

__all__ = ["load_state", "save_state"]


def _split(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_split(k, tensors, f"{path}.k{i}"), _split(v, tensors, f"{path}.{i}")]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, (list, tuple)):
        return [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {_join(k, tensors): _join(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_state(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically (a kill leaves the previous state file intact)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, tensors, "s")
    with atomic_write(path, overwrite=True) as stream:
        stream.write(save(tensors, metadata={"state": json.dumps(skeleton)}))
    return Path(path)


def load_state(path: str | os.PathLike) -> dict:
    """Read a state written by :func:`save_state` (keys keep their types: ints stay ints)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            skeleton = json.loads((f.metadata() or {})["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise MRSRError(f"{path}: not a readable mrsr training state ({exc})") from exc
    return _join(skeleton, tensors)
