"""When data consistency helps: the shipped k-space models with and without it, on held-out volumes.

    python benchmarks/data_consistency.py data/default/heldout --weights 0.5 1

Degrades each volume by k-space truncation at each model's scale, super-resolves it with the
model alone, with ``--data-consistency W`` for each weight, and with the zero-filling baseline,
and prints per-slice PSNR/SSIM (the default models' protocol, :func:`mrsr.metrics.slice_scores`)
with the consistency residual the output's record states (the relative RMS difference between
the input and the output degraded again), in fp32.
"""

import argparse
from pathlib import Path

from mrsr.io import load_volume
from mrsr.metrics import slice_scores
from mrsr.pipeline import Pipeline
from mrsr.provenance import FACTS
from mrsr.transforms import degrade

MODELS = ("cssfn-kspace-x2", "cssfn-kspace-x3", "cssfn-kspace-x4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    volumes = sorted(args.folder.glob("*.nii.gz"))
    methods = ["zerofill", "model"] + [f"model + dc {w:g}" for w in args.weights]
    print("| model | volume | " + " | ".join(methods) + " | residual at dc 1 |")
    print("|---" * (len(methods) + 3) + "|")
    for name in args.models:
        pipe = Pipeline.from_pretrained(name, precision="fp32", progress=False)
        zerofill = Pipeline("zerofill", pipe.scale)
        for path in volumes:
            lr, hr = degrade(load_volume(path), pipe.scale, "kspace")
            ref = hr.as_tensor()[0]
            outputs = {"zerofill": zerofill(lr), "model": pipe(lr)}
            for weight in args.weights:
                outputs[f"model + dc {weight:g}"] = pipe.inferer(data_consistency=weight)(lr)
            cells = []
            for method in methods:
                s = slice_scores(outputs[method].as_tensor()[0], ref)
                cells.append(f"{s['psnr']:.2f} / {s['ssim']:.4f}")
            full = outputs.get("model + dc 1")
            residual = None if full is None else full.meta[FACTS]["consistency_residual"]
            print(f"| {name} | {path.name} | " + " | ".join(cells) + f" | {residual} |")


if __name__ == "__main__":
    main()
