"""What was done to make a volume: one line in the NIfTI ``descrip`` and a JSON sidecar.

The sidecar sits beside the volume with the same stem (``sub-01_T1w.nii.gz`` ->
``sub-01_T1w.json``, the BIDS convention) and holds the full record: mrsr's version, the
operation and every setting, the source file and its own description, the grids before and
after. Both are written whole to temporaries, then the sidecar is renamed into place just
before the volume: a finished volume always has its sidecar, and a volume that fails leaves none.

>>> short_description({"mrsr_version": "0.4", "operation": "upscale", "model": "m", "scale": 2})
'mrsr 0.4 upscale m x2'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mrsr import __version__

FACTS = "mrsr_facts"  # meta key: what a step measured about its result, for the record
SIDECAR = "sidecar"  # record key: further top-level keys of the JSON sidecar

__all__ = [
    "add_facts",
    "check_sidecar",
    "is_ours",
    "record",
    "short_description",
    "sidecar_path",
    "sidecar_text",
    "through_plane_settings",
]

DESCRIP_BYTES = 80  # the NIfTI-1 header's descrip field


def sidecar_path(path: str | os.PathLike) -> Path:
    """``x.nii.gz`` / ``x.nii`` -> ``x.json`` beside it (:func:`mrsr.io.volume_stem`)."""
    from mrsr.io.formats import volume_stem  # here: mrsr.io.writer imports this module

    return Path(path).with_name(volume_stem(path) + ".json")


def _grid(volume: Any) -> dict:
    affine = np.asarray(volume.affine, dtype=np.float64)
    return {
        "shape": [int(n) for n in volume.shape[1:]],
        "voxel_size_mm": [round(float(v), 6) for v in np.linalg.norm(affine[:3, :3], axis=0)],
    }


def add_facts(volume: Any, facts: Mapping[str, Any]) -> None:
    """Note in ``volume``'s meta what the step that made it measured or decided (whether it was
    clamped at 0, how consistent it is with its input); :func:`record` writes them."""
    volume.meta[FACTS] = {**volume.meta.get(FACTS, {}), **facts}


def record(operation: str, source: Any, result: Any, **settings: Any) -> dict:
    """The provenance of ``result`` made from the volume ``source`` (MetaTensors) by
    ``operation`` with ``settings`` (model, scale, precision, ...) and the facts its steps
    noted (:func:`add_facts`)."""
    meta = getattr(source, "meta", {})
    descrip = meta.get("descrip", b"")
    descrip = bytes(np.asarray(descrip).tobytes()).rstrip(b"\0").decode("latin-1", "replace")
    name = meta.get("filename_or_obj")
    return {
        "operation": operation,
        "mrsr_version": __version__,
        **{k: v for k, v in settings.items() if v is not None},
        **getattr(result, "meta", {}).get(FACTS, {}),
        "source": Path(str(name)).name if name else None,
        "source_description": descrip or None,
        "input_grid": _grid(source),
        "output_grid": _grid(result),
    }


def through_plane_settings(
    *,
    steps: int | None,
    max_time_s: float | None,
    thickness_mm: float | None,
    profile: str | None,
) -> dict[str, Any]:
    """The settings of a through-plane step, under the same keys in every command's record:
    the training ``steps`` asked for, the time cap (``None``: none), and the slice thickness and
    profile as given. What the step did (steps trained, whether the cap cut them short, the
    seed, the profile trained for) are the facts it notes
    (:func:`mrsr.throughplane.super_resolve_through_plane`)."""
    return {
        "through_plane_steps": steps,
        "through_plane_max_time_s": max_time_s,
        "slice_thickness_mm": thickness_mm,
        "slice_profile": profile,
    }


def short_description(rec: Mapping) -> str:
    """The record in at most 80 bytes, for the NIfTI ``descrip`` field."""
    parts = [f"mrsr {rec.get('mrsr_version', __version__)}", str(rec.get("operation", ""))]
    if rec.get("model"):
        parts.append(str(rec["model"]))
    if rec.get("scale"):
        parts.append(f"x{rec['scale']}")
    if rec.get("precision"):  # which ran, fp32 included (auto chooses per machine)
        parts.append(str(rec["precision"]))
    if rec.get("output_grid") and rec.get("grid_plan"):
        size = rec["output_grid"].get("voxel_size_mm")
        if size:
            parts.append("to " + "x".join(f"{v:.3g}" for v in size) + "mm")
    if rec.get("data_consistency"):
        parts.append(f"dc{rec['data_consistency']:g}")
    text = " ".join(parts).encode("ascii", "replace")[:DESCRIP_BYTES]
    return text.decode("ascii")


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a sidecar mrsr wrote (safe to replace when its volume is missing)."""
    from mrsr.errors import MRSRError
    from mrsr.files import read_regular

    try:
        content = json.loads(read_regular(path, 1 << 20))
    except (MRSRError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(content, dict) and "mrsr_version" in content.get("mrsr", {})


def check_sidecar(path: str | os.PathLike, overwrite: bool) -> Path:
    """The sidecar path of the volume ``path``, refused (:class:`MRSRError`) when it is a
    folder, a link, a pipe or a device, or a file mrsr did not write and ``overwrite`` is not
    given (an mrsr sidecar whose volume is missing, left by a failed run, is replaced)."""
    from mrsr.errors import MRSRError, one_line
    from mrsr.files import check_regular

    target = sidecar_path(path)
    if target.is_dir():
        raise MRSRError(f"{one_line(target)}: the sidecar's name is a folder; rename it")
    if check_regular(target) and not overwrite and not is_ours(target):
        raise MRSRError(
            f"{one_line(target)}: exists and is not an mrsr sidecar; pass --overwrite to "
            "replace it, or choose another output name"
        )
    return target


def sidecar_text(rec: Mapping) -> str:
    """The sidecar's JSON of the record ``rec``: BIDS keys, the record under ``mrsr``; the
    keys of ``rec[SIDECAR]`` (a BIDS derivative's metadata, :mod:`mrsr.derivatives`) on top."""
    content = {
        "Description": short_description(rec),
        "Sources": [rec["source"]] if rec.get("source") else [],
        **rec.get(SIDECAR, {}),
        "mrsr": {key: value for key, value in rec.items() if key != SIDECAR},
    }
    return json.dumps(content, indent=2, default=str) + "\n"
