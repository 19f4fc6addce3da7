"""Input volumes that lie about their geometry or hide a fault: each is read as it means or
refused in one line naming the file and the problem (never an ITK source path)."""

import bz2
import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import make_affine, phantom, sitk_image, write_dicom_series
from test_hostile import refused, snapshot

from mrsr.cli import main
from mrsr.io import itk, load_volume

# ---------------------------------------------------------------- 1. sform and qform


def placed(sform: np.ndarray, qform: np.ndarray, sform_code: int, path):
    """A NIfTI whose sform (code ``sform_code``) and qform (code 1) are the given affines."""
    image = nib.Nifti1Image(phantom((16, 14, 4)), None)
    image.set_sform(sform, code=sform_code)
    image.set_qform(qform, code=1)
    nib.save(image, str(path))
    header = nib.load(str(path)).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (sform_code, 1)
    return path


QFORM = np.array([[1.0, 0, 0, -10], [0, 1, 0, -12], [0, 0, 3, -6], [0, 0, 0, 1]])
SFORM = np.array([[0.8, 0, 0, 40], [0, 0.8, 0, -12], [0, 0, 2.5, -6], [0, 0, 0, 1]])


def upscaled_affine(src, out, *options) -> np.ndarray:
    assert main(["upscale", str(src), str(out), "--scale", "2", *options]) == 0
    return nib.load(str(out)).affine


@pytest.mark.parametrize("sform_code", [1, 2])
def test_the_sform_places_the_output_when_its_code_is_set(tmp_path, capsys, sform_code):
    src = placed(SFORM, QFORM, sform_code, tmp_path / "registered.nii.gz")
    out = tmp_path / "o.nii.gz"
    assert main(["upscale", str(src), str(out), "--model", "zerofill", "--scale", "2"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "sform and qform disagree" in line]
    assert len(warnings) == 1 and "registered.nii.gz" in warnings[0], err
    assert warnings[0].startswith("mrsr: warning: ") and "using the sform" in warnings[0]
    result = nib.load(str(out))
    np.testing.assert_allclose(result.header.get_zooms()[:3], (0.4, 0.4, 2.5), rtol=1e-5)
    alike = placed(SFORM, SFORM, sform_code, tmp_path / "alike.nii.gz")
    expected = upscaled_affine(alike, tmp_path / "alike_x2.nii.gz", "--model", "zerofill")
    np.testing.assert_allclose(result.get_sform(), expected, atol=1e-5)
    np.testing.assert_allclose(result.get_qform(), expected, atol=1e-5)
    codes = int(result.header["sform_code"]), int(result.header["qform_code"])
    assert codes == (sform_code, sform_code)  # both forms hold the sform's space


def test_a_qform_only_file_is_placed_by_its_qform_without_warning(tmp_path, capsys):
    src = placed(SFORM, QFORM, 0, tmp_path / "scanner.nii.gz")
    np.testing.assert_allclose(np.asarray(load_volume(src).affine), QFORM, atol=1e-5)
    affine = upscaled_affine(src, tmp_path / "o.nii.gz", "--model", "linear")
    assert "warning" not in capsys.readouterr().err
    alike = placed(QFORM, QFORM, 1, tmp_path / "alike.nii.gz")
    expected = upscaled_affine(alike, tmp_path / "alike_x2.nii.gz", "--model", "linear")
    np.testing.assert_allclose(affine, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.5, 0.5, 3.0))
    result = nib.load(str(tmp_path / "o.nii.gz")).header
    assert int(result["sform_code"]) == int(result["qform_code"]) == 1


def test_a_reference_grid_is_read_by_its_sform_too(tmp_path):
    src = placed(SFORM, SFORM, 1, tmp_path / "in.nii.gz")
    ref = placed(SFORM, QFORM, 2, tmp_path / "ref.nii.gz")
    out = tmp_path / "o.nii.gz"
    assert main(["upscale", str(src), str(out), "--model", "linear", "--like", str(ref)]) == 0
    np.testing.assert_allclose(nib.load(str(out)).affine, SFORM, atol=1e-5)


# ---------------------------------------------------------------- 2. corrupt geometry


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v2.nii"])
def test_a_nifti_whose_voxels_would_start_inside_its_header_is_refused(tmp_path, capsys, name):
    image = (nib.Nifti2Image if name.startswith("v2") else nib.Nifti1Image)(
        phantom((8, 8, 3)), np.eye(4)
    )
    image.header["vox_offset"] = 0
    raw = image.header.binaryblock + bytes(4) + image.get_fdata().astype("<f4").tobytes()
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    assert float(nib.load(str(path)).header["vox_offset"]) == 0
    first = "544" if name.startswith("v2") else "352"
    line = refused(capsys, ["upscale", path, tmp_path / "o.nii.gz", "--model", "zerofill"], name)
    assert "vox_offset (0) points inside the header" in line and f"byte {first}" in line


def dicom_series(folder, shape=(12, 10, 5)):
    image = sitk_image(np.round(phantom(shape)).astype(np.int16), np.diag([0.8, 0.8, 2.0, 1]))
    write_dicom_series(image, folder)
    return sorted(folder.iterdir())


def edit_dicom(path, **tags):
    """Rewrite ``path`` with ``tags`` set (None deletes the tag)."""
    ds = pydicom.dcmread(str(path))
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(str(path))


@pytest.mark.parametrize("spacing", [["0", "0"], ["-0.8", "0.8"], None])
def test_dicom_slices_without_a_positive_pixel_spacing_are_refused(tmp_path, capsys, spacing):
    files = dicom_series(tmp_path / "s")
    edit_dicom(files[2], PixelSpacing=spacing)
    before = snapshot(tmp_path)
    line = refused(
        capsys, ["upscale", tmp_path / "s", tmp_path / "o.nii.gz", "--model", "zerofill"], "s:"
    )
    assert "pixel spacing (0028,0030)" in line and files[2].name in line
    assert "corrupt geometry" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("position", ["first", "last"])
def test_a_dicom_slice_that_cannot_be_read_is_named_not_dropped(tmp_path, capsys, position):
    files = dicom_series(tmp_path / "s")
    bad = files[0 if position == "first" else -1]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated: GDCM would leave it out of the series
    line = refused(
        capsys, ["upscale", tmp_path / "s", tmp_path / "o.nii.gz", "--model", "zerofill"], "s:"
    )
    assert "1 of its files are not readable slices" in line and bad.name in line


def test_a_stray_file_in_a_dicom_folder_is_named_hidden_files_and_dicomdir_are_not(
    tmp_path, capsys
):
    dicom_series(tmp_path / "s")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / "s" / "DICOMDIR").write_bytes(bytes(128) + b"DICM")
    (tmp_path / "s" / "sub").mkdir()
    assert load_volume(tmp_path / "s").shape == (1, 12, 10, 5)
    (tmp_path / "s" / "notes.txt").write_text("scanned on Tuesday")
    line = refused(
        capsys, ["upscale", tmp_path / "s", tmp_path / "o.nii.gz", "--model", "zerofill"], "s:"
    )
    assert "'notes.txt'" in line


# ---------------------------------------------------------------- 3. long detached headers

FIELDS = "NDims = 3\nDimSize = 4 4 2\nElementType = MET_UCHAR\n"


@pytest.mark.parametrize("name", ["v.nhdr", "v.mhd"])
def test_data_outside_is_refused_however_long_the_header(tmp_path, capsys, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.raw").write_bytes(b"PASSWORD" * 4)
    d = tmp_path / "in"
    d.mkdir()
    if name == "v.nhdr":
        padding = "".join(f"# comment line {i:05d} {'x' * 50}\n" for i in range(1200))
        text = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 2\nencoding: raw\n" + padding
        text += "data file: ../outside/data.raw\n"
    else:
        padding = "".join(f"Comment = line {i:05d} {'x' * 50}\n" for i in range(1200))
        text = FIELDS + padding + "ElementDataFile = ../outside/data.raw\n"
    assert len(text) > 70_000
    (d / name).write_text(text)
    before = snapshot(tmp_path)
    refused(
        capsys,
        ["upscale", d / name, tmp_path / "o.nii.gz", "--model", "zerofill"],
        "its data file '../outside/data.raw' lies outside the header's folder",
    )
    assert snapshot(tmp_path) == before


def test_a_header_without_an_end_is_refused_not_read_in_part(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(itk, "_MAX_HEADER", 1 << 20)
    (tmp_path / "data.raw").write_bytes(bytes(32))
    text = FIELDS + "ElementDataFile = data.raw\n" + "Comment = x\n" * 100_000
    (tmp_path / "v.mhd").write_text(text)
    out = tmp_path / "o.nii.gz"
    line = refused(
        capsys, ["upscale", tmp_path / "v.mhd", out, "--model", "zerofill"], "v.mhd: its header"
    )
    assert "goes on past 1.0 MiB" in line


# ---------------------------------------------------------------- 4. what is wrong, in words

NRRD = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 30 30 10\nendian: little\nencoding: "


def no_itk_text(line: str) -> None:
    assert ".cxx" not in line and ".hxx" not in line and "(0x" not in line, line


@pytest.mark.parametrize("encoding", ["gzip", "bzip2"])
def test_short_compressed_nrrd_data_is_called_truncated(tmp_path, capsys, encoding):
    data = phantom((30, 30, 10)).tobytes(order="F")
    packed = gzip.compress(data) if encoding == "gzip" else bz2.compress(data)
    path = tmp_path / "t.nrrd"
    path.write_bytes(NRRD + encoding.encode() + b"\n\n" + packed[: len(packed) * 2 // 3])
    out = tmp_path / "o.nii.gz"
    words = "compressed data ends early" if encoding == "gzip" else "bzip2-compressed NRRD data"
    line = refused(capsys, ["upscale", path, out, "--model", "zerofill"], words)
    assert "t.nrrd" in line and ("truncated" in line if encoding == "gzip" else "gzip" in line)
    no_itk_text(line)


def test_whole_gzip_nrrd_still_reads(tmp_path):
    data = phantom((30, 30, 10))
    (tmp_path / "w.nrrd").write_bytes(NRRD + b"gzip\n\n" + gzip.compress(data.tobytes("F")))
    np.testing.assert_array_equal(load_volume(tmp_path / "w.nrrd")[0].numpy(), data)


@pytest.mark.parametrize(
    "encoding,data,words",
    [
        ("zrl", b"", 'parse encoding "zrl"'),
        ("hex", b"zz" * 108, "invalid character ('z')"),
        ("ascii", b"1 2 x " * 9, 'parse float 3 of 27 ("x")'),
    ],
    ids=["zrl", "hex", "ascii"],
)
def test_reader_failures_never_show_itk_source_lines(tmp_path, capsys, encoding, data, words):
    header = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 3 3 3\nendian: little\nencoding: "
    (tmp_path / "e.nrrd").write_bytes(header + encoding.encode() + b"\n\n" + data + b"\n")
    out = tmp_path / "o.nii.gz"
    line = refused(capsys, ["upscale", tmp_path / "e.nrrd", out, "--model", "zerofill"], words)
    assert "e.nrrd: cannot be read as a volume" in line
    no_itk_text(line)


def test_dicom_slices_of_different_sizes_are_named(tmp_path, capsys):
    files = dicom_series(tmp_path / "s")
    other = dicom_series(tmp_path / "small", shape=(6, 5, 5))
    other[2].replace(files[2])
    line = refused(
        capsys,
        ["upscale", tmp_path / "s", tmp_path / "o.nii.gz", "--model", "zerofill"],
        "DICOM slices of different sizes (12x10 in",
    )
    assert f"6x5 in '{files[2].name}'" in line and "not one series" in line
    no_itk_text(line)


def enhanced(folder, affine, shape=(20, 18, 6)) -> tuple[np.ndarray, object]:
    """One multi-frame DICOM file (GDCM writes Enhanced MR Image Storage, with per-frame
    positions) holding a whole volume; its voxels and path."""
    data = np.round(phantom(shape)).astype(np.int16)
    image = sitk_image(data, affine)
    image.SetMetaData("0008|0060", "MR")
    folder.mkdir()
    sitk.WriteImage(image, str(folder / "volume.dcm"))
    ds = pydicom.dcmread(str(folder / "volume.dcm"), stop_before_pixels=True)
    assert ds.SOPClassUID.name == "Enhanced MR Image Storage" and int(ds.NumberOfFrames) == 6
    return data, folder / "volume.dcm"


def test_a_multi_frame_dicom_is_read_as_the_volume_it_holds(tmp_path, capsys):
    affine = make_affine("oblique", (0.8, 0.8, 2.0))
    data, _ = enhanced(tmp_path / "mf", affine)
    volume = load_volume(tmp_path / "mf")
    np.testing.assert_array_equal(volume[0].numpy(), data)
    np.testing.assert_allclose(np.asarray(volume.affine), affine, atol=1e-4)
    out = tmp_path / "o.nii.gz"
    assert main(["upscale", str(tmp_path / "mf"), str(out), "--model", "zerofill"]) == 0
    assert nib.load(str(out)).shape == (40, 36, 6)


def set_frame_positions(path, move) -> None:
    ds = pydicom.dcmread(str(path))
    frames = [f.PlanePositionSequence[0] for f in ds.PerFrameFunctionalGroupsSequence]
    for item, position in zip(frames, move([list(f.ImagePositionPatient) for f in frames])):
        item.ImagePositionPatient = position
    ds.save_as(str(path))


def test_multi_frame_geometry_follows_the_frames_or_is_refused(tmp_path, capsys):
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    _, path = enhanced(tmp_path / "reversed", affine)
    set_frame_positions(path, lambda p: p[::-1])  # frames stored top to bottom
    volume = load_volume(tmp_path / "reversed")
    lps = np.array(
        pydicom.dcmread(str(path))
        .PerFrameFunctionalGroupsSequence[5]
        .PlanePositionSequence[0]
        .ImagePositionPatient,
        dtype=float,
    )
    np.testing.assert_allclose(
        (np.asarray(volume.affine) @ [0, 0, 5, 1])[:3], lps * [-1, -1, 1], atol=1e-4
    )
    _, path = enhanced(tmp_path / "gap", affine)
    set_frame_positions(path, lambda p: p[:5] + [[p[5][0], p[5][1], p[5][2] + 2.0]])
    line = refused(
        capsys,
        ["upscale", tmp_path / "gap", tmp_path / "o.nii.gz", "--model", "zerofill"],
        "not evenly spaced",
    )
    no_itk_text(line)
