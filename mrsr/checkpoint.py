"""Model checkpoints: safetensors weights with the model's description in the file's metadata.

One ``.safetensors`` file holds the weights and, under the metadata key ``"mrsr"``, a JSON
:class:`ModelSpec`: network name and options, scale, degradation and sampling grid, intensity
normalisation and library version. Loading never unpickles: pickle-based ``.pt``/``.pth`` files
are refused, since loading them can run arbitrary code.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from mrsr import __version__, degradations
from mrsr.errors import MRSRError, shown
from mrsr.files import atomic_write
from mrsr.geometry import GRIDS
from mrsr.intensity import DEFAULT_NORMALISATION
from mrsr.memory import check_fits
from mrsr.options import NETWORK_OPTIONS, OPTIONS, Option
from mrsr.zoo import shipped_weights, weights_path

__all__ = ["ModelSpec", "load_checkpoint", "save_checkpoint", "shipped_weights", "weights_path"]

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
FLOAT_TYPES = ("F16", "BF16", "F32", "F64")
MAX_METADATA = 1 << 20  # characters of the JSON description


@dataclass
class ModelSpec:
    """What a set of weights is: enough to rebuild the network and use it correctly."""

    network: str
    scale: int
    options: dict = field(default_factory=dict)
    degradation: str = degradations.DEFAULT
    grid: str = degradations.get(degradations.DEFAULT).grid
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    version: str = __version__
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ValueError(f"unknown sampling grid {self.grid!r}; expected one of {GRIDS}")
        if self.degradation not in degradations.DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.degradation!r}")

    @classmethod
    def create(
        cls,
        network: str,
        scale: int,
        degradation: str = degradations.DEFAULT,
        options: dict | None = None,
        **fields,
    ) -> ModelSpec:
        """A spec whose network samples on ``degradation``'s grid (its ``grid`` option, if any)."""
        from mrsr import networks

        grid = degradations.get(degradation).grid
        options = dict(options or {})
        known = network.lower() in networks.available()
        if known and "grid" in networks.options(network):
            options.setdefault("grid", grid)
        return cls(network.lower(), int(scale), options, degradation, grid, **fields)

    def skeleton(self) -> torch.nn.Module:
        """The network built on the ``meta`` device: every shape, no memory, no weight values."""
        from mrsr.networks import create

        with torch.device("meta"):
            return create(self.network, scale=self.scale, **self.options)

    def build(self) -> torch.nn.Module:
        """The network, untrained, as this spec describes it, once its weights are known to fit
        in memory (else :class:`MRSRError`, before any allocation)."""
        from mrsr.networks import create

        n = sum(t.numel() for t in self.skeleton().state_dict().values())
        check_fits(8 * n, f"{self.network} {shown(self.options)}: a network of {n} weights")
        return create(self.network, scale=self.scale, **self.options)


def save_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, spec: ModelSpec, overwrite: bool = True
) -> Path:
    """Write ``model``'s weights and ``spec`` to one safetensors file, atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path, overwrite=overwrite) as stream:
        # serialised in memory: save_file writes through a temporary of its own (.tmpXXXXXX)
        # that a kill would leave behind
        stream.write(save(state, metadata={"mrsr": json.dumps(asdict(spec))}))
    return Path(path)


def _major(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def _spec_from_metadata(text: str, p: Path) -> ModelSpec:
    """The checkpoint's spec, every field checked against its declared type and range before
    anything is built (a crafted file must not build a 40 GB network)."""
    from mrsr import networks

    if len(text) > MAX_METADATA:
        raise MRSRError(f"{p}: mrsr metadata of {len(text)} characters; not an mrsr checkpoint")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MRSRError(f"{p}: unreadable mrsr metadata ({exc})") from exc
    where = f"{p}: metadata "
    if not isinstance(raw, dict):
        raise MRSRError(f"{where}is not a JSON object")
    unknown = set(raw) - {f.name for f in fields(ModelSpec)}
    if unknown or not {"network", "scale"} <= set(raw):
        raise MRSRError(f"{where}has keys {shown(sorted(raw))}; not an mrsr model description")
    network = raw["network"]
    if not isinstance(network, str) or network.lower() not in networks.available():
        raise MRSRError(f"{where}network {shown(network)} is not one of {networks.available()}")
    OPTIONS["scale"].check(raw["scale"], f"{where}scale")
    for key, kind in (("options", dict), ("normalisation", dict), ("info", dict)):
        if not isinstance(raw.get(key, {}), kind):
            raise MRSRError(f"{where}{key} must be a JSON object")
    for key, value in raw.get("options", {}).items():
        if key not in networks.options(network) or key not in NETWORK_OPTIONS:
            raise MRSRError(f"{where}options.{shown(key)} is not an option of {network}")
        NETWORK_OPTIONS[key].check(value, f"{where}options.{key}")
    if not isinstance(raw.get("version", __version__), str):
        raise MRSRError(f"{where}version must be a string")
    norm = raw.get("normalisation", DEFAULT_NORMALISATION)
    percent = Option(float, 0.0, 100.0)
    if norm.get("kind") != "percentile" or set(norm) != {"kind", "lower", "upper"}:
        raise MRSRError(f"{where}normalisation {shown(norm)} is not a percentile window")
    if percent.check(norm["lower"], f"{where}lower") >= percent.check(norm["upper"], "upper"):
        raise MRSRError(f"{where}normalisation lower must be below upper")
    degradation = raw.get("degradation", degradations.DEFAULT)
    grid = degradations.get(degradation, f"{where}degradation").grid
    for name, value in (
        ("grid", raw.get("grid", grid)),
        ("options.grid", raw.get("options", {}).get("grid", grid)),
    ):
        if value != grid:
            raise MRSRError(
                f"{where}{name} {shown(value)} does not fit {degradation} degradation ({grid})"
            )
    try:
        return ModelSpec(**raw)
    except (TypeError, ValueError) as exc:
        raise MRSRError(f"{where}is invalid ({exc})") from exc


def _check_tensors(f, model: torch.nn.Module, p: Path, network: str) -> None:
    """The file's tensor names, shapes and float types against the network's, read from the
    safetensors header before any weight is materialised."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or extra:
        what = f"missing {shown(missing)}" if missing else f"unexpected {shown(extra)}"
        raise MRSRError(f"{p}: weights do not match network {network!r} ({what})")
    for key, tensor in stored.items():
        if tensor.get_dtype() not in FLOAT_TYPES:
            raise MRSRError(
                f"{p}: weight {shown(key)} is {tensor.get_dtype()}, not floating point; "
                "not weights mrsr wrote"
            )
        if tuple(tensor.get_shape()) != expected[key]:
            raise MRSRError(
                f"{p}: weights do not match network {network!r} ({shown(key)} is "
                f"{tuple(tensor.get_shape())}, the network's is {expected[key]})"
            )


def load_checkpoint(path: str | os.PathLike) -> tuple[ModelSpec, torch.nn.Module]:
    """Read a checkpoint: its spec and the network with the weights loaded (eval mode).

    The spec is validated first, the network built on the ``meta`` device and its size checked
    against the memory available, and the tensors' names, shapes and types compared with the
    file's header; only then are the weights read. Non-finite weights are refused.
    """
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
            if meta is None:
                raise MRSRError(
                    f"{p}: safetensors file without mrsr metadata; not an mrsr checkpoint"
                )
            spec = _spec_from_metadata(meta, p)
            if _major(spec.version) > _major(__version__):
                raise MRSRError(
                    f"{p}: written by mrsr {spec.version}, newer than this mrsr {__version__}; "
                    "upgrade mrsr"
                )
            skeleton = spec.skeleton()
            n = sum(t.numel() for t in skeleton.state_dict().values())
            check_fits(8 * n, f"{p}: a network of {n} weights")
            _check_tensors(f, skeleton, p, spec.network)
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except MRSRError:
        raise
    except (SafetensorError, OSError, ValueError) as exc:
        raise MRSRError(f"{p}: not a readable safetensors checkpoint ({exc})") from exc
    broken = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if broken:
        raise MRSRError(f"{p}: weights {shown(broken)} hold NaN or infinite values")
    model = spec.build()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return spec, model.eval()
