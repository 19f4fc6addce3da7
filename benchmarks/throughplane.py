"""Through-plane super-resolution on thick slices simulated from real 1 mm volumes (run by hand).

    python benchmarks/throughplane.py [--volumes A.nii.gz:AXIS ...] [--cases box4 gap3]
        [--methods mrsr] [--steps N] [--seed S]
    python benchmarks/throughplane.py --step-cost

Each isotropic 1 mm volume (default: ``data/default/train/colin_1mm_superior.nii.gz`` and
``colin_1mm_inferior.nii.gz`` along axis 2, when present, and the bundled sample along axis 1;
``pipelines/default_models/prepare_data.py`` writes the first two) is acquired along its slice
axis as a 2D multi-slice scan would be (:func:`mrsr.slice_profiles.simulate_thick_slices`), one
acquisition per name of :data:`CASES`:

- ``box4``: 4 mm thick box slices every 4 mm;
- ``gap3``: 3 mm thick box slices every 4 mm (a 1 mm gap);
- ``box6``: 6 mm thick box slices every 4 mm (overlapping);
- ``gauss4``, ``gauss6``: Gaussian slices of 4 and 6 mm FWHM every 4 mm.

Each is brought back onto the truth's grid by world-space cubic B-spline interpolation (the
baseline) and by each name of :data:`METHODS` (``mrsr``: ``mrsr throughplane`` at its default,
:func:`mrsr.throughplane.super_resolve_through_plane` with the true slice thickness and
profile, :data:`mrsr.settings.THROUGH_PLANE_STEPS` steps from seed 0; ``mrsr-blind``: the same
told nothing of the profile, which is then estimated from the scan,
:mod:`mrsr.profile_estimation`; ``mrsr-box-spacing``: told a box as wide as the spacing, the
profile assumed when none was given before it was estimated). Prints a Markdown
table, one row per volume, case and method: PSNR and SSIM (:func:`anygrid.scores`: Otsu
foreground of the truth, SSIM per slice along the slice axis, no shave) of both, the gain in
dB, the steps trained, the method's wall time and the peak resident memory of the process that
ran it (each row runs in a fresh process, so ``ru_maxrss`` is that row's, torch and imports
included).

``--step-cost``: the process CPU time of one training step (16 patches of 48 x 48, the default
network, on the one thread training uses) on 40 slices of 256 x 256 for 4 mm slices of 1 mm
voxels (a step's cost does not depend on the volume's size): how the default number of steps
was sized, on a machine busy with other jobs, where wall time says little.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from anygrid import COLIN, scores
from monai.data import MetaTensor

from mrsr import metrics
from mrsr.io import load_volume, sample_path
from mrsr.machine import describe
from mrsr.provenance import FACTS
from mrsr.resample import resample
from mrsr.settings import THROUGH_PLANE_STEPS as STEPS
from mrsr.slice_profiles import SliceProfile, simulate_thick_slices
from mrsr.throughplane import super_resolve_through_plane
from mrsr.training.throughplane import train_network

COLIN_INFERIOR = COLIN.with_name("colin_1mm_inferior.nii.gz")

# name: (slice spacing in 1 mm voxels, thickness in mm or None for the spacing, profile)
CASES: dict[str, tuple[float, float | None, str]] = {
    "box4": (4.0, None, "box"),
    "gap3": (4.0, 3.0, "box"),
    "box6": (4.0, 6.0, "box"),
    "gauss4": (4.0, None, "gaussian"),
    "gauss6": (4.0, 6.0, "gaussian"),
}


def mrsr_given_profile(
    acquired: MetaTensor, thickness: float | None, profile: str, axis: int, steps: int, seed: int
) -> MetaTensor:
    """``mrsr throughplane`` told the true slice thickness and profile."""
    return super_resolve_through_plane(
        acquired, steps=steps, seed=seed, thickness=thickness, profile=profile, axis=axis
    )


def mrsr_blind(
    acquired: MetaTensor, thickness: float | None, profile: str, axis: int, steps: int, seed: int
) -> MetaTensor:
    """``mrsr throughplane`` told nothing of the slice profile: it is estimated from the scan."""
    return super_resolve_through_plane(acquired, steps=steps, seed=seed, axis=axis)


def mrsr_box_spacing(
    acquired: MetaTensor, thickness: float | None, profile: str, axis: int, steps: int, seed: int
) -> MetaTensor:
    """``mrsr throughplane --profile box``: a box as wide as the spacing, whatever the truth (the
    default before the profile was estimated)."""
    return super_resolve_through_plane(acquired, steps=steps, seed=seed, profile="box", axis=axis)


# name: function(acquired, thickness, profile, axis, steps, seed) -> volume on the truth's grid
METHODS: dict[str, Callable[..., MetaTensor]] = {
    "mrsr": mrsr_given_profile,
    "mrsr-blind": mrsr_blind,
    "mrsr-box-spacing": mrsr_box_spacing,
}


def row(path: Path, axis: int, case: str, method: str, steps: int, seed: int) -> str:
    """One table row (run in a fresh process: its peak memory is this row's)."""
    spacing, thickness, profile = CASES[case]
    acquired, truth = simulate_thick_slices(
        load_volume(path), spacing, axis, thickness=thickness, profile=profile
    )
    reference = truth[0].numpy().astype(np.float64)
    mask = metrics.foreground_mask(reference, axis=axis)
    cubic = resample(acquired, truth.shape[1:], np.asarray(truth.affine), band_limited=())
    start = time.perf_counter()
    sr = METHODS[method](acquired, thickness, profile, axis, steps, seed)
    seconds = time.perf_counter() - start
    assert sr.shape == truth.shape and np.allclose(sr.affine, truth.affine, atol=1e-6)
    base, ours = scores(cubic, reference, mask, axis), scores(sr, reference, mask, axis)
    gain = float(ours.split(" | ")[0]) - float(base.split(" | ")[0])
    trained = sr.meta.get(FACTS, {}).get("through_plane_steps_trained", "-")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return (
        f"| {path.name} (axis {axis}) | {case} | {method} | {base} | {ours} | {gain:+.2f} | "
        f"{trained} | {seconds:.0f} | {peak:.0f} |"
    )


def step_cost(steps: int = 50) -> str:
    """Milliseconds of process CPU time per training step."""
    slices = torch.from_numpy(np.random.default_rng(0).random((40, 256, 256), dtype=np.float32))
    train_network(slices, SliceProfile(4, 4), 3)  # warm-up
    start = time.process_time()
    train_network(slices, SliceProfile(4, 4), steps)
    cost = 1000 * (time.process_time() - start) / steps
    return f"{cost:.0f} ms of CPU per training step ({steps} steps)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", nargs="+", help="PATH:AXIS of isotropic 1 mm volumes")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=STEPS, help=f"default {STEPS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-cost", action="store_true", help="CPU time of a step, then exit")
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    if args.step_cost:
        print(step_cost(), flush=True)
        return
    volumes = [(Path(v.rsplit(":", 1)[0]), int(v.rsplit(":", 1)[1])) for v in args.volumes or []]
    if not volumes:
        colin = [(p, 2) for p in (COLIN, COLIN_INFERIOR) if p.exists()]
        volumes = colin + [(sample_path(), 1)]
    print(f"{args.steps} steps, seed {args.seed}; machine: {describe()}\n", flush=True)
    print(
        "| volume | case | method | cubic B-spline PSNR | SSIM | PSNR | SSIM | gain dB | steps | "
        "s | peak MiB |\n" + "|---" * 11 + "|",
        flush=True,
    )
    for path, axis in volumes:
        for case in args.cases:
            for method in args.methods:
                with spawn.Pool(1) as pool:
                    job = (path, axis, case, method, args.steps, args.seed)
                    print(pool.apply(row, job), flush=True)


if __name__ == "__main__":
    main()
