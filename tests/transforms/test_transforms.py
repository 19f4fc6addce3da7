"""Degradation transforms: MONAI composition, affines, bicubic reference, random scales."""

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_affine, meta_volume, phantom
from monai.transforms import Compose, CopyItemsd, LoadImaged

from mrsr.geometry import resampled_affine
from mrsr.transforms import (
    BicubicDownsample,
    BicubicDownsampled,
    CropToMultiple,
    KSpaceTruncation,
    KSpaceTruncationd,
    MakePaird,
    RandKSpaceTruncationd,
)


def test_dictionary_transforms_compose_from_a_file_on_disk(write_nifti):
    affine = make_affine("lps", (1.0, 1.0, 2.5))
    path = write_nifti("t2.nii.gz", phantom((41, 37, 6)), affine)
    pipeline = Compose(
        [
            LoadImaged("image", ensure_channel_first=True),
            MakePaird("image", scale=2, method="kspace"),
            CopyItemsd("hr", names="hr_bicubic"),
            BicubicDownsampled("hr_bicubic", scale=2),
        ]
    )
    d = pipeline({"image": path})
    assert d["hr"].shape == (1, 40, 36, 6) and d["lr"].shape == (1, 20, 18, 6)
    assert d["hr_bicubic"].shape == (1, 20, 18, 6)
    np.testing.assert_allclose(
        d["lr"].affine.numpy(), resampled_affine(d["hr"].affine.numpy(), [2, 2, 1], "kspace")
    )
    np.testing.assert_allclose(
        d["hr_bicubic"].affine.numpy(),
        resampled_affine(d["hr"].affine.numpy(), [2, 2, 1], "area"),
    )


def test_crop_to_multiple_is_centred_and_moves_the_origin():
    vol = meta_volume(phantom((41, 38, 5)), make_affine("ras"))
    out = CropToMultiple(4, axes=(0, 1))(vol)
    assert out.shape == (1, 40, 36, 5)
    np.testing.assert_allclose(out.affine.numpy(), vol.affine.numpy() @ _translation(0, 1, 0))
    np.testing.assert_array_equal(out.numpy(), vol.numpy()[:, 0:40, 1:37])


def _translation(*t):
    m = np.eye(4)
    m[:3, 3] = t
    return m


def test_default_axes_follow_the_slice_axis_rule():
    vol = meta_volume(phantom((6, 20, 24)), np.diag([4.0, 1.0, 1.0, 1.0]))  # slices along x
    out = KSpaceTruncation(2)(vol)
    assert out.shape == (1, 6, 10, 12)
    np.testing.assert_allclose(np.diag(out.affine.numpy()), [4, 2, 2, 1])


def test_bicubic_matches_torch_reference_and_area_grid():
    x = torch.rand(1, 24, 18, 3)
    out = BicubicDownsample(3, axes=(0, 1))(x)
    planes = x.permute(3, 0, 1, 2)  # (Z, 1, X, Y)
    ref = F.interpolate(planes, size=(8, 6), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(out.as_tensor(), ref.permute(1, 2, 3, 0))
    affine = make_affine("oblique", (0.5, 0.5, 3.0))
    vol = meta_volume(np.ones((24, 18, 3), np.float32), affine)
    out = BicubicDownsample(3, axes=(0, 1))(vol)
    centre = affine @ [1, 1, 0, 1]  # LR voxel 0 covers HR voxels 0..2: centre at HR index 1
    np.testing.assert_allclose(out.affine.numpy() @ [0, 0, 0, 1], centre, atol=1e-9)
    np.testing.assert_allclose(out.numpy(), 1.0, rtol=1e-5)


def test_bicubic_one_axis():
    x = torch.rand(1, 10, 12, 9)
    out = BicubicDownsample(3, axes=(2,), antialias=False)(x)
    ref = F.interpolate(x[0].reshape(1, 1, 120, 9), size=(120, 3), mode="bicubic")
    torch.testing.assert_close(out.as_tensor(), ref.reshape(1, 10, 12, 3))


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def _antialiased_bicubic_1d(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    """Independent reference: each output sample is the cubic (a = -0.5, as PIL) stretched by
    ``scale`` over the input, centred on its area, weights renormalised inside the volume."""
    n = x.shape[axis]
    centres = (np.arange(n // scale) + 0.5) * scale
    weights = _keys_cubic((np.arange(n)[None, :] + 0.5 - centres[:, None]) / scale)
    weights /= weights.sum(1, keepdims=True)
    return np.moveaxis(np.tensordot(weights, np.moveaxis(x, axis, 0), axes=1), 0, axis)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_antialiased_bicubic_along_any_one_axis_matches_the_kernel(axis):
    x = np.random.default_rng(axis).random((16, 12, 8)) + np.arange(8)[None, None, :]
    out = BicubicDownsample(4, axes=(axis,))(torch.from_numpy(x[None]))[0].numpy()
    np.testing.assert_allclose(
        out, _antialiased_bicubic_1d(x, 4, axis), rtol=1e-6, atol=1e-5
    )  # float32


def test_rand_truncation_shares_the_scale_across_keys_and_is_reproducible():
    data = {"a": torch.rand(1, 24, 24), "b": torch.rand(1, 24, 24)}
    t = RandKSpaceTruncationd(["a", "b"], scales=(2, 3, 4)).set_random_state(7)
    shapes = [tuple(t(data)["a"].shape) for _ in range(12)]
    assert len(set(shapes)) > 1  # scales vary between calls
    out = t(data)
    assert out["a"].shape == out["b"].shape
    t2 = RandKSpaceTruncationd(["a", "b"], scales=(2, 3, 4)).set_random_state(7)
    assert [tuple(t2(data)["a"].shape) for _ in range(12)] == shapes
    never = RandKSpaceTruncationd("a", prob=0.0)
    assert never(data)["a"].shape == (1, 24, 24)


def test_dictionary_wrapper_equals_array_transform():
    x = torch.rand(1, 16, 14, 2)
    torch.testing.assert_close(
        KSpaceTruncationd("x", scale=2, axes=(0, 1))({"x": x})["x"],
        KSpaceTruncation(2, axes=(0, 1))(x),
    )


def test_bad_axes_and_scales_are_rejected():
    with pytest.raises(ValueError, match="axes"):
        KSpaceTruncation(2, axes=(3,))(torch.rand(1, 8, 8, 8))
    with pytest.raises(ValueError, match="smaller than scale"):
        KSpaceTruncation(4, axes=(0, 1))(torch.rand(1, 3, 8))
    with pytest.raises(ValueError, match="positive integer"):
        KSpaceTruncation(1.5)


def test_degrade_refuses_with_the_volume_named(write_nifti):
    from monai.transforms import LoadImage

    from mrsr.errors import MRSRError
    from mrsr.transforms import degrade

    path = write_nifti("tiny.nii.gz", phantom((3, 3, 2)), np.eye(4))
    volume = LoadImage(ensure_channel_first=True)(path)
    with pytest.raises(MRSRError, match="tiny.nii.gz: .*smaller than scale 4"):
        degrade(volume, 4)


def test_load_volumed_places_a_volume_by_its_sform_as_every_command_does(tmp_path):
    """The loader the docs recommend for MONAI pipelines takes the sform when its code is set."""
    from mrsr.transforms import LoadVolume, LoadVolumed

    sform = np.diag([0.5, 0.5, 2.0, 1.0])
    sform[:3, 3] = [50.0, 0.0, 0.0]
    image = nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4))
    image.set_qform(np.eye(4), code=1)
    image.set_sform(sform, code=2)
    nib.save(image, str(tmp_path / "v.nii.gz"))
    loaded = LoadVolumed("image")({"image": tmp_path / "v.nii.gz"})["image"]
    np.testing.assert_allclose(np.asarray(loaded.affine), sform)
    np.testing.assert_allclose(np.asarray(LoadVolume()(tmp_path / "v.nii.gz").affine), sform)
