"""Any grid: thick slices and non-integer factors back onto the truth's grid (run by hand).

    python benchmarks/anygrid.py [--steps 650] [--volumes A.nii.gz:AXIS ...]

Each isotropic 1 mm volume (default: ``data/default/train/colin_1mm_superior.nii.gz`` along
axis 2, when present, and the bundled sample along axis 1; ``pipelines/default_models/
prepare_data.py`` writes the first) is acquired as a 2D multi-slice scan would be, along its
slice axis, with a box profile (:func:`mrsr.slice_profiles.simulate_thick_slices`):

- ``4.5/4.5``: 4.5 mm thick slices every 4.5 mm (a non-integer factor);
- ``3/4 gap``: 3 mm thick slices every 4 mm (a 1 mm gap);
- ``1.5 + 3``: in-plane k-space truncation x1.5 (1.5 mm voxels, the centre 2/3 of k-space),
  then 3 mm slices every 3 mm.

Each is brought back onto the truth's grid by world-space cubic B-spline interpolation, by
zero-fill (band-limited) in-plane + cubic B-spline through-plane, and by ``mrsr upscale
--like truth`` (``Pipeline.from_pretrained("cssfn-kspace-x2")(thick, like=truth)``: its plan
is printed). Prints a Markdown table of PSNR and SSIM (:mod:`mrsr.metrics`, Otsu foreground of
the truth, SSIM per slice along the slice axis, no shave), and mrsr's seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from mrsr import Pipeline, metrics
from mrsr.geometry import resampled_affine
from mrsr.io import load_volume, sample_path
from mrsr.kspace import truncate
from mrsr.machine import describe
from mrsr.resample import resample
from mrsr.settings import UPSCALE_THROUGH_PLANE_STEPS
from mrsr.slice_profiles import simulate_thick_slices

ROOT = Path(__file__).resolve().parents[1]
COLIN = ROOT / "data" / "default" / "train" / "colin_1mm_superior.nii.gz"


def crop(volume: MetaTensor, multiple: int) -> MetaTensor:
    """The volume cut at its far ends to a multiple of ``multiple`` voxels along every axis
    (voxel 0 and so the affine unchanged)."""
    sizes = [n // multiple * multiple for n in volume.shape[1:]]
    return MetaTensor(
        volume.as_tensor()[:, : sizes[0], : sizes[1], : sizes[2]], meta=dict(volume.meta)
    )


def in_plane_truncated(volume: MetaTensor, axis: int, factor: float) -> MetaTensor:
    """k-space truncation by ``factor`` on the two axes other than ``axis`` (mrsr's k-space grid:
    voxel 0 keeps its place)."""
    dims = [a + 1 for a in range(3) if a != axis]
    sizes = [round(volume.shape[d] / factor) for d in dims]
    low = MetaTensor(truncate(volume.as_tensor().float(), sizes, dims), meta=dict(volume.meta))
    factors = [1.0 if a == axis else factor for a in range(3)]
    low.affine = torch.as_tensor(resampled_affine(np.asarray(volume.affine), factors, "kspace"))
    return low


def cases(volume: MetaTensor, axis: int) -> dict[str, tuple[MetaTensor, MetaTensor, float | None]]:
    """``{name: (acquired, truth, slice thickness in mm or None)}``."""
    box, truth = simulate_thick_slices(volume, 4.5, axis)
    gap, gap_truth = simulate_thick_slices(volume, 4, axis, thickness=3)
    truth3 = crop(volume, 3)
    both, _ = simulate_thick_slices(in_plane_truncated(truth3, axis, 1.5), 3, axis)
    return {
        "4.5/4.5": (box, truth, None),
        "3/4 gap": (gap, gap_truth, 3.0),
        "1.5 + 3": (both, truth3, None),
    }


def scores(pred: MetaTensor, truth: np.ndarray, mask: np.ndarray, axis: int) -> str:
    values = metrics.evaluate(pred[0].numpy(), truth, mask=mask, axis=axis)
    return f"{values['psnr']:.2f} | {values['ssim']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=UPSCALE_THROUGH_PLANE_STEPS,
        help=f"through-plane training steps (default {UPSCALE_THROUGH_PLANE_STEPS}, upscale's)",
    )
    parser.add_argument("--volumes", nargs="+", help="PATH:AXIS of isotropic 1 mm volumes")
    args = parser.parse_args()
    volumes = [(Path(v.rsplit(":", 1)[0]), int(v.rsplit(":", 1)[1])) for v in args.volumes or []]
    if not volumes:
        volumes = ([(COLIN, 2)] if COLIN.exists() else []) + [(sample_path(), 1)]
    print(f"through-plane steps {args.steps}; machine: {describe()}\n")
    print(
        "| volume | case | cubic B-spline PSNR | SSIM | zero-fill + cubic PSNR | SSIM | "
        "mrsr --like PSNR | SSIM | mrsr s |\n" + "|---" * 9 + "|"
    )
    for path, axis in volumes:
        volume = load_volume(path)
        for name, (acquired, truth, thickness) in cases(volume, axis).items():
            grid = (truth.shape[1:], np.asarray(truth.affine))
            reference = truth[0].numpy().astype(np.float64)
            mask = metrics.foreground_mask(reference, axis=axis)
            in_plane = tuple(a for a in range(3) if a != axis)
            cubic = resample(acquired, *grid, band_limited=())
            zerofill = resample(acquired, *grid, band_limited=in_plane)
            pipe = Pipeline.from_pretrained(
                "cssfn-kspace-x2",
                axis=axis,
                through_plane_steps=args.steps,
                slice_thickness=thickness,
            )
            start = time.perf_counter()
            print(pipe.plan(acquired, like=truth).describe(), file=sys.stderr, flush=True)
            sr = pipe(acquired, like=truth)
            seconds = time.perf_counter() - start
            assert sr.shape == truth.shape and np.allclose(sr.affine, truth.affine, atol=1e-6)
            row = [scores(p, reference, mask, axis) for p in (cubic, zerofill, sr)]
            print(
                f"| {path.name} (axis {axis}) | {name} | " + " | ".join(row) + f" | {seconds:.0f} |"
            )


if __name__ == "__main__":
    main()
