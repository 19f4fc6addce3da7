"""Package a trained default model: weights into mrsr/data/weights with a model card beside them.

    python pipelines/default_models/package.py runs/default/cssfn-kspace-x2 \
        --heldout data/default/heldout

Scores the checkpoint and the baselines on every held-out volume with the default models'
protocol (:func:`mrsr.metrics.slice_scores`), writes ``mrsr/data/weights/<name>.safetensors``
(the checkpoint with a headline in its metadata) and ``<name>.md`` (the card).
"""

from __future__ import annotations

import argparse
import csv
import platform
from pathlib import Path

import numpy as np
import torch

from mrsr import __version__, metrics
from mrsr.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from mrsr.io import atomic_path, load_volume
from mrsr.pipeline import Pipeline
from mrsr.training import load_config
from mrsr.transforms import degrade

WEIGHTS = Path(__file__).resolve().parents[2] / "mrsr" / "data" / "weights"
CONFIGS = Path(__file__).resolve().parent
SOURCES = {
    "colin_05mm": "Debian `mricron-data` 1.2.20211006+dfsg-4, `/usr/share/mricron/templates/"
    "ch2better.nii.gz` (Colin27 T1, 0.5 mm; BSD-3-clause), axial slabs outside world z -12..18 mm",
    "colin_1mm": "Debian `mricron-data` 1.2.20211006+dfsg-4, `/usr/share/mricron/templates/"
    "ch2.nii.gz` (Colin27 T1, 1 mm; BSD-3-clause), axial slabs outside world z -12..18 mm",
    "shoulder_mr2": "PyPI `pydicom-data` 1.0.0, `data_store/data/MR2_UNCR.dcm` (one shoulder "
    "slice, 1024 x 1024, 0.195 mm; MIT)",
    "brain1": "PyPI `pyradiomics` 3.1.0 source archive, `data/brain1_image.nrrd` (a clinical "
    "multi-slice brain scan, 256 x 256 x 25, 0.78 x 0.78 x 6.5 mm; BSD-3-clause)",
    "brain2": "PyPI `pyradiomics` 3.1.0 source archive, `data/brain2_image.nrrd` (another "
    "patient's clinical brain scan, 256 x 256 x 23, 0.78 x 0.78 x 6.5 mm; BSD-3-clause)",
    "breast1": "PyPI `pyradiomics` 3.1.0 source archive, `data/breast1_image.nrrd` (a breast MR "
    "crop, 45 x 120 x 21, 0.66 mm; BSD-3-clause)",
    "brain_t1_coronal": "PyPI `dipy` 1.12.1, `dipy/data/files/t1_coronal_slice.npy` (another "
    "subject's T1 slice, 256 x 256; BSD-3-clause)",
    "abdomen_t1": "PyPI `pydicom-data` 1.0.0, `data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm` "
    "(abdomen, 484 x 484, 0.72 mm; MIT). A reformat of a 256 x 134 acquisition (DICOM "
    "AcquisitionMatrix): the reference holds almost nothing beyond an x2 input's band, so at x2 "
    "zero-filling is close to exact and there is little to super-resolve",
    "colin_slab": "the bundled sample (Colin27 1 mm, world z -9..14 mm): the same subject as "
    "the Colin training slabs, other slices",
}


def source(name: str) -> str:
    key = next((k for k in SOURCES if name.startswith(k)), None)
    return SOURCES[key] if key else "(unknown)"


def heldout_table(spec: ModelSpec, model: torch.nn.Module, heldout: Path) -> list[dict]:
    pipe = Pipeline(model, spec.scale, degradation=spec.degradation)
    pipe.spec = spec
    baselines = ["zerofill", "bicubic"] if spec.degradation == "kspace" else ["bicubic"]
    rows = []
    for path in sorted(heldout.glob("*.nii.gz")):
        lr, hr = degrade(load_volume(path), spec.scale, spec.degradation)
        ref = hr.as_tensor()[0]
        row = {"volume": path.name.replace(".nii.gz", "")}
        for name in baselines:
            pred = Pipeline(name, spec.scale, degradation=spec.degradation)(lr)
            row[name] = metrics.slice_scores(pred.as_tensor()[0], ref)
        row["model"] = metrics.slice_scores(pipe(lr).as_tensor()[0], ref)
        if spec.degradation == "kspace":
            pipe.data_consistency = 1.0
            row["model + data consistency"] = metrics.slice_scores(pipe(lr).as_tensor()[0], ref)
            pipe.data_consistency = 0.0
        rows.append(row)
    return rows


def card(name: str, spec: ModelSpec, run: Path, rows: list[dict], params: int) -> tuple[str, str]:
    """The card's Markdown and a one-line headline."""
    log = list(csv.DictReader(open(run / "train_log.csv", encoding="utf-8")))
    config = load_config(CONFIGS / f"{name.replace('-', '_')}.yaml")
    augment = ", ".join(f"{k} {v}" for k, v in config["augment"].items())
    minutes = float(log[-1]["seconds"]) / 60 if log else float("nan")
    base = "zerofill" if spec.degradation == "kspace" else "bicubic"
    gain = np.mean([r["model"]["psnr"] - r[base]["psnr"] for r in rows])
    ssim_all = all(r["model"]["ssim"] > r[base]["ssim"] for r in rows)
    lines = [
        f"# {name}",
        "",
        f"{spec.network.upper()} ({params:,} parameters; options {spec.options}) for "
        f"{spec.degradation} degradation x{spec.scale}, sampling grid `{spec.grid}` "
        f"(low-resolution voxel i at high-resolution voxel "
        + ("i·s)." if spec.grid == "kspace" else "i·s + (s−1)/2)."),
        f"Intensity normalisation: {spec.normalisation}. mrsr {__version__}.",
        "",
        "## Training",
        "",
        f"{spec.info.get('steps')} steps of batch 16 (24 x 24 low-resolution patches), L1, Adam,"
        f" config `pipelines/default_models/{name.replace('-', '_')}.yaml`, {minutes:.0f} min on "
        f"one thread of a {platform.machine()} CPU. Augmentation of the high-resolution slice "
        f"before degradation: flips, quarter turns, {augment} (`pipelines/README.md`). "
        "Training volumes (built by "
        "`pipelines/default_models/prepare_data.py`):",
        "",
        *[f"- `{v}`: {source(v)}" for v in spec.info.get("data", {}).get("train", [])],
        "",
        "## Held-out volumes",
        "",
        "PSNR (dB) / SSIM per slice, both volumes divided by the reference's 99.5th percentile,"
        " slices with more than 10 % foreground (`mrsr.metrics.slice_scores`).",
        "",
        "| volume | source | " + " | ".join(k for k in rows[0] if k != "volume") + " |",
        "|---|---|" + "---|" * (len(rows[0]) - 1),
    ]
    for r in rows:
        cells = [f"{r[k]['psnr']:.2f} / {r[k]['ssim']:.4f}" for k in r if k != "volume"]
        lines.append(f"| {r['volume']} | {source(r['volume'])} | " + " | ".join(cells) + " |")
    verdict = "met" if gain >= 0.5 and ssim_all else "NOT met"
    lines += [
        "",
        f"Mean PSNR gain over {base}: {gain:+.2f} dB; SSIM above {base} on every volume: "
        f"{'yes' if ssim_all else 'no'}. The target (at least +0.5 dB on average and a higher "
        f"SSIM on every volume) is {verdict}.",
    ]
    return "\n".join(lines) + "\n", f"{gain:+.2f} dB PSNR vs {base} on held-out volumes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--heldout", type=Path, default=Path("data/default/heldout"))
    parser.add_argument("--name", help="default: the run folder's name")
    args = parser.parse_args()
    name = args.name or args.run.name
    spec, model = load_checkpoint(args.run / "last.safetensors")
    rows = heldout_table(spec, model, args.heldout)
    params = sum(p.numel() for p in model.parameters())
    text, headline = card(name, spec, args.run, rows, params)
    spec.info["headline"] = headline
    spec.info["card"] = f"{name}.md"
    WEIGHTS.mkdir(exist_ok=True)
    save_checkpoint(WEIGHTS / f"{name}.safetensors", model, spec)
    with atomic_path(WEIGHTS / f"{name}.md", overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
