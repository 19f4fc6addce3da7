"""Helpers the volume commands share: the output plan and a checked read."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``, ``auto`` by default (:func:`mrsr.machine.resolve_device`)."""
    p.add_argument(
        "--device",
        type=OPTIONS["device"].parse,
        default="auto",
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


def add_slice_profile(p: argparse.ArgumentParser) -> None:
    """``--slice-thickness`` and ``--profile`` of the through-plane step."""
    p.add_argument(
        "--slice-thickness",
        type=OPTIONS["slice_thickness"].parse,
        metavar="MM",
        help="slice thickness in mm when it differs from the spacing (a gap, or overlap); "
        "default: the DICOM SliceThickness, else the spacing",
    )
    p.add_argument(
        "--profile",
        type=OPTIONS["profile"].parse,
        default="box",
        help="slice profile: box (default) or gaussian (FWHM = the thickness)",
    )


def plan(jobs: Sequence[tuple[Path | None, Path]], overwrite: bool):
    """The checked output plan of a command (see :mod:`mrsr.outputs`), before any work."""
    from mrsr.outputs import plan_outputs

    return plan_outputs(jobs, overwrite=overwrite)


def load_checked(
    path: Path, bytes_per_voxel: float, outputs: Sequence[Path], output_ratio: float = 1.0
):
    """Read ``path`` once its header is checked, the job's memory estimate (``bytes_per_voxel``
    of the input) fits, and each of ``outputs`` (``output_ratio`` times the input's voxels,
    float32) fits on its disk."""
    from mrsr.io import inspect_volume, load_volume, read_bytes
    from mrsr.memory import check_fits
    from mrsr.outputs import check_space

    info = inspect_volume(path)
    check_fits(read_bytes(info) + bytes_per_voxel * info.voxels, f"{one_line(path)}")
    for out in outputs:
        check_space(out, int(4 * output_ratio * info.voxels))
    return load_volume(path)


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
