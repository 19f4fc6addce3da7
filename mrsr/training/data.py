"""Training data: volumes cached in memory, random (LR, HR) 2D patch pairs degraded on the fly.

Sample ``i`` of :class:`PatchPairs` is a pure function of ``(seed, i)``: the volume, the slice
(biased to slices with foreground), the flip and quarter turn of the high-resolution slice, the
degradation noise and the patch position all come from ``numpy.random.default_rng([seed, i])``.
So any process, worker or resumed run draws exactly the same pair for the same index, and the
trainer gives each rank and step its own indices.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, MapTransform, ScaleIntensityRangePercentilesd

from mrsr import kspace
from mrsr.errors import MRSRError
from mrsr.geometry import slice_axis
from mrsr.intensity import DEFAULT_NORMALISATION
from mrsr.io import is_volume_path, load_volume
from mrsr.transforms import BicubicDownsample, KSpaceTruncation

__all__ = ["LoadVolumed", "PatchPairs", "load_slabs", "volume_paths"]

FOREGROUND = 0.1  # of the normalised intensity
MIN_FOREGROUND_FRACTION = 0.1


def volume_paths(specs: Sequence[str], what: str = "data.train") -> list[Path]:
    """Volumes named by folders, globs, list files (one path per line) or single files."""
    found: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir() and not is_volume_path(p):
            found += sorted(q for q in p.iterdir() if is_volume_path(q))
        elif p.suffix == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            found += [p.parent / ln for ln in lines]
        elif p.exists():
            found.append(p)
        else:
            found += sorted(Path(g) for g in glob.glob(os.path.expanduser(spec)))
    if not found:
        raise MRSRError(f"{what}: no volumes found in {', '.join(specs)}")
    missing = [str(f) for f in found if not f.exists()]
    if missing:
        raise MRSRError(f"{what}: listed volume {missing[0]} does not exist")
    return found


class LoadVolumed(MapTransform):
    """Dictionary transform: read ``d[key]`` (a path) with :func:`mrsr.io.load_volume`."""

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_volume(d[key])
        return d


def load_slabs(paths: Sequence[Path], num_workers: int = 0) -> list[torch.Tensor]:
    """Each volume normalised like inference does, as ``(S, H, W)`` slices along its slice axis.

    Loading and normalisation are cached by MONAI's ``CacheDataset``.
    """
    norm = DEFAULT_NORMALISATION
    transform = Compose(
        [
            LoadVolumed("image"),
            ScaleIntensityRangePercentilesd(
                "image", lower=norm["lower"], upper=norm["upper"], b_min=0.0, b_max=1.0
            ),
        ]
    )
    items = [{"image": str(p)} for p in paths]
    cache = CacheDataset(items, transform, num_workers=num_workers, progress=False)
    slabs = []
    for item in cache:
        vol = item["image"]
        axis = slice_axis(np.asarray(vol.affine), vol.meta)
        slabs.append(vol.as_tensor()[0].float().movedim(axis, 0).contiguous())
    return slabs


def rician(image: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """The magnitude of ``image`` plus complex Gaussian noise of standard deviation ``sigma``."""
    n = torch.from_numpy(rng.standard_normal((2, *image.shape), dtype=np.float32)) * sigma
    return torch.sqrt((image + n[0]) ** 2 + n[1] ** 2)


class PatchPairs(torch.utils.data.Dataset):
    """Random ``(lr, hr)`` patch pairs, ``(k, p, p)`` and ``(1, s*p, s*p)``, from whole slices.

    ``context = k`` adjacent slices (odd; edges replicated, as the inference engine does) are
    degraded alike and stacked as the input channels of the centre slice's target (2.5D input).
    With ``upsample`` (the network's skip interpolation) a third item is the interpolation of
    the whole low-resolution centre slice cut to the patch: a k-space (sinc) interpolation of
    the patch alone would ring at its borders, which never happens on a whole slice.

    The high-resolution slice is flipped and turned, optionally given a contrast change
    ``x ** g`` with ``log g`` uniform in ``[-gamma, gamma]``, with probability ``lowpass`` a
    zero-filled reconstruction from the central ``1/f`` of its spectrum (``f`` uniform in
    ``[1, 4]`` per axis: scanners often reconstruct on a finer matrix than they acquire, or
    acquire fewer phase-encoding lines than frequency samples, and the network must learn not to
    sharpen such an image), and Rician noise of a standard deviation uniform in
    ``[0, hr_noise]`` (noise in the target teaches the network to keep the noise floor of real
    scans instead of inventing a clean background). All augmentation comes before
    degradation, never on a pair after it. The slice is then cropped to a multiple of the scale,
    degraded as a whole slice (k-space truncation is global), optionally given Rician noise of
    standard deviation ``noise`` (degradation noise; normalised units), and an aligned patch
    pair is cut around a foreground pixel: low-resolution pixel ``(i, j)`` matches
    high-resolution pixels ``[s*i, s*i + s)`` on both sampling grids.
    """

    def __init__(
        self,
        slabs: Sequence[torch.Tensor],
        scale: int,
        patch_size: int,
        method: str = "kspace",
        noise: float = 0.0,
        seed: int = 0,
        context: int = 1,
        upsample: Callable[[torch.Tensor], torch.Tensor] | None = None,
        length: int = 2**62,
        hr_noise: float = 0.0,
        gamma: float = 0.0,
        lowpass: float = 0.0,
    ) -> None:
        if context < 1 or context % 2 == 0:
            raise MRSRError(f"model.in_channels {context}: adjacent-slice input needs an odd count")
        self.slabs, self.scale, self.patch, self.noise = list(slabs), scale, patch_size, noise
        self.offsets = torch.arange(context) - context // 2
        self.seed, self.length, self.upsample = seed, length, upsample
        self.hr_noise, self.gamma, self.lowpass = hr_noise, gamma, lowpass
        down = KSpaceTruncation if method == "kspace" else BicubicDownsample
        self.degrade = down(scale, axes=(0, 1))
        side = scale * patch_size
        for k, slab in enumerate(self.slabs):
            if min(slab.shape[1:]) // scale * scale < side:
                raise MRSRError(
                    f"train.patch_size {patch_size} at scale {scale} needs slices of at least "
                    f"{side} voxels; volume {k} has slices of {tuple(slab.shape[1:])}"
                )
        self.slices = []
        for slab in self.slabs:
            fraction = (slab > FOREGROUND).float().mean(dim=(1, 2))
            good = torch.nonzero(fraction >= MIN_FOREGROUND_FRACTION).flatten()
            self.slices.append(good if len(good) else torch.arange(slab.shape[0]))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        v = int(rng.integers(len(self.slabs)))
        slab = self.slabs[v]
        centre = int(rng.choice(self.slices[v]))
        hr = slab[(centre + self.offsets).clamp(0, slab.shape[0] - 1)]  # (context, H, W)
        hr = torch.rot90(hr.flip(-1) if rng.random() < 0.5 else hr, int(rng.integers(4)), (1, 2))
        s, p = self.scale, self.patch
        hr = hr[:, : hr.shape[1] // s * s, : hr.shape[2] // s * s]
        if self.gamma > 0:
            hr = hr.clamp(min=0) ** float(np.exp(rng.uniform(-self.gamma, self.gamma)))
        if self.lowpass > 0 and rng.random() < self.lowpass:
            kept = [max(2, round(n / rng.uniform(1.0, 4.0))) for n in hr.shape[1:]]
            hr = kspace.truncate(hr, kept, (1, 2), zero_filled=True)
        if self.hr_noise > 0:
            hr = rician(hr, rng.uniform(0.0, self.hr_noise), rng)
        lr = self.degrade(hr).as_tensor()
        if self.noise > 0:
            lr = rician(lr, self.noise, rng)
        hr = hr[len(self.offsets) // 2]
        candidates = torch.nonzero(lr[len(self.offsets) // 2] > FOREGROUND)
        if len(candidates):
            ci, cj = candidates[int(rng.integers(len(candidates)))].tolist()
        else:
            ci, cj = (int(rng.integers(n)) for n in lr.shape[1:])
        i = min(max(ci - p // 2, 0), lr.shape[1] - p)
        j = min(max(cj - p // 2, 0), lr.shape[2] - p)
        lr_patch = lr[:, i : i + p, j : j + p].contiguous()
        window = (slice(s * i, s * (i + p)), slice(s * j, s * (j + p)))
        hr_patch = hr[window][None].contiguous()
        if self.upsample is None:
            return lr_patch, hr_patch
        centre = lr[len(self.offsets) // 2][None, None]
        return lr_patch, hr_patch, self.upsample(centre)[0][(slice(None), *window)].contiguous()
