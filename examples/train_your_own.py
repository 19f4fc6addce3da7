"""Train a small CSSFN on your own volumes, then compare it with zero-filled k-space.

    python examples/train_your_own.py /data/my_t2_scans --steps 2000 --out runs/my_t2
    python examples/train_your_own.py                   # a few steps on the bundled T1 slab

Every NIfTI/NRRD/MHA volume (or DICOM series folder) in the folder trains; the first one is
also the validation and comparison volume here; hold out your own in real use
(``Pipeline.fit(train, val=...)``). Training pairs are made on the fly: random patches of each
volume, degraded by k-space truncation. The best weights go to OUT/best.safetensors, which
``mrsr upscale --model`` and ``Pipeline.from_pretrained`` read. The defaults (40 steps of a
network with 16 channels) only show the path working; the paper's networks train for ~1M steps.
"""

import argparse
from pathlib import Path

from mrsr import Pipeline
from mrsr.evaluation import compare_methods
from mrsr.io import list_volumes, sample_path, volume_stem
from mrsr.report import format_tables

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("folder", nargs="?", type=Path, help="training volumes (default: the sample)")
parser.add_argument("--steps", type=int, default=40, help="optimisation steps (default 40)")
parser.add_argument("--scale", type=int, default=2)
parser.add_argument("--out", type=Path, default=Path("runs/train_your_own"))
args = parser.parse_args()

volumes = list_volumes(args.folder) if args.folder else [sample_path()]
# skip="kspace" + zero_tail: the untrained network is exactly zero-filling, training adds detail.
pipe = Pipeline(
    "cssfn", args.scale, channels=16, n_blocks=1, n_units=2, skip="kspace", zero_tail=True
)
checkpoint = pipe.fit(
    [str(p) for p in volumes],
    val=str(volumes[0]),
    output_dir=args.out,
    max_steps=args.steps,
    batch_size=4,
    patch_size=16,
    lr=1e-3,
    val_every=args.steps,
)
print(f"checkpoint: {checkpoint}")

methods = {"zerofill": Pipeline("zerofill", args.scale), "cssfn (trained here)": pipe}
rows = compare_methods(volumes[0], args.scale, methods)
print(f"{volume_stem(volumes[0])}, k-space truncation x{args.scale}:")
print(format_tables(rows))
