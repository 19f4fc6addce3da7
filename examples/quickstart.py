"""Quick start: degrade the bundled T1 slab, super-resolve it, save the volumes, print metrics.

    python examples/quickstart.py                       # zero-filled k-space (a baseline)
    python examples/quickstart.py my_model.safetensors  # your checkpoint, or a shipped name

Writes quickstart/{lr,sr,ref}.nii.gz in the current folder (replacing earlier runs).
"""

import sys
from pathlib import Path

from mrsr import Pipeline
from mrsr.io import load_volume, sample_path, save_volume
from mrsr.transforms import degrade

scale = 2
pipe = Pipeline.from_pretrained(sys.argv[1]) if len(sys.argv) > 1 else Pipeline("zerofill", scale)

# A scanner with a 2x smaller in-plane matrix: keep the centre of k-space. `ref` is the input
# cropped so that a 2x super-resolution of `lr` lands exactly on its grid.
lr, ref = degrade(load_volume(sample_path()), pipe.scale, "kspace")
sr = pipe(lr)  # a MetaTensor (1, X, Y, Z) whose affine overlays `ref` in scanner space

out = Path("quickstart")
out.mkdir(exist_ok=True)
for name, volume in {"lr": lr, "sr": sr, "ref": ref}.items():
    save_volume(volume, out / f"{name}.nii.gz", overwrite=True)

metrics = pipe.evaluate(lr, ref)  # foreground voxels, a border of `scale` voxels left out
print(f"{pipe.spec.network} x{pipe.scale}: {tuple(lr.shape[1:])} -> {tuple(sr.shape[1:])}")
print(", ".join(f"{k.upper()} {v:.4f}" for k, v in metrics.items()))
print(f"wrote {out}/lr.nii.gz, sr.nii.gz, ref.nii.gz")
