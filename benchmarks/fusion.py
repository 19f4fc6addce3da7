"""Several stacks into one volume: three orthogonal thick-slice stacks of a real 1 mm volume (run
by hand).

    python benchmarks/fusion.py [--volume PATH] [--spacing 4] [--steps N] [--seed S]
        [--weights 0.01 0.1 1] [--estimates network cubic]

The isotropic 1 mm volume (default ``data/default/train/colin_1mm_superior.nii.gz``, written by
``pipelines/default_models/prepare_data.py``), cut to a multiple of ``--spacing`` voxels along
every axis (:func:`anygrid.crop`), is acquired three times as a 2D multi-slice scan would be
(:func:`mrsr.slice_profiles.simulate_thick_slices`): box slices ``--spacing`` mm thick and
apart along each of its three axes, each stack on the truth's grid (nothing cropped). Brought
back onto the truth's grid:

- cubic B-spline: each stack interpolated in world space (best of the three, and their mean);
- single stack: each stack's own through-plane network
  (:func:`mrsr.throughplane.super_resolve_through_plane`, ``--steps`` steps from ``--seed``,
  the true box profile), as ``mrsr throughplane`` gives it (it lands on the truth's grid);
- fused: :func:`mrsr.fusion.fuse_stacks` of the three stacks ``--like`` the truth, from those
  same three estimates, for each of ``--weights`` (the estimates' weight in the joint solve);
- joint solve without networks (``--estimates cubic``): the same solve from the cubic B-spline
  interpolations instead (classical reconstruction from orthogonal stacks), which tells what
  the networks add to the fusion.

Prints a Markdown table: PSNR and SSIM (:func:`anygrid.scores`: Otsu foreground of the truth,
SSIM per slice along axis 2, no shave), the gain over the best single stack, the wall time
(fused: the three trainings and the solve) and the process's peak resident memory at the end
of each row (cumulative: torch and imports included), and each fused row's re-acquisition
residuals (one per stack).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from anygrid import COLIN, crop, scores
from monai.data import MetaTensor

from mrsr import metrics
from mrsr.fusion import WEIGHT, fuse_stacks, through_plane_estimate
from mrsr.io import load_volume
from mrsr.machine import describe
from mrsr.provenance import FACTS
from mrsr.resample import resample
from mrsr.settings import THROUGH_PLANE_STEPS as STEPS
from mrsr.slice_profiles import simulate_thick_slices


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=Path, default=COLIN, help="an isotropic 1 mm volume")
    parser.add_argument("--spacing", type=int, default=4, help="slice spacing = thickness, mm")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"per stack (default {STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.01, 0.03, WEIGHT, 0.3, 1])
    parser.add_argument(
        "--estimates", nargs="+", choices=("network", "cubic"), default=["network", "cubic"]
    )
    args = parser.parse_args()
    truth = crop(load_volume(args.volume), args.spacing)
    stacks = [simulate_thick_slices(truth, args.spacing, axis)[0] for axis in range(3)]
    grid = (truth.shape[1:], np.asarray(truth.affine))
    reference = truth[0].numpy().astype(np.float64)
    mask = metrics.foreground_mask(reference, axis=2)
    print(
        f"{args.volume.name} {'x'.join(map(str, truth.shape[1:]))} at 1 mm; three stacks of "
        f"{args.spacing} mm box slices along axes 0, 1, 2; {args.steps} steps per stack, seed "
        f"{args.seed}; machine: {describe()}\n",
        flush=True,
    )
    print(
        "| method | PSNR | SSIM | vs best single dB | s | peak MiB | residuals |\n"
        + "|---" * 7
        + "|"
    )
    psnr = {}

    def line(name: str, volume, seconds: float, residuals: str = "") -> None:
        assert volume.shape == truth.shape and np.allclose(volume.affine, grid[1], atol=1e-6)
        text = scores(volume, reference, mask, 2)
        psnr[name] = float(text.split(" | ")[0])
        best = max((v for k, v in psnr.items() if k.startswith("single")), default=None)
        gain = "" if best is None or name.startswith("single") else f"{psnr[name] - best:+.2f}"
        print(
            f"| {name} | {text} | {gain} | {seconds:.0f} | {peak_mib():.0f} | {residuals} |",
            flush=True,
        )

    cubic = [resample(s, *grid, band_limited=()) for s in stacks]
    for axis, volume in enumerate(cubic):
        line(f"cubic B-spline, stack {axis}", volume, 0)
    mean = MetaTensor(sum(c.as_tensor() for c in cubic) / 3, affine=truth.affine)
    line("cubic B-spline, mean of 3", mean, 0)
    estimates, seconds = {}, {}

    def estimate(volume, plan, thickness, profile):
        if plan.axis not in estimates:
            start = time.perf_counter()
            estimates[plan.axis] = through_plane_estimate(
                volume, plan, thickness, profile, steps=args.steps, seed=args.seed
            )
            seconds[plan.axis] = time.perf_counter() - start
        return estimates[plan.axis]

    def cubic_estimate(volume, plan, thickness, profile):
        return resample(volume, plan.shape, plan.affine, band_limited=plan.in_plane_axes)

    for weight in args.weights * ("cubic" in args.estimates):
        start = time.perf_counter()
        fused = fuse_stacks(
            stacks, like=truth, profile="box", weight=weight, estimate=cubic_estimate
        )
        residuals = ", ".join(f"{r:.4f}" for r in fused.meta[FACTS]["stack_residuals"])
        took = time.perf_counter() - start
        line(f"joint solve from cubic B-spline, weight {weight:g}", fused, took, residuals)
    for k, weight in enumerate(args.weights * ("network" in args.estimates)):
        start = time.perf_counter()
        fused = fuse_stacks(stacks, like=truth, profile="box", weight=weight, estimate=estimate)
        solve = time.perf_counter() - start
        if k == 0:  # the first pass trained the three: their rows first
            solve -= sum(seconds.values())
            for axis in range(3):
                line(f"single stack {axis}", estimates[axis], seconds[axis])
        residuals = ", ".join(f"{r:.4f}" for r in fused.meta[FACTS]["stack_residuals"])
        total = sum(seconds.values()) + solve
        line(f"fused, weight {weight:g} (solve {solve:.0f} s)", fused, total, residuals)


if __name__ == "__main__":
    main()
