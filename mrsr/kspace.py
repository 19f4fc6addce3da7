"""Centred k-space cropping and zero-filling: the MR acquisition model and its exact inverse.

Convention (every function here): the spectrum is ``fftshift(fftn(x))``; a block of ``M`` of the
``N`` frequencies is kept as indices ``[N//2 - M//2, N//2 - M//2 + M)`` of the shifted spectrum,
so the DC term lands at ``M//2``, where ``ifftshift`` of length ``M`` expects it. With that
choice low-resolution sample ``m`` is the band-limited value of the input at index ``m * N / M``:
voxel 0 keeps its position (the ``"kspace"`` sampling grid of :mod:`mrsr.geometry`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["data_consistency", "truncate", "zero_fill"]


def _block(n: int, m: int) -> slice:
    start = n // 2 - m // 2
    return slice(start, start + m)


def _crop(k: torch.Tensor, sizes: Sequence[int], dims: Sequence[int]) -> torch.Tensor:
    index = [slice(None)] * k.ndim
    for d, m in zip(dims, sizes):
        index[d] = _block(k.shape[d], m)
    return k[tuple(index)]


def _pad(k: torch.Tensor, sizes: Sequence[int], dims: Sequence[int]) -> torch.Tensor:
    shape = list(k.shape)
    index = [slice(None)] * k.ndim
    for d, n in zip(dims, sizes):
        index[d] = _block(n, k.shape[d])
        shape[d] = n
    out = k.new_zeros(shape)
    out[tuple(index)] = k
    return out


def _spectrum(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fftn(x, dim=tuple(dims)), dim=tuple(dims))


def _image(k: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    return torch.fft.ifftn(torch.fft.ifftshift(k, dim=tuple(dims)), dim=tuple(dims))


def _gain(num: Sequence[int], den: Sequence[int]) -> float:
    gain = 1.0
    for a, b in zip(num, den):
        gain *= a / b
    return gain


def truncate(
    x: torch.Tensor,
    sizes: Sequence[int],
    dims: Sequence[int],
    zero_filled: bool = False,
    magnitude: bool = True,
) -> torch.Tensor:
    """Keep the central ``sizes`` block of the spectrum of ``x`` along ``dims``.

    The inverse transform runs on the small grid (shape ``sizes`` along ``dims``), scaled so that
    a flat region keeps its value. With ``zero_filled=True`` the block is zero-filled back to the
    original size before the inverse transform instead (same grid as ``x``; the display or
    VDSR-style input). The complex image becomes its magnitude, as a scanner's magnitude image,
    or with ``magnitude=False`` its real part, which keeps the sign of a signed ``x`` (phase or
    difference maps: the real image whose k-space was truncated). A complex ``x`` (coil
    images) stays complex: ``magnitude`` does not apply.
    """
    dims = [d % x.ndim for d in dims]
    if x.is_complex():
        part = torch.clone
    else:
        part = torch.abs if magnitude else torch.real
    block = _crop(_spectrum(x, dims), sizes, dims)
    if zero_filled:
        return part(_image(_pad(block, [x.shape[d] for d in dims], dims), dims)).to(x.dtype)
    gain = _gain(sizes, [x.shape[d] for d in dims])
    return (part(_image(block, dims)) * gain).to(x.dtype)


def zero_fill(x: torch.Tensor, sizes: Sequence[int], dims: Sequence[int]) -> torch.Tensor:
    """Band-limited (sinc) upsampling of ``x`` to ``sizes`` along ``dims`` by k-space zero-filling.

    The exact interpolator of the truncation model: output sample ``n`` is the band-limited value
    at input index ``n * M / N``, so ``zero_fill(x)`` passes through every input sample when
    ``N`` is a multiple of ``M``. Returns the real part (a real input gives a real band-limited
    interpolant). The lone Nyquist term of an even size is shared equally between ``-M/2`` and
    ``+M/2`` on each axis, so the interpolant is real and mirror-symmetric: flipping the input
    flips the output about the same grid (the self-ensemble relies on it).
    """
    dims = [d % x.ndim for d in dims]
    k = _pad(_spectrum(x, dims), sizes, dims)
    for d, n, m in zip(dims, sizes, [x.shape[d] for d in dims]):
        if m % 2 == 0 and n > m:  # share the lone Nyquist term between -m/2 and +m/2
            low, high = n // 2 - m // 2, n // 2 + m // 2
            half = k.narrow(d, low, 1) / 2
            k = k.index_copy(
                d, torch.tensor([low, high], device=k.device), torch.cat([half, half], d)
            )
    gain = _gain(sizes, [x.shape[d] for d in dims])
    return (_image(k, dims).real * gain).to(x.dtype)


def _hermitian_mirror(k: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """``conj(K[-f])`` at every frequency ``f`` of an unshifted spectrum."""
    return torch.conj(
        torch.roll(torch.flip(k, dims=tuple(dims)), shifts=[1] * len(dims), dims=tuple(dims))
    )


def _block_mask(
    shape: Sequence[int], sizes: Sequence[int], dims: Sequence[int], like
) -> torch.Tensor:
    """Boolean mask of the kept frequencies ``[-M//2, M - M//2)`` in unshifted order."""
    mask = torch.ones((), dtype=torch.bool, device=like.device)
    for d, m in zip(dims, sizes):
        n = shape[d]
        f = torch.fft.fftfreq(n, 1.0 / n, device=like.device).round().long()
        keep = (f >= -(m // 2)) & (f < m - m // 2)
        view = [1] * len(shape)
        view[d] = n
        mask = mask & keep.view(view)
    return mask


def data_consistency(
    sr: torch.Tensor, lr: torch.Tensor, dims: Sequence[int], weight: float = 1.0
) -> torch.Tensor:
    """Make ``sr`` agree with the acquisition ``lr`` in the k-space block that ``lr`` measured.

    The central block of ``sr``'s spectrum (the frequencies :func:`truncate` keeps) is replaced
    by ``lr``'s spectrum (``weight`` < 1 blends the two); the frequencies outside the block whose
    mirror is inside get the conjugate, so the result is real. ``lr`` is a magnitude image, so
    its own spectrum stands in for the lost complex one (its phase is taken as that of a real
    object). With ``weight=1``, ``truncate(result) == lr`` up to rounding wherever the result is
    non-negative, i.e. degrading the output again reproduces the input.
    """
    dims = [d % sr.ndim for d in dims]
    sizes = [lr.shape[d] for d in dims]
    gain = _gain([sr.shape[d] for d in dims], sizes)
    k_sr = torch.fft.fftn(sr.to(torch.complex128), dim=dims)
    k_lr = _pad(_spectrum(lr.to(torch.complex128), dims), [sr.shape[d] for d in dims], dims)
    k_lr = torch.fft.ifftshift(k_lr, dim=dims) * gain
    inside = _block_mask(sr.shape, sizes, dims, sr)
    k = torch.where(inside, weight * k_lr + (1 - weight) * k_sr, k_sr)
    mirror_inside = _hermitian_mirror(inside.to(torch.float32), dims).real > 0.5
    k = torch.where(~inside & mirror_inside, _hermitian_mirror(k, dims), k)
    return torch.fft.ifftn(k, dim=dims).real.to(sr.dtype)
