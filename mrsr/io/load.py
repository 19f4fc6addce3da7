"""Reading volumes: the header first (:func:`inspect_volume`), then the voxels
(:func:`load_volume`), each by the reader the table (:mod:`mrsr.io.formats`) gives for the path."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from mrsr.errors import MRSRError
from mrsr.io.formats import FORMATS, reader_for
from mrsr.io.header import VolumeInfo, unreadable
from mrsr.io.reader import Reader
from mrsr.memory import check_fits
from mrsr.options import OPTIONS

__all__ = ["checked_volume", "inspect_volume", "load_volume", "read_bytes", "sample_path"]


def sample_path() -> Path:
    """Path of the bundled sample: an axial slab of the Colin27 T1 volume (see mrsr/data)."""
    return Path(str(resources.files("mrsr") / "data" / "sample_t1.nii.gz"))


def _reader(path: Path) -> Reader:
    """The reader for ``path``, or why there is none."""
    reader = reader_for(path)
    if reader is not None:
        return reader
    if not path.exists():
        raise MRSRError(f"{path}: no such file or folder")
    if not path.is_file() and not path.is_dir():
        raise MRSRError(f"{path}: not a regular file (a device or a pipe?); give a volume file")
    raise MRSRError(f"{path}: unsupported format; give a {FORMATS}")


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


@contextlib.contextmanager
def _quiet_readers(path: Path) -> Iterator[None]:
    """Readers' own warnings (nibabel's header fixes, NumPy overflow) off stderr: a problem
    reaches the user as one MRSRError line naming ``path``, anything else is the reader's
    business."""
    logger = logging.getLogger("nibabel")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except MRSRError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise unreadable(path, exc) from exc
    finally:
        logger.setLevel(level)


def inspect_volume(path: str | os.PathLike) -> VolumeInfo:
    """The volume's header facts (:class:`mrsr.io.header.VolumeInfo`), checked; no voxel is
    read. Refuses (:class:`MRSRError`) what its format's reader lists: data outside a detached
    header's folder, sizes the file cannot hold, non-finite geometry, complex voxels, split
    DICOM series.
    """
    p = Path(path)
    reader = _reader(p)
    with _quiet_readers(p):
        return reader.probe(p)


def read_bytes(info: VolumeInfo) -> int:
    """Estimated peak memory of :func:`load_volume`: the stored array, a copy, float32 twice."""
    return info.voxels * (2 * info.dtype.itemsize + 8)


def load_volume(path: str | os.PathLike) -> MetaTensor:
    """Read a volume as a float32 MetaTensor ``(C, X, Y, Z)`` with its file's RAS affine.

    NIfTI (``.nii``, ``.nii.gz``; scl_slope/scl_inter applied) is read by nibabel and placed
    by its sform when the sform code is set, else by its qform, as nibabel and FSL do
    (:func:`mrsr.io.nifti.nifti_affine` warns when the two disagree); NRRD, MHA/MHD and DICOM
    series folders by SimpleITK (LPS converted to RAS). ``meta["source_dtype"]`` records the
    stored data type for :func:`save_volume`.
    A 2D image becomes one slice ``(1, X, Y, 1)``; a 4D series puts its volumes on ``C``.
    The header is checked first (:func:`inspect_volume`) and the read must fit in memory.
    Volumes with NaN/inf voxels or a singular affine are refused (:class:`MRSRError`).
    """
    p = Path(OPTIONS["path"].check(path, "path"))
    info = inspect_volume(p)
    check_fits(read_bytes(info), f"{p}: reading {info.shape} x {info.channels}")
    with _quiet_readers(p):
        return checked_volume(_reader(p).read(info), p)
