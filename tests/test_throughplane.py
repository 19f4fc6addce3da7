"""Through-plane super-resolution: slab simulation, output grid, sub-voxel shift, training, CLI,
and the same output for the same input under any load."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_affine, meta_volume, phantom, subvoxel_shift
from monai.data import MetaTensor

from mrsr import Pipeline
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.geometry import resampled_affine
from mrsr.networks.throughplane import ThroughPlaneNet
from mrsr.provenance import FACTS
from mrsr.slice_profiles import SliceProfile, along, simulate_thick_slices
from mrsr.throughplane import apply_network, resolve_factor, super_resolve_through_plane
from mrsr.training import throughplane as training
from mrsr.training.throughplane import train_network

TINY = dict(channels=8, n_blocks=1, n_units=1)  # a fast network for the geometry tests


def world(affine: np.ndarray, index) -> np.ndarray:
    return (np.asarray(affine) @ np.append(np.asarray(index, dtype=float), 1.0))[:3]


@pytest.mark.parametrize("kind", ["ras", "oblique"])
def test_thick_slices_are_slab_means_centred_on_their_slabs(kind):
    f = 3
    data = np.random.default_rng(0).random((5, 4, 14)).astype(np.float32)
    thick, ref = simulate_thick_slices(meta_volume(data, make_affine(kind)), f)
    assert ref.shape == (1, 5, 4, 12) and thick.shape == (1, 5, 4, 4)  # 14 cropped to 12
    crop = data[..., 1:13]  # the centre crop
    np.testing.assert_array_equal(ref[0].numpy(), crop)
    np.testing.assert_allclose(thick[0].numpy(), crop.reshape(5, 4, 4, f).mean(-1), rtol=1e-6)
    for k in range(4):  # thick voxel k sits at the centre of fine voxels [f*k, f*k + f)
        centre = np.mean([world(ref.affine, (2, 1, i)) for i in range(f * k, f * k + f)], axis=0)
        np.testing.assert_allclose(world(thick.affine, (2, 1, k)), centre, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(thick.affine)[:3, 2]), f)


def test_slab_average_keeps_a_volume_constant_along_the_slices():
    data = np.broadcast_to(phantom((6, 7, 1))[..., :1], (6, 7, 8))
    thick, _ = simulate_thick_slices(meta_volume(data, np.eye(4)), 4)
    np.testing.assert_allclose(thick[0].numpy(), data[..., :2], rtol=1e-6)


@pytest.mark.parametrize(("kind", "axis"), [("ras", 2), ("oblique", 2), ("oblique", 0)])
def test_output_lands_exactly_on_the_reference_grid(kind, axis):
    f = 4
    shape = [16, 16, 16]
    shape[axis] = 18  # cropped to 16 by the simulation
    volume = meta_volume(phantom(tuple(shape)), make_affine(kind))
    thick, ref = simulate_thick_slices(volume, f, axis)
    sr = super_resolve_through_plane(thick, steps=2, seed=1, **TINY)
    assert sr.shape == ref.shape
    np.testing.assert_allclose(np.asarray(sr.affine), np.asarray(ref.affine), atol=1e-9)
    factors = [1.0, 1.0, 1.0]
    factors[axis] = 1 / f
    area = resampled_affine(np.asarray(thick.affine), factors, "area")
    np.testing.assert_allclose(np.asarray(sr.affine), area, atol=1e-12)


@pytest.mark.parametrize("kind", ["ras", "oblique"])
def test_untrained_output_overlays_the_reference_without_subvoxel_shift(kind):
    """A wrong grid (fine voxel 0 at the first slab's centre) would be 1.5 voxels off."""
    volume = meta_volume(phantom((20, 20, 48), sigma=4.0), make_affine(kind))
    thick, ref = simulate_thick_slices(volume, 4)
    plain = super_resolve_through_plane(thick, steps=0, consistency=False, **TINY)
    cubic = along(thick.as_tensor(), SliceProfile(4, 4).interpolation(48, 12), 3)
    torch.testing.assert_close(plain.as_tensor(), cubic, rtol=1e-4, atol=1e-3)
    sr = super_resolve_through_plane(thick, steps=0, **TINY)
    for out in (plain, sr):
        shift = subvoxel_shift(ref[0].numpy(), out[0].numpy(), axes=(2,))
        assert abs(shift[0]) < 0.05, shift


def test_consistency_reproduces_the_thick_slices():
    volume = meta_volume(phantom((12, 10, 24), sigma=2.0), np.eye(4))
    thick, ref = simulate_thick_slices(volume, 3)
    sr = super_resolve_through_plane(thick, steps=3, **TINY)
    slabs = torch.from_numpy(SliceProfile(3, 3).acquisition(24, 8))
    again = along(sr.as_tensor(), slabs, 3)
    torch.testing.assert_close(again, thick.as_tensor(), rtol=1e-5, atol=1e-4)
    cubic = along(thick.as_tensor(), SliceProfile(3, 3).interpolation(24, 8), 3)
    error = (along(cubic, slabs, 3) - thick.as_tensor()).abs().max()
    assert error > 100 * (again - thick.as_tensor()).abs().max()  # cubic alone is not consistent


def test_both_orientations_are_averaged():
    torch.manual_seed(0)
    network = ThroughPlaneNet(**TINY)
    torch.nn.init.normal_(network.tail.weight, std=0.1)  # a residual that is not zero
    fine = meta_volume(phantom((10, 12, 16)), np.eye(4))
    yz, xz, both = (apply_network(fine, network, axes) for axes in ((0,), (1,), (0, 1)))
    assert not torch.allclose(yz, xz)
    torch.testing.assert_close(both.as_tensor(), (yz.as_tensor() + xz.as_tensor()) / 2)


@pytest.mark.slow
def test_training_reduces_the_loss_and_is_deterministic():
    slices = torch.from_numpy(phantom((48, 48, 4), sigma=2.5) / 100).movedim(2, 0)  # ~[0, 1]
    options = dict(patch_size=24, batch_size=8, channels=16, n_blocks=1, n_units=2)
    network, losses = train_network(slices, SliceProfile(4, 4), steps=100, seed=3, **options)
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:10]), losses
    target = slices[:, None]  # whole slices, degraded along their last axis
    profile = SliceProfile(4, 4)
    source = along(
        along(target, profile.acquisition(48, 12), -1), profile.interpolation(48, 12), -1
    )
    with torch.no_grad():
        error = torch.nn.functional.l1_loss(network(source), target)
    assert error < 0.85 * torch.nn.functional.l1_loss(source, target)
    _, again = train_network(slices, SliceProfile(4, 4), steps=3, seed=3, **options)
    assert again == losses[:3]


def test_factor_from_the_voxel_sizes_is_any_real_ratio():
    assert resolve_factor(np.diag([0.5, 0.5, 2.05, 1.0]), 2) == pytest.approx(4.1)
    assert resolve_factor(np.diag([0.9, 0.9, 5.0, 1.0]), 2) == pytest.approx(5.0 / 0.9)
    assert resolve_factor(np.diag([0.9, 0.9, 5.0, 1.0]), 2, fine_spacing=1.0) == 5.0
    assert resolve_factor(np.diag([1.0, 1.0, 1.0, 1.0]), 2, factor=3) == 3
    with pytest.raises(MRSRError, match="no thick axis"):
        resolve_factor(np.eye(4), 2)
    with pytest.raises(MRSRError, match="no thick axis"):
        resolve_factor(np.diag([1.0, 1.0, 1.4, 1.0]), 2)


def half_voxels(ref: np.ndarray) -> np.ndarray:
    """Each voxel split in two along the last axis: slab edges at half voxels become whole."""
    return np.repeat(ref, 2, axis=-1)


def test_non_integer_slices_are_the_exact_box_means_of_their_slabs():
    data = np.random.default_rng(1).random((3, 4, 20))
    thick, ref = simulate_thick_slices(meta_volume(data.astype(np.float32), np.eye(4)), 4.5)
    assert ref.shape[-1] == 18 and thick.shape[-1] == 4  # 4 slices 4.5 apart span 18 voxels
    halves = half_voxels(ref[0].numpy().astype(np.float64))  # slice k: halves [9k, 9k + 9)
    expected = halves.reshape(3, 4, 4, 9).mean(-1)
    np.testing.assert_allclose(thick[0].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(thick.affine)[:3, 2]), 4.5)
    np.testing.assert_allclose(world(thick.affine, (0, 0, 0)), world(ref.affine, (0, 0, 1.75)))


def test_a_gap_leaves_voxels_out_of_the_slices():
    """Slices 4 voxels apart, 3 thick: slice k covers [4k, 4k + 3] (half of the two end
    voxels), not [4k - 0.5, 4k + 3.5] as without a gap."""
    data = np.random.default_rng(2).random((3, 4, 16)).astype(np.float32)
    gap, _ = simulate_thick_slices(meta_volume(data, np.eye(4)), 4, thickness=3)
    full, _ = simulate_thick_slices(meta_volume(data, np.eye(4)), 4)
    weights = np.array([0.5, 1, 1, 0.5]) / 3
    expected = np.stack([data[..., 4 * k : 4 * k + 4] @ weights for k in range(4)], -1)
    np.testing.assert_allclose(gap[0].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(full[0].numpy(), data.reshape(3, 4, 4, 4).mean(-1), rtol=1e-5)
    assert not np.allclose(gap[0].numpy(), full[0].numpy(), rtol=1e-3)
    constant = np.ones((2, 2, 16), np.float32)
    same = [
        simulate_thick_slices(meta_volume(constant, np.eye(4)), 4, thickness=t)[0] for t in (3, 4)
    ]
    np.testing.assert_allclose(same[0].numpy(), same[1].numpy(), rtol=1e-6)  # flat: no difference


def test_gaussian_profile_has_its_full_width_at_half_maximum():
    weights = SliceProfile(10.0, 6.0, "gaussian").acquisition(200, 12)
    row = weights[5]
    assert row.sum() == pytest.approx(1.0)
    above = np.flatnonzero(row >= row.max() / 2)
    assert above.size in (6, 7)  # 6 voxels wide at half maximum, give or take a bin
    np.testing.assert_allclose(np.argmax(row), SliceProfile(10.0, 6.0).centres(12)[5], atol=0.5)


def test_non_integer_factor_with_a_gap_lands_on_the_reference_and_reproduces_the_slices():
    volume = meta_volume(phantom((16, 16, 40), sigma=3.0), make_affine("oblique"))
    thick, ref = simulate_thick_slices(volume, 4.5, thickness=3.5)
    sr = super_resolve_through_plane(thick, thickness=3.5, steps=2, seed=0, **TINY)
    assert sr.shape == ref.shape
    np.testing.assert_allclose(np.asarray(sr.affine), np.asarray(ref.affine), atol=1e-9)
    profile = SliceProfile(4.5, 3.5)
    again = along(sr.as_tensor(), profile.acquisition(ref.shape[-1], thick.shape[-1]), 3)
    torch.testing.assert_close(again, thick.as_tensor().float(), rtol=1e-5, atol=1e-3)


def test_command_end_to_end_and_refusals(tmp_path, write_nifti, capsys):
    thick_affine = make_affine("oblique", zooms=(1.0, 1.0, 3.0))
    src = write_nifti("thick.nii.gz", phantom((20, 20, 6)), thick_affine)
    out = tmp_path / "iso.nii.gz"
    assert main(["throughplane", src, str(out), "--steps", "2", "--seed", "0"]) == 0
    image = nib.load(str(out))
    assert image.shape == (20, 20, 18)
    expected = resampled_affine(thick_affine, [1, 1, 1 / 3], "area")
    np.testing.assert_allclose(image.affine, expected, atol=1e-5)
    capsys.readouterr()
    assert main(["throughplane", src, str(out), "--steps", "2"]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err

    iso = write_nifti("iso_in.nii.gz", phantom((20, 20, 6)), make_affine("ras"))
    assert main(["throughplane", iso, str(tmp_path / "x.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no thick axis" in err[0]
    assert not (tmp_path / "x.nii.gz").exists()


def test_command_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["throughplane", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mrsr throughplane" in out and "examples:" in out and "--max-time" in out


# ---------------------------------------------------------------- same input, same output


BOX4 = {"kind": "box", "thickness_mm": 4.0, "spacing_mm": 4.0}  # 4 mm slices, 4 mm apart


def small_case() -> MetaTensor:
    volume = meta_volume(phantom((16, 16, 16), sigma=3.0), make_affine("oblique"))
    return simulate_thick_slices(volume, 4)[0]


@pytest.mark.slow
def test_same_output_twice_under_a_competing_cpu_load():
    """Training is a fixed number of seeded steps: busy loops on every core, which slow each
    step down, change nothing, bit for bit."""
    thick = small_case()
    quiet = super_resolve_through_plane(thick, steps=15, seed=2, **TINY)
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        loaded = super_resolve_through_plane(thick, steps=15, seed=2, **TINY)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert torch.equal(quiet.as_tensor(), loaded.as_tensor())
    assert loaded.meta[FACTS]["through_plane_steps_trained"] == 15
    other_seed = super_resolve_through_plane(thick, steps=15, seed=3, **TINY)
    assert not torch.equal(quiet.as_tensor(), other_seed.as_tensor())  # the seed matters


class Clock:
    """A monotonic clock that advances ``tick`` seconds at every reading: a machine slowed
    down without limit."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_default_training_never_stops_on_the_clock_and_a_cap_records_the_steps(monkeypatch):
    thick = small_case()
    steady = super_resolve_through_plane(thick, steps=6, **TINY)
    monkeypatch.setattr(training, "monotonic", Clock(1000.0))  # each step "takes" 1000 s
    slow = super_resolve_through_plane(thick, steps=6, **TINY)
    assert torch.equal(steady.as_tensor(), slow.as_tensor())
    facts = slow.meta[FACTS]
    assert facts["through_plane_steps_trained"] == 6 and not facts["through_plane_time_capped"]
    monkeypatch.setattr(training, "monotonic", Clock(1.0))  # 1 s per reading
    capped = super_resolve_through_plane(thick, steps=6, max_time=3.5, **TINY)
    facts = capped.meta[FACTS]
    assert facts["through_plane_steps_trained"] == 3 and facts["through_plane_time_capped"]
    assert not torch.equal(steady.as_tensor(), capped.as_tensor())
    assert facts["through_plane_seed"] == 0 and facts["through_plane_profile"] == BOX4


@pytest.mark.slow
def test_one_and_two_threads_agree_within_1e_4_of_the_range():
    """Training on the caller's threads, 1 and 2 differed by 6e-3 of the range after these 60
    steps (the gradients' sums, in another order, amplified by training); trained on one
    thread, the two agree and the caller's thread count is restored."""
    volume = meta_volume(phantom((24, 24, 24), sigma=3.0), make_affine("oblique"))
    thick = simulate_thick_slices(volume, 4)[0]
    threads = torch.get_num_threads()
    try:
        outputs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            sr = super_resolve_through_plane(thick, steps=60, seed=1, thickness=4, profile="box")
            assert torch.get_num_threads() == n
            outputs.append(sr.as_tensor().double())
    finally:
        torch.set_num_threads(threads)
    one, two = outputs
    assert (one - two).abs().max() <= 1e-4 * float(one.max() - one.min())
    untrained = super_resolve_through_plane(thick, steps=0, thickness=4, profile="box")
    assert (one - untrained.as_tensor()).abs().max() > 1e-2 * float(one.max() - one.min())


def test_axis_option_reaches_the_training(tmp_path, write_nifti):
    """Thick along x and z: --axis chooses which one is super-resolved."""
    src = write_nifti("both.nii.gz", phantom((6, 20, 6)), np.diag([3.0, 1.0, 3.0, 1.0]))
    shapes = {}
    for axis in (0, 2):
        out = tmp_path / f"axis{axis}.nii.gz"
        argv = ["throughplane", src, str(out), "--axis", str(axis), "--factor", "3", "-q"]
        assert main([*argv, "--steps", "2"]) == 0
        shapes[axis] = nib.load(str(out)).shape
    assert shapes == {0: (18, 20, 6), 2: (6, 20, 18)}


def test_sidecars_record_steps_seed_cap_and_profile(tmp_path, write_nifti):
    src = write_nifti("thick.nii.gz", phantom((16, 16, 6)), np.diag([1.0, 1.0, 4.0, 1.0]))
    out = tmp_path / "iso.nii.gz"
    argv = ["throughplane", src, str(out), "--steps", "3", "--seed", "5", "--profile", "gaussian"]
    assert main([*argv, "-q"]) == 0
    record = json.loads((tmp_path / "iso.json").read_text())["mrsr"]
    assert record["through_plane_steps"] == 3 and record["through_plane_steps_trained"] == 3
    assert record["through_plane_seed"] == 5 and record["through_plane_time_capped"] is False
    assert "through_plane_max_time_s" not in record  # no cap given
    assert record["through_plane_profile"] == {**BOX4, "kind": "gaussian"}

    out = tmp_path / "up.nii.gz"
    argv = ["upscale", src, str(out), "--model", "zerofill", "--voxel-size", "1"]
    assert main([*argv, "--through-plane-steps", "2", "--through-plane-max-time", "900", "-q"]) == 0
    record = json.loads((tmp_path / "up.json").read_text())["mrsr"]
    assert record["through_plane_steps"] == 2 and record["through_plane_steps_trained"] == 2
    assert record["through_plane_max_time_s"] == 900 and record["through_plane_seed"] == 0
    assert record["through_plane_time_capped"] is False and record["through_plane_profile"] == BOX4


def test_pipeline_takes_the_command_line_s_through_plane_options():
    thick = small_case()
    pipe = Pipeline("zerofill", through_plane_steps=4, through_plane_max_time=600)
    facts = pipe(thick, voxel_size=1.0).meta[FACTS]
    assert facts["through_plane_steps_trained"] == 4 and not facts["through_plane_time_capped"]
    cubic = Pipeline("zerofill", through_plane_steps=0)
    assert "by cubic B-spline interpolation" in cubic.plan(thick, voxel_size=1.0).describe()
    assert "through_plane_steps_trained" not in cubic(thick, voxel_size=1.0).meta.get(FACTS, {})
