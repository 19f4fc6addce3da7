#!/usr/bin/env bash
# What augmentation before degradation gives the default k-space x2 model: its config trained
# 1500 steps without augmentation (flips and turns only), and with the default models' noise,
# contrast and low-pass augmentation. Scores on the held-out volumes; prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
config=pipelines/default_models/cssfn_kspace_x2.yaml
mrsr train "$config" --set train.max_steps=1500 --set output_dir="$PWD/runs/augment/none" \
  --set augment.hr_noise=0 --set augment.gamma=0 --set augment.lowpass=0 2>/dev/null &
mrsr train "$config" --set train.max_steps=1500 --set output_dir="$PWD/runs/augment/default" \
  2>/dev/null &
wait
python - <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "pipelines/default_models")
from package import heldout_table

from mrsr.checkpoint import load_checkpoint

for name in ("none", "default"):
    spec, net = load_checkpoint(f"runs/augment/{name}/last.safetensors")
    rows = heldout_table(spec, net, Path("data/default/heldout"))
    if name == "none":
        print("| augmentation | " + " | ".join(r["volume"] for r in rows) + " |")
        print("|---|" + "---|" * len(rows))
        cells = [f"{r['zerofill']['psnr']:.2f} / {r['zerofill']['ssim']:.4f}" for r in rows]
        print("| (zero-fill) | " + " | ".join(cells) + " |")
    cells = [f"{r['model']['psnr']:.2f} / {r['model']['ssim']:.4f}" for r in rows]
    print(f"| {name} | " + " | ".join(cells) + " |")
PY
