"""``mrsr bids``: a BIDS App (``mrsr bids BIDS_DIR OUTPUT_DIR participant|group``)."""

from __future__ import annotations

import argparse
import shlex
from functools import partial
from pathlib import Path

from mrsr.cli.upscale import add_upscale_options
from mrsr.progress import note

EXAMPLES = """examples:
  mrsr bids /data/ds001 /data/ds001/derivatives/mrsr participant --model zerofill --scale 2
  mrsr bids ds/ ds/derivatives/mrsr participant --participant-label 01 02 --voxel-size 1
  mrsr bids ds/ out/ participant --suffix FLAIR --session-label pre --device cuda
  mrsr bids ds/ ds/derivatives/mrsr group                          # report.html over them
  torchrun --nproc_per_node=4 -m mrsr bids ds/ out/ participant --device cuda"""


def cmd_bids(args: argparse.Namespace) -> None:
    from mrsr import derivatives

    derivatives.check_folders(args.bids_dir, args.output_dir)
    if args.analysis_level == "participant":
        _participant(args)
    else:
        _group(args)


def _participant(args: argparse.Namespace) -> None:
    from mrsr import derivatives
    from mrsr.cli.upscale import load_pipeline, rank_share, upscale_jobs
    from mrsr.outputs import check_folder_name

    check_folder_name(args.output_dir, "OUTPUT_DIR")
    sources = derivatives.find_sources(
        args.bids_dir, args.participant_label, args.session_label, args.suffix
    )
    loaded = load_pipeline(args)
    label, meaning = derivatives.resolution(loaded[0].scale, args.voxel_size, args.like)
    outputs = {
        args.output_dir / Path(s.relative).parent / derivatives.derived_name(s.path.name, label): s
        for s in sources
    }
    if not args.overwrite:
        derivatives.check_finished(list(outputs), label, meaning)
    jobs = [(source.path, out) for out, source in outputs.items()]
    note(f"{len(jobs)} images of {args.bids_dir} -> {args.output_dir} (res-{label})")
    command = shlex.join(getattr(args, "command_line", ["mrsr", "bids"]))
    for folder in {args.output_dir} | {out.parent for _, out in rank_share(jobs)}:
        folder.mkdir(parents=True, exist_ok=True)  # ranks at the same time: no race
    derivatives.write_description(args.bids_dir, args.output_dir, command)
    wrap = partial(derivatives.Derived, sources=outputs, label=label, description=meaning)
    upscale_jobs(args, jobs, loaded=loaded, wrap=wrap)


def _group(args: argparse.Namespace) -> None:
    from mrsr import derivatives
    from mrsr.html_report import Entry, write_html_report
    from mrsr.io import volume_stem

    found = derivatives.find_outputs(
        args.output_dir, args.bids_dir, args.participant_label, args.session_label
    )
    missing = [out for out, source in found if source is None]
    if missing:
        note(f"{len(missing)} outputs without their source in {args.bids_dir}: shown alone")
    entries = (Entry(volume_stem(out), out, source) for out, source in found)  # one at a time
    settings = {"BIDS dataset": str(args.bids_dir), "derivatives": str(args.output_dir)}
    path = write_html_report(
        args.output_dir,
        entries,
        title=f"mrsr: super-resolution of {args.bids_dir.resolve().name}",
        settings=settings,
        overwrite=args.overwrite,
    )
    derivatives.ignore_in_validation(args.output_dir, path.name)
    note(f"report of {len(found)} images written to {path}")


def add_bids(sub: argparse._SubParsersAction) -> None:
    from mrsr.derivatives import DEFAULT_SUFFIXES

    p = sub.add_parser(
        "bids",
        help="super-resolve the anatomical images of a BIDS dataset (a BIDS App)",
        description="A BIDS App.\n"
        "participant: super-resolve each anatomical image of the chosen participants into a\n"
        "BIDS derivatives dataset in OUTPUT_DIR (every entity of the source kept, the new grid\n"
        "as res-<label>, a JSON sidecar with the source's metadata and what mrsr did); finished\n"
        "outputs are skipped, so a killed run resumes, and under torchrun the images are\n"
        "shared among the ranks. The super-resolution options are mrsr upscale's.\n"
        "group: one HTML report over the derivatives (OUTPUT_DIR/report.html).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bids_dir", type=Path, metavar="BIDS_DIR", help="root of the BIDS dataset")
    p.add_argument(
        "output_dir",
        type=Path,
        metavar="OUTPUT_DIR",
        help="the derivatives dataset (created), e.g. BIDS_DIR/derivatives/mrsr",
    )
    p.add_argument("analysis_level", choices=("participant", "group"), help="what to do")
    p.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        metavar="LABEL",
        help="participants to process, without sub- (default: all)",
    )
    p.add_argument(
        "--session-label",
        "--session_label",
        nargs="+",
        metavar="LABEL",
        help="sessions to process, without ses- (default: all)",
    )
    p.add_argument(
        "--suffix",
        nargs="+",
        default=list(DEFAULT_SUFFIXES),
        metavar="SUFFIX",
        help=f"anatomical images to process (default: {' '.join(DEFAULT_SUFFIXES)})",
    )
    add_upscale_options(p)
    p.set_defaults(func=cmd_bids)
