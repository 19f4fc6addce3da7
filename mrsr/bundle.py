"""MONAI bundles of mrsr models: :func:`export_bundle` writes one, :func:`load_bundle_model` and
:func:`upscale_folder` are what its inference config runs.

A bundle is a folder in the MONAI model-zoo layout::

    configs/metadata.json      versions, task, inputs and outputs, the model's mrsr spec
    configs/inference.json     what MONAI's runner executes (ids bundle_root, dataset_dir,
                               output_dir, ckpt_path, device, overwrite; run)
    configs/logging.conf       the logging MONAI's runner sets up
    models/model.safetensors   the checkpoint, byte for byte: weights and spec, no pickle
    docs/README.md             the model card
    LICENSE                    the weights' license

MONAI's runner (it needs the ``fire`` package) executes it on a folder of volumes::

    python -m monai.bundle run --config_file BUNDLE/configs/inference.json \\
        --bundle_root BUNDLE --dataset_dir IN --output_dir OUT

The config loads the weights through mrsr's safetensors loader (never ``torch.load``) and runs
mrsr's folder runner (:mod:`mrsr.batch`): ``OUT`` then holds what
``mrsr upscale IN OUT --model BUNDLE/models/model.safetensors`` writes, the same voxels, affines
and JSON sidecars, and a rerun skips the finished outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrsr import __version__, degradations, zoo
from mrsr.checkpoint import ModelSpec, load_checkpoint
from mrsr.errors import MRSRError, one_line
from mrsr.files import atomic_files, check_regular, new_folder, read_regular
from mrsr.options import OPTIONS
from mrsr.progress import note

if TYPE_CHECKING:
    from mrsr.pipeline import Pipeline

__all__ = ["WEIGHTS", "export_bundle", "inference_config", "load_bundle_model", "upscale_folder"]

WEIGHTS = "models/model.safetensors"  # the checkpoint's place in a bundle
SCHEMA = (  # the metadata schema MONAI's verify_metadata checks against (it downloads it)
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20240725.json"
)
REQUIRED = ("mrsr", "nibabel", "safetensors")  # what the config's expressions need, with MONAI
LOGGING = """[loggers]
keys=root

[handlers]
keys=console

[formatters]
keys=plain

[logger_root]
level=INFO
handlers=console

[handler_console]
class=StreamHandler
level=INFO
formatter=plain
args=(sys.stdout,)

[formatter_plain]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def export_bundle(
    model: str | os.PathLike, folder: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write ``model`` (a shipped model's name or a ``.safetensors`` checkpoint) as a MONAI
    bundle in ``folder``, all files or none; returns ``folder``.

    The checkpoint is validated first (:func:`mrsr.checkpoint.load_checkpoint`: pickles are
    refused). ``folder`` must not exist, or with ``overwrite`` be empty or a bundle mrsr wrote,
    whose files are then replaced. The layout and how to run it: :mod:`mrsr.bundle`.
    """
    OPTIONS["path"].check(model, "model")
    OPTIONS["path"].check(folder, "folder")
    OPTIONS["overwrite"].check(overwrite, "overwrite")
    folder = Path(folder)
    weights = zoo.weights_path(model)
    spec, network = load_checkpoint(weights)
    shipped = next((m for m in zoo.shipped().values() if _same(m.weights, weights)), None)
    _check_folder(folder, overwrite)
    content = read_regular(weights)
    name = shipped.name if shipped else weights.stem
    sha256 = hashlib.sha256(content).hexdigest()
    metadata = _metadata(spec, network, name, shipped is not None, sha256)
    has_card = shipped is not None and shipped.card.is_file()
    card = shipped.card.read_text("utf-8") if has_card else _card(spec, name)
    files = {
        "configs/metadata.json": _json(metadata),
        "configs/inference.json": _json(inference_config()),
        "configs/logging.conf": LOGGING.encode(),
        WEIGHTS: content,
        "docs/README.md": (card.rstrip() + "\n\n" + _running(name)).encode(),
        "LICENSE": _license(name, shipped is not None).encode(),
    }
    with contextlib.ExitStack() as folders:
        for sub in ("", "configs", "models", "docs"):
            folders.enter_context(new_folder(folder / sub))
        with atomic_files() as new:
            for path, data in files.items():
                new(folder / path, overwrite).write(data)
    if shipped is None:
        note(one_line(f"{folder / 'LICENSE'}: states no license; put the weights' in it to share"))
    return folder


def inference_config() -> dict[str, Any]:
    """The bundle's ``configs/inference.json``: the ids MONAI users override on the command
    line, the mrsr pipeline loaded from the bundle's weights, and ``run``."""
    return {
        "imports": [  # MONAI binds one name per import
            "$from mrsr.bundle import load_bundle_model",
            "$from mrsr.bundle import upscale_folder",
        ],
        "bundle_root": ".",
        "ckpt_path": f"$@bundle_root + '/{WEIGHTS}'",
        "dataset_dir": "/workspace/data",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "auto",
        "overwrite": False,
        "pipeline": "$load_bundle_model(@ckpt_path, device=@device)",
        "network_def": "$@pipeline.network",
        "run": ["$upscale_folder(@pipeline, @dataset_dir, @output_dir, overwrite=@overwrite)"],
    }


def load_bundle_model(ckpt_path: str | os.PathLike, **settings: Any) -> Pipeline:
    """The :class:`mrsr.Pipeline` of a bundle's weights file (``settings``: its inference
    options, as ``device``), read with mrsr's safetensors loader; a missing file is refused
    with what to pass instead."""
    OPTIONS["path"].check(ckpt_path, "ckpt_path")
    if not check_regular(ckpt_path):
        raise MRSRError(
            f"{one_line(ckpt_path)}: no bundle weights here; run from the bundle's folder or "
            "pass --bundle_root BUNDLE"
        )
    from mrsr.pipeline import Pipeline

    return Pipeline.from_pretrained(ckpt_path, **settings)


def upscale_folder(
    pipe: Pipeline,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
) -> list[Path]:
    """Super-resolve every volume of ``dataset_dir`` (:func:`mrsr.io.list_volumes`) with the
    :class:`mrsr.Pipeline` ``pipe`` into ``output_dir`` (created; its parent must exist), as
    ``mrsr upscale`` does a folder: finished outputs are skipped unless ``overwrite``, each
    output has its JSON sidecar, and one volume that fails does not stop the others (an
    :class:`~mrsr.errors.MRSRError` names them at the end). Returns the outputs written."""
    from mrsr.batch import Job, gather
    from mrsr.outputs import plan_folder, plan_outputs
    from mrsr.pipeline import Pipeline

    if not isinstance(pipe, Pipeline):
        raise MRSRError(f"pipe must be an mrsr.Pipeline, got {type(pipe).__name__}")
    OPTIONS["path"].check(dataset_dir, "dataset_dir")
    OPTIONS["path"].check(output_dir, "output_dir")
    OPTIONS["overwrite"].check(overwrite, "overwrite")
    source, dest = Path(dataset_dir), Path(output_dir)
    if not source.is_dir():
        raise MRSRError(f"{one_line(source)}: no such folder; pass --dataset_dir FOLDER")
    pairs = plan_folder(source, dest, "output_dir")
    with new_folder(dest):  # never left empty
        plan = plan_outputs(pairs, overwrite, skip_finished=True)
        if plan.finished:
            note(f"skipping {len(plan.finished)} finished outputs")
        jobs = [Job(src, (out,)) for src, out in plan.jobs]
        outcomes = []
        for k, outcome in pipe.batch(overwrite=overwrite).each(jobs, plan):
            if isinstance(outcome, MRSRError):  # each one said; gather names how many
                print(f"mrsr: error: {one_line(str(outcome))}", file=sys.stderr)
            elif not isinstance(outcome, BaseException):
                note(one_line(f"{jobs[k].source} -> {outcome}"))
            outcomes.append((k, outcome))
        return gather(outcomes)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _check_folder(folder: Path, overwrite: bool) -> None:
    """Refuse ``folder`` unless it is new, or with ``overwrite`` empty or an mrsr bundle."""
    if not os.path.lexists(folder):
        return
    named = one_line(folder)
    if not overwrite:
        raise MRSRError(
            f"{named}: already exists; pass --overwrite to replace the bundle there, or give "
            "a new folder"
        )
    if folder.is_symlink() or not folder.is_dir():
        raise MRSRError(f"{named}: is not a folder; give a new folder for the bundle")
    if any(folder.iterdir()) and not _is_bundle(folder):
        raise MRSRError(
            f"{named}: is not a bundle mrsr wrote (no configs/metadata.json of mrsr); "
            "--overwrite replaces only those: give a new folder"
        )


def _is_bundle(folder: Path) -> bool:
    path = folder / "configs" / "metadata.json"
    try:
        metadata = json.loads(read_regular(path, limit=1 << 22))
    except (MRSRError, ValueError):
        return False
    return isinstance(metadata, dict) and isinstance(metadata.get("mrsr"), dict)


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return __version__ if package == "mrsr" else "unknown"


def _mrsr_license() -> str:
    """mrsr's license as its installed metadata declares it (setup.cfg's when uninstalled)."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        meta = importlib.metadata.metadata("mrsr")
        return meta.get("License-Expression") or meta["License"]
    return "Apache-2.0"


def _geometry(spec: ModelSpec) -> str:
    s = spec.scale
    origin = (
        "low-resolution voxel i lies at output voxel i*s, so the origin is unchanged"
        if spec.grid == "kspace"
        else "low-resolution voxel i lies at output voxel i*s + (s-1)/2"
    )
    return (
        f"The output has {s} times as many voxels along the two in-plane axes and the same "
        f"number along the slice axis (the NIfTI slice_dim when set, else the one axis whose "
        f"spacing differs from the other two, else the last): the in-plane voxel size is divided "
        f"by {s}, the slice spacing and the direction cosines are kept, and the affine follows "
        f"the {spec.grid} sampling grid ({origin}, s = {s}), so the output overlays the input "
        "in world space."
    )


def _metadata(
    spec: ModelSpec, network: Any, name: str, shipped: bool, sha256: str
) -> dict[str, Any]:
    """``configs/metadata.json``: the keys MONAI's bundle specification and model zoo ask for,
    and under ``mrsr`` the checkpoint's spec."""
    import monai
    import numpy
    import torch

    degradation = degradations.get(spec.degradation).description
    task = f"MR super-resolution: {spec.scale}x finer in-plane voxels, for {degradation}"
    geometry = _geometry(spec)
    doc = (type(network).__doc__ or "").strip().splitlines()
    network_name = doc[0].rstrip(".") if doc else spec.network
    window = f"{spec.normalisation['lower']}th to {spec.normalisation['upper']}th percentile"
    channels = int(getattr(network, "in_channels", 1))
    with torch.inference_mode():  # the output channels, as the network gives them
        out_channels = network(torch.zeros(1, channels, 8, 8)).shape[1]
    slices = _tensor(channels, f"its {window} window mapped to 0-1")
    pred = _tensor(out_channels, f"super-resolved: {spec.scale} times as many rows and columns")
    return {
        "schema": SCHEMA,
        "version": spec.version,
        "changelog": {spec.version: f"exported by mrsr {__version__} from {name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {p: _version(p) for p in REQUIRED},
        "name": f"mrsr {name}",
        "task": task,
        "description": (
            f"{network_name}, a 2D network that mrsr applies slice by slice to every volume of "
            "dataset_dir, writing NIfTI with a JSON sidecar into output_dir. Each volume's "
            f"{window} window is mapped to 0-1 for the network and the output mapped back. "
            f"{geometry} network_data_format describes the network: in-plane slices in, "
            "super-resolved slices out."
        ),
        "authors": "the mrsr developers" if shipped else "not stated",
        "copyright": "the mrsr developers" if shipped else "not stated",
        "intended_use": (
            "Research: finer in-plane voxels for MR volumes acquired like the training data "
            f"({spec.degradation} degradation, x{spec.scale}). Not for diagnostic use; check "
            "outputs against acquired high-resolution data before relying on them."
        ),
        "data_source": ", ".join(spec.info.get("data", {}).get("train", [])) or "not stated",
        "data_type": "nifti",
        "image_classes": "one MR magnitude volume of any size, read as float32 (NIfTI, NRRD, "
        "MHA/MHD or a DICOM series folder)",
        "pred_classes": f"the super-resolved volume, float32. {geometry}",
        "network_data_format": {
            "inputs": {"image": slices},
            "outputs": {"pred": pred},
        },
        "mrsr": {"model": asdict(spec), "source": name, "weights": WEIGHTS, "sha256": sha256},
    }


def _tensor(channels: int, what: str) -> dict[str, Any]:
    """A tensor format of MONAI's bundle specification: ``channels`` in-plane MR slices (adjacent
    ones when several), ``what`` done to each."""
    names = (
        ["an in-plane slice"]
        if channels == 1
        else [f"adjacent slice {c + 1} of {channels}" for c in range(channels)]
    )
    return {
        "type": "image",
        "format": "magnitude",
        "modality": "MR",
        "num_channels": channels,
        "spatial_shape": ["*", "*"],
        "dtype": "float32",
        "value_range": [],
        "is_patch_data": False,
        "channel_def": {str(c): f"{n}, {what}" for c, n in enumerate(names)},
    }


def _card(spec: ModelSpec, name: str) -> str:
    """A card for a checkpoint that ships none: what its spec says."""
    lines = [
        f"# {name}",
        "",
        f"{spec.network.upper()} (options {spec.options}) for {spec.degradation} degradation "
        f"x{spec.scale}, sampling grid `{spec.grid}`. Intensity normalisation: "
        f"{spec.normalisation}. Written by mrsr {spec.version}.",
        "",
        "## What the checkpoint records",
        "",
        "```json",
        json.dumps(spec.info, indent=2),
        "```",
    ]
    return "\n".join(lines)


def _running(name: str) -> str:
    return f"""## Running this bundle

This is a MONAI bundle of the mrsr model `{name}`. MONAI's runner needs `pip install fire`
(or `monai[fire]`) and mrsr installed:

```bash
python -m monai.bundle run --config_file BUNDLE/configs/inference.json \\
    --bundle_root BUNDLE --dataset_dir IN --output_dir OUT [--device cpu] [--overwrite]
```

Every volume of `IN` is super-resolved into `OUT` as `mrsr upscale IN OUT --model
BUNDLE/{WEIGHTS}` does it (same voxels, affines and JSON sidecars; finished outputs are
skipped). The weights are read by mrsr from `{WEIGHTS}` (safetensors), never unpickled.
"""


def _license(name: str, shipped: bool) -> str:
    if shipped:
        return (
            f"The weights in {WEIGHTS} ({name}) ship with mrsr {__version__} and are licensed "
            f"like mrsr under {_mrsr_license()} (https://spdx.org/licenses/{_mrsr_license()}).\n"
            "The volumes they were trained on, each with its license, are listed in "
            "docs/README.md.\n"
        )
    return (
        f"No license was stated for the weights in {WEIGHTS} ({name}) when this bundle was "
        "exported. They belong to whoever trained them: state their license here before "
        f"sharing the bundle. mrsr, which runs them, is licensed under {_mrsr_license()}.\n"
    )
