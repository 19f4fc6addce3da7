"""The ``mrsr`` console command: one sub-command per job (design.md, "Command line")."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mrsr import __version__
from mrsr.errors import MRSRError

EXAMPLES = {
    "degrade": """examples:
  mrsr degrade t1.nii.gz t1_lr.nii.gz --scale 2 --hr-out t1_ref.nii.gz
  mrsr degrade t2.nii.gz t2_lr.nii.gz --scale 3 --method bicubic
  mrsr degrade thin.nii.gz thick.nii.gz --scale 4 --axes 2   # 1D, through-plane""",
}


def _check_outputs(inputs: Sequence[Path], outputs: Sequence[Path], overwrite: bool) -> None:
    """Fail before any work if an output clobbers an input or an existing file."""
    resolved = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in resolved:
            raise MRSRError(f"{out}: output path equals the input; choose another name")
        if out.exists() and not overwrite:
            raise MRSRError(f"{out}: already exists; pass --overwrite to replace it")
        if not out.parent.is_dir():
            raise MRSRError(f"{out.parent}: output folder does not exist")


def cmd_degrade(args: argparse.Namespace) -> None:
    from mrsr.io import load_volume, save_volume
    from mrsr.transforms import degrade

    outputs = [args.output] + ([args.hr_out] if args.hr_out else [])
    _check_outputs([args.input], outputs, args.overwrite)
    volume = load_volume(args.input)
    try:
        lr, hr = degrade(volume, args.scale, args.method, args.axes)
    except ValueError as exc:
        raise MRSRError(f"{args.input}: {exc}") from exc
    save_volume(lr, args.output, dtype=args.dtype, overwrite=args.overwrite)
    if args.hr_out:
        save_volume(hr, args.hr_out, dtype=args.dtype, overwrite=args.overwrite)
    print(
        f"{args.input} {tuple(hr.shape[1:])} -> {args.output} {tuple(lr.shape[1:])} "
        f"({args.method}, x{args.scale})",
        file=sys.stderr,
    )


def _add_degrade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade",
        help="simulate a low-resolution acquisition",
        description="Simulate a low-resolution acquisition of a volume: k-space truncation (the "
        "MR model) or bicubic downsampling, on the in-plane axes unless --axes says otherwise.",
        epilog=EXAMPLES["degrade"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="NIfTI, NRRD, MHA file or DICOM series folder")
    p.add_argument("output", type=Path, help="low-resolution NIfTI to write")
    p.add_argument("--scale", type=int, required=True, help="integer factor per reduced axis")
    p.add_argument("--method", choices=("kspace", "bicubic"), default="kspace")
    p.add_argument(
        "--axes", type=int, nargs="+", help="spatial axes to reduce (default: in-plane axes)"
    )
    p.add_argument(
        "--hr-out",
        type=Path,
        help="also write the reference, cropped so that a xS upscaling of OUTPUT lands on its grid",
    )
    p.add_argument(
        "--dtype", default="float32", help="output data type, or 'input' (default float32)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_degrade)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrsr", description="Super-resolution of MR volumes, NIfTI in, NIfTI out."
    )
    parser.add_argument("--version", action="version", version=f"mrsr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_degrade(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except MRSRError as exc:
        if args.debug:
            raise
        print(f"mrsr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrsr: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
