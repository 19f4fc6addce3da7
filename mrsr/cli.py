"""The ``mrsr`` console command: one sub-command per job (design.md, "Command line")."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mrsr import __version__
from mrsr.errors import MRSRError, one_line
from mrsr.options import OPTIONS

EXAMPLES = {
    "degrade": """examples:
  mrsr degrade t1.nii.gz t1_lr.nii.gz --scale 2 --hr-out t1_ref.nii.gz
  mrsr degrade t2.nii.gz t2_lr.nii.gz --scale 3 --method bicubic
  mrsr degrade thin.nii.gz thick.nii.gz --scale 4 --axes 2   # 1D, through-plane""",
    "upscale": """examples:
  mrsr upscale t1_lr.nii.gz t1_sr.nii.gz --model my_model.safetensors
  mrsr upscale t1_lr.nii.gz t1_zf.nii.gz --model zerofill --scale 2   # a baseline
  mrsr upscale lr_folder/ sr_folder/ --model my_model.safetensors     # every volume; resumable
  torchrun --nproc_per_node=4 -m mrsr upscale lr/ sr/ --model m.safetensors --device cuda""",
    "evaluate": """examples:
  mrsr evaluate --pred t1_sr.nii.gz --ref t1_ref.nii.gz
  mrsr evaluate --pred sr/ --ref ref/ --format csv > metrics.csv   # volumes paired by name
  mrsr evaluate --pred sr/ --pred other_sr/ --ref ref/ --mask brain_masks/ --shave 2
  mrsr evaluate --baselines --ref ref/ --model my.safetensors --report report/""",
    "throughplane": """examples:
  mrsr throughplane t2_5mm.nii.gz t2_iso.nii.gz                     # 0.5x0.5x5 mm -> 0.5 mm
  mrsr throughplane t2_5mm.nii.gz t2_iso.nii.gz --time-budget 600   # train longer
  mrsr throughplane flair.nii.gz flair_iso.nii.gz --factor 4 --steps 2000 --seed 1""",
}


def _plan(jobs: Sequence[tuple[Path | None, Path]], overwrite: bool):
    """The checked output plan of a command (see :mod:`mrsr.outputs`), before any work."""
    from mrsr.outputs import plan_outputs

    return plan_outputs(jobs, overwrite=overwrite)


def _load_checked(path: Path, bytes_per_voxel: float):
    """Read ``path`` once its header is checked and the job's memory estimate fits."""
    from mrsr.io import inspect_volume, load_volume, read_bytes
    from mrsr.memory import check_fits

    info = inspect_volume(path)
    check_fits(read_bytes(info) + bytes_per_voxel * info.voxels, f"{one_line(path)}")
    return load_volume(path)


def cmd_degrade(args: argparse.Namespace) -> None:
    from mrsr.io import save_volume
    from mrsr.transforms import degrade

    outputs = [args.output] + ([args.hr_out] if args.hr_out else [])
    _plan([(args.input, out) for out in outputs], args.overwrite)
    volume = _load_checked(args.input, 40)  # k-space: complex spectra of the volume and crop
    lr, hr = degrade(volume, args.scale, args.method, args.axes)
    save_volume(lr, args.output, dtype=args.dtype, overwrite=args.overwrite)
    if args.hr_out:
        save_volume(hr, args.hr_out, dtype=args.dtype, overwrite=args.overwrite)
    print(
        one_line(
            f"{args.input} {tuple(hr.shape[1:])} -> {args.output} {tuple(lr.shape[1:])} "
            f"({args.method}, x{args.scale})"
        ),
        file=sys.stderr,
    )


def _volume_jobs(source: Path, dest: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or every volume of a folder into a folder."""
    from mrsr.io import is_volume_path
    from mrsr.outputs import plan_folder

    if not source.is_dir() or is_volume_path(source):
        return [(source, dest)]
    inputs = sorted(p for p in source.iterdir() if is_volume_path(p))
    if not inputs:
        raise MRSRError(f"{source}: no volumes found (NIfTI, NRRD, MHA or DICOM series folders)")
    jobs = plan_folder(source, dest, inputs)
    if dest.exists() and not dest.is_dir():
        raise MRSRError(f"{dest}: is a file; a folder input needs an output folder")
    if not dest.parent.is_dir():
        raise MRSRError(f"{dest.parent}: output folder does not exist")
    return jobs


def _rank_share(jobs: list) -> list:
    """This process's share of the jobs under torchrun (RANK/WORLD_SIZE), else all of them."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return jobs[rank::world]


def _device(device: str) -> str:
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def cmd_upscale(args: argparse.Namespace) -> None:
    from mrsr.outputs import OutputBusy, plan_outputs
    from mrsr.pipeline import load_model

    jobs = _volume_jobs(args.input, args.output)
    single = len(jobs) == 1 and jobs[0] == (args.input, args.output)
    if not single:
        args.output.mkdir(exist_ok=True)
    plan = plan_outputs(_rank_share(jobs), overwrite=args.overwrite, skip_finished=not single)
    pipe = load_model(
        args.model,
        args.scale,
        batch_size=args.batch_size,
        device=_device(args.device),
        axis=args.axis,
        tta=args.tta,
        precision=args.precision,
        data_consistency=args.data_consistency,
        progress=True,
    )
    if not pipe.trained:
        print(f"mrsr: warning: network {pipe.spec.network!r} is untrained", file=sys.stderr)
    if plan.finished:
        print(f"skipping {len(plan.finished)} finished outputs", file=sys.stderr)
    failures, busy = [], []
    for src, dst in plan.jobs:
        try:
            pipe.save(src, dst, dtype=args.dtype, overwrite=args.overwrite)
            print(one_line(f"{src} -> {dst}"), file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - one bad volume must not stop a cohort run
            if single:
                raise
            (busy if isinstance(exc, OutputBusy) else failures).append(src)
            print(f"mrsr: error: {_message(exc)}", file=sys.stderr)
    if failures or busy:
        parts = [f"{len(failures)} failed"] * bool(failures)
        parts += [f"{len(busy)} being written by another run"] * bool(busy)
        names = ", ".join(one_line(p.name) for p in (failures + busy)[:5])
        more = " ..." if len(failures + busy) > 5 else ""
        raise MRSRError(
            f"{len(failures + busy)} of {len(plan.jobs)} volumes not done ({', '.join(parts)}: "
            f"{names}{more}); see the messages above"
        )


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table of metric rows (one per method)."""
    width = max(len(name) for name in rows) + 2
    lines = ["method".ljust(width) + "".join(c.upper().rjust(10) for c in columns)]
    for name, values in rows.items():
        lines.append(name.ljust(width) + "".join(f"{values[c]:10.4f}" for c in columns))
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> None:
    from mrsr.io import load_volume, sample_path, save_volume
    from mrsr.pipeline import Pipeline, load_model, score
    from mrsr.transforms import degrade

    out = args.out
    names = {k: out / f"sample_{k}.nii.gz" for k in ("lr", "ref", "sr")}
    out.mkdir(exist_ok=True)
    _plan([(sample_path(), p) for p in names.values()], args.overwrite)
    lr, ref = degrade(load_volume(sample_path()), args.scale, "kspace")
    try:
        network = load_model(args.model, args.scale, progress=True)
    except MRSRError as exc:
        if args.model is not None:
            raise
        print(f"mrsr: {exc}; running an untrained small CSSFN instead", file=sys.stderr)
        network = Pipeline("cssfn", args.scale, channels=32, n_blocks=2, n_units=2, progress=True)
    sr = network(lr)
    for key, volume in (("lr", lr), ("ref", ref), ("sr", sr)):
        save_volume(volume, names[key], overwrite=args.overwrite)
    label = f"{network.spec.network} (network)" + ("" if network.trained else " UNTRAINED")
    rows = {
        "nearest": Pipeline("nearest", args.scale).evaluate(lr, ref),
        "bicubic (k-space grid)": Pipeline("bicubic", args.scale).evaluate(lr, ref),
        "zero-filled k-space": Pipeline("zerofill", args.scale).evaluate(lr, ref),
        label: score(sr, ref, shave=args.scale),
    }
    if args.model is None and network.spec.info.get("data"):  # a shipped default model
        print(
            "note: the shipped models never saw these slices, only other slices of the same "
            "subject; their cards give held-out scores on other subjects",
            file=sys.stderr,
        )
    print(
        f"Bundled Colin27 T1 slab, k-space truncation x{args.scale}: {tuple(lr.shape[1:])} -> "
        f"{tuple(sr.shape[1:])}; foreground voxels, border of {args.scale} shaved"
    )
    print(format_table(rows, ("psnr", "ssim", "nrmse")))
    print(f"wrote {', '.join(str(p) for p in names.values())}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mrsr import evaluation, report
    from mrsr.pipeline import default_model_name, load_model

    if args.baselines == bool(args.pred):
        raise MRSRError("give --pred (predictions to score) or --baselines, not both")
    if not args.baselines and (args.model or args.scale or args.method):
        raise MRSRError("--model, --scale and --method go with --baselines")
    if args.baselines:  # the model (--model, else the shipped default if any) goes last
        try:
            model = load_model(args.model, args.scale, args.method or "kspace", progress=True)
        except MRSRError as exc:
            if args.model is not None:
                raise
            print(f"mrsr: {exc}; comparing the baselines only", file=sys.stderr)
            model = None
        scale = model.scale if model else args.scale or 2
        method = args.method or (model.spec.degradation if model else "kspace")
        if model and model.spec.degradation != method:
            raise MRSRError(f"the model is for {model.spec.degradation} degradation, not {method}")
        methods = evaluation.baselines(scale, method)
        against = "zerofill" if method == "kspace" else "bicubic"
        if model:
            if not model.trained:
                print(f"mrsr: warning: {model.spec.network!r} is untrained", file=sys.stderr)
            against = Path(args.model).name if args.model else default_model_name(scale, method)
            methods[against] = model
        cases = evaluation.iter_compare(args.ref, scale, methods, method, args.mask, args.shave)
        shave = scale if args.shave is None else args.shave
        setting = f"{method} degradation x{scale} of each reference, then each method"
    else:
        labels = [evaluation.volume_name(p) for p in args.pred]
        labels = labels if len(set(labels)) == len(labels) else [str(p) for p in args.pred]
        against, shave = labels[0], args.shave or 0
        cases = evaluation.iter_pairs(dict(zip(labels, args.pred)), args.ref, args.mask, shave)
        setting = "predictions scored against references paired by name"
    settings = {"evaluation": setting, "reference": args.ref, "mask": args.mask, "shave": shave}

    def announce(cases):
        for case in cases:
            scores = ", ".join(f"{r['method']} {r['psnr']:.2f} dB" for r in case.rows)
            print(f"{case.name}: {scores}", file=sys.stderr)
            yield case

    if args.report:
        rows = report.write_report(args.report, announce(cases), against, settings, args.overwrite)
        print(f"report written to {args.report}", file=sys.stderr)
    else:
        rows = [row for case in announce(cases) for row in case.rows]
    if args.format == "csv":
        print(report.to_csv(rows), end="")
    elif args.format == "json":
        print(report.to_json(rows, against))
    else:
        print(report.format_tables(rows, against))


def cmd_train(args: argparse.Namespace) -> None:
    from mrsr.training import load_config, train

    path = train(load_config(args.config, args.set or ()), resume=args.resume)
    print(f"checkpoint: {path}", file=sys.stderr)


def cmd_models(args: argparse.Namespace) -> None:
    from mrsr import networks
    from mrsr.checkpoint import load_checkpoint
    from mrsr.pipeline import shipped_weights

    print("networks:", ", ".join(networks.available()))
    shipped = shipped_weights()
    print("shipped weights:" + ("" if shipped else " none yet"))
    for name, path in sorted(shipped.items()):
        spec, _ = load_checkpoint(path)
        headline = spec.info.get("headline", "")
        print(f"  {name}: {spec.network} x{spec.scale} {spec.degradation} {headline}")


def cmd_throughplane(args: argparse.Namespace) -> None:
    from mrsr.io import save_volume
    from mrsr.throughplane import super_resolve_through_plane

    _plan([(args.input, args.output)], args.overwrite)
    volume = _load_checked(args.input, 12 * (args.factor or 8))  # output, its two estimates
    try:
        sr = super_resolve_through_plane(
            volume,
            args.factor,
            args.time_budget,
            steps=args.steps,
            seed=args.seed,
            axis=args.axis,
            consistency=args.consistency,
            device=args.device,
            progress=True,
        )
    except MRSRError as exc:
        raise MRSRError(f"{args.input}: {exc}") from exc
    save_volume(sr, args.output, dtype=args.dtype, overwrite=args.overwrite)
    print(
        f"{args.input} {tuple(volume.shape[1:])} -> {args.output} {tuple(sr.shape[1:])}",
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
    p.add_argument(
        "--scale",
        type=OPTIONS["scale"].parse,
        required=True,
        help="integer factor per reduced axis",
    )
    p.add_argument("--method", choices=("kspace", "bicubic"), default="kspace")
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
    p.add_argument(
        "--dtype",
        type=OPTIONS["dtype"].parse,
        default="float32",
        help="output data type, or 'input' (default float32)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_degrade)


def _add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="super-resolve a volume or a folder of volumes",
        description="Super-resolve volumes slice by slice; the output overlays the input exactly "
        "in world space. A folder in gives a folder out; finished outputs are skipped, so a "
        "killed run resumes, and under torchrun the files are shared among the ranks.",
        epilog=EXAMPLES["upscale"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="volume file, DICOM series folder, or folder of them")
    p.add_argument("output", type=Path, help="NIfTI file, or folder for a folder input")
    p.add_argument("--model", help="checkpoint (.safetensors), shipped model, or network name")
    p.add_argument(
        "--scale",
        type=OPTIONS["scale"].parse,
        help="upscaling factor (default: the model's, else 2)",
    )
    p.add_argument(
        "--batch-size",
        type=OPTIONS["batch_size"].parse,
        default=8,
        help="slices per batch (default 8)",
    )
    p.add_argument(
        "--device",
        type=OPTIONS["device"].parse,
        default="cpu",
        help="cpu (default), cuda, cuda:1, ...",
    )
    p.add_argument("--axis", type=int, choices=(0, 1, 2), help="slice axis (default: from header)")
    p.add_argument("--tta", action="store_true", help="average over flips/rotations")
    p.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: faster, approximate"
    )
    p.add_argument(
        "--data-consistency",
        type=OPTIONS["data_consistency"].parse,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="WEIGHT",
        help="restore the measured k-space block in the output (weight 0-1, default 1)",
    )
    p.add_argument(
        "--dtype",
        type=OPTIONS["dtype"].parse,
        default="float32",
        help="output data type, or 'input'",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_upscale)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on the bundled sample: degrade, super-resolve, save, compare",
        description="Degrade the bundled real T1 slab by k-space truncation, super-resolve it "
        "with the default model (or --model), save the volumes, and print PSNR/SSIM/NRMSE of "
        "the network against interpolation baselines.",
        epilog="examples:\n  mrsr demo\n  mrsr demo --out results/ --model my.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("mrsr-demo"), help="folder (default mrsr-demo)")
    p.add_argument("--scale", type=OPTIONS["scale"].parse, default=2, help="scale (default 2)")
    p.add_argument("--model", help="checkpoint or network name (default: the shipped model)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier demo outputs")
    p.set_defaults(func=cmd_demo)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of predictions against references, or of baselines and a model",
        description="Score super-resolved volumes against references (PSNR, SSIM, NRMSE; "
        "mrsr.metrics), files or folders paired by name; or, with --baselines, degrade the "
        "references, super-resolve them with interpolation baselines and a model, and compare. "
        "Several volumes add mean ± sd per method and a two-sided paired Wilcoxon signed-rank "
        "test against the first --pred (or the model). --format csv|json prints only the data.",
        epilog=EXAMPLES["evaluate"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pred", type=Path, action="append", help="prediction file or folder; repeat")
    p.add_argument("--ref", type=Path, required=True, help="reference file or folder")
    p.add_argument(
        "--mask",
        default="auto",
        help="auto (Otsu foreground of the reference, default), none, a mask file, or a folder "
        "of masks paired by name",
    )
    p.add_argument(
        "--shave",
        type=OPTIONS["shave"].parse,
        help="in-plane border voxels left out (default 0; scale with --baselines)",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--report", type=Path, help="folder for CSV/Markdown tables and PNG figures")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="degrade --ref and compare nearest, bicubic, zerofill (k-space) and --model",
    )
    p.add_argument("--model", help="with --baselines: checkpoint, shipped model or network name")
    p.add_argument(
        "--scale",
        type=OPTIONS["scale"].parse,
        help="with --baselines: scale (default: the model's, else 2)",
    )
    p.add_argument("--method", choices=("kspace", "bicubic"), help="with --baselines: degradation")
    p.set_defaults(func=cmd_evaluate)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network from a config (pipelines/*.yaml or your own)",
        description="Train from a YAML config; keys are documented in pipelines/README.md. "
        "Under torchrun the run is distributed (DDP; gloo on CPU, nccl on GPU).",
        epilog="""examples:
  mrsr train pipelines/cpu_small_kspace_x2.yaml
  mrsr train my.yaml --set train.max_steps=5000 --set data.train=/data/ixi/t2
  mrsr train my.yaml --resume
  torchrun --nproc_per_node=4 -m mrsr train pipelines/ixi_td_x2.yaml --set train.device=cuda""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, help="YAML config")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    p.set_defaults(func=cmd_train)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the networks and the weights available")
    p.set_defaults(func=cmd_models)


def _add_throughplane(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "throughplane",
        help="super-resolve thick slices to isotropic voxels, trained on the scan itself",
        description="Through-plane super-resolution of a thick-slice volume: a small network "
        "learns, from the scan's own in-plane slices degraded by the slice profile (slab "
        "average), to restore detail lost along the slice axis; it is then applied to the "
        "planes across the slices in both orientations, the two results averaged and corrected "
        "so that each slab's mean equals the input slice. The output subdivides each slab into "
        "FACTOR voxels and overlays the input exactly. Training takes --time-budget seconds.",
        epilog=EXAMPLES["throughplane"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="thick-slice volume (NIfTI, NRRD, MHA, DICOM folder)")
    p.add_argument("output", type=Path, help="NIfTI to write")
    p.add_argument(
        "--factor",
        type=OPTIONS["factor"].parse,
        help="fine voxels per slab (default: slice / in-plane spacing, within 5 %% of an integer)",
    )
    p.add_argument(
        "--time-budget",
        type=OPTIONS["time_budget"].parse,
        default=180.0,
        help="training seconds (default 180)",
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
    p.add_argument(
        "--device",
        type=OPTIONS["device"].parse,
        default="cpu",
        help="cpu (default), cuda, cuda:1, ...",
    )
    p.add_argument(
        "--dtype",
        type=OPTIONS["dtype"].parse,
        default="float32",
        help="output data type, or 'input'",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_throughplane)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mrsr", description="Super-resolution of MR volumes, NIfTI in, NIfTI out."
    )
    parser.add_argument("--version", action="version", version=f"mrsr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_degrade(sub)
    _add_upscale(sub)
    _add_demo(sub)
    _add_evaluate(sub)
    _add_train(sub)
    _add_models(sub)
    _add_throughplane(sub)
    return parser


def _message(exc: BaseException) -> str:
    """One line for any exception: the user's problem as such, anything else with its type."""
    if isinstance(exc, MRSRError):
        return one_line(str(exc))
    if isinstance(exc, MemoryError):
        return "out of memory; use a machine with more memory or a smaller volume"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return one_line(f"{where}{exc.strerror}")
    return one_line(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (``mrsr: error: ...``, exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"mrsr: error: {one_line(message)} (see mrsr {self._sub} --help)\n")

    @property
    def _sub(self) -> str:
        return self.prog.removeprefix("mrsr").strip() or ""


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 terminal must not crash a table
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("mrsr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mrsr evaluate ... | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line, never a traceback
        if args.debug:
            raise
        print(f"mrsr: error: {_message(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
