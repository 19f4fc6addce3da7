"""``mrsr throughplane``: thick slices to isotropic voxels, trained on the scan."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrsr.cli.common import add_device, add_output_options, add_slice_profile, load_checked, plan
from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS
from mrsr.progress import note

EXAMPLES = """examples:
  mrsr throughplane t2_5mm.nii.gz t2_iso.nii.gz                     # 0.5x0.5x5 mm -> 0.5 mm
  mrsr throughplane t2_5mm.nii.gz t2_iso.nii.gz --time-budget 600   # train longer
  mrsr throughplane flair.nii.gz flair_iso.nii.gz --factor 4 --steps 2000 --seed 1"""


def cmd_throughplane(args: argparse.Namespace) -> None:
    from mrsr.io import inspect_volume, save_volume
    from mrsr.provenance import record
    from mrsr.throughplane import super_resolve_through_plane

    plan([(args.input, args.output)], args.overwrite)
    factor = args.factor or 8  # a guess until the spacing is read; the output, its two estimates
    volume = load_checked(args.input, 12 * factor, [args.output], factor)
    thickness = args.slice_thickness or inspect_volume(args.input).slice_thickness
    try:
        sr = super_resolve_through_plane(
            volume,
            args.factor,
            args.time_budget,
            thickness=thickness,
            profile=args.profile,
            steps=args.steps,
            seed=args.seed,
            axis=args.axis,
            consistency=args.consistency,
            nonnegative=args.nonnegative,
            device=args.device,
            progress=True,
        )
    except MRSRError as exc:
        raise MRSRError(f"{args.input}: {exc}") from exc
    settings = {"time_budget_s": args.time_budget, "steps": args.steps, "seed": args.seed}
    settings.update(factor=args.factor, slice_thickness_mm=thickness)
    provenance = record("throughplane", volume, sr, **settings, slice_profile=args.profile)
    save_volume(sr, args.output, dtype=args.dtype, overwrite=args.overwrite, provenance=provenance)
    note(one_line(f"{args.input} {tuple(volume.shape[1:])} -> {args.output} {tuple(sr.shape[1:])}"))


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
        "spacing into fine voxels and overlays the input exactly. Training takes --time-budget "
        "seconds.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="thick-slice volume (NIfTI, NRRD, MHA, DICOM folder)")
    p.add_argument("output", type=Path, help="NIfTI to write")
    p.add_argument(
        "--factor",
        type=OPTIONS["factor"].parse,
        help="fine voxels per slice spacing, any real from 1.5 (default: slice spacing / "
        "in-plane spacing)",
    )
    add_slice_profile(p)
    p.add_argument(
        "--time-budget",
        type=OPTIONS["time_budget"].parse,
        default=180.0,
        help="seconds of training (default 180); reading, interpolating and applying the network "
        "in two orientations come on top",
    )
    p.add_argument(
        "--steps",
        type=OPTIONS["steps"].parse,
        help="stop training after N steps (default: budget only)",
    )
    p.add_argument("--seed", type=OPTIONS["seed"].parse, default=0, help="random seed (default 0)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), help="slice axis (default: from header)")
    p.add_argument(
        "--no-consistency",
        dest="consistency",
        action="store_false",
        help="skip the final correction that makes each slab's mean equal the input slice",
    )
    add_device(p)
    add_output_options(p)
    p.set_defaults(func=cmd_throughplane)
