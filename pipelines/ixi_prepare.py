"""Prepare IXI for the CSN/CSSFN protocol: subjects with T1, T2 and PD, 240x240x96 crops, a
random 500 / 70 / 6 (train / test / validation) split by subject, the same for all contrasts.

    python pipelines/ixi_prepare.py /path/to/IXI-downloads data/ixi [--seed 0]

Expects the IXI archives unpacked into one folder (``IXI002-Guys-0828-T1.nii.gz`` ...). Writes
``data/ixi/{T1,T2,PD}/{train,test,val}/IXI....nii.gz`` and ``data/ixi/split.json``. The papers do
not say which slices they kept; this keeps the central 96 along the slice axis and the central
240 x 240 in-plane, and says so in split.json.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from monai.transforms import CenterSpatialCrop

from mrsr.geometry import slice_axis
from mrsr.io import load_volume, save_volume

CONTRASTS = ("T1", "T2", "PD")
SPLIT = {"train": 500, "test": 70, "val": 6}
SHAPE_IN_PLANE, SLICES = 240, 96


def subjects(folder: Path) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for path in folder.glob("IXI*-*.nii.gz"):
        match = re.match(r"(IXI\d+)-.*-(T1|T2|PD)\.nii\.gz$", path.name)
        if match:
            found.setdefault(match.group(1), {})[match.group(2)] = path
    return {s: c for s, c in sorted(found.items()) if set(CONTRASTS) <= set(c)}


def crop(path: Path, out: Path) -> None:
    vol = load_volume(path)
    axis = slice_axis(np.asarray(vol.affine), vol.meta)
    roi = [SHAPE_IN_PLANE] * 3
    roi[axis] = SLICES
    save_volume(CenterSpatialCrop(roi)(vol), out, dtype="input", overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ixi", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--counts",
        type=int,
        nargs=3,
        default=list(SPLIT.values()),
        metavar=("TRAIN", "TEST", "VAL"),
    )
    args = parser.parse_args()
    subs = subjects(args.ixi)
    if len(subs) < sum(args.counts):
        raise SystemExit(
            f"{args.ixi}: {len(subs)} subjects with T1, T2 and PD; need {sum(args.counts)}"
        )
    order = np.random.default_rng(args.seed).permutation(sorted(subs))
    bounds = np.cumsum([0, *args.counts])
    split = {name: sorted(order[a:b]) for name, a, b in zip(SPLIT, bounds[:-1], bounds[1:])}
    for name, ids in split.items():
        for contrast in CONTRASTS:
            folder = args.out / contrast / name
            folder.mkdir(parents=True, exist_ok=True)
            for sid in ids:
                crop(subs[sid][contrast], folder / f"{sid}.nii.gz")
    note = "central 240x240 in-plane, central 96 slices along the slice axis"
    record = {"seed": args.seed, "crop": note, **{k: list(v) for k, v in split.items()}}
    (args.out / "split.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
