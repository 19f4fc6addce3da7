"""``mrsr evaluate`` and ``mrsr demo``: scores of predictions, baselines and models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mrsr.cli.common import run_job
from mrsr.degradations import DEFAULT, DEGRADATIONS, degrade, describe, get
from mrsr.errors import MRSRError, one_line
from mrsr.options import CONVENTIONS, OPTIONS
from mrsr.progress import note

METRICS_DEFINITION = (
    "PSNR = 10 log10(R^2 / MSE) and NRMSE = RMSE / R over the evaluated voxels (the mask, less "
    "the shaved border), SSIM per slice with the same R, where R is the whole reference volume's "
    "max - min, as scikit-image and MONAI take it"
)
EXAMPLES = """examples:
  mrsr evaluate --pred t1_sr.nii.gz --ref t1_ref.nii.gz
  mrsr evaluate --pred sr/ --ref ref/ --format csv > metrics.csv   # volumes paired by name
  mrsr evaluate --pred sr/ --pred other_sr/ --ref ref/ --mask brain_masks/ --shave 2
  mrsr evaluate --baselines --ref ref/ --model my.safetensors --report report/"""


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table of metric rows (one per method)."""
    width = max(len(name) for name in rows) + 2
    lines = ["method".ljust(width) + "".join(c.upper().rjust(10) for c in columns)]
    for name, values in rows.items():
        lines.append(name.ljust(width) + "".join(f"{values[c]:10.4f}" for c in columns))
    return "\n".join(lines)


def _demo_model(args: argparse.Namespace):
    """``--model``, else the shipped default, else (saying so) an untrained small CSSFN."""
    from mrsr.pipeline import Pipeline, load_model

    try:
        return load_model(args.model, args.scale, progress=True)
    except MRSRError as exc:
        if args.model is not None:
            raise
        print(f"mrsr: {exc}; running an untrained small CSSFN instead", file=sys.stderr)
        return Pipeline("cssfn", args.scale, channels=32, n_blocks=2, n_units=2, progress=True)


def cmd_demo(args: argparse.Namespace) -> None:
    from mrsr.io import load_volume, sample_path
    from mrsr.outputs import check_folder_name
    from mrsr.pipeline import Pipeline, score
    from mrsr.provenance import is_ours, record, sidecar_path

    out = args.out
    check_folder_name(out, "--out")
    names = {k: out / f"sample_{k}.nii.gz" for k in ("lr", "ref", "sr")}
    out.mkdir(exist_ok=True)
    # the demo replaces its own earlier outputs (their sidecars say so), nothing else
    own = all(is_ours(sidecar_path(p)) for p in names.values() if p.exists())
    made = {}

    def make(job):
        sample = job.data
        lr, ref = degrade(sample, args.scale, "kspace")
        network = _demo_model(args)
        sr = network(lr)
        made.update(lr=lr, ref=ref, sr=sr, network=network)
        return [
            (lr, record("degrade", sample, lr, scale=args.scale)),
            (ref, record("reference", sample, ref, scale=args.scale)),
            (sr, record("upscale", lr, sr, scale=args.scale, model=network.name)),
        ]

    def read(job):  # the bundled sample needs no check
        return load_volume(job.path)

    run_job(sample_path(), names.values(), read, make, overwrite=args.overwrite or own)
    lr, ref, sr, network = (made[k] for k in ("lr", "ref", "sr", "network"))
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
    from mrsr.io import volume_stem
    from mrsr.outputs import check_folder_name
    from mrsr.pipeline import load_model

    if args.report:
        check_folder_name(args.report, "--report")
    if args.baselines == bool(args.pred):
        given = "both" if args.baselines else "neither"
        raise MRSRError(
            f"{given} --pred and --baselines given: pass --pred PRED (score predictions against "
            "--ref) or --baselines (degrade --ref and compare the baselines and a model)"
        )
    if not args.baselines and (args.model or args.scale or args.method):
        raise MRSRError("--model, --scale and --method go with --baselines")
    if args.baselines:  # the model (--model, else the shipped default if any) goes last
        try:
            model = load_model(args.model, args.scale, args.method or DEFAULT, progress=True)
        except MRSRError as exc:
            if args.model is not None:
                raise
            print(f"mrsr: {exc}; comparing the baselines only", file=sys.stderr)
            model = None
        scale = model.scale if model else args.scale or 2
        method = args.method or (model.spec.degradation if model else DEFAULT)
        if model and model.spec.degradation != method:
            raise MRSRError(f"the model is for {model.spec.degradation} degradation, not {method}")
        methods = evaluation.baselines(scale, method)
        against = get(method).strongest_baseline
        if model:
            if not model.trained:
                print(f"mrsr: warning: {model.spec.network!r} is untrained", file=sys.stderr)
            against = model.name
            methods[against] = model
        cases = evaluation.iter_compare(
            args.ref, scale, methods, method, args.mask, args.shave, progress=True
        )
        shave = scale if args.shave is None else args.shave
        setting = f"{method} degradation x{scale} of each reference, then each method"
    else:
        labels = [volume_stem(p) for p in args.pred]
        labels = labels if len(set(labels)) == len(labels) else [str(p) for p in args.pred]
        against, shave = labels[0], args.shave or 0
        cases = evaluation.iter_pairs(
            dict(zip(labels, args.pred)), args.ref, args.mask, shave, progress=True
        )
        setting = "predictions scored against references paired by name"
    settings = {
        "evaluation": setting,
        "reference": args.ref,
        "mask": args.mask,
        "shave": shave,
        "metrics": METRICS_DEFINITION,
    }

    def announce(cases):
        for case in cases:
            scores = ", ".join(f"{r['method']} {r['psnr']:.2f} dB" for r in case.rows)
            note(one_line(f"{case.name}: {scores}"))
            yield case

    if args.report:
        rows = report.write_report(
            args.report,
            announce(cases),
            against,
            settings,
            args.overwrite,
            convention=args.convention,
        )
        note(one_line(f"report written to {args.report}"))
    else:
        rows = [row for case in announce(cases) for row in case.rows]
    if args.format == "csv":
        print(report.to_csv(rows), end="")
    elif args.format == "json":
        print(report.to_json(rows, against))
    else:
        print(report.format_tables(rows, against))


def add_demo(sub: argparse._SubParsersAction) -> None:
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


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of predictions against references, or of baselines and a model",
        description="Score super-resolved volumes against references (PSNR, SSIM, NRMSE; "
        f"{METRICS_DEFINITION}), files or folders paired by name; or, with --baselines, degrade "
        "the references, super-resolve them with interpolation baselines and a model, and compare. "
        "Several volumes add mean ± sd per method and a two-sided paired Wilcoxon signed-rank "
        "test against the first --pred (or the model). --format csv|json prints only the data.",
        epilog=EXAMPLES,
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
    p.add_argument(
        "--report",
        type=Path,
        help="folder for CSV/Markdown tables, PNG figures and report.html (one self-contained "
        "page to open in a browser)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="radiological",
        help="orientation of the report's figures: radiological (patient's right on the "
        "image's left, default) or neurological",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="degrade --ref and compare the degradation's baselines and --model",
    )
    p.add_argument("--model", help="with --baselines: checkpoint, shipped model or network name")
    p.add_argument(
        "--scale",
        type=OPTIONS["scale"].parse,
        help="with --baselines: scale (default: the model's, else 2)",
    )
    p.add_argument(
        "--method",
        choices=DEGRADATIONS.keys(),
        help=f"with --baselines: degradation, {describe()}",
    )
    p.set_defaults(func=cmd_evaluate)
