"""mrsr.metrics against independent NumPy and scikit-image computations on synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from mrsr.metrics import evaluate, foreground_mask, nrmse, psnr, slice_scores, ssim


def pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random reference (in-plane blur) and a prediction with smooth in-plane error."""
    rng = np.random.default_rng(seed)
    sigma = (2.0, 2.0) + (0.0,) * (len(shape) - 2)
    ref = 100 + 400 * gaussian_filter(rng.normal(size=shape), sigma)
    pred = ref + 20 * gaussian_filter(rng.normal(size=shape), np.asarray(sigma) / 2)
    return pred.astype(np.float32), ref.astype(np.float32)


def blob_mask(shape: tuple[int, ...]) -> np.ndarray:
    """Off-centre in-plane ellipses growing along the last axis; the first slice has no voxel."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    u = (x - 0.4 * shape[0]) / (0.3 * shape[0])
    v = (y - 0.6 * shape[1]) / (3 * z + 1)
    return (u**2 + v**2 <= 1) & (z > 0)


def skimage_ssim_slices(pred, ref, data_range, mask=None) -> float:
    """Mean over the last axis of skimage's SSIM, or of its full map under the mask."""
    scores = []
    for k in range(ref.shape[-1]):
        mssim, smap = structural_similarity(
            pred[..., k].astype(np.float64),
            ref[..., k].astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=data_range,
            full=True,
        )
        if mask is None:
            scores.append(mssim)
        elif mask[..., k].any():
            scores.append(smap[mask[..., k]].mean())
    return float(np.mean(scores))


@pytest.mark.parametrize("range_over", ["reference", "evaluated"])
@pytest.mark.parametrize("shave", [0, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_psnr_and_nrmse_match_numpy(shave, masked, range_over):
    pred, ref = pair((30, 26, 4))
    mask = blob_mask(ref.shape) if masked else None
    inner = (slice(shave, ref.shape[0] - shave), slice(shave, ref.shape[1] - shave))
    keep = np.ones(ref.shape, bool) if mask is None else mask
    r, p = ref[inner][keep[inner]].astype(np.float64), pred[inner][keep[inner]].astype(np.float64)
    whole = float(ref.max()) - float(ref.min())
    data_range = whole if range_over == "reference" else r.max() - r.min()
    mse = np.mean((p - r) ** 2)
    kwargs = dict(range_over=range_over)
    expected = 10 * np.log10(data_range**2 / mse)
    assert psnr(pred, ref, mask, shave, **kwargs) == pytest.approx(expected)
    assert nrmse(pred, ref, mask, shave, **kwargs) == pytest.approx(np.sqrt(mse) / data_range)


@pytest.mark.parametrize("shape", [(32, 32, 3), (24, 41, 2), (11, 13, 4)])
def test_ssim_matches_skimage_mean_over_slices(shape):
    pred, ref = pair(shape, seed=sum(shape))
    expected = skimage_ssim_slices(pred, ref, float(ref.max() - ref.min()))
    assert ssim(pred, ref) == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize("kind", ["blob", "all"])
def test_masked_ssim_averages_skimage_full_map_under_mask(kind):
    pred, ref = pair((28, 30, 3), seed=1)
    mask = blob_mask(ref.shape) if kind == "blob" else np.ones(ref.shape, bool)
    expected = skimage_ssim_slices(pred, ref, float(np.ptp(ref)), mask)
    assert ssim(pred, ref, mask) == pytest.approx(expected, abs=1e-8)
    evaluated = skimage_ssim_slices(pred, ref, float(np.ptp(ref[mask])), mask)
    assert ssim(pred, ref, mask, range_over="evaluated") == pytest.approx(evaluated, abs=1e-8)
    if kind == "all":  # the border the unmasked score crops is kept: a different number
        assert expected != pytest.approx(ssim(pred, ref), abs=1e-4)


def test_slice_axis_selects_the_slices():
    pred, ref = pair((24, 20, 16), seed=2)
    mask = blob_mask(ref.shape)
    last = evaluate(pred, ref, mask, shave=2)
    pred, ref, mask = (np.moveaxis(v, -1, 0) for v in (pred, ref, mask))  # slices along axis 0
    assert evaluate(pred, ref, mask, shave=2, axis=0) == pytest.approx(last, rel=1e-12)
    assert ssim(pred, ref, axis=0) != pytest.approx(ssim(pred, ref, axis=-1), abs=1e-3)


def test_shave_removes_exactly_the_in_plane_border():
    _, ref = pair((20, 22, 3), seed=3)
    pred = ref + 50
    pred[2:-2, 2:-2] = ref[2:-2, 2:-2]
    assert evaluate(pred, ref, shave=2) == {"psnr": np.inf, "ssim": 1.0, "nrmse": 0.0}
    assert np.isfinite(psnr(pred, ref, shave=1))
    pred[2:-2, 2:-2, 0] += 1  # the slice axis is never shaved
    assert np.isfinite(psnr(pred, ref, shave=2))


def test_data_range_is_the_whole_references_or_the_evaluated_voxels():
    """Default: the whole reference's range, as scikit-image and papers; the evaluated voxels'
    (after the mask and the shave) on request."""
    pred, ref = pair((24, 24, 3), seed=4)
    ref[:2, :2] = pred[:2, :2] = 5000  # a bright corner, equal in both
    full = float(ref.max() - ref.min())
    mask = np.ones(ref.shape, bool)
    mask[:2, :2] = False
    masked = float(np.ptp(ref[mask]))
    assert masked < full / 4
    evaluated = dict(range_over="evaluated")
    shift = 20 * np.log10(masked / full)
    assert psnr(pred, ref, mask, **evaluated) - psnr(pred, ref, mask) == pytest.approx(shift)
    assert psnr(pred, ref, mask) == pytest.approx(psnr(pred, ref, mask, data_range=full))
    inner = float(np.ptp(ref[2:-2, 2:-2]))
    assert psnr(pred, ref, shave=2) == pytest.approx(psnr(pred, ref, shave=2, data_range=full))
    assert psnr(pred, ref, shave=2, **evaluated) == pytest.approx(
        psnr(pred, ref, shave=2, data_range=inner)
    )
    assert ssim(pred, ref, mask) == pytest.approx(ssim(pred, ref, mask, data_range=full))
    assert ssim(pred, ref, mask, **evaluated) == pytest.approx(
        ssim(pred, ref, mask, data_range=masked)
    )
    rmse = np.sqrt(np.mean((pred.astype(np.float64) - ref)[mask] ** 2))
    assert nrmse(pred, ref, mask) == pytest.approx(rmse / full)
    assert nrmse(pred, ref, mask, **evaluated) == pytest.approx(rmse / masked)
    with pytest.raises(ValueError, match="range_over"):
        psnr(pred, ref, range_over="foreground")


def test_identical_volumes_and_input_forms():
    pred, ref = pair((16, 16, 3), seed=5)
    assert evaluate(ref, ref.copy(), blob_mask(ref.shape)) == {
        "psnr": np.inf,
        "ssim": 1.0,
        "nrmse": 0.0,
    }
    as_numpy = evaluate(pred, ref)
    as_torch = evaluate(torch.from_numpy(pred)[None], torch.from_numpy(ref)[None])
    assert as_torch == pytest.approx(as_numpy, rel=1e-12)
    assert evaluate(pred[..., 1], ref[..., 1]) == pytest.approx(
        evaluate(pred[..., 1:2], ref[..., 1:2])
    )


def head(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A head-like slab (slices along the last axis) and its filled ellipsoid.

    Bright shell (scalp), darker inside, and a dark canal along the slice axis that runs through
    the slab's faces: a hole in every slice but not in 3D, so only per-slice filling closes it.
    """
    x, y, z = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    r = np.sqrt((x / (0.4 * shape[0])) ** 2 + (y / (0.35 * shape[1])) ** 2 + (z / 40) ** 2)
    vol = np.where(r <= 1, 100.0, 0.0)
    vol[r <= 0.8] = 40
    vol[(x - 2) ** 2 + y**2 <= 9] = 0
    vol += np.random.default_rng(seed).normal(0, 2, shape)
    return vol, r <= 1


@pytest.mark.parametrize("axis", [0, -1])
def test_foreground_mask_is_the_filled_head(axis):
    vol, expected = head((40, 36, 10))
    if axis == 0:
        vol, expected = vol.transpose(2, 0, 1), expected.transpose(2, 0, 1)
    mask = foreground_mask(vol, axis=axis)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)


def test_errors_name_the_problem():
    pred, ref = pair((16, 16, 3))
    with pytest.raises(ValueError, match=r"\(16, 16, 3\) vs \(16, 16, 4\)"):
        psnr(pred, np.zeros((16, 16, 4)))
    for which in (0, 1):
        inputs = [pred.copy(), ref.copy()]
        inputs[which][3, 4, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            ssim(*inputs)


def test_slice_scores_normalise_by_the_percentile_and_skip_empty_slices():
    rng = np.random.default_rng(0)
    ref = rng.random((24, 24, 4)) * 200
    ref[..., 3] = 0.0  # an empty slice does not count
    pred = ref + rng.normal(0, 2.0, ref.shape)
    out = slice_scores(pred, ref)
    assert out["slices"] == 3
    top = np.percentile(ref, 99.5)
    expected = np.mean(
        [psnr(pred[..., z] / top, ref[..., z] / top, data_range=1.0) for z in range(3)]
    )
    assert out["psnr"] == pytest.approx(expected)
    assert slice_scores(pred * 3, ref * 3)["psnr"] == pytest.approx(out["psnr"])
