"""k-space truncation and zero-filling against independent NumPy computations."""

import numpy as np
import pytest
import torch

from mrsr import kspace
from mrsr.transforms import KSpaceTruncation


def numpy_truncation(x: np.ndarray, scale: int) -> np.ndarray:
    """Reference: 2D centred FFT, keep the central (N//s) block, inverse FFT, magnitude, rescale."""
    n0, n1 = x.shape
    m0, m1 = n0 // scale, n1 // scale
    k = np.fft.fftshift(np.fft.fft2(x))
    a0, a1 = n0 // 2 - m0 // 2, n1 // 2 - m1 // 2
    block = k[a0 : a0 + m0, a1 : a1 + m1]
    return np.abs(np.fft.ifft2(np.fft.ifftshift(block))) * (m0 * m1) / (n0 * n1)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("shape", [(24, 36), (25, 31), (17, 40)])
def test_truncation_matches_numpy(scale, shape):
    x = np.random.default_rng(1).random(shape)
    out = KSpaceTruncation(scale, axes=(0, 1))(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(out, numpy_truncation(x, scale), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("shape", [(20, 30, 5), (21, 33, 4)])
def test_flat_image_stays_flat(scale, shape):
    out = KSpaceTruncation(scale, axes=(0, 1))(torch.full((1, *shape), 7.5))
    assert out.shape[1:] == (shape[0] // scale, shape[1] // scale, shape[2])
    np.testing.assert_allclose(out.numpy(), 7.5, rtol=1e-5)
    zf = KSpaceTruncation(scale, axes=(0, 1), zero_filled=True)(torch.full((1, *shape), 7.5))
    assert zf.shape[1:] == shape
    np.testing.assert_allclose(zf.numpy(), 7.5, rtol=1e-5)


@pytest.mark.parametrize("scale,shape", [(3, (27, 45)), (5, (35, 25))])
def test_output_spectrum_is_central_block(scale, shape):
    """With odd block sizes and a positive image the magnitude is the identity, so the output's
    spectrum must be the input's central block (times the flat-region gain)."""
    rng = np.random.default_rng(2)
    x = 50.0 + rng.random(shape)
    sizes = (shape[0] // scale, shape[1] // scale)
    out = kspace.truncate(torch.from_numpy(x), sizes, dims=(0, 1)).numpy()  # float64
    m0, m1 = out.shape
    assert m0 % 2 == 1 and m1 % 2 == 1
    k_in = np.fft.fftshift(np.fft.fft2(x))
    a0, a1 = shape[0] // 2 - m0 // 2, shape[1] // 2 - m1 // 2
    expected = k_in[a0 : a0 + m0, a1 : a1 + m1] * (m0 * m1) / x.size
    np.testing.assert_allclose(np.fft.fftshift(np.fft.fft2(out)), expected, atol=1e-8 * x.size)


def test_one_axis_variant_only_touches_that_axis():
    x = torch.rand(1, 12, 10, 16, dtype=torch.float64)
    out = KSpaceTruncation(4, axes=(2,))(x)
    assert out.shape == (1, 12, 10, 4)
    k = np.fft.fftshift(np.fft.fft(x.numpy(), axis=-1), axes=-1)[..., 6:10]
    ref = np.abs(np.fft.ifft(np.fft.ifftshift(k, axes=-1), axis=-1)) / 4
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)  # float32 inside


@pytest.mark.parametrize("m,scale", [(8, 2), (9, 3), (7, 4)])
def test_zero_fill_passes_through_samples(m, scale):
    x = torch.rand(3, m, m + 1, dtype=torch.float64)
    up = kspace.zero_fill(x, (m * scale, (m + 1) * scale), dims=(-2, -1))
    torch.testing.assert_close(up[:, ::scale, ::scale], x)


def test_truncation_of_zero_fill_is_identity_for_odd_sizes():
    x = torch.rand(2, 9, 11, dtype=torch.float64) + 5
    up = kspace.zero_fill(x, (27, 33), dims=(-2, -1))
    torch.testing.assert_close(kspace.truncate(up, (9, 11), dims=(-2, -1)), x)


@pytest.mark.parametrize("shape,scale", [((9, 11), 2), ((8, 10), 2), ((8, 9), 3), ((10, 10), 4)])
def test_data_consistency_reproduces_the_acquisition(shape, scale):
    hr = torch.rand(shape[0] * scale, shape[1] * scale, dtype=torch.float64) + 1
    lr = kspace.truncate(hr, shape, dims=(0, 1))
    guess = kspace.zero_fill(lr, hr.shape, dims=(0, 1)) + 0.05 * torch.randn_like(hr)
    fixed = kspace.data_consistency(guess, lr, dims=(0, 1))
    assert not torch.is_complex(fixed)
    torch.testing.assert_close(kspace.truncate(fixed, shape, dims=(0, 1)), lr)
    # projecting onto data the reference satisfies (exactly for odd sizes) cannot move away (L2)
    assert torch.linalg.norm(fixed - hr) < torch.linalg.norm(guess - hr)
    # outside the measured block the guess is kept: a zero weight changes nothing
    torch.testing.assert_close(kspace.data_consistency(guess, lr, (0, 1), weight=0.0), guess)
