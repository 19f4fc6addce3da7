"""Several stacks into one volume: the grid, each stack's re-acquisition, the gain, refusals."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_affine, meta_volume, phantom, rotation
from monai.data import MetaTensor

from mrsr import Pipeline, metrics
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.fusion import Acquisition, fuse_stacks
from mrsr.registration import corrected, register_rigid
from mrsr.resample import resample, voxel_size_grid
from mrsr.slice_profiles import simulate_thick_slices
from mrsr.throughplane import super_resolve_through_plane

TINY = dict(channels=8, n_blocks=1, n_units=1, steps=0, profile="box")  # untrained: fast
RESIDUAL = 0.01  # relative RMS re-acquisition residual bound at the default weight 0.1


def interpolated(stack, plan, thickness, profile):
    """A stack's estimate without a network (fast): resampled onto the plan's grid."""
    return resample(stack, plan.shape, plan.affine, band_limited=plan.in_plane_axes)


FAST = dict(estimate=interpolated, profile="box")


def orthogonal_stacks(kind="ras", size=24, factor=4):
    """A smooth 1 mm truth and its three orthogonal stacks of ``factor`` mm box slices, each on
    the truth's grid (``size`` a multiple of ``factor``: nothing is cropped)."""
    truth = meta_volume(phantom((size,) * 3, sigma=2.5), make_affine(kind))
    return truth, [simulate_thick_slices(truth, factor, axis)[0] for axis in range(3)]


def reacquired(volume, stack_axis, factor=4):
    """The volume acquired again as a stack is: box slabs along ``stack_axis``."""
    thick, ref = simulate_thick_slices(volume, factor, stack_axis)
    assert ref.shape == volume.shape  # nothing cropped: the stack's own slabs
    return thick


@pytest.mark.parametrize("turn", [0.0, 20.0])  # axes that follow the stack's, or turned
def test_acquisition_adjoint_is_the_transpose(turn):
    truth, stacks = orthogonal_stacks("oblique", size=12)
    shape, affine = voxel_size_grid(truth.shape[1:], truth.affine, [1.3, 0.9, 1.1])
    affine = np.asarray(affine).copy()
    affine[:3, :3] = rotation((turn, 0.0, 0.0)) @ affine[:3, :3]
    shape = (shape[0], shape[1] - 4, shape[2])  # a field of view that cuts some slabs off
    op = Acquisition.of(stacks[1], 1, 4.0, 0.8, "gaussian", shape, affine)
    assert (op.points is None) == (turn == 0.0)
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=rng)
    y = torch.rand(stacks[1].shape[1:], generator=rng)
    forward, backward = float((op(x) * y).sum()), float((x * op.adjoint(y)).sum())
    assert forward == pytest.approx(backward, rel=1e-5)
    assert op.inside.any() and not op.inside.all()


@pytest.mark.parametrize("kind", ["ras", "oblique"])
def test_fused_volume_lies_on_the_reference_grid_and_reproduces_every_stack(kind):
    truth, stacks = orthogonal_stacks(kind)
    fused = fuse_stacks(stacks, like=truth, **TINY)
    assert fused.shape == truth.shape
    np.testing.assert_array_equal(np.asarray(fused.affine), np.asarray(truth.affine))
    recorded = fused.meta["mrsr_facts"]["stack_residuals"]
    for axis, stack in enumerate(stacks):
        again = reacquired(fused, axis)
        error = float(torch.linalg.norm(again - stack) / torch.linalg.norm(stack))
        assert error < RESIDUAL, (axis, error)
        assert recorded[axis] == pytest.approx(error, rel=0.05, abs=1e-5)
    assert fused.meta["mrsr_facts"]["clamped_at_zero"] is True
    assert float(fused.min()) >= 0


def test_voxel_size_grid_covers_the_first_stack():
    truth, stacks = orthogonal_stacks("oblique", size=16)
    fused = fuse_stacks(stacks, voxel_size=1.6, **FAST)
    first = np.asarray(stacks[0].affine)
    # the first stack: 4 slabs of 4 mm along axis 0 by 16 x 16 pixels of 1 mm, a 16 mm cube
    assert fused.shape[1:] == (10, 10, 10)
    centre = lambda a, n: a @ np.append((np.asarray(n) - 1) / 2, 1)  # noqa: E731
    np.testing.assert_allclose(
        centre(np.asarray(fused.affine), fused.shape[1:]), centre(first, stacks[0].shape[1:])
    )
    directions = first[:3, :3] / np.linalg.norm(first[:3, :3], axis=0)
    np.testing.assert_allclose(np.asarray(fused.affine)[:3, :3], 1.6 * directions, atol=1e-12)


@pytest.mark.slow
def test_fusion_beats_every_single_stack():
    truth, stacks = orthogonal_stacks("ras", size=32)
    reference = truth[0].numpy()
    grid = (truth.shape[1:], np.asarray(truth.affine))
    fused = metrics.psnr(fuse_stacks(stacks, like=truth, **TINY)[0].numpy(), reference)
    for axis, stack in enumerate(stacks):
        single = super_resolve_through_plane(stack, axis=axis, **TINY)
        alone = metrics.psnr(resample(single, *grid, band_limited=())[0].numpy(), reference)
        assert fused > alone + 1.0, (axis, fused, alone)


def test_pipeline_fuses_onto_the_grid():
    truth, stacks = orthogonal_stacks("ras", size=16)
    pipe = Pipeline("zerofill", through_plane_steps=0)  # cubic B-spline estimates, no training
    fused = pipe.fuse(stacks, like=truth)
    assert fused.shape == truth.shape
    np.testing.assert_array_equal(np.asarray(fused.affine), np.asarray(truth.affine))
    assert max(fused.meta["mrsr_facts"]["stack_residuals"]) < RESIDUAL


def test_pipeline_fuse_estimates_each_stack_profile_once(monkeypatch):
    """The profile fuse_stacks estimated for a stack is the one its network trains for, not a
    second estimate from the in-plane result."""
    from mrsr import profile_estimation

    calls = []
    estimate = profile_estimation.estimate_slice_profile
    monkeypatch.setattr(
        profile_estimation,
        "estimate_slice_profile",
        lambda *args, **kwargs: calls.append(1) or estimate(*args, **kwargs),
    )
    truth, stacks = orthogonal_stacks("ras", size=16)
    Pipeline("zerofill", through_plane_steps=2).fuse(stacks, like=truth)
    assert len(calls) == len(stacks)


def moved_by(volume, degrees=(4.0, -3.0), shift=(2.0, -1.5, 1.0)):
    """``(volume seen after a rigid motion, the motion)``: its header now says ``motion @ affine``
    (the voxels stay where they were in the truth's world)."""
    motion = np.eye(4)
    motion[:3, :3] = rotation((degrees[1], 0.0, degrees[0]))
    motion[:3, 3] = shift
    return corrected(volume, np.linalg.inv(motion)), motion


def test_registration_recovers_a_moved_stack():
    truth, stacks = orthogonal_stacks("ras", size=40)
    moved, motion = moved_by(stacks[2])
    found, _ = register_rigid(stacks[0], moved)
    np.testing.assert_allclose(found[:3, :3], motion[:3, :3], atol=0.01)  # 0.6 degrees
    np.testing.assert_allclose(found[:3, 3], motion[:3, 3], atol=0.5)  # 1/8 of a slice


@pytest.mark.slow
def test_registered_fusion_records_the_motion_and_fits_every_stack():
    truth, stacks = orthogonal_stacks("ras", size=40)
    moved, motion = moved_by(stacks[2])
    stacks[2] = moved
    plain = fuse_stacks(stacks, like=truth, **FAST).meta["mrsr_facts"]
    fused = fuse_stacks(stacks, like=truth, register=True, **FAST).meta["mrsr_facts"]
    assert "registration" not in plain and len(fused["registration"]) == 3
    np.testing.assert_array_equal(fused["registration"][0], np.eye(4))
    np.testing.assert_allclose(np.asarray(fused["registration"][2])[:3, 3], motion[:3, 3], atol=0.5)
    assert max(plain["stack_residuals"]) > 2 * RESIDUAL  # the moved stack disagrees
    assert max(fused["stack_residuals"]) < 2 * RESIDUAL  # up to the registration's error


def test_bad_stacks_are_refused():
    truth, stacks = orthogonal_stacks("ras", size=16)
    with pytest.raises(MRSRError, match="two or more"):
        fuse_stacks(stacks[:1], like=truth)
    with pytest.raises(MRSRError, match="target grid"):
        fuse_stacks(stacks)
    with pytest.raises(MRSRError, match="weight must be a number above 0"):
        fuse_stacks(stacks, like=truth, weight=0)
    with pytest.raises(MRSRError, match="thickness: one value per stack"):
        fuse_stacks(stacks, like=truth, thickness=[4.0, 4.0])
    away = np.eye(4)
    away[:3, 3] = -500.0
    far = corrected(stacks[1], away)  # 500 mm off in every direction
    with pytest.raises(MRSRError, match=r"stacks\[1\]: its field of view does not overlap"):
        fuse_stacks([stacks[0], far], like=truth, **FAST)
    two = MetaTensor(torch.cat([stacks[2].as_tensor()] * 2), affine=stacks[2].affine)
    with pytest.raises(MRSRError, match="2 channels"):
        fuse_stacks([stacks[0], two], like=truth)
    labels = meta_volume(np.zeros((16, 16, 4), np.int16), np.asarray(stacks[2].affine))
    labels.as_tensor()[..., :8, :, :] = 3
    labels.meta["source_dtype"] = "int16"
    with pytest.raises(MRSRError, match="label map"):
        fuse_stacks([stacks[0], labels], like=truth)


@pytest.mark.slow
def test_command_fuses_and_records_each_stack(tmp_path, capsys):
    truth, stacks = orthogonal_stacks("lps", size=16)
    paths = []
    for name, volume in zip("abc", [*stacks]):
        paths.append(str(tmp_path / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(volume[0].numpy(), np.asarray(volume.affine)), paths[-1])
    ref = str(tmp_path / "ref.nii.gz")
    nib.save(nib.Nifti1Image(truth[0].numpy(), np.asarray(truth.affine)), ref)
    out = tmp_path / "fused.nii.gz"

    def run(*args):
        capsys.readouterr()
        code = main(["throughplane", *args])
        return code, capsys.readouterr().err.strip().splitlines()

    code, err = run(*paths, str(out))
    assert code == 2 and len(err) == 1 and "need a target grid" in err[0]
    code, err = run(paths[0], str(out), "--voxel-size", "1")
    assert code == 2 and len(err) == 1 and "--voxel-size: only used to fuse" in err[0]
    code, err = run(*paths, str(out), "--like", ref, "--factor", "4")
    assert code == 2 and len(err) == 1 and "--factor" in err[0]
    assert not out.exists()
    code, err = run(*paths, str(out), "--like", ref, "--steps", "1", "--device", "cpu")
    assert code == 0, err
    saved = nib.load(out)
    assert saved.shape == truth.shape[1:]
    np.testing.assert_allclose(saved.affine, np.asarray(truth.affine), atol=1e-6)
    record = json.loads((tmp_path / "fused.json").read_text())["mrsr"]
    assert record["stacks"] == paths
    assert len(record["stack_residuals"]) == 3 and max(record["stack_residuals"]) < RESIDUAL
