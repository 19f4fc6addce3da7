"""World-space geometry of degradation, checked with an independent reader and resampler."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import AFFINE_KINDS, make_affine, phantom, subvoxel_shift

from mrsr.cli import main
from mrsr.geometry import in_plane_axes, resampled_affine, slice_axis


def measured_shift(lr_path: str, ref_path: str, margin: int) -> np.ndarray:
    """Resample the low-resolution file onto the reference grid with SimpleITK (cubic B-spline)
    and return the in-plane sub-voxel shift between them, in reference voxels."""
    lr, ref = sitk.ReadImage(lr_path), sitk.ReadImage(ref_path)
    back = sitk.Resample(lr, ref, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat64)
    a = sitk.GetArrayFromImage(ref).astype(np.float64)  # (z, y, x)
    b = sitk.GetArrayFromImage(back)
    inner = (slice(None), slice(margin, -margin), slice(margin, -margin))
    assert np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1] > 0.99
    return subvoxel_shift(a, b, axes=(1, 2), margin=margin)


@pytest.mark.parametrize("kind", AFFINE_KINDS)
@pytest.mark.parametrize("method,scale", [("kspace", 2), ("kspace", 3), ("bicubic", 2)])
def test_degrade_lines_up_with_reference(tmp_path, write_nifti, kind, method, scale):
    hr = write_nifti("hr.nii.gz", phantom((49, 44, 5), sigma=4.0), make_affine(kind, (1, 1, 3)))
    lr, ref = str(tmp_path / "lr.nii.gz"), str(tmp_path / "ref.nii.gz")
    argv = ["degrade", hr, lr, "--scale", str(scale), "--method", method, "--hr-out", ref]
    assert main(argv) == 0
    shift = measured_shift(lr, ref, margin=3 * scale)
    np.testing.assert_allclose(shift, 0.0, atol=0.02)


def test_shift_measurement_detects_the_wrong_grid(tmp_path, write_nifti):
    """Negative control: k-space data labelled with the area-grid affine is off by half a
    fine voxel at x2, and the measurement above sees it."""
    hr = write_nifti("hr.nii.gz", phantom((48, 44, 5), sigma=4.0), make_affine("ras", (1, 1, 3)))
    lr, ref = str(tmp_path / "lr.nii.gz"), str(tmp_path / "ref.nii.gz")
    assert main(["degrade", hr, lr, "--scale", "2", "--hr-out", ref]) == 0
    img = nib.load(lr)
    wrong = resampled_affine(nib.load(ref).affine, [2, 2, 1], "area")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), wrong), lr)
    shift = measured_shift(lr, ref, margin=6)
    np.testing.assert_allclose(np.abs(shift), 0.5, atol=0.02)


@pytest.mark.parametrize("kind", AFFINE_KINDS)
def test_direction_cosines_survive(tmp_path, write_nifti, kind):
    affine = make_affine(kind, (0.9, 0.9, 2.5))
    hr = write_nifti("hr.nii.gz", phantom((40, 36, 4)), affine)
    lr = str(tmp_path / "lr.nii.gz")
    assert main(["degrade", hr, lr, "--scale", "2"]) == 0
    out = nib.load(lr).affine
    np.testing.assert_allclose(
        out[:3, :3] / np.linalg.norm(out[:3, :3], axis=0),
        affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0),
        atol=1e-6,
    )
    np.testing.assert_allclose(np.linalg.norm(out[:3, :3], axis=0), [1.8, 1.8, 2.5], rtol=1e-6)
    np.testing.assert_allclose(out[:3, 3], affine[:3, 3], atol=1e-5)  # k-space grid: origin kept


def test_slice_axis_rule():
    assert slice_axis(np.diag([0.5, 0.5, 5.0, 1])) == 2
    assert slice_axis(np.diag([2.0, 2.0, 1.0, 1])) == 2  # a degraded 2x2x1 volume
    assert slice_axis(np.diag([3.0, 1.0, 1.0, 1])) == 0
    assert slice_axis(np.diag([1.0, 1.0, 1.0, 1])) == 2  # isotropic: the last axis
    assert slice_axis(np.diag([1.0, 2.0, 3.0, 1])) == 2  # all differ: the last axis
    assert slice_axis(np.diag([1.0, 1.0, 1.0, 1]), {"dim_info": (1 + 1) << 4}) == 1
    assert slice_axis(np.diag([0.5, 0.5, 5.0, 1]), {"dim_info": 1 << 4}) == 0  # header wins
    assert in_plane_axes(make_affine("permuted", (1.0, 4.0, 1.0))) == (0, 2)


@pytest.mark.parametrize("grid", ["kspace", "area"])
def test_resampled_affine_round_trip(grid):
    affine = make_affine("oblique", (0.8, 0.8, 3.0))
    there = resampled_affine(affine, [3, 3, 1], grid)
    np.testing.assert_allclose(resampled_affine(there, [1 / 3, 1 / 3, 1], grid), affine, atol=1e-9)


def test_area_grid_places_coarse_voxel_at_block_centre():
    coarse = resampled_affine(np.eye(4), [4, 1, 1], "area")
    np.testing.assert_allclose(coarse @ [2, 0, 0, 1], [2 * 4 + 1.5, 0, 0, 1])
