"""Training configuration: YAML files, ``--set key=value`` overrides, validation by key name.

Every key and its default is in :data:`DEFAULTS`; ``pipelines/README.md`` documents them. The
``model`` section takes ``name`` plus any constructor option of that network. Relative data
paths and ``output_dir`` are resolved against the config file's folder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mrsr import networks
from mrsr.errors import MRSRError

__all__ = ["DEFAULTS", "load_config", "resolve_config"]

DEFAULTS: dict[str, Any] = {
    "data": {"train": None, "val": None, "contrast": None},
    "degradation": {"method": "kspace", "scale": 2, "noise": 0.0},
    "augment": {"hr_noise": 0.0, "gamma": 0.0, "lowpass": 0.0},
    "model": {"name": "cssfn"},
    "train": {
        "max_steps": 1000,
        "batch_size": 16,
        "patch_size": 24,
        "lr": 1e-4,
        "lr_step": 200_000,
        "lr_gamma": 0.5,
        "seed": 0,
        "val_every": 500,
        "log_every": 50,
        "device": "cpu",
        "num_workers": 0,
        "grad_clip": None,
        "ema": None,
        "precision": "fp32",
        "loss": "l1",
    },
    "output_dir": "runs/mrsr",
}
CHOICES = {
    ("degradation", "method"): ("kspace", "bicubic"),
    ("train", "precision"): ("fp32", "bf16"),
    ("train", "loss"): ("l1", "l2"),
}
NUMBER = (int, float)


def _set(cfg: dict, dotted: str, value: Any, origin: str) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise MRSRError(f"{origin}: config key {dotted!r} is unknown")
        node = node[part]
    node[leaf] = value


def _check_types(cfg: Mapping, defaults: Mapping, origin: str, prefix: str = "") -> None:
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            if prefix == "model.":
                continue  # network options are checked against the network's constructor
            known = ", ".join(f"{prefix}{k}" for k in defaults)
            raise MRSRError(f"{origin}: config key {name!r} is unknown (known: {known})")
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise MRSRError(f"{origin}: config key {name!r} must be a section")
            _check_types(value, default, origin, f"{name}.")
        elif value is not None and default is not None:
            expected = NUMBER if isinstance(default, float) else type(default)
            if isinstance(value, bool) != isinstance(default, bool) or not isinstance(
                value, expected
            ):
                raise MRSRError(
                    f"{origin}: config key {name!r} must be {type(default).__name__}, got {value!r}"
                )


def _merge(base: dict, update: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_config(
    raw: Mapping, overrides: Sequence[str] = (), origin: str = "config", base: Path | None = None
) -> dict:
    """Defaults + ``raw`` + ``key=value`` overrides, validated; paths made absolute."""
    cfg = _merge(DEFAULTS, raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise MRSRError(f"--set {item!r}: expected key=value")
        _set(cfg, key.strip(), yaml.safe_load(text), f"--set {key.strip()}")
    _check_types(cfg, DEFAULTS, origin)
    for (section, key), choices in CHOICES.items():
        if cfg[section][key] not in choices:
            raise MRSRError(f"{origin}: {section}.{key} must be one of {choices}")
    name = str(cfg["model"]["name"])
    if name.lower() not in networks.available():
        raise MRSRError(f"{origin}: model.name {name!r} is not one of {networks.available()}")
    for key in cfg["model"]:
        if key == "scale" and cfg["model"][key] != cfg["degradation"]["scale"]:
            raise MRSRError(
                f"{origin}: model.scale {cfg['model'][key]} disagrees with degradation.scale "
                f"{cfg['degradation']['scale']}; set the scale once, in degradation.scale"
            )
        if key not in ("name", "scale") and key not in networks.options(name):
            raise MRSRError(f"{origin}: config key 'model.{key}' is not an option of {name}")
    cfg["model"].pop("scale", None)
    if cfg["degradation"]["scale"] < 2:
        raise MRSRError(f"{origin}: degradation.scale must be an integer >= 2")
    if cfg["data"]["train"] is None:
        raise MRSRError(f"{origin}: data.train is missing (a folder, a glob or a list file)")
    base = base or Path.cwd()
    for key in ("train", "val"):
        value = cfg["data"][key]
        if value is not None:
            items = [value] if isinstance(value, str) else list(value)
            cfg["data"][key] = [str(base / os.path.expanduser(str(v))) for v in items]
    cfg["output_dir"] = str(base / os.path.expanduser(cfg["output_dir"]))
    return cfg


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict:
    """Read a YAML config file and resolve it (see :func:`resolve_config`)."""
    p = Path(path)
    if not p.is_file():
        raise MRSRError(f"{p}: no such config file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise MRSRError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, Mapping):
        raise MRSRError(f"{p}: a config is a mapping of sections")
    return resolve_config(raw, overrides, str(p), p.resolve().parent)
