"""Quality of through-plane super-resolution on simulated thick slices (run by hand, not a test).

    python benchmarks/throughplane.py [--factor 4] [--time-budget 180] [--volumes A.nii.gz ...]

Each isotropic volume (default: the bundled 1 mm sample and, when present,
``data/default/train/colin_1mm_superior.nii.gz``) is turned into thick slices along its slice
axis by slab averaging (:func:`mrsr.throughplane.simulate_thick_slices`), then brought back to
the reference grid by cubic and sinc interpolation along the slice axis, by cubic interpolation
corrected to reproduce the thick slices (:func:`mrsr.throughplane.slab_consistency`, the last
step of the method without the network), and by
:func:`mrsr.throughplane.super_resolve_through_plane` trained on the thick volume for the time
budget. Prints a Markdown table of PSNR and SSIM (:mod:`mrsr.metrics`, Otsu foreground mask of
the reference, SSIM per slice along the slice axis, no shave).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mrsr import metrics
from mrsr.geometry import slice_axis
from mrsr.io import load_volume, sample_path
from mrsr.machine import describe
from mrsr.throughplane import (
    interpolate_along,
    simulate_thick_slices,
    slab_consistency,
    super_resolve_through_plane,
)

ROOT = Path(__file__).resolve().parents[1]
COLIN = ROOT / "data" / "default" / "train" / "colin_1mm_superior.nii.gz"


def sinc_interpolate(x: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """Band-limited (periodic sinc) interpolation ``factor`` times finer along ``dim``, on the
    area grid: fine sample ``n`` is the trigonometric interpolant of the ``m`` coarse samples at
    ``(n + 0.5) / f - 0.5`` (the Nyquist term of an even ``m`` as a cosine, so the result is
    real). Equals k-space zero-filling shifted onto the slab-subdivision grid."""
    m = x.shape[dim]
    position = (np.arange(factor * m) + 0.5) / factor - 0.5
    frequency = np.fft.fftfreq(m, 1.0 / m)
    phase = 2j * np.pi * np.subtract.outer(position, np.arange(m))[..., None] * frequency / m
    weights = torch.from_numpy(np.exp(phase).sum(-1).real / m).float()  # (f*m, m)
    return torch.tensordot(x.float().movedim(dim, -1), weights.T, dims=1).movedim(-1, dim)


def scores(pred: torch.Tensor, ref: np.ndarray, mask: np.ndarray, axis: int) -> list[str]:
    values = metrics.evaluate(np.asarray(pred)[0], ref, mask=mask, axis=axis)
    return [f"{values['psnr']:.2f}", f"{values['ssim']:.4f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--time-budget", type=float, default=180.0, help="seconds per volume")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--volumes", type=Path, nargs="+")
    args = parser.parse_args()
    volumes = args.volumes or [sample_path()] + ([COLIN] if COLIN.exists() else [])

    print(
        f"Thick slices x{args.factor} (slab average) from isotropic volumes; training budget "
        f"{args.time_budget:g} s per volume; machine: {describe()}\n"
    )
    print("| volume | thick -> reference | method | PSNR (dB) | SSIM |\n|---|---|---|---|---|")
    for path in volumes:
        volume = load_volume(path)
        axis = slice_axis(np.asarray(volume.affine), volume.meta)
        thick, ref = simulate_thick_slices(volume, args.factor, axis)
        truth = ref.as_tensor()[0].numpy()
        mask = metrics.foreground_mask(truth, axis=axis)
        start = time.perf_counter()
        sr = super_resolve_through_plane(
            thick, args.factor, args.time_budget, seed=args.seed, progress=True
        )
        seconds = time.perf_counter() - start
        np.testing.assert_allclose(np.asarray(sr.affine), np.asarray(ref.affine), atol=1e-9)
        cubic = interpolate_along(thick.as_tensor(), args.factor, axis + 1)
        rows = {
            "cubic": cubic,
            "sinc (band-limited)": sinc_interpolate(thick.as_tensor(), args.factor, axis + 1),
            "cubic + slab consistency": slab_consistency(
                cubic, thick.as_tensor(), args.factor, axis + 1
            ),
            f"mrsr throughplane ({seconds:.0f} s in all)": sr.as_tensor(),
        }
        shapes = f"{tuple(thick.shape[1:])} -> {tuple(ref.shape[1:])}"
        for method, pred in rows.items():
            print(
                f"| {path.name} | {shapes} | {method} | "
                + " | ".join(scores(pred, truth, mask, axis))
                + " |"
            )


if __name__ == "__main__":
    main()
