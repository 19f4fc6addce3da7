"""Any grid in one command: --voxel-size and --like, the per-axis plan, exact world geometry."""

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import (
    AFFINE_KINDS,
    make_affine,
    meta_volume,
    phantom,
    rotation,
    sitk_image,
    subvoxel_shift,
    write_dicom_series,
)
from monai.data import MetaTensor

from mrsr import Pipeline
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.io import load_volume
from mrsr.resample import resample, sinc_matrix, spline_matrix, voxel_size_grid
from mrsr.slice_profiles import simulate_thick_slices
from mrsr.target import needed_scale, plan_grid

ZEROFILL = Pipeline("zerofill", 2)


def band_limited(shape, affine, cycles=((1, 2, 0), (3, -1, 0), (0, 4, 0))):
    """A sum of cosines periodic over the field of view of the first two axes (frequencies
    below Nyquist), constant along the third; and the function itself of world points."""
    inverse = np.linalg.inv(affine)
    period = np.asarray(shape, dtype=np.float64)

    def at(world: np.ndarray) -> np.ndarray:  # (3, N) world points -> values
        index = inverse[:3, :3] @ world + inverse[:3, 3:4]
        phase = [
            2 * np.pi * (np.asarray(c)[:, None] * index / period[:, None]).sum(0) for c in cycles
        ]
        return 5 + sum(np.cos(p + 0.3 * k) for k, p in enumerate(phase))

    grid = np.indices(shape).reshape(3, -1).astype(np.float64)
    world = affine[:3, :3] @ grid + affine[:3, 3:4]
    return at(world).reshape(shape), at


def centres(shape, affine) -> np.ndarray:
    grid = np.indices(shape).reshape(3, -1).astype(np.float64)
    return affine[:3, :3] @ grid + affine[:3, 3:4]


def test_needed_scale_is_the_integer_at_or_above_the_ratio_and_a_model_keeps_its_own():
    assert [needed_scale(r) for r in (1.0, 1.04, 1.2, 1.5, 2.0, 2.03, 2.5, 3.9)] == [
        1,
        1,
        2,
        2,
        2,
        2,
        3,
        4,
    ]
    affine = np.diag([1.5, 1.5, 4.0, 1.0])
    grid = voxel_size_grid((40, 40, 10), affine, [1.0, 1.0, 4.0])
    assert plan_grid((40, 40, 10), affine, 2, *grid).scale == 2
    assert plan_grid((40, 40, 10), affine, 2, *grid, scale=4).scale == 4
    coarser = voxel_size_grid((40, 40, 10), affine, [2.0, 2.0, 4.0])
    assert plan_grid((40, 40, 10), affine, 2, *coarser, scale=4).scale == 1


@pytest.mark.parametrize("kind", AFFINE_KINDS)
def test_voxel_size_covers_the_field_of_view_on_the_same_centre(kind):
    shape, zooms = (30, 24, 6), (0.9, 0.9, 5.0)
    affine = make_affine(kind, zooms)
    out_shape, out_affine = voxel_size_grid(shape, affine, [1.0, 1.0, 1.0])
    assert out_shape == (27, 22, 30)
    np.testing.assert_allclose(np.linalg.norm(out_affine[:3, :3], axis=0), 1.0)
    centre = lambda s, a: a[:3, :3] @ ((np.asarray(s) - 1) / 2) + a[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(out_shape, out_affine), centre(shape, affine), atol=1e-9)
    extent = np.asarray(out_shape) * 1.0 - np.asarray(shape) * zooms
    assert np.all(np.abs(extent) <= 0.5 + 1e-9)  # the field of view, to half a voxel


def test_band_limited_volume_is_exact_on_any_finer_grid_and_back():
    shape, affine = (30, 24, 3), make_affine("lps", (1.0, 1.0, 3.0))
    data, at = band_limited(shape, affine)
    volume = meta_volume(data.astype(np.float32), affine)
    for size in ([0.75, 0.75, 3.0], [0.7, 0.55, 3.0]):  # commensurate, and not
        grid = voxel_size_grid(shape, affine, size)
        fine = resample(volume, *grid, band_limited=(0, 1))
        truth = at(centres(*grid)).reshape(grid[0])
        inside = np.ones(grid[0], dtype=bool)  # the centres within the input's field of view
        np.testing.assert_allclose(fine[0].numpy()[inside], truth[inside], atol=1e-4 * 7)
    back = resample(
        resample(volume, *voxel_size_grid(shape, affine, [0.75, 0.75, 3.0])), shape, affine
    )
    np.testing.assert_allclose(back[0].numpy(), data, atol=1e-4)


def test_interpolation_matrices_keep_samples_and_constants():
    positions = np.array([0.0, 0.25, 3.0, 6.5, 8.0])
    for w in (sinc_matrix(10, positions), sinc_matrix(9, positions), spline_matrix(10, positions)):
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)  # a constant stays
        np.testing.assert_allclose(w[[0, 2, 4]], np.eye(w.shape[1])[[0, 3, 8]], atol=1e-12)
    coarse = sinc_matrix(12, np.arange(0, 12, 3.0), step=3.0)  # truncated to the target band
    x = np.cos(2 * np.pi * 5 * np.arange(12) / 12)  # above the new Nyquist (2 cycles)
    np.testing.assert_allclose(coarse @ x, 0.0, atol=1e-12)


def blobs(shape) -> np.ndarray:
    """Gaussian blobs near the centre, on a zero background: nothing near the edges, so a
    rotated grid keeps all of it."""
    grids = np.indices(shape, dtype=np.float64)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    out = np.zeros(shape)
    for offset, height in (((0, 0, 0), 80), ((6, -4, 1), 50), ((-5, 5, -1), 30)):
        r2 = sum((g - c - o) ** 2 for g, c, o in zip(grids, centre, offset))
        out += height * np.exp(-r2 / (2 * 3.5**2))
    return out.astype(np.float32)


def degraded(tmp_path, write_nifti, kind: str, data: np.ndarray | None = None):
    """HR truth (48x44x5, 1x1x3 mm, orientation ``kind``) and its x2 k-space degradation."""
    data = phantom((48, 44, 5), sigma=4.0) if data is None else data
    hr = write_nifti("hr.nii.gz", data, make_affine(kind, (1, 1, 3)))
    lr = str(tmp_path / "lr.nii.gz")
    assert main(["degrade", hr, lr, "--scale", "2", "-q"]) == 0
    return hr, lr


def shift_against(truth: np.ndarray, result: np.ndarray, axes=(0, 1), margin=6) -> np.ndarray:
    inner = tuple(slice(margin, -margin) if a in axes else slice(None) for a in range(3))
    assert np.corrcoef(truth[inner].ravel(), result[inner].ravel())[0, 1] > 0.99
    return subvoxel_shift(truth, result, axes=axes, margin=margin)


@pytest.mark.parametrize("kind", AFFINE_KINDS)
def test_like_puts_the_output_exactly_on_the_reference_grid(tmp_path, write_nifti, kind):
    hr, lr = degraded(tmp_path, write_nifti, kind)
    out = str(tmp_path / "out.nii.gz")
    assert main(["upscale", lr, out, "--like", hr, "--model", "zerofill", "-q"]) == 0
    img, ref = nib.load(out), nib.load(hr)
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    shift = shift_against(np.asarray(ref.dataobj, np.float64), np.asarray(img.dataobj, np.float64))
    np.testing.assert_allclose(shift, 0.0, atol=0.05)


@pytest.mark.parametrize("order", ["LPS", "PIR", "rotated"])
def test_like_a_reference_stored_another_way_is_met_in_world_space(tmp_path, write_nifti, order):
    """The reference's grid differs from the input's: flipped, permuted, or rotated by 20
    degrees (SimpleITK resamples the truth onto it; mrsr's output must agree with that)."""
    hr, lr = degraded(tmp_path, write_nifti, "ras", blobs((48, 44, 5)))
    truth = sitk.ReadImage(hr)
    if order == "rotated":  # about the centre of the field of view
        grid = sitk.Image(truth)
        index = np.array([23.5, 21.5, 2.0])
        centre = np.array(truth.TransformContinuousIndexToPhysicalPoint(index.tolist()))
        direction = rotation((0.0, 0.0, 20.0)) @ np.reshape(truth.GetDirection(), (3, 3))
        grid.SetDirection(direction.ravel().tolist())
        grid.SetOrigin((centre - direction @ (np.array(truth.GetSpacing()) * index)).tolist())
    else:
        grid = sitk.DICOMOrient(truth, {"LPS": "RAI", "PIR": "ASL"}[order])
    ref = sitk.Resample(truth, grid, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat64)
    ref_path = str(tmp_path / "ref.nii.gz")
    sitk.WriteImage(ref, ref_path)
    out = ZEROFILL(lr, like=ref_path)
    expected = load_volume(ref_path)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.affine.numpy(), expected.affine.numpy(), atol=1e-5)
    a, b = expected[0].numpy().astype(np.float64), out[0].numpy().astype(np.float64)
    axes = [d for d in range(3) if a.shape[d] > 5]  # the in-plane axes, in REF's storage
    np.testing.assert_allclose(shift_against(a, b, axes=axes, margin=8), 0.0, atol=0.05)


def test_voxel_size_gives_a_non_integer_factor_in_world_space(tmp_path, write_nifti):
    """x2 k-space LR (2 mm) to 1.5 mm: network x2 then band-limited resampling; SimpleITK
    resamples the result onto the truth's grid, where it must line up to 0.05 voxel."""
    hr, lr = degraded(tmp_path, write_nifti, "oblique")
    out = str(tmp_path / "out.nii.gz")
    code = main(["upscale", lr, out, "--voxel-size", "1.5", "1.5", "3", "--model", "zerofill"])
    assert code == 0
    img = nib.load(out)
    np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.5, 3.0), rtol=1e-6)
    truth = sitk.ReadImage(hr)
    back = sitk.Resample(
        sitk.ReadImage(out), truth, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat64
    )
    a = sitk.GetArrayFromImage(truth).astype(np.float64).transpose(2, 1, 0)
    b = sitk.GetArrayFromImage(back).transpose(2, 1, 0)
    np.testing.assert_allclose(shift_against(a, b, margin=8), 0.0, atol=0.05)
    record = json.loads((tmp_path / "out.json").read_text())["mrsr"]
    assert record["grid_plan"].startswith("onto 32x29x5 at 1.5x1.5x3 mm: in-plane x1.33 by the")
    assert "to 1.5x1.5x3mm" in str(img.header["descrip"])


def test_default_model_is_the_smallest_shipped_scale_at_or_above_the_ratio(
    tmp_path, write_nifti, capsys
):
    data = load_volume("mrsr/data/heldout_clinical_brain.nii.gz")
    crop = data[0, 96:160, 96:160].numpy()
    src = write_nifti("crop.nii.gz", crop, np.asarray(data.affine))
    out = str(tmp_path / "fine.nii.gz")
    assert main(["upscale", src, out, "--voxel-size", "0.3", "0.3", "6.5"]) == 0  # x2.6
    err = capsys.readouterr().err
    assert "in-plane x2.60 by the network x3" in err and nib.load(out).shape == (167, 167, 1)
    assert json.loads((tmp_path / "fine.json").read_text())["mrsr"]["model"] == "cssfn-kspace-x3"


def test_folder_mode_puts_every_volume_on_the_reference_grid(tmp_path, write_nifti):
    ref = write_nifti("ref.nii.gz", phantom((20, 18, 4)), make_affine("lps", (1, 1, 3)))
    (tmp_path / "in").mkdir()
    for name, kind in (("a", "ras"), ("b", "permuted")):
        write_nifti(f"in/{name}.nii.gz", phantom((12, 10, 4), seed=1), make_affine(kind, (2, 2, 3)))
    argv = ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--like", ref]
    assert main([*argv, "--model", "zerofill", "--through-plane-steps", "0", "-q"]) == 0
    for name in ("a", "b"):
        img = nib.load(tmp_path / "out" / f"{name}.nii.gz")
        assert img.shape == (20, 18, 4)
        np.testing.assert_allclose(img.affine, nib.load(ref).affine, atol=1e-5)


def test_bad_targets_are_refused_in_one_line(tmp_path, write_nifti, capsys):
    src = write_nifti("in.nii.gz", phantom((12, 10, 3)), make_affine("ras", (2, 2, 3)))
    out = str(tmp_path / "out.nii.gz")
    for extra in (["--voxel-size", "0"], ["--voxel-size", "1", "--like", src]):
        with pytest.raises(SystemExit) as exit_:
            main(["upscale", src, out, "--model", "zerofill", *extra])
        assert exit_.value.code == 2
    assert main(["upscale", src, out, "--model", "zerofill", "--voxel-size", "1", "1"]) == 2
    assert "needs 1 or 3 values" in capsys.readouterr().err
    assert main(["upscale", src, src.replace("in.", "in2."), "--like", out]) == 2
    assert main(["upscale", src, out, "--model", "zerofill", "--like", out]) == 2
    assert "equals the input" in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(MRSRError, match="not both"):
        ZEROFILL(src, voxel_size=1.0, like=src)
    volume = MetaTensor(torch.ones(1, 4, 4, 2), affine=torch.eye(4, dtype=torch.float64))
    with pytest.raises(MRSRError, match="--voxel-size must be"):
        ZEROFILL(volume, voxel_size=-1.0)


@pytest.mark.slow
def test_thick_slices_go_through_the_self_trained_network_onto_the_target(
    tmp_path, write_nifti, capsys
):
    """0.9 x 0.9 x 4.5 mm with 3.5 mm thick slices (a gap) to 0.9 mm isotropic: the plan says
    the through-plane step, the output is exactly on the grid, the sidecar has the settings."""
    volume = blobs((40, 40, 45))
    thick, ref = simulate_thick_slices(
        meta_volume(volume, make_affine("ras", (0.9, 0.9, 0.9))), 5, thickness=3.5 / 0.9
    )
    src = write_nifti("thick.nii.gz", thick[0].numpy(), np.asarray(thick.affine))
    out = str(tmp_path / "iso.nii.gz")
    argv = [
        "upscale",
        src,
        out,
        "--voxel-size",
        "0.9",
        "--model",
        "zerofill",
        "--slice-thickness",
        "3.5",
    ]
    assert main([*argv, "--through-plane-steps", "10"]) == 0
    err = capsys.readouterr().err
    assert "through-plane x5.00 (axis 2) by the network trained on the scan (to 0.9 mm)" in err
    img = nib.load(out)
    assert img.shape == ref.shape[1:]
    np.testing.assert_allclose(img.affine, np.asarray(ref.affine), atol=1e-5)
    record = json.loads((tmp_path / "iso.json").read_text())["mrsr"]
    assert record["slice_thickness_mm"] == 3.5 and record["slice_profile"] == "box"
    result = np.asarray(img.dataobj, np.float64)
    truth = ref[0].numpy().astype(np.float64)
    assert np.corrcoef(result.ravel(), truth.ravel())[0, 1] > 0.99


@pytest.mark.slow
def test_dicom_slice_thickness_is_read_for_the_through_plane_step(tmp_path, capsys):
    thick, _ = simulate_thick_slices(meta_volume(blobs((32, 32, 36)), np.eye(4)), 4, thickness=3)
    image = sitk_image(np.rint(thick[0].numpy() * 10).astype(np.int16), np.asarray(thick.affine))
    write_dicom_series(image, tmp_path / "series", thickness=3.0)
    out = tmp_path / "iso.nii.gz"
    argv = [
        "upscale",
        str(tmp_path / "series"),
        str(out),
        "--voxel-size",
        "1",
        "--model",
        "zerofill",
    ]
    assert main([*argv, "--through-plane-steps", "5"]) == 0
    record = json.loads((tmp_path / "iso.json").read_text())["mrsr"]
    assert record["slice_thickness_mm"] == 3.0
    assert nib.load(out).shape == (32, 32, 36)
    override = tmp_path / "given.nii.gz"
    argv[2] = str(override)
    assert main([*argv, "--through-plane-steps", "5", "--slice-thickness", "4"]) == 0
    assert json.loads((tmp_path / "given.json").read_text())["mrsr"]["slice_thickness_mm"] == 4.0
