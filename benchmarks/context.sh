#!/usr/bin/env bash
# 2.5D vs 2D at equal budget: train both configs, then score them on the held-out Colin slab
# (the only held-out volume with several slices). Prints PSNR/SSIM per model.
set -euo pipefail
cd "$(dirname "$0")/.."
for k in 1 3; do
  mrsr train benchmarks/configs/context_$k.yaml 2>/dev/null
done
python - <<'PY'
from mrsr import Pipeline, metrics
from mrsr.io import load_volume
from mrsr.transforms import degrade

lr, hr = degrade(load_volume("data/default/heldout/colin_slab.nii.gz"), 2, "kspace")
for k in (1, 3):
    pipe = Pipeline.from_pretrained(f"runs/context/in_channels_{k}/last.safetensors")
    s = metrics.slice_scores(pipe(lr).as_tensor()[0], hr.as_tensor()[0])
    print(f"in_channels={k}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}")
s = metrics.slice_scores(Pipeline("zerofill", 2)(lr).as_tensor()[0], hr.as_tensor()[0])
print(f"zero-fill: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}")
PY
