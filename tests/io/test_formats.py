"""The table of volume formats: one reader per format drives loading, listing and every name."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom

from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.evaluation import pair_volumes
from mrsr.io import formats, is_volume_path, list_volumes, load_volume, volume_stem
from mrsr.io.header import VolumeInfo
from mrsr.io.reader import Reader, metatensor
from mrsr.outputs import output_name
from mrsr.provenance import sidecar_path


class ToyReader(Reader):
    """A made-up format: a file whose bytes are the voxels of a 2x3x4 grid of 1 mm."""

    name = "Toy"
    suffixes = (".toy",)

    def probe(self, path: Path) -> VolumeInfo:
        return VolumeInfo(path, (2, 3, 4), 1, np.dtype(np.uint8), [path])

    def read(self, info: VolumeInfo):
        data = np.frombuffer(info.path.read_bytes(), np.uint8).reshape(1, 2, 3, 4)
        return metatensor(data, np.eye(4), info.path, source_dtype="uint8")


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(formats, "READERS", [*formats.READERS, ToyReader()])


@pytest.mark.parametrize(
    "name, stem",
    [
        ("x.nii.gz", "x"),
        ("x.nii", "x"),
        ("x.nrrd", "x"),
        ("x.nhdr", "x"),
        ("x.mha", "x"),
        ("x.mhd", "x"),
        ("X.NII.GZ", "X"),
        ("sub-01.ses-1.T1w.nrrd", "sub-01.ses-1.T1w"),
        ("x.mgz", "x.mgz"),
        ("series.1", "series.1"),
    ],
)
def test_one_stem_rule_names_outputs_sidecars_and_pairs(name, stem):
    assert volume_stem(name) == stem
    assert sidecar_path(Path("out") / name) == Path("out") / f"{stem}.json"
    nifti = name.lower().endswith((".nii", ".nii.gz"))
    assert output_name(Path(name)) == (name if nifti else f"{stem}.nii.gz")


def test_a_name_outside_the_table_is_not_a_volume(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "b.mgz").write_bytes(b"")
    assert not is_volume_path(tmp_path / "b.mgz")
    assert list_volumes(tmp_path) == [tmp_path / "a.nii.gz"]
    with pytest.raises(MRSRError, match="b.mgz: unsupported format; give a NIfTI"):
        load_volume(tmp_path / "b.mgz")


def test_the_table_drives_names_listing_and_loading(tmp_path, toy):
    toy_file = tmp_path / "sub-01.T1w.toy"
    toy_file.write_bytes(bytes(range(24)))
    (tmp_path / "notes.txt").write_text("not a volume")
    assert is_volume_path(toy_file) and volume_stem(toy_file) == "sub-01.T1w"
    assert output_name(toy_file) == "sub-01.T1w.nii.gz"
    assert list_volumes(tmp_path) == [toy_file]
    volume = load_volume(toy_file)
    assert volume.shape == (1, 2, 3, 4) and volume.meta["source_dtype"] == "uint8"
    assert volume[0, 1, 2, 3] == 23


def test_evaluation_pairs_any_format_of_the_table_by_stem(tmp_path, toy):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred" / "a.toy").write_bytes(bytes(24))
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), tmp_path / "ref/a.nii")
    pairs = pair_volumes(tmp_path / "pred", tmp_path / "ref")
    assert pairs == [("a", tmp_path / "pred" / "a.toy", tmp_path / "ref" / "a.nii")]


def test_a_folder_run_skips_hidden_files_as_evaluation_does(tmp_path, capsys):
    """A temporary an older run left (``.a.nii.gz.k1ll3d.tmp.nii.gz``) or a macOS ``._`` copy
    in an input folder is not a volume to super-resolve."""
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    image = nib.Nifti1Image(phantom((16, 16, 3)).astype(np.float32), np.eye(4))
    nib.save(image, src / "a.nii.gz")
    (src / ".a.nii.gz.k1ll3d.tmp.nii.gz").write_bytes(b"partial")
    (src / "._a.nii.gz").write_bytes(b"\0\5\26\7 AppleDouble")
    assert main(["upscale", str(src), str(dst), "--model", "zerofill", "--scale", "2"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["a.json", "a.nii.gz"]
