"""What the Python API takes as a volume: paths, nibabel images, MetaTensors, arrays and
tensors with an affine, checked and turned into mrsr's float32 MetaTensor ``(C, X, Y, Z)``."""

from __future__ import annotations

import os
import warnings
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from mrsr.errors import MRSRError, shown
from mrsr.io.load import checked_volume, load_volume

__all__ = ["as_values", "as_volume", "checked_affine"]

_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


def as_values(
    x: Any, name: str, dtype: torch.dtype | None = torch.float32, mask: bool = False
) -> torch.Tensor:
    """The values of ``x``, a NumPy array or torch tensor, as a CPU tensor of ``dtype`` (``None``:
    its own); :class:`MRSRError` naming ``name`` for what holds no image: complex values (give
    the magnitude, ``np.abs``), booleans (unless ``mask``), non-numbers, no voxels, a tensor on
    the ``meta`` device. A tensor that requires grad is detached; one on a GPU is copied."""
    if isinstance(x, torch.Tensor):
        values = (x.as_tensor() if isinstance(x, MetaTensor) else x).detach()
        if values.device.type == "meta":
            raise MRSRError(f"{name} is on the meta device and holds no values; give real data")
        if values.is_complex():
            kind = "c"
        elif values.dtype == torch.bool:
            kind = "b"
        else:
            kind = "f" if values.is_floating_point() else "i"
    elif isinstance(x, np.ndarray):
        kind, values = x.dtype.kind, x
    else:
        raise MRSRError(f"{name} must be a NumPy array or torch tensor, got {type(x).__name__}")
    if kind == "c":
        raise MRSRError(f"{name} holds complex values; give the magnitude image (np.abs({name}))")
    if kind == "b" and not mask:
        raise MRSRError(
            f"{name} is boolean (a mask?); give image intensities, e.g. {name}.astype(np.float32)"
        )
    if kind not in "biuf":
        raise MRSRError(f"{name} holds {x.dtype} values, not numbers; give a numeric array")
    if 0 in values.shape:
        raise MRSRError(f"{name} is empty (shape {tuple(values.shape)}); give a volume with voxels")
    if isinstance(values, np.ndarray):
        values = torch.as_tensor(
            np.require(values, _FLOATS.get(dtype, values.dtype.newbyteorder("=")), "C")
        )
    return values.to("cpu", dtype or values.dtype)


def checked_affine(affine: Any, name: str = "affine") -> np.ndarray:
    """``affine`` as a float64 4x4 voxel-to-world matrix (mm): finite, last row ``0 0 0 1``,
    not singular; else :class:`MRSRError` naming ``name``."""
    if isinstance(affine, torch.Tensor):
        affine = affine.detach().cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        try:
            matrix = np.asarray(affine, dtype=np.float64)
        except (TypeError, ValueError, np.exceptions.ComplexWarning):
            matrix = None
    if matrix is None or matrix.shape != (4, 4):
        got = f"shape {matrix.shape}" if matrix is not None and matrix.ndim else shown(affine)
        raise MRSRError(f"{name} must be a 4x4 voxel-to-world matrix (mm), got {got}")
    if not np.isfinite(matrix).all():
        raise MRSRError(f"{name} holds NaN or infinite values; give a finite 4x4 matrix")
    if not np.array_equal(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise MRSRError(f"{name} must end in the row 0 0 0 1, got {matrix[3].tolist()}")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise MRSRError(f"{name} is singular (a zero voxel size?); give a voxel-to-world matrix")
    return matrix


def _dtype_name(values: np.ndarray | torch.Tensor) -> str | None:
    """The NumPy name of an array's data type, for ``meta["source_dtype"]`` (None: no NumPy
    type, e.g. bfloat16)."""
    name = str(values.dtype).removeprefix("torch.")
    return np.dtype(name).name if name in np.sctypeDict else None


# How each dimensionality becomes (C, X, Y, Z): arrays and images, and MetaTensors.
_SERIES = {
    2: ("(X, Y)", lambda v: v[None, ..., None]),
    3: ("(X, Y, Z)", lambda v: v[None]),
    4: ("(X, Y, Z, T)", lambda v: v.movedim(-1, 0)),
}
_CHANNEL_FIRST = {**_SERIES, 4: ("channel-first (C, X, Y, Z)", lambda v: v)}


def as_volume(x: Any, affine: Any = None, name: str = "x") -> MetaTensor:
    """A checked float32 MetaTensor ``(C, X, Y, Z)`` from anything the API takes as a volume:
    a path (``str`` or ``pathlib.Path``: :func:`load_volume`), a nibabel image, a MetaTensor
    (``(X, Y, Z)``, or channel-first ``(C, X, Y, Z)``), or a NumPy array or torch tensor with
    its ``affine`` (4x4 voxel-to-world, mm): ``(X, Y)`` (one slice), ``(X, Y, Z)`` or
    ``(X, Y, Z, T)`` (a series, one channel per volume).

    A tensor that requires grad is detached (the input is not changed), one on a GPU copied to
    the CPU. Refused with :class:`MRSRError` naming ``name`` (or ``affine``): other types
    (``bytes`` paths included), ``affine=`` with anything that carries its own, other
    dimensions, no voxels, complex, boolean or non-numeric values (:func:`as_values`), NaN or
    infinite voxels, and affines that are not finite, invertible 4x4 matrices
    (:func:`checked_affine`). ``meta["source_dtype"]`` records the input's data type.
    """
    if isinstance(x, (str, os.PathLike)):
        _no_affine(affine, name)
        return load_volume(x)
    meta: dict[str, Any] = {}
    if isinstance(x, nib.spatialimages.SpatialImage):
        _no_affine(affine, name)
        if isinstance(x, nib.Nifti1Image):
            meta["intent_code"] = x.header["intent_code"]
        data, affine, where, layouts = np.asanyarray(x.dataobj), x.affine, f"{name}.affine", _SERIES
        if data.ndim == 5 and data.shape[3] == 1:  # NIfTI (X, Y, Z, 1, C): vector components
            data = data[:, :, :, 0]
    elif isinstance(x, MetaTensor):
        _no_affine(affine, name)
        meta.update(x.meta)
        data, affine, where, layouts = x, x.affine, f"{name}.affine", _CHANNEL_FIRST
        name = x.meta.get("filename_or_obj") or name
    elif isinstance(x, (np.ndarray, torch.Tensor)):
        if affine is None:
            raise MRSRError(
                f"{name} is a bare array: give its voxel-to-world matrix (affine=...), or pass a "
                "file, nibabel image or MetaTensor"
            )
        data, where, layouts = x, "affine", _SERIES
    else:
        hint = "; decode a bytes path with os.fsdecode()" if isinstance(x, bytes) else ""
        raise MRSRError(
            f"{name} must be a path (str or pathlib.Path), a nibabel image, a MetaTensor, or a "
            f"NumPy array or torch tensor with affine=, got {type(x).__name__}{hint}"
        )
    meta.setdefault("source_dtype", _dtype_name(data))
    values = as_values(data, name)
    if values.ndim not in layouts:
        *some, last = (shape for shape, _ in layouts.values())
        raise MRSRError(f"{name} has shape {tuple(values.shape)}; give {', '.join(some)} or {last}")
    meta["affine"] = torch.as_tensor(checked_affine(affine, where))
    return checked_volume(MetaTensor(layouts[values.ndim][1](values), meta=meta), name)


def _no_affine(affine: Any, name: str) -> None:
    if affine is not None:
        raise MRSRError(
            f"affine is only for a bare array or tensor; {name} carries its own (leave out affine=)"
        )
