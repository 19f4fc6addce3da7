"""Training data: volumes cached in memory, random (LR, HR) 2D patch pairs degraded on the fly.

Sample ``i`` of :class:`PatchPairs` is a pure function of ``(seed, i)``: the volume, the slice
(biased to slices with foreground), the flip and quarter turn of the high-resolution slice, the
degradation noise and the patch position all come from ``numpy.random.default_rng([seed, i])``.
So any process, worker or resumed run draws exactly the same pair for the same index, and the
trainer gives each rank and step its own indices.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, ScaleIntensityRangePercentilesd

from mrsr import degradations, kspace
from mrsr.errors import MRSRError
from mrsr.geometry import slice_axis
from mrsr.intensity import DEFAULT_NORMALISATION
from mrsr.io import inspect_volume, is_volume_path, list_volumes
from mrsr.io.transforms import LoadVolumed
from mrsr.training.acquisition import ScannerImage, lr_and_target, sum_of_squares

__all__ = [
    "PatchPairs",
    "collate_pairs",
    "collate_slices",
    "device_pairs",
    "load_slabs",
    "site_labels",
    "volume_paths",
]

FOREGROUND = 0.1  # of the normalised intensity
MIN_FOREGROUND_FRACTION = 0.1


def volume_paths(specs: Sequence[str], what: str = "data.train") -> list[Path]:
    """Volumes named by folders, globs, list files (one path per line) or single files."""
    found: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir() and not is_volume_path(p):
            found += list_volumes(p)
        elif p.suffix == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            found += [p.parent / ln for ln in lines]
        elif p.exists():
            found.append(p)
        else:
            found += sorted(Path(g) for g in glob.glob(os.path.expanduser(spec)))
    if not found:
        raise MRSRError(f"{what}: no volumes found in {', '.join(specs)}")
    for path in found:  # every header checked before training starts: no voxel is read
        try:
            inspect_volume(path)
        except MRSRError as exc:
            raise MRSRError(f"{what}: {exc}") from exc
    return found


def site_labels(paths: Sequence[Path], sites: str | os.PathLike) -> list[str]:
    """The site of each training volume, from ``sites``: a JSON object mapping volume file
    names to site (or scanner) labels, e.g. ``{"brain1.nii.gz": "hospital-a"}``."""
    where = f"data.sites {sites}"
    try:
        table = json.loads(Path(sites).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MRSRError(f"{where}: not a readable JSON file ({exc})") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise MRSRError(f"{where}: expected a JSON object of file name to site label")
    missing = [p.name for p in paths if p.name not in table]
    if missing:
        raise MRSRError(f"{where}: no site for training volume(s) {', '.join(missing)}")
    return [table[p.name] for p in paths]


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
    try:
        cache = CacheDataset(items, transform, num_workers=num_workers, progress=False)
    except RuntimeError as exc:  # MONAI wraps what a transform raises: the user's problem first
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, MRSRError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    slabs = []
    for item in cache:
        vol = item["image"]
        axis = slice_axis(np.asarray(vol.affine), vol.meta)
        slabs.append(vol.as_tensor()[0].float().movedim(axis, 0).contiguous())
    return slabs


def rician(image: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """The magnitude of ``image`` plus complex Gaussian noise of standard deviation ``sigma``,
    drawn on ``image``'s device by a generator seeded with ``seed`` (torch's normal sampler is
    three times faster than numpy's on whole slices)."""
    generator = torch.Generator(image.device).manual_seed(seed)
    n = torch.randn((2, *image.shape), generator=generator, device=image.device) * sigma
    return torch.sqrt((image + n[0]) ** 2 + n[1] ** 2)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**62))


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

    The work is split in two so that the second half can run on the training device in
    batches (:meth:`slice_with_draws` in the loader's workers, then :meth:`pairs`); with
    ``on_device`` an item is that first half, and :func:`collate_slices` keeps whole slices of
    different sizes apart. Both ways give the same pairs: every random number of the second
    half is drawn in the first.

    With ``patches`` > 1 an item holds that many pairs cut from one degraded slice (along a
    leading dimension; :func:`collate_pairs` joins such items into a batch): augmenting and
    degrading a whole slice costs more than a training step of a small network on one patch,
    so cutting several patches from it buys steps at the price of fewer slices per batch.

    ``phase``, ``coils`` or ``partial_fourier`` switch on the scanner model of
    :class:`~mrsr.training.acquisition.ScannerImage` (k-space truncation only): the slice
    becomes complex coil images whose noise (``hr_noise``) and k-space coverage (``lowpass``,
    ``partial_fourier``) pass through the degradation, instead of a noisy magnitude image being
    truncated. With ``lr_from="magnitude"`` the scanner model makes the target only, and the
    input is the truncation of the target's magnitude, as :func:`mrsr.degradations.degrade`
    simulates a low-resolution scan from a magnitude volume (evaluation does so).

    ``groups`` (one label per slab, e.g. the site or scanner) makes the volume draw
    uniform over groups first, then over the group's volumes, so that a site with many volumes
    does not dominate.
    """

    def __init__(
        self,
        slabs: Sequence[torch.Tensor],
        scale: int,
        patch_size: int,
        method: str = degradations.DEFAULT,
        noise: float = 0.0,
        seed: int = 0,
        context: int = 1,
        upsample: Callable[[torch.Tensor], torch.Tensor] | None = None,
        length: int = 2**62,
        hr_noise: float = 0.0,
        gamma: float = 0.0,
        lowpass: float = 0.0,
        on_device: bool = False,
        phase: float = 0.0,
        coils: int = 1,
        partial_fourier: float = 0.0,
        groups: Sequence[str] | None = None,
        patches: int = 1,
        lr_from: str = "coils",
    ) -> None:
        if context < 1 or context % 2 == 0:
            raise MRSRError(f"model.in_channels {context}: adjacent-slice input needs an odd count")
        self.scanner, self.lr_from = None, lr_from
        if phase > 0 or coils > 1 or partial_fourier > 0:
            if method != "kspace":
                raise MRSRError(
                    f"augment.phase, augment.coils and augment.partial_fourier simulate a "
                    f"scanner's acquisition for degradation.method kspace, not {method}"
                )
            self.scanner = ScannerImage(phase, hr_noise, coils, lowpass, partial_fourier)
        labels = list(groups) if groups is not None else [str(k) for k in range(len(slabs))]
        if len(labels) != len(slabs):
            raise MRSRError(f"{len(labels)} group labels for {len(slabs)} training volumes")
        self.groups = [
            [k for k, label in enumerate(labels) if label == name] for name in dict.fromkeys(labels)
        ]
        self.patches = patches
        self.slabs, self.scale, self.patch, self.noise = list(slabs), scale, patch_size, noise
        self.offsets = torch.arange(context) - context // 2
        self.seed, self.length, self.upsample = seed, length, upsample
        self.hr_noise, self.gamma, self.lowpass = hr_noise, gamma, lowpass
        self.on_device = on_device
        down = degradations.get(method, "degradation.method").transform
        self.degrade = down(scale, axes=(1, 2))  # of a (batch, context, H, W) stack
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        hr, draws = self.slice_with_draws(index)
        if self.on_device:
            return hr, draws
        pairs = self.pairs(hr[None], draws[None])
        return tuple(item[0] for item in pairs) if self.patches == 1 else pairs

    def slice_with_draws(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented high-resolution slice(s) ``(context, H, W)`` of sample ``index`` (with
        the scanner model, its complex coil images ``(coils, context, H, W)``), and the random
        numbers its degradation and patch positions need (``(1 + patches,)`` int64)."""
        rng = np.random.default_rng([self.seed, int(index)])
        group = self.groups[int(rng.integers(len(self.groups)))]
        v = group[int(rng.integers(len(group)))] if len(group) > 1 else group[0]
        slab = self.slabs[v]
        centre = int(rng.choice(self.slices[v]))
        hr = slab[(centre + self.offsets).clamp(0, slab.shape[0] - 1)]  # (context, H, W)
        hr = torch.rot90(hr.flip(-1) if rng.random() < 0.5 else hr, int(rng.integers(4)), (1, 2))
        s = self.scale
        hr = hr[:, : hr.shape[1] // s * s, : hr.shape[2] // s * s]
        if self.gamma > 0:
            hr = hr.clamp(min=0) ** float(np.exp(rng.uniform(-self.gamma, self.gamma)))
        if self.scanner is not None:
            hr = self.scanner(hr, rng)
            return hr, torch.tensor([_seed(rng) for _ in range(1 + self.patches)])
        if self.lowpass > 0 and rng.random() < self.lowpass:
            kept = [max(2, round(n / rng.uniform(1.0, 4.0))) for n in hr.shape[1:]]
            hr = kspace.truncate(hr, kept, (1, 2), zero_filled=True)
        if self.hr_noise > 0:
            hr = rician(hr, rng.uniform(0.0, self.hr_noise), _seed(rng))
        return hr.contiguous(), torch.tensor([_seed(rng) for _ in range(1 + self.patches)])

    def pairs(self, hr: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Degrade a batch of same-size slices ``(B, context, H, W)`` (coil images
        ``(B, coils, context, H, W)``) on their device and cut each one's patch pairs with its
        ``draws`` ``(B, 1 + patches)``: ``(lr, hr[, skip])`` batches of ``B * patches``."""
        if hr.is_complex() and self.lr_from == "coils":
            lr, hr = lr_and_target(hr, self.scale)
        elif hr.is_complex():
            hr = sum_of_squares(hr, dim=1)
            lr = self.degrade(hr).as_tensor()
        else:
            lr = self.degrade(hr).as_tensor()
        if self.noise > 0:
            lr = torch.stack([rician(x, self.noise, int(d[0])) for x, d in zip(lr, draws)])
        middle = len(self.offsets) // 2
        skip = None if self.upsample is None else self.upsample(lr[:, middle : middle + 1])
        s, p = self.scale, self.patch
        out: list[list[torch.Tensor]] = [[], [], []]
        for b, (x, d) in enumerate(zip(lr, draws.tolist())):
            candidates = torch.nonzero(x[middle] > FOREGROUND)
            for draw in d[1:]:
                if len(candidates):
                    ci, cj = candidates[draw % len(candidates)].tolist()
                else:
                    ci, cj = draw % x.shape[1], draw // x.shape[1] % x.shape[2]
                i = min(max(ci - p // 2, 0), x.shape[1] - p)
                j = min(max(cj - p // 2, 0), x.shape[2] - p)
                window = (slice(s * i, s * (i + p)), slice(s * j, s * (j + p)))
                out[0].append(x[:, i : i + p, j : j + p])
                out[1].append(hr[b, middle][window][None])
                if skip is not None:
                    out[2].append(skip[b][(slice(None), *window)])
        return tuple(torch.stack(items) for items in out if items)


def collate_pairs(items: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """The loader's batch of :class:`PatchPairs` items: their pairs joined along the batch."""
    return tuple(torch.cat(field) for field in zip(*items))


def collate_slices(items: list[tuple[torch.Tensor, torch.Tensor]]) -> list:
    """The loader's batch for on-device degradation: the items as they are (sizes differ)."""
    return items


def device_pairs(
    dataset: PatchPairs, items: Sequence[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Pairs of a batch of :meth:`PatchPairs.slice_with_draws` items, degraded on ``device``
    in one batch per slice size; the batch keeps the items' order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, (hr, _) in enumerate(items):
        groups.setdefault(tuple(hr.shape), []).append(k)
    order, parts = [], []
    for members in groups.values():
        hr = torch.stack([items[k][0] for k in members]).to(device, non_blocking=True)
        parts.append(dataset.pairs(hr, torch.stack([items[k][1] for k in members])))
        order += members
    back = torch.argsort(torch.tensor(order)).to(device)
    return tuple(torch.cat(field)[back] for field in zip(*parts))
