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

from mrsr import degradations, networks
from mrsr.checkpoint import ModelSpec
from mrsr.errors import MRSRError, shown
from mrsr.options import NETWORK_OPTIONS, OPTIONS, check_options
from mrsr.zoo import shipped_weights

__all__ = ["DEFAULTS", "load_config", "model_config", "resolve_config"]

# The config keys and their defaults (pipelines/README.md, "Keys"; model.* also takes the options
# of the network).
DEFAULTS: dict[str, Any] = {
    "data": {"train": None, "val": None, "contrast": None, "sites": None},
    "degradation": {"method": degradations.DEFAULT, "scale": 2, "noise": 0.0},
    "augment": {
        "hr_noise": 0.0,
        "gamma": 0.0,
        "lowpass": 0.0,
        "phase": 0.0,
        "coils": 1,
        "partial_fourier": 0.0,
        "lr_from": "coils",
    },
    "model": {"name": "cssfn"},
    "train": {
        "max_steps": 1000,
        "batch_size": 16,
        "patch_size": 24,
        "patches_per_slice": 1,
        "lr": 1e-4,
        "lr_step": 200_000,
        "lr_gamma": 0.5,
        "seed": 0,
        "val_every": 500,
        "log_every": 50,
        "device": "auto",
        "num_workers": 0,
        "degrade_on": "auto",
        "grad_clip": None,
        "ema": None,
        "precision": "fp32",
        "loss": "l1",
        "init": None,
    },
    "output_dir": "runs/mrsr",
}
NUMBER = (int, float)
MAX_CONFIG_BYTES = 1 << 20
MAX_EXTENDS = 8  # configs in one chain of ``extends``
MAX_NODES = 100_000  # YAML nodes after alias expansion: a billion laughs has 10**9


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes ``node`` stands for once every alias is expanded, counted without expanding."""
    if id(node) not in memo:
        memo[id(node)] = 1  # a recursive alias counts once instead of looping
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        memo[id(node)] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[id(node)]


def safe_yaml(text: str, origin: str) -> Any:
    """``yaml.safe_load`` of ``text``, refused when it is large or its aliases expand to more
    than :data:`MAX_NODES` nodes (a "billion laughs" document)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise MRSRError(f"{origin}: {len(text)} characters; a config is at most 1 MB")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise MRSRError(f"{origin}: YAML aliases expand to over {MAX_NODES} values; refused")
        return yaml.safe_load(text)
    except RecursionError:
        raise MRSRError(f"{origin}: YAML nested too deeply; refused") from None
    except yaml.YAMLError as exc:
        raise MRSRError(f"{origin}: not valid YAML ({shown(str(exc).splitlines()[0])})") from exc


def _set(cfg: dict, dotted: str, value: Any, origin: str) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise MRSRError(f"{origin}: config key {shown(dotted)} is unknown")
        node = node[part]
    node[leaf] = value


def _check_types(cfg: Mapping, defaults: Mapping, origin: str, prefix: str = "") -> None:
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            if prefix == "model.":
                continue  # network options are checked against the network's constructor
            known = ", ".join(f"{prefix}{k}" for k in defaults)
            raise MRSRError(f"{origin}: config key {shown(name)} is unknown (known: {known})")
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise MRSRError(f"{origin}: config key {shown(name)} must be a section")
            _check_types(value, default, origin, f"{name}.")
        elif value is not None and default is not None:
            expected = NUMBER if isinstance(default, float) else type(default)
            if isinstance(value, bool) != isinstance(default, bool) or not isinstance(
                value, expected
            ):
                raise MRSRError(
                    f"{origin}: config key {shown(name)} must be {type(default).__name__}, "
                    f"got {shown(value)}"
                )


def _merge(base: dict, update: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _absolute_paths(cfg: dict, base: Path) -> dict:
    """``cfg`` with its relative paths (data, ``output_dir``, ``train.init`` unless a shipped
    model's name) made absolute against ``base``; values of the wrong type are left to the
    checks."""

    def absolute(value: Any) -> Any:
        return str(base / os.path.expanduser(value)) if isinstance(value, str) else value

    data, train = cfg.get("data"), cfg.get("train")
    if isinstance(data, dict):
        for key in ("train", "val"):
            value = data.get(key)
            if isinstance(value, str):
                data[key] = [absolute(value)]
            elif isinstance(value, list):
                data[key] = [absolute(v) for v in value]
        if isinstance(data.get("sites"), str):
            data["sites"] = absolute(data["sites"])
    if "output_dir" in cfg:
        cfg["output_dir"] = absolute(cfg["output_dir"])
    if isinstance(train, dict) and train.get("init") not in (None, *shipped_weights()):
        train["init"] = absolute(train["init"])
    return cfg


def resolve_config(
    raw: Mapping, overrides: Sequence[str] = (), origin: str = "config", base: Path | None = None
) -> dict:
    """Defaults + ``raw`` + ``key=value`` overrides, validated; paths made absolute."""
    cfg = _merge(DEFAULTS, raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise MRSRError(f"--set {item!r}: expected key=value")
        where = f"--set {shown(key.strip())}"
        _set(cfg, key.strip(), safe_yaml(text, where), where)
    _check_types(cfg, DEFAULTS, origin)
    for dotted, option in OPTIONS.items():
        section, dot, key = dotted.partition(".")
        if dot and section in cfg:
            option.check(cfg[section][key], f"{origin}: {dotted}")
    name = cfg["model"]["name"]
    if not isinstance(name, str) or name.lower() not in networks.available():
        raise MRSRError(f"{origin}: model.name {shown(name)} is not one of {networks.available()}")
    for key in cfg["model"]:
        if key == "scale" and cfg["model"][key] != cfg["degradation"]["scale"]:
            raise MRSRError(
                f"{origin}: model.scale {cfg['model'][key]} disagrees with degradation.scale "
                f"{cfg['degradation']['scale']}; set the scale once, in degradation.scale"
            )
        if key not in ("name", "scale") and key not in networks.options(name):
            raise MRSRError(
                f"{origin}: config key {shown(f'model.{key}')} is not an option of {name}"
            )
    cfg["model"].pop("scale", None)
    check_options(
        {k: v for k, v in cfg["model"].items() if k != "name"}, NETWORK_OPTIONS, f"{origin}: model."
    )
    t = cfg["train"]
    if t["batch_size"] % t["patches_per_slice"]:
        raise MRSRError(
            f"{origin}: train.batch_size {t['batch_size']} is not a multiple of "
            f"train.patches_per_slice {t['patches_per_slice']}"
        )
    if cfg["data"]["train"] is None:
        raise MRSRError(f"{origin}: data.train is missing (a folder, a glob or a list file)")
    for key in ("train", "val"):
        value = cfg["data"][key]
        items = [] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise MRSRError(f"{origin}: data.{key} must be a path or a list of paths")
    return _absolute_paths(cfg, base or Path.cwd())


def model_config(
    spec: ModelSpec,
    train: str | list[str],
    val: str | list[str] | None = None,
    output_dir: str | os.PathLike = "runs/mrsr",
    init: str | os.PathLike | None = None,
    train_options: Mapping[str, Any] | None = None,
    origin: str = "config",
) -> dict:
    """The resolved config that trains the network ``spec`` describes (options, scale and
    degradation) on the volumes ``train``, starting from the weights of checkpoint ``init``
    (fine-tuning) or from scratch; ``train_options`` are keys of the ``train`` section."""
    raw = {
        "data": {"train": train, "val": val},
        "degradation": {"method": spec.degradation, "scale": spec.scale},
        "model": {"name": spec.network, **spec.options},
        "train": {"init": None if init is None else str(init), **(train_options or {})},
        "output_dir": str(output_dir),
    }
    return resolve_config(raw, origin=origin)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict:
    """Read a YAML config file and resolve it (see :func:`resolve_config`)."""
    p = Path(path)
    return resolve_config(_read(p, ()), overrides, str(p), p.resolve().parent)


def _read(p: Path, chain: tuple[Path, ...]) -> dict:
    """The mapping in config file ``p``, merged over the file its ``extends`` key names (whose
    relative paths are made absolute against its own folder first)."""
    if not p.is_file():
        raise MRSRError(f"{p}: no such config file")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise MRSRError(f"{p}: {p.stat().st_size} bytes; a config is at most 1 MB")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MRSRError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    raw = safe_yaml(text, str(p)) or {}
    if not isinstance(raw, Mapping):
        raise MRSRError(f"{p}: a config is a mapping of sections")
    raw = dict(raw)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise MRSRError(f"{p}: extends must be the path of another config, got {shown(parent)}")
    here = p.resolve()
    base = (here.parent / os.path.expanduser(parent)).resolve()
    if base in (*chain, here):
        raise MRSRError(f"{p}: extends {shown(parent)} leads back to {base.name}; refused")
    if len(chain) >= MAX_EXTENDS:
        raise MRSRError(f"{p}: more than {MAX_EXTENDS} configs extend one another; refused")
    return _merge(_absolute_paths(_read(base, (*chain, here)), base.parent), raw)
