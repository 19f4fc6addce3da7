"""Shared fixtures: smooth synthetic volumes and affines of every orientation, written as NIfTI."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor


def phantom(shape: tuple[int, ...], seed: int = 0, sigma: float = 5.0) -> np.ndarray:
    """A smooth positive volume: a sum of wide Gaussian blobs on a constant background."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    out = np.full(shape, 10.0)
    for _ in range(12):
        centre = [rng.uniform(0.2 * n, 0.8 * n) for n in shape]
        r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        out += rng.uniform(20, 100) * np.exp(-r2 / (2 * sigma**2))
    return out.astype(np.float32)


def rotation(angles: tuple[float, float, float]) -> np.ndarray:
    a, b, c = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def make_affine(kind: str, zooms=(1.0, 1.0, 1.0)) -> np.ndarray:
    """RAS, LPS (flipped), permuted axes, or oblique voxel-to-world affines."""
    directions = {
        "ras": np.eye(3),
        "lps": np.diag([-1.0, -1.0, 1.0]),
        "permuted": np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),
        "oblique": rotation((12.0, -7.0, 25.0)),
    }[kind]
    affine = np.eye(4)
    affine[:3, :3] = directions @ np.diag(zooms)
    affine[:3, 3] = [-40.3, 17.9, -12.1]
    return affine


AFFINE_KINDS = ("ras", "lps", "permuted", "oblique")


@pytest.fixture
def write_nifti(tmp_path):
    """Write an array with an affine to tmp_path/name and return the path."""

    def write(name: str, data: np.ndarray, affine: np.ndarray, **header) -> str:
        img = nib.Nifti1Image(data, affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        for key, value in header.items():
            img.header[key] = value
        path = tmp_path / name
        nib.save(img, str(path))
        return str(path)

    return write


def meta_volume(data: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(data))[None], affine=torch.as_tensor(affine)
    )


def subvoxel_shift(a: np.ndarray, b: np.ndarray, axes=(0, 1), margin: int = 4) -> np.ndarray:
    """Shift ``t`` (voxels, along ``axes``) with ``b(x) ~= a(x - t)``, by iterated least squares
    on the image gradient (Lucas-Kanade); accurate to ~0.01 voxel on smooth images."""
    from scipy.ndimage import shift as nd_shift

    inner = tuple(slice(margin, -margin) if d in axes else slice(None) for d in range(a.ndim))
    grads = np.stack([np.gradient(a, axis=d)[inner].ravel() for d in axes], axis=-1)
    t = np.zeros(a.ndim)
    for _ in range(3):
        residual = (nd_shift(b, -t, order=3, mode="nearest") - a)[inner].ravel()
        t[list(axes)] -= np.linalg.lstsq(grads, residual, rcond=None)[0]
    return t[list(axes)]


def sitk_image(data: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    image.SetSpacing(zooms.tolist())
    image.SetDirection((lps[:3, :3] / zooms).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def write_dicom_series(
    image: sitk.Image,
    folder,
    series: str = "1.2.826.0.1.3680043.2.1125.2",
    skip=(),
    thickness: float | None = None,
) -> None:
    """One DICOM file per slice of ``image`` in ``folder`` (created unless it exists), with the
    patient geometry tags; ``skip`` leaves slices out (a series with a gap); ``thickness``
    writes SliceThickness (0018,0050)."""
    os.makedirs(folder, exist_ok=True)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in (k for k in range(image.GetDepth()) if k not in skip):
        s = image[:, :, k]
        s.SetMetaData("0008|0060", "MR")
        s.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.1")
        s.SetMetaData("0020|000e", series)
        s.SetMetaData("0020|0037", orientation)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        s.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in position))
        s.SetMetaData("0020|0013", str(k + 1))
        if thickness is not None:
            s.SetMetaData("0018|0050", f"{thickness:g}")
        writer.SetFileName(str(folder / f"{series[-6:]}-{k:03d}.dcm"))
        writer.Execute(s)
