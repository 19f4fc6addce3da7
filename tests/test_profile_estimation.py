"""What the through-plane step knows of the acquisition without being told: the slice profile
estimated from the scan, a measured profile from a file, DICOM SpacingBetweenSlices, and the
in-plane resolution acquired under scanner zero-fill interpolation."""

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import make_affine, meta_volume, phantom, sitk_image, write_dicom_series
from monai.data import MetaTensor

from mrsr import progress
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.inplane_resolution import acquired_resolution
from mrsr.io import inspect_volume, load_volume, sample_path
from mrsr.kspace import zero_fill
from mrsr.pipeline import Pipeline
from mrsr.profile_estimation import estimate_slice_profile, slice_profile_for
from mrsr.provenance import FACTS
from mrsr.slice_profiles import (
    PROFILES,
    SliceProfile,
    fwhm_mm,
    read_profile,
    simulate_thick_slices,
)
from mrsr.throughplane import super_resolve_through_plane
from mrsr.training.throughplane import training_slices

TINY = dict(channels=8, n_blocks=1, n_units=1)  # a fast network: these tests are about geometry
SIGMA_PER_FWHM = {"box": 1 / np.sqrt(12), "gaussian": 1 / (2 * np.sqrt(2 * np.log(2)))}


@pytest.fixture(scope="module")
def sample():
    return load_volume(sample_path())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "width"),
    [("box", 1.0), ("box", 1.25), ("box", 1.5), ("gaussian", 1.0), ("gaussian", 1.25)],
)
def test_estimator_recovers_known_profiles_of_a_real_scan(sample, kind, width):
    """4 mm slices simulated from the bundled 1 mm volume (across its 216 voxels, 54 slices).
    Each shape's own fit lands within 10 % of the true FWHM; the shape taken is right for the
    boxes, and where a Gaussian narrower than 1.5 spacings is taken for a wider box, that box
    blurs alike (standard deviation within 15 %)."""
    thick, _ = simulate_thick_slices(sample, 4, axis=1, thickness=4 * width, profile=kind)
    estimate = estimate_slice_profile(thick, 1)
    assert estimate.reliable, estimate
    assert estimate.fits[kind] == pytest.approx(4 * width, rel=0.10)
    if kind == "box":
        assert estimate.kind == "box"
    sigma = estimate.fwhm_mm * SIGMA_PER_FWHM[estimate.kind]
    assert sigma == pytest.approx(4 * width * SIGMA_PER_FWHM[kind], rel=0.15)


@pytest.mark.slow
def test_a_wide_gaussian_is_told_from_a_box_of_its_width(sample):
    """The shapes differ most when wide: a Gaussian 1.5 spacings wide is found as such."""
    thick, _ = simulate_thick_slices(sample, 4, axis=1, thickness=6, profile="gaussian")
    estimate = estimate_slice_profile(thick, 1)
    assert estimate.reliable and estimate.kind == "gaussian", estimate
    assert estimate.fwhm_mm == pytest.approx(6, rel=0.10)


@pytest.mark.slow
def test_noise_and_tiny_scans_fall_back_to_the_default_with_a_warning(capsys):
    noise = np.random.default_rng(0).random((96, 96, 24)).astype(np.float32)
    volume = meta_volume(noise, make_affine("ras", zooms=(1.0, 1.0, 4.0)))
    profile, thickness, facts = slice_profile_for(volume, 2, None, None)
    assert (profile, thickness) == ("box", None)
    assert facts["slice_profile_source"] == "default (estimate not trusted)"
    assert not facts["slice_profile_estimate"]["reliable"], facts
    assert "no clear best width" in facts["slice_profile_estimate"]["reason"]
    assert "mrsr: warning: the slice profile could not be estimated" in capsys.readouterr().err

    tiny = meta_volume(phantom((12, 12, 6)), make_affine("ras", zooms=(1.0, 1.0, 4.0)))
    estimate = estimate_slice_profile(tiny, 2)
    assert not estimate.reliable and "fewer than" in estimate.reason


def test_a_given_profile_or_thickness_is_not_estimated():
    volume = meta_volume(phantom((12, 12, 6)), make_affine("ras", zooms=(1.0, 1.0, 4.0)))
    assert slice_profile_for(volume, 2, 3.0, None)[:2] == ("box", 3.0)
    assert slice_profile_for(volume, 2, None, "gaussian")[:2] == ("gaussian", None)


def write_profile(path, content) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_a_measured_box_is_the_box(tmp_path):
    """A file of equal weights 6 mm wide on a 0.25 mm grid acquires exactly as a 6 mm box
    (slices 4.5 fine voxels apart: fractional overlaps too); the commands' outputs agree below."""
    box = read_profile(write_profile(tmp_path / "p.json", {"step_mm": 0.25, "weights": [2] * 24}))
    assert box.width_mm == 6.0 and fwhm_mm(box, 6.0) == pytest.approx(6.0)
    assert fwhm_mm(PROFILES["gaussian"], 5.0) == pytest.approx(5.0, abs=0.01)
    np.testing.assert_allclose(
        SliceProfile(4.5, 6.0, box).acquisition(45, 10),
        SliceProfile(4.5, 6.0, "box").acquisition(45, 10),
        atol=1e-12,
    )


def test_a_measured_profile_is_asymmetric_as_measured(tmp_path):
    """Weights [3, 0, 1] on 1 mm steps, slices 5 voxels of 1 mm apart: the first slice, centred
    on voxel 2, takes voxels 1, 2 and 3 in those proportions and nothing else."""
    weights = {"step_mm": 1, "weights": [3, 0, 1]}
    profile = read_profile(write_profile(tmp_path / "p.json", weights))
    row = SliceProfile(5.0, 3.0, profile).acquisition(10, 2)[0]
    np.testing.assert_allclose(row, [0, 0.75, 0, 0.25, 0, 0, 0, 0, 0, 0], atol=1e-12)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "not JSON"),
        ("[1, 2]", "step_mm and weights"),
        ({"step_mm": 0.1, "weights": []}, "non-empty"),
        ({"step_mm": 0.1, "weights": [1, -1, 1]}, "weight 1 is negative"),
        ({"step_mm": 0.1, "weights": [0, 0]}, "sum to 0"),
        ('{"step_mm": 0.1, "weights": [1, NaN]}', "finite"),
        ({"step_mm": 0.1, "weights": [1] * 10_001}, "more than 10000"),
        ({"step_mm": 0.5, "weights": [1] * 201}, "wide, more than 100"),
        ({"step_mm": 0, "weights": [1]}, "step_mm must be a positive"),
        ({"step_mm": 0.1, "weights": [1, "2"]}, "numbers"),
    ],
)
def test_bad_profile_files_are_refused_in_one_line_naming_the_file(tmp_path, content, problem):
    path = write_profile(tmp_path / "profile.json", content)
    with pytest.raises(MRSRError) as error:
        read_profile(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(path) and problem in message


@pytest.mark.slow
def test_command_takes_a_profile_file_and_records_it(tmp_path, write_nifti, capsys):
    src = write_nifti("thick.nii.gz", phantom((20, 20, 6)), make_affine("oblique", (1, 1, 3.0)))
    box = write_profile(tmp_path / "box.json", {"step_mm": 0.5, "weights": [1] * 6})
    common = [src, "--steps", "2", "--seed", "0"]
    assert main(["throughplane", *common, str(tmp_path / "a.nii.gz"), "--slice-profile", box]) == 0
    assert main(["throughplane", *common, str(tmp_path / "b.nii.gz"), "--profile", "box"]) == 0
    a, b = (np.asarray(nib.load(tmp_path / f"{n}.nii.gz").dataobj) for n in "ab")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)  # of values up to ~100
    record = json.loads((tmp_path / "a.json").read_text())["mrsr"]
    assert record["slice_profile"] == "measured" and record["slice_thickness_mm"] == 3.0
    assert record["slice_profile_source"] == "measured in box.json"
    assert record["slice_profile_fwhm_mm"] == pytest.approx(3.0)

    capsys.readouterr()
    bad = write_profile(tmp_path / "bad.json", {"step_mm": 0.5, "weights": [0]})
    out = tmp_path / "c.nii.gz"
    assert main(["throughplane", *common, str(out), "--slice-profile", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and "sum to 0" in err[0]
    both = ["--slice-profile", box, "--slice-thickness", "3"]
    assert main(["throughplane", *common, str(out), *both]) == 2
    assert "leave out --profile and --slice-thickness" in capsys.readouterr().err
    assert not out.exists()


def dicom_series(folder, thickness: float, spacing_between: str) -> None:
    """Six 16 x 16 slices 4 mm apart, SliceThickness and SpacingBetweenSlices as given (the
    latter set with pydicom: SimpleITK's writer puts the image spacing there)."""
    image = sitk_image(phantom((16, 16, 6)).astype(np.int16), make_affine("ras", (1, 1, 4.0)))
    write_dicom_series(image, folder, thickness=thickness)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.SpacingBetweenSlices = spacing_between
        ds.save_as(path)


def test_dicom_thickness_and_spacing_between_slices(tmp_path, capsys):
    """Thickness 3 mm, positions 4 mm apart (a 1 mm gap): the grid follows the positions, the
    thickness is SliceThickness, and a SpacingBetweenSlices that disagrees is named (verbose)."""
    dicom_series(tmp_path / "gap", 3.0, "4")
    info = inspect_volume(tmp_path / "gap")
    assert (info.slice_thickness, info.slice_spacing) == (3.0, 4.0)
    volume = load_volume(tmp_path / "gap")
    np.testing.assert_allclose(np.linalg.norm(np.asarray(volume.affine)[:3, 2]), 4.0)
    assert "SpacingBetweenSlices" not in capsys.readouterr().err

    dicom_series(tmp_path / "stale", 3.0, "3")
    progress.set_level(progress.VERBOSE)
    try:
        info = inspect_volume(tmp_path / "stale")
    finally:
        progress.set_level(progress.NORMAL)
    assert (info.slice_thickness, info.slice_spacing) == (3.0, 3.0)
    err = capsys.readouterr().err
    assert "SpacingBetweenSlices (0018,0088) says 3 mm but the slice positions are 4 mm" in err
    volume = load_volume(tmp_path / "stale")
    np.testing.assert_allclose(np.linalg.norm(np.asarray(volume.affine)[:3, 2]), 4.0)


def zero_filled(volume: MetaTensor, factor: int) -> MetaTensor:
    """``volume`` k-space padded ``factor`` times along its first two axes."""
    sizes = [n * factor for n in volume.shape[1:3]]
    affine = np.asarray(volume.affine, dtype=np.float64) @ np.diag([1 / factor] * 2 + [1, 1])
    return MetaTensor(zero_fill(volume.as_tensor().float(), sizes, (1, 2)), affine=affine)


def test_zero_filled_pixels_are_found_and_a_normal_scan_is_not(sample):
    found = acquired_resolution(zero_filled(sample, 2), 2)
    assert found.interpolated and found.stored_mm == (0.5, 0.5)
    np.testing.assert_allclose(found.acquired_mm, (1.0, 1.0), rtol=0.02)
    plain = acquired_resolution(sample, 2)
    assert not plain.interpolated and plain.acquired_mm == (1.0, 1.0)
    noisy = sample.as_tensor() + 3 * torch.randn(
        sample.shape, generator=torch.Generator().manual_seed(0)
    )
    assert not acquired_resolution(MetaTensor(noisy, affine=sample.affine), 2).interpolated
    with pytest.raises(MRSRError, match="finer than the pixels"):
        acquired_resolution(sample, 2, 0.5)


@pytest.mark.slow
def test_zero_filled_scans_train_at_the_acquired_resolution():
    """A 0.5 mm zero-filled scan of 1 mm pixels with 4 mm slices: the fine grid follows the
    acquired 1 mm (4 fine voxels per slice, not 8), and the record says why."""
    volume = meta_volume(phantom((32, 32, 40), sigma=2.0), np.eye(4))
    thick, _ = simulate_thick_slices(volume, 4, thickness=4.0)
    scan = zero_filled(thick, 2)
    sr = super_resolve_through_plane(scan, steps=1, thickness=4.0, **TINY)
    assert sr.shape[1:] == (64, 64, 40)
    facts = sr.meta[FACTS]
    assert facts["inplane_acquired_resolution_source"] == "spectrum"
    np.testing.assert_allclose(facts["inplane_acquired_resolution_mm"], (1.0, 1.0), rtol=0.02)
    given = super_resolve_through_plane(
        thick, steps=1, thickness=4.0, inplane_resolution=2.0, **TINY
    )
    assert given.shape[1:] == (32, 32, 20)
    assert given.meta[FACTS]["inplane_acquired_resolution_source"] == "given"


@pytest.mark.slow
def test_upscale_and_pipeline_take_the_profile_options(tmp_path, write_nifti):
    """``upscale --voxel-size`` trains through-plane too: a measured box file gives the output
    of the box it equals, and the sidecar names the profile; Pipeline takes the same options
    and refuses a measured profile beside a thickness."""
    src = write_nifti("thick.nii.gz", phantom((20, 20, 6)), make_affine("ras", (1, 1, 3.0)))
    box = write_profile(tmp_path / "box.json", {"step_mm": 0.25, "weights": [1] * 12})
    common = [src, "--voxel-size", "1", "--model", "zerofill", "--through-plane-steps", "2"]
    a, b = (str(tmp_path / f"{n}.nii.gz") for n in "ab")
    assert main(["upscale", *common[:1], a, *common[1:], "--slice-profile", box]) == 0
    given = ["--slice-thickness", "3", "--profile", "box", "--inplane-acquired-resolution", "1"]
    assert main(["upscale", *common[:1], b, *common[1:], *given]) == 0
    np.testing.assert_allclose(
        np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj), rtol=0, atol=1e-4
    )
    record = json.loads((tmp_path / "a.json").read_text())["mrsr"]
    assert record["slice_profile"] == "measured" and record["slice_thickness_mm"] == 3.0
    given = json.loads((tmp_path / "b.json").read_text())["mrsr"]
    assert given["inplane_acquired_resolution_source"] == "given"

    with pytest.raises(MRSRError, match="leave out slice_profile and slice_thickness"):
        Pipeline("zerofill", slice_profile_file=box, slice_thickness=3.0)
    with pytest.raises(MRSRError, match="inplane_acquired_resolution must be above 0"):
        Pipeline("zerofill", inplane_acquired_resolution=(1.0, -1.0))
    volume = load_volume(src)
    measured = Pipeline("zerofill", slice_profile_file=box, through_plane_steps=2)
    assert torch.equal(measured(volume, voxel_size=1), load_volume(a).as_tensor())


def test_training_slices_keep_no_detail_finer_than_acquired():
    """Band 2 along the first in-plane axis: the slices keep no power past half their band
    there, and all of it along the other axis (white noise, so both had it)."""
    noise = torch.from_numpy(np.random.default_rng(0).random((1, 32, 32, 4), dtype=np.float32))
    slices = training_slices(noise, noise, 2, 1.0, (2.0, 1.0))
    assert slices.shape == (4, 32, 32)
    x = slices - slices.mean()
    across = torch.fft.rfft(x, dim=1).abs().pow(2).mean(dim=(0, 2))
    along_ = torch.fft.rfft(x, dim=2).abs().pow(2).mean(dim=(0, 1))
    assert across[9:].max() < 1e-6 * across[1:8].mean()  # 32 / (2 * 2) = 8 frequencies kept
    assert along_[9:].mean() > 0.3 * along_[1:8].mean()
