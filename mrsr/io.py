"""Volume I/O: NIfTI via nibabel; DICOM series, NRRD and MHA via SimpleITK.

Every reader returns a channel-first :class:`monai.data.MetaTensor` ``(C, X, Y, Z)`` of float32
whose ``affine`` maps voxel indices to RAS world millimetres, exactly as in the file. Writers
produce NIfTI with the affine in both sform and qform, and replace the destination atomically.

>>> from mrsr.io import load_volume, sample_path
>>> load_volume(sample_path()).shape
torch.Size([1, 180, 216, 24])
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from isal import igzip
from monai.data import MetaTensor

from mrsr.errors import MRSRError, shown
from mrsr.files import atomic_files, check_regular
from mrsr.memory import check_fits
from mrsr.options import OPTIONS, check_options
from mrsr.probe import VolumeInfo, failure_reason, nifti_affine, probe_volume
from mrsr.provenance import check_sidecar, short_description, sidecar_path, sidecar_text

__all__ = [
    "as_volume",
    "checked_volume",
    "inspect_volume",
    "is_volume_path",
    "load_volume",
    "sample_path",
    "save_volume",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK/GDCM warnings: errors raise anyway
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


def sample_path() -> Path:
    """Path of the bundled sample: an axial slab of the Colin27 T1 volume (see mrsr/data)."""
    return Path(str(resources.files("mrsr") / "data" / "sample_t1.nii.gz"))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_volume_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a volume file this module reads (by suffix) or a DICOM folder."""
    p = Path(path)
    return _suffix(p) in NIFTI_SUFFIXES + SITK_SUFFIXES or (p.is_dir() and _is_dicom_dir(p))


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _is_dicom_dir(path: Path) -> bool:
    """A folder holding DICOM files (judged by the first few, by their 'DICM' preamble)."""
    files = [p for p in sorted(path.iterdir())[:16] if p.is_file()]
    return any(_is_dicom_file(p) for p in files)


def _source_dtype(image: nib.Nifti1Image) -> str:
    proxy = image.dataobj  # nibabel moves scl_slope/scl_inter from the header to the proxy
    scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
    return "float32" if scaled else np.dtype(image.get_data_dtype()).newbyteorder("=").name


def _volume(data: np.ndarray, affine: np.ndarray, path: Path, **meta: Any) -> MetaTensor:
    """Channel-first ``data`` as float32 with its RAS ``affine`` and the reader's ``meta``."""
    meta.update(
        affine=torch.as_tensor(affine),
        original_affine=affine,
        spatial_shape=np.asarray(data.shape[1:4]),
        filename_or_obj=str(path),
        space="RAS",
    )
    return MetaTensor(torch.from_numpy(data.astype(np.float32, copy=False)), meta=meta)


def _load_nifti(path: Path) -> MetaTensor:
    image = nib.load(str(path))
    header = image.header
    affine, code = nifti_affine(header, path)
    data = np.ascontiguousarray(image.get_fdata(dtype=np.float32))  # scl_slope/inter applied
    data = data[None] if data.ndim < 4 else np.moveaxis(data, -1, 0)  # series: last axis as C
    fields = dict(header.as_byteswapped("<") if header.endianness == ">" else header)
    # the output holds this one affine in both forms, so both keep the code it came with
    fields.update(sform_code=code, qform_code=code)
    return _volume(
        data,
        affine,
        path,
        **fields,
        source_dtype=_source_dtype(image),
        tr=float(header["pixdim"][4]),
    )


def _load_sitk(path: Path, files: list[Path]) -> MetaTensor:
    if path.is_dir() and len(files) > 1:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        image = reader.Execute()
    else:  # a series of one file may hold every slice (multi-frame): read it as a volume
        image = sitk.ReadImage(str(files[0] if path.is_dir() else path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MRSRError(f"{path}: expected a 3D scalar volume, got {image.GetDimension()}D")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    affine = _LPS_TO_RAS @ lps
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return _volume(array[None], affine, path, source_dtype=np.dtype(array.dtype).name)


def checked_volume(volume: MetaTensor, path: str | os.PathLike) -> MetaTensor:
    """``(C, X, Y, Z)`` whatever the file's rank, with a usable affine and finite voxels."""
    data = volume.as_tensor()
    if data.ndim == 3:  # a 2D image: a volume of one slice
        data = data[..., None]
    if data.ndim == 5 and data.shape[-1] == 1:  # NIfTI (X, Y, Z, 1, C): components as channels
        data = data[..., 0]
    if data.ndim != 4:
        raise MRSRError(
            f"{path}: a {data.ndim - 1}D image with {data.shape[0]} channels is not supported; "
            "give 2D, 3D or 4D (a series of 3D volumes) data"
        )
    affine = np.asarray(volume.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise MRSRError(f"{path}: the affine holds NaN or infinite values; fix the geometry")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MRSRError(f"{path}: the affine is singular (a zero voxel size?); fix the header")
    bad = int((~torch.isfinite(data)).sum())
    if bad:
        raise MRSRError(f"{path}: {bad} voxels are NaN or infinite; replace them (e.g. by 0)")
    return volume if data is volume.as_tensor() else MetaTensor(data, meta=dict(volume.meta))


def _kind(path: Path) -> str:
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES and path.is_file():
        return "nifti"
    if suffix in SITK_SUFFIXES and path.is_file():
        return "sitk"
    if path.is_dir() and _is_dicom_dir(path):
        return "dicom"
    if not path.exists():
        raise MRSRError(f"{path}: no such file or folder")
    if not path.is_file() and not path.is_dir():
        raise MRSRError(f"{path}: not a regular file (a device or a pipe?); give a volume file")
    raise MRSRError(
        f"{path}: unsupported format; give a NIfTI (.nii/.nii.gz), NRRD, MHA/MHD file or a "
        "DICOM series folder"
    )


def _reader_failure(path: Path, exc: Exception) -> MRSRError:
    return MRSRError(f"{path}: cannot be read as a volume ({failure_reason(exc)})")


@contextlib.contextmanager
def _quiet_readers() -> Iterator[None]:
    """Readers' own warnings (nibabel's header fixes, NumPy overflow) off stderr: a problem
    reaches the user as one MRSRError line, anything else is the reader's business."""
    logger = logging.getLogger("nibabel")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def inspect_volume(path: str | os.PathLike) -> VolumeInfo:
    """The volume's header facts (:class:`mrsr.probe.VolumeInfo`), checked; no voxel is read.

    Refuses (:class:`MRSRError`) what :mod:`mrsr.probe` lists: data outside a detached header's
    folder, sizes the file cannot hold, non-finite geometry, complex voxels, split DICOM series.
    """
    p = Path(path)
    kind = _kind(p)
    try:
        with _quiet_readers():
            return probe_volume(p, kind)
    except MRSRError:
        raise
    except Exception as exc:  # noqa: BLE001 - any header parser failure is a bad input file
        raise _reader_failure(p, exc) from exc


def read_bytes(info: VolumeInfo) -> int:
    """Estimated peak memory of :func:`load_volume`: the stored array, a copy, float32 twice."""
    return info.voxels * (2 * info.dtype.itemsize + 8)


def load_volume(path: str | os.PathLike) -> MetaTensor:
    """Read a volume as a float32 MetaTensor ``(C, X, Y, Z)`` with its file's RAS affine.

    NIfTI (``.nii``, ``.nii.gz``; scl_slope/scl_inter applied) is read by nibabel and placed
    by its sform when the sform code is set, else by its qform, as nibabel and FSL do
    (:func:`mrsr.probe.nifti_affine` warns when the two disagree); NRRD, MHA/MHD and DICOM
    series folders by SimpleITK (LPS converted to RAS). ``meta["source_dtype"]`` records the
    stored data type for :func:`save_volume`.
    A 2D image becomes one slice ``(1, X, Y, 1)``; a 4D series puts its volumes on ``C``.
    The header is checked first (:func:`inspect_volume`) and the read must fit in memory.
    Volumes with NaN/inf voxels or a singular affine are refused (:class:`MRSRError`).
    """
    p = Path(OPTIONS["path"].check(path, "path"))
    info = inspect_volume(p)
    check_fits(read_bytes(info), f"{p}: reading {info.shape} x {info.channels}")
    try:
        with _quiet_readers():
            volume = _load_nifti(p) if _kind(p) == "nifti" else _load_sitk(p, info.files)
        return checked_volume(volume, p)
    except MRSRError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise _reader_failure(p, exc) from exc


def _cast(data: np.ndarray, dtype: str) -> np.ndarray:
    target = np.dtype(dtype)
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        return np.clip(np.rint(data), info.min, info.max).astype(target)
    return data.astype(target, copy=False)


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
    if not Path(path).name.lower().endswith(NIFTI_SUFFIXES):
        raise MRSRError(f"{path}: outputs are NIfTI; name it .nii.gz or .nii")
    if check_regular(path) and not overwrite:
        raise MRSRError(f"{path}: already exists; pass --overwrite to replace it")
    if provenance is not None:
        check_sidecar(path, overwrite)
    meta = volume.meta if isinstance(volume, MetaTensor) else {}
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
    if provenance is not None:
        header["descrip"] = short_description(provenance).encode("ascii")
    if meta.get("tr"):
        header["pixdim"][4] = meta["tr"]
    image.set_sform(affine, code=int(np.asarray(meta.get("sform_code", 0))) or 1)
    image.set_qform(affine, code=int(np.asarray(meta.get("qform_code", 0))) or 1)
    with atomic_files() as new:
        if provenance is not None:  # checked above: a missing or mrsr sidecar, or overwrite
            with new(sidecar_path(path), overwrite=True) as stream:
                stream.write(sidecar_text(provenance).encode("utf-8"))
        with new(path, overwrite) as stream:
            if _suffix(Path(path)) == ".nii.gz":
                # ISA-L's deflate: six times faster than nibabel's zlib at level 1, as small a file
                with igzip.open(stream, "wb") as gz:
                    image.to_stream(gz)
            else:
                image.to_stream(stream)
    return Path(path)


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
