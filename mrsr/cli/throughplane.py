"""``mrsr throughplane``: thick slices to isotropic voxels, trained on the scan."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrsr.cli.common import (
    add_device,
    add_output_options,
    add_slice_profile,
    inference_options,
    read_checked,
    run_job,
    slice_profile_options,
)
from mrsr.cli.fusion import add_fusion, cmd_fuse, single_stack
from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS
from mrsr.progress import note
from mrsr.settings import THROUGH_PLANE_STEPS

EXAMPLES = """examples:
  mrsr throughplane t2_5mm.nii.gz t2_iso.nii.gz                     # 0.5x0.5x5 mm -> 0.5 mm
  mrsr throughplane t2_5mm.nii.gz t2_iso.nii.gz --steps 3000        # train longer
  mrsr throughplane t2_5mm.nii.gz t2_iso.nii.gz --max-time 60       # at most a minute of it
  mrsr throughplane flair.nii.gz flair_iso.nii.gz --factor 4 --steps 2000 --seed 1
  mrsr throughplane t2_ax.nii.gz t2_cor.nii.gz t2_sag.nii.gz t2_iso.nii.gz --voxel-size 1"""


def cmd_throughplane(args: argparse.Namespace) -> None:
    if len(args.input) > 1:
        return cmd_fuse(args)
    args.input = single_stack(args)
    from mrsr.provenance import record, through_plane_settings
    from mrsr.throughplane import super_resolve_through_plane

    shapes = {}
    slice_profile_options(args, None)  # a bad profile file refused before any work

    def read(job):
        factor = args.factor or 8  # a guess until the spacing is read; the output, two estimates
        return read_checked(job, 12 * factor, factor)

    def make(job):
        volume, profile = job.data, slice_profile_options(args, job.info.slice_thickness)
        thickness = profile["thickness"]
        try:
            sr = super_resolve_through_plane(
                volume,
                args.factor,
                args.steps,
                max_time=args.max_time,
                **profile,
                seed=args.seed,
                consistency=args.consistency,
                **inference_options(args, progress=True),
            )
        except MRSRError as exc:
            raise MRSRError(f"{args.input}: {exc}") from exc
        shapes.update(volume=tuple(volume.shape[1:]), sr=tuple(sr.shape[1:]))
        settings = through_plane_settings(
            steps=args.steps,
            max_time_s=args.max_time,
            thickness_mm=thickness,
            profile=args.profile,
        )
        return [(sr, record("throughplane", volume, sr, factor=args.factor, **settings))]

    run_job(args.input, [args.output], read, make, args.dtype, args.overwrite)
    note(one_line(f"{args.input} {shapes['volume']} -> {args.output} {shapes['sr']}"))


def add_throughplane(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "throughplane",
        help="super-resolve thick slices to isotropic voxels, trained on the scan itself",
        description="Through-plane super-resolution of a thick-slice volume: a small network "
        "learns, from the scan's own in-plane slices degraded by the slice profile (slab "
        "average), to restore detail lost along the slice axis; it is then applied to the "
        "planes across the slices in both orientations, the two results averaged and corrected "
        "so that the acquisition of the output reproduces the input slices. Slices may be any "
        "real number of in-plane voxels apart (5 mm at 0.9 mm: 5.56), thinner than their "
        "spacing (a gap) and box or Gaussian in profile. The output subdivides each slice "
        "spacing into fine voxels and overlays the input exactly. Training is a fixed number of "
        "seeded steps (--steps), so the same input and options give the same output on any "
        "machine load; --max-time caps it, and the sidecar records the steps reached. Several "
        "stacks of one subject and contrast (A B C OUT, with --voxel-size or --like) are fused "
        "into one volume: each stack's own network gives an estimate, then a joint solve makes "
        "the result consistent with every stack's slices.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        type=Path,
        nargs="+",
        help="thick-slice volume (NIfTI, NRRD, MHA, DICOM folder), or several stacks of one "
        "subject and contrast to fuse into one volume (then --voxel-size or --like)",
    )
    p.add_argument("output", type=Path, help="NIfTI to write")
    p.add_argument(
        "--factor",
        type=OPTIONS["factor"].parse,
        help="fine voxels per slice spacing, any real from 1.5 (default: slice spacing / "
        "in-plane spacing)",
    )
    add_slice_profile(p)
    p.add_argument(
        "--steps",
        type=OPTIONS["steps"].parse,
        default=THROUGH_PLANE_STEPS,
        help=f"training steps of 16 patches each (default {THROUGH_PLANE_STEPS}: about 3 minutes "
        "on a CPU, where it trains on one thread; much less on a GPU)",
    )
    p.add_argument(
        "--max-time",
        type=OPTIONS["max_time"].parse,
        metavar="S",
        help="stop training after S seconds even if the steps are not done (default: no cap; "
        "the output then depends on the machine's speed and load, and the sidecar records the "
        "steps reached); reading and applying the network come on top",
    )
    p.add_argument("--seed", type=OPTIONS["seed"].parse, default=0, help="random seed (default 0)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), help="slice axis (default: from header)")
    p.add_argument(
        "--no-consistency",
        dest="consistency",
        action="store_false",
        help="skip the final correction that makes each slab's mean equal the input slice",
    )
    add_fusion(p)
    add_device(p)
    add_output_options(p)
    p.set_defaults(func=cmd_throughplane)
