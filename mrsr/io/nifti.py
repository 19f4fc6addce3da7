"""NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``), read by nibabel.

The header probe refuses, besides the shared checks (:mod:`mrsr.io.header`), non-finite pixdim,
quaternion, offsets or sform rows, and a single-file NIfTI whose voxels would start inside its
header (``vox_offset`` below 352, 544 for NIfTI-2).
"""

from __future__ import annotations

import gzip
import io
import itertools
import math
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import MetaTensor

from mrsr.errors import MRSRError, shown
from mrsr.io.header import VolumeInfo, check_dtype, check_finite, check_size, describe, spatial
from mrsr.io.reader import Reader, metatensor
from mrsr.progress import warn

__all__ = ["NiftiReader", "nifti_affine"]


def _sizes(affine: np.ndarray) -> str:
    return "x".join(f"{v:.3g}" for v in np.linalg.norm(affine[:3, :3], axis=0))


def nifti_affine(header: nib.Nifti1Header, path: Path) -> tuple[np.ndarray, int]:
    """The voxel-to-RAS affine of a NIfTI header, chosen as nibabel and FSL choose it (the sform
    when its code is set, else the qform when its code is set, else pixdim scaling), and the
    code of the form it came from (0 for pixdim scaling).

    Warns, naming ``path``, when both forms are set and place a corner of the grid more than
    the smallest voxel apart (a registration tool rewrote one and not the other).
    """
    affine = header.get_best_affine()
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0 and qform_code > 0:
        qform = header.get_qform()
        shape = (tuple(header.get_data_shape()[:3]) + (1, 1))[:3]
        corners = np.array([(*c, 1) for c in itertools.product(*[(0, n - 1) for n in shape])])
        apart = float(np.linalg.norm((affine - qform)[:3] @ corners.T, axis=0).max())
        voxel = float(np.linalg.norm(np.hstack([affine[:3, :3], qform[:3, :3]]), axis=0).min())
        if apart > voxel:
            warn(
                f"{path}: its sform and qform disagree (corners of the grid up to {apart:.3g} mm "
                f"apart; voxels {_sizes(affine)} and {_sizes(qform)} mm); using the sform "
                f"(code {sform_code}), as nibabel and FSL do"
            )
    return affine, sform_code or qform_code


def _header(path: Path, compressed: bool) -> nib.Nifti1Header:
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            raw = f.read(540)
    except (OSError, EOFError) as exc:
        raise MRSRError(f"{path}: cannot be read as a volume ({exc})") from exc
    kind = None
    for order in ("<", ">"):
        size = int(np.frombuffer(raw[:4].ljust(4, b"\0"), dtype=f"{order}i4")[0])
        kind = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(size, kind)
    if kind is None or len(raw) < (348 if kind is nib.Nifti1Header else 540):
        raise MRSRError(f"{path}: cannot be read as a volume (not a NIfTI header)")
    try:
        return kind.from_fileobj(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad headers
        raise MRSRError(f"{path}: cannot be read as a volume ({shown(str(exc))})") from exc


def _source_dtype(image: nib.Nifti1Image) -> str:
    proxy = image.dataobj  # nibabel moves scl_slope/scl_inter from the header to the proxy
    scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
    return "float32" if scaled else np.dtype(image.get_data_dtype()).newbyteorder("=").name


class NiftiReader(Reader):
    name = "NIfTI"
    suffixes = (".nii.gz", ".nii")

    def probe(self, path: Path) -> VolumeInfo:
        compressed = path.name.lower().endswith(".gz")
        header = _header(path, compressed)
        try:
            dtype = np.dtype(header.get_data_dtype())
            dims = tuple(int(d) for d in header.get_data_shape())
        except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad headers
            raise MRSRError(f"{path}: cannot be read as a volume ({shown(str(exc))})") from exc
        shape, channels = spatial(dims, path)
        check_dtype(dtype, path)
        fields = {"pixdim": header["pixdim"][1:4]}
        if header["qform_code"] > 0:
            fields["quaternion"] = [header[k] for k in ("quatern_b", "quatern_c", "quatern_d")]
            fields["qoffset"] = [header[k] for k in ("qoffset_x", "qoffset_y", "qoffset_z")]
        if header["sform_code"] > 0:
            fields["sform"] = [header[k] for k in ("srow_x", "srow_y", "srow_z")]
        check_finite(fields, path)
        offset = float(header["vox_offset"])
        first = header.sizeof_hdr + 4  # the header and its extension flag come before any voxel
        if not offset >= first:
            raise MRSRError(
                f"{path}: the header's vox_offset ({offset:g}) points inside the header (the "
                f"voxels of a single-file NIfTI start at byte {first} or later); the header is "
                "corrupt: re-export the file"
            )
        what = describe(shape, channels, dtype)
        claimed = math.prod(dims) * dtype.itemsize
        check_size(claimed, path.stat().st_size, compressed, path, what, int(offset))
        return VolumeInfo(path, shape, channels, dtype, [path])

    def read(self, info: VolumeInfo) -> MetaTensor:
        """scl_slope/scl_inter applied; a 4D series puts its last axis on the channels."""
        image = nib.load(str(info.path))
        header = image.header
        affine, code = nifti_affine(header, info.path)
        data = np.ascontiguousarray(image.get_fdata(dtype=np.float32))
        data = data[None] if data.ndim < 4 else np.moveaxis(data, -1, 0)
        fields = dict(header.as_byteswapped("<") if header.endianness == ">" else header)
        # the output holds this one affine in both forms, so both keep the code it came with
        fields.update(sform_code=code, qform_code=code)
        return metatensor(
            data,
            affine,
            info.path,
            **fields,
            source_dtype=_source_dtype(image),
            tr=float(header["pixdim"][4]),
        )
