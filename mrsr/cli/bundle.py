"""``mrsr export-bundle``: a model as a MONAI bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrsr.errors import one_line
from mrsr.progress import note

EXAMPLES = """examples:
  mrsr export-bundle cssfn-kspace-x2 bundles/cssfn-kspace-x2
  mrsr export-bundle runs/mine/best.safetensors bundles/mine --overwrite
  python -m monai.bundle run --config_file bundles/cssfn-kspace-x2/configs/inference.json \\
      --bundle_root bundles/cssfn-kspace-x2 --dataset_dir lr/ --output_dir sr/   # needs fire"""


def cmd_export_bundle(args: argparse.Namespace) -> None:
    from mrsr.bundle import export_bundle

    folder = export_bundle(args.model, args.folder, overwrite=args.overwrite)
    note(one_line(f"bundle: {folder}"))


def add_export_bundle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-bundle",
        help="write a model as a MONAI bundle",
        description="Write a shipped model or a .safetensors checkpoint as a MONAI bundle "
        "(configs, weights, model card, license), all files or none. MONAI's runner "
        "(python -m monai.bundle run, which needs fire) then super-resolves a folder of volumes "
        "as mrsr upscale does; the weights stay safetensors, read by mrsr.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="shipped model name (mrsr models) or .safetensors checkpoint")
    p.add_argument("folder", type=Path, help="the bundle's folder (new, unless --overwrite)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of a bundle mrsr wrote there"
    )
    p.set_defaults(func=cmd_export_bundle)
