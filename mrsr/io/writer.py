"""Writing volumes: NIfTI with the affine in both sform and qform, the input's header fields
kept where they still hold, and the destination replaced atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from isal import igzip
from monai.data import MetaTensor

from mrsr.errors import MRSRError
from mrsr.files import atomic_files, check_regular
from mrsr.io.inputs import as_values, checked_affine
from mrsr.io.nifti import NiftiReader
from mrsr.options import OPTIONS, check_options
from mrsr.provenance import check_sidecar, short_description, sidecar_path, sidecar_text

__all__ = ["OUTPUT_SUFFIXES", "check_output_name", "save_volume"]

OUTPUT_SUFFIXES = NiftiReader.suffixes
# Header fields carried from the input to the output (still valid after in-plane resampling).
_KEPT_FIELDS = (
    "descrip",
    "xyzt_units",
    "dim_info",
    "intent_code",
    "slice_code",
    "slice_duration",
    "cal_min",
    "cal_max",
)


def check_output_name(path: str | os.PathLike, named: object = None) -> None:
    """Refuse an output not named as NIfTI (``named``: how to call it, else ``path``)."""
    if not Path(path).name.lower().endswith(OUTPUT_SUFFIXES):
        raise MRSRError(f"{named or path}: outputs are NIfTI; name it .nii.gz or .nii")


def _cast(data: np.ndarray, dtype: str) -> np.ndarray:
    target = np.dtype(dtype)
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        return np.clip(np.rint(data), info.min, info.max).astype(target)
    return data.astype(target, copy=False)


def _image(data: np.ndarray, affine: np.ndarray, meta: Mapping, dtype: str) -> nib.Nifti1Image:
    """The NIfTI image of ``data`` with the input's header fields of ``meta`` kept."""
    if data.ndim == 4:
        data = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    if dtype == "input":
        dtype = meta.get("source_dtype", "float32")
    image = nib.Nifti1Image(_cast(data, dtype), affine)
    header = image.header
    for field in _KEPT_FIELDS:
        if field in meta:
            header[field] = np.asarray(meta[field])
    if "xyzt_units" not in meta:
        header.set_xyzt_units("mm", "sec")
    if meta.get("tr"):
        header["pixdim"][4] = meta["tr"]
    image.set_sform(affine, code=int(np.asarray(meta.get("sform_code", 0))) or 1)
    image.set_qform(affine, code=int(np.asarray(meta.get("qform_code", 0))) or 1)
    return image


def save_volume(
    volume: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    affine: np.ndarray | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    provenance: Mapping | None = None,
) -> Path:
    """Write ``volume`` ``(C, X, Y, Z)`` (or ``(X, Y, Z)``) as NIfTI, atomically.

    The affine (``volume.affine`` for a MetaTensor unless given) goes into both sform and qform
    (the qform holds its closest rigid approximation for a sheared affine). The input's q/sform
    codes, description, units, slice and TR fields are kept when ``volume`` carries them in its
    meta (units stay unknown if the input said so; mm and s are written only for inputs that
    had none). ``dtype="input"`` writes the source file's data type, rounded and clipped.
    ``provenance`` (:func:`mrsr.provenance.record`) replaces ``descrip`` by a summary of what
    was done and is written in full to the JSON sidecar. Both are written whole to temporaries
    first, the sidecar renamed into place just before the volume: a failure leaves neither.
    Arguments are checked first (:func:`as_values`, :func:`checked_affine`, the option table).
    """
    check_options({"path": path, "dtype": dtype, "overwrite": overwrite}, OPTIONS, "")
    if affine is None and not isinstance(volume, MetaTensor):
        raise MRSRError("affine is needed to save a bare array or tensor (affine=...)")
    affine = checked_affine(volume.affine if affine is None else affine)
    data = as_values(volume, "volume", dtype=None).numpy()
    check_output_name(path)
    if check_regular(path) and not overwrite:
        raise MRSRError(f"{path}: already exists; pass --overwrite to replace it")
    if provenance is not None:
        check_sidecar(path, overwrite)
    image = _image(data, affine, volume.meta if isinstance(volume, MetaTensor) else {}, dtype)
    if provenance is not None:
        image.header["descrip"] = short_description(provenance).encode("ascii")
    with atomic_files() as new:
        if provenance is not None:  # checked above: a missing or mrsr sidecar, or overwrite
            with new(sidecar_path(path), overwrite=True) as stream:
                stream.write(sidecar_text(provenance).encode("utf-8"))
        with new(path, overwrite) as stream:
            if Path(path).name.lower().endswith(".gz"):
                # ISA-L's deflate: six times faster than nibabel's zlib at level 1, as small a file.
                # No time or (temporary) file name in the gzip header: same volume, same bytes.
                with igzip.IGzipFile(filename="", mode="wb", fileobj=stream, mtime=0) as gz:
                    image.to_stream(gz)
            else:
                image.to_stream(stream)
    return Path(path)
