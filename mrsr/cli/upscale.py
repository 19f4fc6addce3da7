"""``mrsr upscale``: super-resolve a volume or a folder of volumes."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from mrsr.cli.common import (
    INFERENCE,
    add_device,
    add_output_options,
    add_slice_profile,
    add_target_grid,
    inference_options,
    message,
)
from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS
from mrsr.progress import note
from mrsr.settings import UPSCALE_THROUGH_PLANE_STEPS

if TYPE_CHECKING:
    from mrsr.batch import Task
    from mrsr.pipeline import Pipeline

EXAMPLES = """examples:
  mrsr upscale t1_lr.nii.gz t1_sr.nii.gz --model my_model.safetensors
  mrsr upscale t1_lr.nii.gz t1_zf.nii.gz --model zerofill --scale 2   # a baseline
  mrsr upscale t2_thick.nii.gz t2_1mm.nii.gz --voxel-size 1           # any grid: 1 mm voxels
  mrsr upscale flair.nii.gz flair_on_t1.nii.gz --like t1.nii.gz       # exactly on t1's grid
  mrsr upscale lr_folder/ sr_folder/ --model my_model.safetensors     # every volume; resumable
  torchrun --nproc_per_node=4 -m mrsr upscale lr/ sr/ --model m.safetensors --device cuda"""


def _volume_jobs(source: Path, dest: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or every volume of a folder into a folder."""
    from mrsr.io import is_volume_path
    from mrsr.outputs import plan_folder

    if not source.is_dir() or is_volume_path(source):
        return [(source, dest)]
    return plan_folder(source, dest, f"the output of the folder input {one_line(source)}")


def rank_share(jobs: list) -> list:
    """This process's share of the jobs under torchrun (RANK/WORLD_SIZE), else all of them."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return jobs[rank::world]


def _device(device: str) -> str:
    """Under torchrun, ``cuda`` (or ``auto`` with CUDA) is this rank's GPU."""
    from mrsr.machine import resolve_device

    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return resolve_device(device)


def _warn(pipe, jobs: list[tuple[Path, Path]], args: argparse.Namespace) -> None:
    """Say loudly what will disappoint: random weights (with the time they will take) and bf16
    on a CPU that only emulates it."""
    import time

    import torch

    from mrsr.machine import native_bf16

    n_weights = sum(p.numel() for p in pipe.network.parameters())
    if not pipe.trained and n_weights and jobs:
        tile = torch.zeros(1, int(getattr(pipe.network, "in_channels", 1)), 32, 32)
        with torch.inference_mode():
            start = time.perf_counter()
            pipe.network.eval()(tile)
            per_voxel = (time.perf_counter() - start) / tile[0, 0].numel()
        voxels = sum(_voxels(src) for src, _ in jobs)
        print(
            f"mrsr: warning: network {pipe.spec.network!r} is UNTRAINED ({n_weights / 1e6:.1f} M "
            f"random weights): its output is not super-resolution, and it will take about "
            f"{max(1.0, per_voxel * voxels * (8 if args.tta else 1)):.0f} s; pass a checkpoint "
            "or a shipped model (mrsr models)",
            file=sys.stderr,
        )
    if pipe.precision == "bf16" and n_weights and not native_bf16(pipe.device):
        print(
            f"mrsr: warning: {pipe.device} has no native bfloat16 (no AVX512-BF16/AMX): bf16 "
            "is emulated and slower than fp32 here",
            file=sys.stderr,
        )
    if n_weights:
        chosen = [f"device {pipe.device}" + (" (auto)" if args.device == "auto" else "")]
        chosen.append(
            f"precision {pipe.precision}" + (" (auto)" if args.precision == "auto" else "")
        )
        note("running on " + ", ".join(chosen))


def _voxels(src: Path) -> int:
    """The voxels of ``src``; 0 when its header is refused (it fails in turn, saying why)."""
    from mrsr.io import inspect_volume

    try:
        return inspect_volume(src).voxels
    except MRSRError:
        return 0


def _default_model(volume, target: dict, models: dict, options: dict):
    """The shipped k-space model for the in-plane ratio that ``target`` needs from ``volume``
    (:func:`mrsr.zoo.covering`), cached in ``models`` by scale."""
    from mrsr import zoo
    from mrsr.pipeline import Pipeline
    from mrsr.target import needed_scale

    wanted = needed_scale(next(iter(models.values())).plan(volume, **target).in_plane)
    model = zoo.covering(wanted)
    if model.scale not in models:
        models[model.scale] = Pipeline.from_pretrained(model.name, **options)
    return models[model.scale]


def _outcomes(pipe, plan, args, chosen, models, options, single, wrap):
    """``(index, output path or exception)`` of every job of ``plan``, in order: one runner
    (:meth:`mrsr.Pipeline.batch`) with read-ahead and write-behind, or, when the model is
    chosen per volume from its grid, one volume at a time; ``wrap`` (if any) wraps the task
    (:class:`mrsr.batch.Task`) of each volume."""
    from mrsr.batch import Job

    target = dict(voxel_size=args.voxel_size, like=args.like)
    choose = partial(_default_model, target=target, models=models, options=options)
    runner = pipe.batch(args.dtype, args.overwrite, choose=choose if chosen else None, **target)
    if wrap is not None:
        runner.task = wrap(runner.task)
    jobs = [Job(src, (dst,)) for src, dst in plan.jobs]

    def started(k: int) -> None:
        if not single:
            note(one_line(f"[{k + 1}/{len(jobs)}] {jobs[k].source.name}"))

    overlap = not (single or chosen)
    return runner.each(jobs, plan, overlap=overlap, started=started)


def _through_plane(args: argparse.Namespace) -> dict:
    """The through-plane options given (the others keep :class:`mrsr.Pipeline`'s defaults);
    refused without --voxel-size or --like, where they would be silently unused."""
    given = {
        "--through-plane-steps": ("through_plane_steps", args.through_plane_steps),
        "--through-plane-max-time": ("through_plane_max_time", args.through_plane_max_time),
        "--slice-thickness": ("slice_thickness", args.slice_thickness),
        "--profile": ("slice_profile", args.profile),
        "--slice-profile": ("slice_profile_file", args.slice_profile_file),
        "--inplane-acquired-resolution": (
            "inplane_acquired_resolution",
            args.inplane_acquired_resolution,
        ),
    }
    given = {flag: option for flag, option in given.items() if option[1] is not None}
    if given and not (args.voxel_size or args.like):
        raise MRSRError(
            f"{', '.join(given)}: only used with --voxel-size or --like (a target grid finer "
            "along the slices); without one upscale works in-plane only: leave them out, or give "
            "the target"
        )
    return dict(given.values())


def cmd_upscale(args: argparse.Namespace) -> None:
    from mrsr.files import new_folder

    jobs = _volume_jobs(args.input, args.output)
    single = len(jobs) == 1 and jobs[0] == (args.input, args.output)
    with contextlib.nullcontext() if single else new_folder(args.output):  # never left empty
        upscale_jobs(args, jobs, single)


def load_pipeline(args: argparse.Namespace) -> tuple[Pipeline, dict]:
    """The pipeline that upscale's options ask for, and the inference options it was built with."""
    from mrsr.pipeline import load_model

    options = inference_options(args, device=_device(args.device), progress=True)
    options.update(_through_plane(args))
    return load_model(args.model, args.scale, **options), options


def upscale_jobs(
    args: argparse.Namespace,
    jobs: list[tuple[Path, Path]],
    single: bool = False,
    loaded: tuple[Pipeline, dict] | None = None,
    wrap: Callable[[Task], Task] | None = None,
) -> None:
    """Run upscale's ``jobs`` (``(input, output)`` pairs; this rank's share under torchrun,
    finished outputs skipped unless ``single``) with the pipeline ``loaded`` by
    :func:`load_pipeline` (else loaded here), each volume's task wrapped by ``wrap``; raises
    naming the volumes not done."""
    from mrsr.outputs import OutputBusy, plan_outputs

    like = [args.like] if args.like else []
    plan = plan_outputs(rank_share(jobs), args.overwrite, skip_finished=not single, references=like)
    pipe, options = loaded or load_pipeline(args)
    chosen = args.model is None and args.scale is None and bool(args.voxel_size or args.like)
    models = {pipe.scale: pipe}
    _warn(pipe, plan.jobs, args)
    if plan.finished:
        note(f"skipping {len(plan.finished)} finished outputs")
    failures, busy = [], []
    for k, outcome in _outcomes(pipe, plan, args, chosen, models, options, single, wrap):
        src, dst = plan.jobs[k]
        if not isinstance(outcome, BaseException):
            note(one_line(f"{src} -> {dst}"))
            continue
        if single:
            raise outcome
        (busy if isinstance(outcome, OutputBusy) else failures).append(src)
        print(f"mrsr: error: {message(outcome)}", file=sys.stderr)
    if failures or busy:
        parts = [f"{len(failures)} failed"] * bool(failures)
        parts += [f"{len(busy)} being written by another run"] * bool(busy)
        names = ", ".join(one_line(p.name) for p in (failures + busy)[:5])
        more = " ..." if len(failures + busy) > 5 else ""
        raise MRSRError(
            f"{len(failures + busy)} of {len(plan.jobs)} volumes not done ({', '.join(parts)}: "
            f"{names}{more}); see the messages above"
        )


def add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="super-resolve a volume or a folder of volumes",
        description="Super-resolve volumes slice by slice; the output overlays the input exactly "
        "in world space. A folder in gives a folder out; finished outputs are skipped, so a "
        "killed run resumes, and under torchrun the files are shared among the ranks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="volume file, DICOM series folder, or folder of them")
    p.add_argument("output", type=Path, help="NIfTI file, or folder for a folder input")
    add_upscale_options(p)
    p.set_defaults(func=cmd_upscale)


def add_upscale_options(p: argparse.ArgumentParser) -> None:
    """upscale's options (model, scale, target grid, device, precision, outputs...), for every
    command that super-resolves volumes as it does."""
    p.add_argument("--model", help="checkpoint (.safetensors), shipped model, or network name")
    p.add_argument(
        "--scale",
        type=OPTIONS["scale"].parse,
        help="upscaling factor (default: the model's, else 2, or with --voxel-size/--like the "
        "one the target needs; given with them, it must be that one)",
    )
    add_target_grid(
        p,
        "output voxel size in mm, one value or one per voxel axis; the field of view is kept "
        "(network SR in-plane where finer, band-limited resampling to the exact size)",
        "put the output exactly on REF's grid (its shape and affine, any orientation)",
    )
    p.add_argument(
        "--through-plane-steps",
        type=OPTIONS["through_plane_steps"].parse,
        metavar="N",
        help="with --voxel-size/--like finer along thick slices: training steps of the "
        f"through-plane network (default {UPSCALE_THROUGH_PLANE_STEPS}, about 2 minutes on "
        "a CPU; the same output under any load; 0: cubic B-spline interpolation instead)",
    )
    p.add_argument(
        "--through-plane-max-time",
        type=OPTIONS["through_plane_max_time"].parse,
        metavar="S",
        help="stop that training after S seconds even if the steps are not done (default: no "
        "cap; the sidecar records the steps reached)",
    )
    add_slice_profile(p)
    p.set_defaults(profile=None)  # given or not: only used with --voxel-size/--like
    p.add_argument(
        "--batch-size",
        type=OPTIONS["batch_size"].parse,
        default=INFERENCE.batch_size,
        help=f"slices per batch (default {INFERENCE.batch_size})",
    )
    add_device(p)
    p.add_argument(
        "--axis", type=OPTIONS["axis"].parse, help="slice axis 0, 1 or 2 (default: from header)"
    )
    p.add_argument("--tta", action="store_true", help="average over flips/rotations")
    p.add_argument(
        "--precision",
        type=OPTIONS["precision"].parse,
        default=INFERENCE.precision,
        help="auto (default): bf16 where the device computes it natively (CUDA with bf16, CPUs "
        "with AVX512-BF16/AMX; at most 0.002 dB lower), else fp32; bf16 elsewhere is warned",
    )
    p.add_argument(
        "--data-consistency",
        type=OPTIONS["data_consistency"].parse,
        nargs="?",
        const=1.0,
        default=INFERENCE.data_consistency,
        metavar="WEIGHT",
        help="restore the measured k-space block in the output (weight 0-1, default 1)",
    )
    add_output_options(p)
