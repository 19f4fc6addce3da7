"""Training of the through-plane network on the scan itself (:mod:`mrsr.throughplane`).

The in-plane slices of a thick-slice scan show the anatomy at the fine resolution: degraded
along one in-plane axis by the slice profile and interpolated back, they make the training
pairs of a :class:`~mrsr.networks.throughplane.ThroughPlaneNet` (SMORE-style self-supervision).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from time import monotonic
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mrsr.errors import MRSRError
from mrsr.intensity import intensity_window
from mrsr.networks.throughplane import ThroughPlaneNet
from mrsr.progress import bar as progress_bar
from mrsr.resample import sinc_matrix
from mrsr.slice_profiles import SliceProfile, along
from mrsr.training.data import FOREGROUND

__all__ = ["train_network", "training_slices"]

_LOSS_WINDOW = 50  # steps in the running mean of the loss that progress shows


def _operators(profile: SliceProfile, side: int, phases: int = 8) -> list[torch.Tensor]:
    """``(side, side)`` degradations of a patch row, ``B A``, one per sub-voxel phase of the
    slice grid (the phases the volume's own slices take against the fine grid, up to
    ``phases`` of them): acquire thick slices, interpolate them back."""
    offsets = sorted({round(float(k * profile.spacing) % 1.0, 6) for k in range(phases)})
    out = []
    for offset in offsets:
        first = profile.spacing / 2 - 0.5 + offset
        count = int(np.floor((side - 0.5 - first - profile.spacing / 2) / profile.spacing)) + 1
        a, b = profile.acquisition(side, count, first), profile.interpolation(side, count, first)
        out.append(torch.as_tensor(b @ a, dtype=torch.float32))
    return out


def _batch(
    slices: torch.Tensor,
    operators: Sequence[torch.Tensor],
    side: int,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs ``(input, target)``, each ``(B, 1, side, side)``, from in-plane slices.

    Each target is a random ``side``-square patch of a slice (mostly foreground), flipped and
    transposed at random; its input is the patch acquired along its last axis by the slice
    profile and interpolated back (one of ``operators``, at random); half the pairs are then
    transposed, so the network sees the thick axis both ways.
    """
    n, h, w = slices.shape
    patches = []
    for _ in range(batch_size):
        for _ in range(10):  # a few tries for a patch on the object
            s, i, j = (int(rng.integers(m)) for m in (n, h - side + 1, w - side + 1))
            patch = slices[s, i : i + side, j : j + side]
            if patch.mean() > FOREGROUND:
                break
        patch = patch.flip([d for d in (0, 1) if rng.random() < 0.5])
        patches.append(patch.T if rng.random() < 0.5 else patch)
    target = torch.stack(patches)[:, None]
    which = rng.integers(len(operators), size=batch_size)
    source = torch.stack([target[b] @ operators[k].T for b, k in enumerate(which)])
    swap = torch.from_numpy(rng.random(batch_size) < 0.5)
    source[swap], target[swap] = source[swap].mT, target[swap].mT
    return source, target


def train_network(
    slices: torch.Tensor,
    profile: SliceProfile,
    steps: int,
    *,
    max_time: float | None = None,
    seed: int = 0,
    patch_size: int = 48,
    batch_size: int = 16,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **network_options: Any,
) -> tuple[ThroughPlaneNet, list[float]]:
    """Train a :class:`ThroughPlaneNet` on in-plane ``slices`` ``(S, H, W)``, normalised to ~[0, 1],
    sampled on the fine grid of ``profile`` (its lengths in the slices' voxels).

    Pairs come from :func:`_batch` with patches of ``patch_size`` (smaller for small slices);
    L1 loss, Adam at ``lr``, ``steps`` steps of ``batch_size`` patches, or fewer when
    ``max_time`` seconds (a cap, default none) run out first. The weights and every batch come
    from ``seed``, so ``steps`` steps give the same network under any machine load: on the CPU
    it trains on one thread (:func:`_one_cpu_thread`), bit for bit the same network whatever
    the thread count; on a GPU as far as its kernels are deterministic (see
    ``torch.use_deterministic_algorithms``). A time cap stops at a load-dependent step.
    Returns the network (in eval mode) and the loss of every step taken (their number is the
    steps trained).
    """
    side = min(patch_size, *slices.shape[1:])
    if side < 2 * profile.spacing:
        raise MRSRError(
            f"in-plane slices of {tuple(slices.shape[1:])} voxels are too small to learn a "
            f"slice profile {profile.spacing:.3g} voxels apart (need at least "
            f"{math.ceil(2 * profile.spacing)})"
        )
    operators = _operators(profile, side)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ThroughPlaneNet(**network_options).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    start = monotonic()
    bar = progress_bar(
        100,
        "training",
        "%",
        enabled=progress,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
    )
    cap = math.inf if max_time is None else max_time
    with bar, _one_cpu_thread(device):
        while len(losses) < steps:
            elapsed = monotonic() - start
            if elapsed >= cap:
                break
            pair = _batch(slices, operators, side, batch_size, rng)
            source, target = (t.to(device) for t in pair)
            loss = F.l1_loss(network(source), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            done = max(elapsed / cap, len(losses) / steps)
            recent = losses[-_LOSS_WINDOW:]
            loss_shown = f"{sum(recent) / len(recent):.4f}"
            bar.set_postfix(step=len(losses), loss=loss_shown, refresh=False)
            bar.update(int(100 * min(done, 1.0)) - bar.n)
        bar.update(100 - bar.n)  # the steps or the time cap are used up: training is complete
    return network.eval(), losses


@contextmanager
def _one_cpu_thread(device: str | torch.device) -> Iterator[None]:
    """On the CPU, torch's intra-op threads set to one for the duration: how a convolution's
    gradient is summed depends on the thread count, and training amplifies those last-bit
    differences (the sign of the L1 loss's gradient, Adam's normalisation) to about 1e-3 of the
    range in 50 steps; on one thread the network is the same on every machine with the same
    CPU kernels, whatever its thread count."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _in_plane_resampled(
    slices: torch.Tensor, step: float, band: Sequence[float] = (1.0, 1.0)
) -> torch.Tensor:
    """``(S, H, W)`` slices band-limited resampled to ``step`` times their voxel size, keeping
    no detail finer than ``band`` times their voxel size along each axis (the resolution they
    were acquired at)."""
    if abs(step - 1) < 0.05 and max(band) < 1.05:
        return slices
    h, w = (max(2, round(n / step)) for n in slices.shape[1:])
    rows = sinc_matrix(
        slices.shape[1], (np.arange(h) + 0.5) * slices.shape[1] / h - 0.5, max(step, band[0])
    )
    cols = sinc_matrix(
        slices.shape[2], (np.arange(w) + 0.5) * slices.shape[2] / w - 0.5, max(step, band[1])
    )
    return along(along(slices, rows, 1), cols, 2)


def training_slices(
    thick: torch.Tensor,
    fine: torch.Tensor,
    axis: int,
    step: float,
    band: Sequence[float] = (1.0, 1.0),
) -> torch.Tensor:
    """The in-plane slices ``(S, H, W)`` of every channel of ``thick`` ``(C, X, Y, Z)`` to train
    on: each channel normalised as :func:`mrsr.inference.super_resolve` will normalise it
    (percentile window of its channel of ``fine``, the slices interpolated onto the fine grid)
    and, across slice ``axis``, band-limited resampled to ``step`` times its voxel size (the
    fine voxel size) when that differs, with no detail finer than ``band`` times the voxel size
    along each in-plane axis (in axis order; :mod:`mrsr.inplane_resolution`)."""
    slices = []
    for channel, interpolated in zip(thick.float(), fine):
        lo, hi = intensity_window(interpolated)
        normalised = ((channel - lo) / (hi - lo)).movedim(axis, 0)
        slices.append(_in_plane_resampled(normalised, step, band))
    return torch.cat(slices)
