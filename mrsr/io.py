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
import glob
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from isal import igzip
from monai.data import MetaTensor

from mrsr.errors import MRSRError
from mrsr.memory import check_fits
from mrsr.probe import VolumeInfo, failure_reason, nifti_affine, probe_volume
from mrsr.provenance import check_sidecar, short_description, write_sidecar

__all__ = [
    "as_volume",
    "atomic_path",
    "checked_volume",
    "inspect_volume",
    "is_volume_path",
    "load_volume",
    "remove_stale_temporaries",
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
    p = Path(path)
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    A kill at any moment leaves either the old file or the new one, never a partial file. The
    temporary name keeps the suffix (``.nii.gz`` decides compression in nibabel).
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise MRSRError(f"{target}: already exists; pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise MRSRError(f"{target.parent}: output folder does not exist")
    suffix = _suffix(target) or target.suffix
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent
        )
    except OSError as exc:
        raise MRSRError(f"{target.parent}: cannot write here ({exc.strerror})") from exc
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; outputs get the usual mode
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(
    path: str | os.PathLike, keep: Callable[[Path], bool] = lambda p: False
) -> None:
    """Delete temporaries that a killed :func:`atomic_path` left beside ``path`` (not ``keep``)."""
    target = Path(path)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp*"):
        if not keep(stale):
            stale.unlink(missing_ok=True)


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
    was done and is written in full to the JSON sidecar, before the volume.
    """
    if not Path(path).name.lower().endswith(NIFTI_SUFFIXES):
        raise MRSRError(f"{path}: outputs are NIfTI; name it .nii.gz or .nii")
    if Path(path).exists() and not overwrite:
        raise MRSRError(f"{path}: already exists; pass --overwrite to replace it")
    if provenance is not None:
        check_sidecar(path, overwrite)
    meta = volume.meta if isinstance(volume, MetaTensor) else {}
    if affine is None:
        if not isinstance(volume, MetaTensor):
            raise ValueError("an affine is needed to save a plain array")
        affine = volume.affine
    affine = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
    data = torch.as_tensor(volume).detach().cpu().numpy()
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
    if provenance is not None:
        write_sidecar(path, provenance)
    with atomic_path(path, overwrite=overwrite) as tmp:
        if tmp.name.endswith(".gz"):
            # ISA-L's deflate: six times faster than nibabel's zlib at level 1, as small a file
            with igzip.open(tmp, "wb") as stream:
                image.to_stream(stream)
        else:
            nib.save(image, str(tmp))
    return Path(path)


def as_volume(x: Any, affine: np.ndarray | None = None) -> MetaTensor:
    """A channel-first MetaTensor from a path, nibabel image, MetaTensor, or array + affine.

    3D inputs get a channel axis; 4D MetaTensors are taken as channel-first already, 4D arrays
    and images as (X, Y, Z, T) series.
    """
    if isinstance(x, (str, os.PathLike)):
        return load_volume(x)
    if isinstance(x, nib.spatialimages.SpatialImage):
        data = np.asarray(x.dataobj, dtype=np.float32)
        return as_volume(data, x.affine)
    if isinstance(x, MetaTensor):
        volume = x if x.ndim == 4 else MetaTensor(x.as_tensor()[None], meta=dict(x.meta))
        return checked_volume(volume, volume.meta.get("filename_or_obj", "input volume"))
    if affine is None:
        raise ValueError("an array needs its affine: pipe(array, affine=...)")
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if data.ndim == 2:
        data = data[..., None]
    data = data[None] if data.ndim == 3 else data.movedim(-1, 0)
    volume = MetaTensor(data, affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)))
    return checked_volume(volume, "input array")
