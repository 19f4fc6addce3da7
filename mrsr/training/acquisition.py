"""The high-resolution slice as a scanner makes it: complex coil images, from which both the
training target and its low-resolution acquisition are reconstructed.

A clean magnitude slice ``m`` becomes the complex signal ``m * exp(i * phase)`` with a smooth
random phase (coil sensitivities and field inhomogeneity make every real image's phase smooth
but not zero), plus complex Gaussian noise in each of ``L`` coil channels. Sum-of-squares
combination of ``L`` coils with noise of standard deviation ``sigma`` is the non-central chi
distribution of ``2 L`` degrees of freedom; a unitary change of coil basis carries the signal in
one channel and noise alone in the others, so ``L`` channels of which only the first holds
signal simulate it exactly. The channels are acquired in k-space: optionally only the central
``1/f`` of the spectrum per axis (zero-filled interpolation on the scanner, cut phase resolution)
and partial Fourier (a fraction of one side of one axis missing, zero-filled). The target is the
sum of squares of the channels; the low-resolution input is the sum of squares of each
channel's k-space truncation (:func:`lr_and_target`), so noise, phase and the acquisition's
filtering pass through the degradation as they do on a scanner, instead of a magnitude image
being truncated.

>>> import numpy as np, torch
>>> scan = ScannerImage(phase=1.0, hr_noise=0.02, coils=4, lowpass=0.3, partial_fourier=0.3)
>>> channels = scan(torch.rand(1, 64, 48), np.random.default_rng(0))
>>> channels.shape, channels.dtype
(torch.Size([4, 1, 64, 48]), torch.complex64)
>>> [t.shape for t in lr_and_target(channels[None], scale=2)]
[torch.Size([1, 1, 32, 24]), torch.Size([1, 1, 64, 48])]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrsr import kspace

__all__ = ["ScannerImage", "lr_and_target", "sum_of_squares"]

PHASE_ORDER = 3  # cosine terms per axis of the smooth phase: orders 0, 1 and 2
PARTIAL_FOURIER = (0.55, 0.875)  # fraction of one axis's k-space acquired (5/8 to 7/8 and below)
LOWPASS_FACTOR = (1.0, 4.0)  # the central 1/f of the spectrum kept, f uniform per axis


@dataclass(frozen=True)
class ScannerImage:
    """Coil images ``(coils, C, H, W)`` (complex64) of a clean magnitude slice stack
    ``(C, H, W)``; adjacent slices (``C`` > 1) share phase, coil count and k-space coverage.

    ``phase``: largest amplitude (radians) of the smooth phase, drawn uniformly up to it;
    ``hr_noise``: noise standard deviation drawn uniformly in ``[0, hr_noise]``; ``coils``: the
    coil count is drawn in ``1..coils`` (1 is Rician noise); ``lowpass`` and
    ``partial_fourier``: probabilities of a reduced k-space coverage of each kind.
    """

    phase: float = 0.0
    hr_noise: float = 0.0
    coils: int = 1
    lowpass: float = 0.0
    partial_fourier: float = 0.0

    def __call__(self, hr: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        h, w = hr.shape[-2:]
        field = _smooth_phase(h, w, rng) * rng.uniform(0.0, self.phase)
        signal = hr.float() * torch.polar(torch.ones_like(field), field)
        n_coils = int(rng.integers(1, self.coils + 1))
        sigma = rng.uniform(0.0, self.hr_noise)
        generator = torch.Generator(hr.device).manual_seed(int(rng.integers(2**62)))
        shape = (self.coils, *hr.shape)
        noise = torch.complex(
            torch.randn(shape, generator=generator, device=hr.device),
            torch.randn(shape, generator=generator, device=hr.device),
        )
        noise[n_coils:] = 0
        channels = sigma * noise
        channels[0] += signal
        mask = self._coverage(h, w, rng)
        if mask is not None:  # the coils without signal or noise stay zero
            channels[:n_coils] = _image(_spectrum(channels[:n_coils]) * mask.to(hr.device))
        return channels

    def _coverage(self, h: int, w: int, rng: np.random.Generator) -> torch.Tensor | None:
        """The acquired part of the centred spectrum ``(H, W)``, or ``None`` for all of it."""
        masks = []
        if rng.random() < self.lowpass:
            lines = [torch.zeros(n) for n in (h, w)]
            for line, n in zip(lines, (h, w)):
                kept = max(2, round(n / rng.uniform(*LOWPASS_FACTOR)))
                start = n // 2 - kept // 2
                line[start : start + kept] = 1
            masks.append(lines[0][:, None] * lines[1][None, :])
        if rng.random() < self.partial_fourier:
            axis = int(rng.integers(2))
            n = (h, w)[axis]
            missing = round(n * (1.0 - rng.uniform(*PARTIAL_FOURIER)))
            line = torch.ones(n)
            if rng.random() < 0.5:
                line[:missing] = 0
            else:
                line[n - missing :] = 0
            masks.append(line[:, None].expand(h, w) if axis == 0 else line[None, :].expand(h, w))
        if not masks:
            return None
        return torch.stack(masks).prod(0)


def _smooth_phase(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """A random sum of low-order cosines over the slice, scaled to a peak magnitude of 1."""
    coefficients = rng.normal(size=(PHASE_ORDER, PHASE_ORDER))
    offsets = rng.uniform(0.0, np.pi, size=2)
    y = torch.cos(torch.outer(torch.arange(PHASE_ORDER), torch.linspace(0, np.pi, h)) + offsets[0])
    x = torch.cos(torch.outer(torch.arange(PHASE_ORDER), torch.linspace(0, np.pi, w)) + offsets[1])
    field = torch.einsum("ij,ih,jw->hw", torch.as_tensor(coefficients, dtype=torch.float32), y, x)
    return field / field.abs().max().clamp(min=1e-6)


def _spectrum(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))


def _image(k: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)))


def lr_and_target(channels: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From coil images ``(B, coils, C, H, W)``: the sum-of-squares low-resolution acquisition
    ``(B, C, H // scale, W // scale)`` (each channel's k-space truncated, as
    :func:`mrsr.kspace.truncate`) and the sum-of-squares high-resolution target ``(B, C, H, W)``."""
    h, w = channels.shape[-2:]
    low = []
    for coils in channels:
        active = coils[coils.flatten(1).abs().amax(1) > 0]  # unused coils of the draw are zero
        low.append(sum_of_squares(kspace.truncate(active, [h // scale, w // scale], (-2, -1))))
    return torch.stack(low), sum_of_squares(channels, dim=1)


def sum_of_squares(channels: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The magnitude image of coil images stacked along ``dim``."""
    return channels.abs().square().sum(dim).sqrt()
