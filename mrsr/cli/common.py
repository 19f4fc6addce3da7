"""Helpers the volume commands share: their inference options, one job run through the job
runner (:mod:`mrsr.batch`) and a checked read."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrsr import slice_profiles
from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS
from mrsr.settings import InferenceSettings

if TYPE_CHECKING:
    from monai.data import MetaTensor

    from mrsr.batch import Job, Made

INFERENCE = InferenceSettings()  # the defaults of the inference options


def inference_options(args: argparse.Namespace, **given: Any) -> dict[str, Any]:
    """The inference settings (:class:`mrsr.inference.InferenceSettings`) a command's options
    give: each field by its own name, where the command has that option; ``given`` on top."""
    known = {
        f.name: getattr(args, f.name) for f in fields(InferenceSettings) if hasattr(args, f.name)
    }
    return known | given


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``, ``auto`` by default (:func:`mrsr.machine.resolve_device`)."""
    p.add_argument(
        "--device",
        type=OPTIONS["device"].parse,
        default=INFERENCE.device,
        help="auto (default: CUDA if available, else MPS, else CPU), cpu, cuda, cuda:1, mps",
    )


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--overwrite`` and ``--negative`` of a command that writes volumes."""
    p.add_argument(
        "--dtype",
        type=OPTIONS["dtype"].parse,
        default="float32",
        help="output data type, or 'input' (default float32)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--negative",
        dest="nonnegative",
        action="store_const",
        const=False,
        help="keep negative output values (default: clamped at 0 when the input has none, "
        "as a magnitude image; inputs with negative values keep their sign)",
    )


def add_target_grid(p: argparse.ArgumentParser, voxel_size: str, like: str) -> None:
    """``--voxel-size MM [MM MM]`` or ``--like REF`` (one of them), with these help texts."""
    grid = p.add_mutually_exclusive_group()
    grid.add_argument(
        "--voxel-size", type=OPTIONS["voxel_size"].parse, nargs="+", metavar="MM", help=voxel_size
    )
    grid.add_argument("--like", type=Path, metavar="REF", help=like)


def add_slice_profile(p: argparse.ArgumentParser) -> None:
    """``--slice-thickness``, ``--profile``, ``--slice-profile`` and
    ``--inplane-acquired-resolution`` of the through-plane step."""
    p.add_argument(
        "--slice-thickness",
        type=OPTIONS["slice_thickness"].parse,
        metavar="MM",
        help="slice thickness in mm when it differs from the spacing (a gap, or overlap); "
        "default: the DICOM SliceThickness, else estimated with the profile",
    )
    p.add_argument(
        "--profile",
        type=OPTIONS["profile"].parse,
        help=f"slice profile: {slice_profiles.describe()}; default {slice_profiles.DEFAULT} "
        "with --slice-thickness; with neither, shape and width are estimated from the scan "
        "(a box as wide as the spacing, with a warning, when the estimate is not trusted)",
    )
    p.add_argument(
        "--slice-profile",
        dest="slice_profile_file",
        type=Path,
        metavar="FILE",
        help='a measured slice profile: JSON {"step_mm": 0.1, "weights": [...]}, the '
        "profile's mean over each step of a grid centred on the slice (docs/geometry.md)",
    )
    p.add_argument(
        "--inplane-acquired-resolution",
        type=OPTIONS["inplane_acquired_resolution"].parse,
        nargs="+",
        metavar="MM",
        help="in-plane resolution the scan was acquired at, one value or one per in-plane axis, "
        "when its pixels are finer (scanner zero-fill interpolation); default: found from the "
        "in-plane spectrum where it stops sharply",
    )


def slice_profile_options(args: argparse.Namespace, header_mm: float | None) -> dict[str, Any]:
    """The ``thickness``, ``profile`` and ``inplane_resolution`` of
    :func:`mrsr.throughplane.super_resolve_through_plane` that a command's options give: a
    measured profile read from ``--slice-profile`` (with its own width), else ``--profile``
    and ``--slice-thickness`` or the header's thickness ``header_mm`` (neither: estimated)."""
    from mrsr.slice_profiles import read_profile

    resolution = args.inplane_acquired_resolution
    if resolution is not None:
        resolution = OPTIONS["inplane_acquired_resolution"].check(
            list(resolution), "--inplane-acquired-resolution"
        )
    if args.slice_profile_file is None:
        thickness = args.slice_thickness or header_mm
        return dict(thickness=thickness, profile=args.profile, inplane_resolution=resolution)
    if args.slice_thickness is not None or args.profile is not None:
        raise MRSRError(
            "--slice-profile gives the profile and its width: leave out --profile and "
            "--slice-thickness"
        )
    profile = read_profile(args.slice_profile_file)
    return dict(thickness=None, profile=profile, inplane_resolution=resolution)


def run_job(
    source: Path,
    outputs: Sequence[Path],
    read: Callable[[Job], Any],
    make: Callable[[Job], Made],
    dtype: str = "float32",
    overwrite: bool = False,
) -> None:
    """Run one job of a command (:class:`mrsr.batch.Batch`): plan and lock ``outputs``, read
    ``source``'s header once, ``read`` it and ``make`` the results (:class:`mrsr.batch.Task`),
    write them with their provenance."""
    from mrsr.batch import Batch, Job, Steps

    Batch(Steps(read, make), dtype=dtype, overwrite=overwrite).one(Job(source, tuple(outputs)))


def read_checked(job: Job, bytes_per_voxel: float, output_ratio: float = 1.0) -> MetaTensor:
    """Read ``job``'s input once its header (``job.info``) says that the job's memory estimate
    (``bytes_per_voxel`` of the input) fits, and that each output (``output_ratio`` times the
    input's voxels, float32) fits on its disk."""
    from mrsr.io import load_volume, read_bytes
    from mrsr.memory import check_fits

    info = job.info
    check_fits(read_bytes(info) + bytes_per_voxel * info.voxels, f"{one_line(job.path)}")
    job.need_space(int(4 * output_ratio * info.voxels))
    return load_volume(job.path)


def message(exc: BaseException) -> str:
    """One line for any exception: the user's problem as such, anything else with its type."""
    if isinstance(exc, MRSRError):
        return one_line(str(exc))
    if isinstance(exc, MemoryError):
        return "out of memory; use a machine with more memory or a smaller volume"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return one_line(f"{where}{exc.strerror}")
    return one_line(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)")
