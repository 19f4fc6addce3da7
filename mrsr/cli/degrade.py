"""``mrsr degrade``: simulate a low-resolution acquisition."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from mrsr.cli.common import add_output_options, read_checked, run_job
from mrsr.degradations import DEFAULT, DEGRADATIONS, degrade, describe
from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS
from mrsr.progress import note

EXAMPLES = """examples:
  mrsr degrade t1.nii.gz t1_lr.nii.gz --scale 2 --hr-out t1_ref.nii.gz
  mrsr degrade t2.nii.gz t2_lr.nii.gz --scale 3 --method bicubic
  mrsr degrade thin.nii.gz thick.nii.gz --scale 4 --axes 2   # 1D, through-plane"""


def cmd_degrade(args: argparse.Namespace) -> None:
    from mrsr.intensity import clamp_volume, range_facts
    from mrsr.provenance import add_facts, record

    if args.axes and len(set(args.axes)) != len(args.axes):
        raise MRSRError(f"--axes {' '.join(map(str, args.axes))}: give each axis once")
    outputs = [args.output] + ([args.hr_out] if args.hr_out else [])
    shapes = {}

    def make(job):
        volume = job.data
        lr, hr = degrade(volume, args.scale, args.method, args.axes)
        add_facts(lr, range_facts(clamp_volume(lr, hr, args.nonnegative)))
        shapes.update(lr=tuple(lr.shape[1:]), hr=tuple(hr.shape[1:]))
        settings = {"method": args.method, "scale": args.scale, "axes": args.axes}
        made = [(lr, record("degrade", volume, lr, **settings))]
        return made + [(hr, record("reference", volume, hr, **settings))] * bool(args.hr_out)

    # 40 bytes per voxel: the complex spectra of the volume and of its crop
    read = partial(read_checked, bytes_per_voxel=40)
    run_job(args.input, outputs, read, make, args.dtype, args.overwrite)
    where = f"; reference {shapes['hr']} -> {args.hr_out}" if args.hr_out else ""
    note(
        one_line(
            f"{args.input} {shapes['hr']} -> {args.output} {shapes['lr']} "
            f"({args.method}, x{args.scale}){where}"
        )
    )


def add_degrade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade",
        help="simulate a low-resolution acquisition",
        description="Simulate a low-resolution acquisition of a volume (--method), on the "
        "in-plane axes unless --axes says otherwise. "
        "A magnitude input (no negative voxel) gives a magnitude image, clamped at 0 like every "
        "output; a signed input (phase, difference maps) keeps its sign (k-space: the real part "
        "of the truncated image).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="NIfTI, NRRD, MHA file or DICOM series folder")
    p.add_argument("output", type=Path, help="low-resolution NIfTI to write")
    p.add_argument(
        "--scale",
        type=OPTIONS["scale"].parse,
        required=True,
        help="integer factor per reduced axis",
    )
    p.add_argument(
        "--method",
        choices=DEGRADATIONS.keys(),
        default=DEFAULT,
        help=f"degradation: {describe()}; default {DEFAULT}",
    )
    p.add_argument(
        "--axes",
        type=OPTIONS["axis"].parse,
        nargs="+",
        help="spatial axes to reduce (default: in-plane axes)",
    )
    p.add_argument(
        "--hr-out",
        type=Path,
        help="also write the reference, cropped so that a xS upscaling of OUTPUT lands on its grid",
    )
    add_output_options(p)
    p.set_defaults(func=cmd_degrade)
