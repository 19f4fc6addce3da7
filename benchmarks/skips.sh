#!/usr/bin/env bash
# What each external skip gives after the same training (800 steps, default-size CSSFN, k-space
# truncation x2): the bicubic skip on the truncation grid and on the (wrong) area grid, the
# zero-filled k-space skip, and no skip. Scores on the held-out volumes; prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
for pair in "bicubic_kspace bicubic_area" "kspace_kspace none_kspace"; do
  for name in $pair; do
    mrsr train "benchmarks/configs/skip_$name.yaml" 2>/dev/null &
  done
  wait
done
python - <<'PY'
from pathlib import Path

from mrsr import metrics
from mrsr.checkpoint import load_checkpoint
from mrsr.inference import super_resolve
from mrsr.io import load_volume
from mrsr.transforms import degrade

volumes = sorted(Path("data/default/heldout").glob("*.nii.gz"))
pairs = [degrade(load_volume(v), 2, "kspace") for v in volumes]
print("| skip (grid) | " + " | ".join(v.name.replace(".nii.gz", "") for v in volumes) + " |")
print("|---|" + "---|" * len(volumes))
for name in ("bicubic_kspace", "bicubic_area", "kspace_kspace", "none_kspace"):
    spec, net = load_checkpoint(f"runs/skips/{name}/last.safetensors")
    cells = []
    for lr, hr in pairs:
        sr = super_resolve(lr, net, 2, "kspace")  # the data's grid, whatever the skip assumes
        s = metrics.slice_scores(sr.as_tensor()[0], hr.as_tensor()[0])
        cells.append(f"{s['psnr']:.2f} / {s['ssim']:.4f}")
    skip, grid = name.split("_")
    print(f"| {skip} ({grid} grid) | " + " | ".join(cells) + " |")
PY
