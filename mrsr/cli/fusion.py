"""``mrsr throughplane A B C OUT --voxel-size 1``: several stacks of one subject, one volume."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrsr.cli.common import (
    add_target_grid,
    inference_options,
    read_checked,
    slice_profile_options,
)
from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS
from mrsr.progress import note

__all__ = ["add_fusion", "cmd_fuse", "single_stack"]

_SEVERAL = {  # option -> its flag: options only several stacks use
    "voxel_size": "--voxel-size",
    "like": "--like",
    "register": "--register",
    "fusion_weight": "--fusion-weight",
}
_ONE = {"factor": "--factor", "axis": "--axis"}  # options of one stack only


def add_fusion(p: argparse.ArgumentParser) -> None:
    """The options of several stacks: the target grid, registration, the estimates' weight."""
    add_target_grid(
        p,
        "several stacks: the fused volume's voxel size in mm, one value or one per voxel axis, "
        "covering the first stack's field of view in its orientation",
        "several stacks: put the fused volume exactly on REF's grid (shape and affine)",
    )
    p.add_argument(
        "--register",
        action="store_true",
        help="several stacks: register each rigidly to the first (SimpleITK, Mattes mutual "
        "information) before fusing; the motions are recorded in the sidecar",
    )
    p.add_argument(
        "--fusion-weight",
        type=OPTIONS["fusion_weight"].parse,
        metavar="W",
        help="several stacks: weight of the per-stack network estimates against the stacks' "
        "measurements in the joint solve (default 0.1)",
    )


def single_stack(args: argparse.Namespace) -> Path:
    """The one input of ``args``, with the several-stack options refused."""
    given = [flag for key, flag in _SEVERAL.items() if getattr(args, key, None)]
    if given:
        raise MRSRError(
            f"{', '.join(given)}: only used to fuse several stacks (mrsr throughplane A B C OUT "
            "--voxel-size 1); for one scan onto a grid use mrsr upscale IN OUT --voxel-size or "
            "--like"
        )
    return args.input[0]


def cmd_fuse(args: argparse.Namespace) -> None:
    """Fuse ``args.input`` (several stacks) into ``args.output`` on the target grid."""
    from mrsr.batch import Batch, Job, Steps
    from mrsr.fusion import WEIGHT, fuse_stacks
    from mrsr.io import inspect_volume
    from mrsr.provenance import record, through_plane_settings

    inputs, output = list(args.input), args.output
    given = [flag for key, flag in _ONE.items() if getattr(args, key, None) is not None]
    if given:
        raise MRSRError(
            f"{', '.join(given)}: not used with several stacks (the target grid sets the fine "
            "voxels, each stack's header its slice axis); leave them out"
        )
    if not (args.voxel_size or args.like):
        raise MRSRError(
            f"{len(inputs)} stacks need a target grid: give --voxel-size MM or --like REF"
        )
    weight = WEIGHT if args.fusion_weight is None else args.fusion_weight
    options = slice_profile_options(args, None)  # a bad profile file refused before any work
    thicknesses = []

    def read(job: Job) -> list:
        stacks = []
        for path in inputs:
            stack_job = job if path == job.path else Job(path, job.outputs)
            stack_job.info = stack_job.info or inspect_volume(path)
            header_mm = stack_job.info.slice_thickness
            thicknesses.append(slice_profile_options(args, header_mm)["thickness"])
            stacks.append(read_checked(stack_job, 12 * 8 / len(inputs), 8 / len(inputs)))
        return stacks

    def make(job: Job) -> list:
        stacks = job.data
        fused = fuse_stacks(
            stacks,
            args.voxel_size,
            args.like,
            register=args.register,
            thickness=thicknesses,
            profile=options["profile"],
            inplane_resolution=options["inplane_resolution"],
            weight=weight,
            steps=args.steps,
            max_time=args.max_time,
            seed=args.seed,
            consistency=args.consistency,
            **inference_options(args, progress=True),
        )
        settings = through_plane_settings(
            steps=args.steps,
            max_time_s=args.max_time,
            thickness_mm=thicknesses if any(thicknesses) else None,
            profile=args.profile,
        )
        return [(fused, record("throughplane", stacks[0], fused, **settings))]

    references = [*inputs[1:], *([args.like] if args.like else [])]
    runner = Batch(
        Steps(read, make), dtype=args.dtype, overwrite=args.overwrite, references=references
    )
    runner.one(Job(inputs[0], (output,)))
    note(one_line(f"{len(inputs)} stacks -> {output}"))
