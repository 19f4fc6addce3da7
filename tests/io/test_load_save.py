"""Volume I/O: NIfTI round trips, SimpleITK formats, header fields, atomic writes."""

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_affine, meta_volume, phantom, sitk_image, write_dicom_series

from mrsr.errors import MRSRError
from mrsr.files import atomic_write
from mrsr.io import load_volume, sample_path, save_volume


def test_nifti_round_trip_keeps_affine_shape_values(tmp_path, write_nifti):
    data, affine = phantom((20, 18, 7)), make_affine("oblique", (0.9, 0.9, 3.0))
    src = write_nifti("in.nii.gz", data, affine, descrip=b"my scan", dim_info=(2 + 1) << 4)
    vol = load_volume(src)
    assert vol.shape == (1, 20, 18, 7) and vol.dtype == torch.float32
    np.testing.assert_allclose(vol.affine.numpy(), affine, atol=1e-5)
    out = save_volume(vol, tmp_path / "out.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_allclose(img.get_fdata(), data, rtol=1e-6)
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), (0.9, 0.9, 3.0), rtol=1e-5)
    assert img.header["descrip"].tobytes().rstrip(b"\0") == b"my scan"
    assert img.header.get_dim_info()[2] == 2
    assert img.header.get_xyzt_units() == nib.load(src).header.get_xyzt_units()  # unknown kept


def test_scaled_integers_are_read_scaled_and_written_back_as_input(tmp_path):
    raw = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = load_volume(tmp_path / "s.nii")
    np.testing.assert_allclose(vol[0].numpy(), raw * 2.0 + 10.0)
    assert vol.meta["source_dtype"] == "float32"  # scaled data are not integers any more

    plain = nib.Nifti1Image(raw.astype(">i2"), np.eye(4))  # big-endian on disk
    nib.save(plain, str(tmp_path / "p.nii"))
    vol = load_volume(tmp_path / "p.nii")
    assert vol.meta["source_dtype"] == "int16"
    vol = vol * 1.0 + 0.4
    vol[0, 0, 0, 0] = 1e6
    save_volume(vol, tmp_path / "back.nii", dtype="input")
    back = nib.load(str(tmp_path / "back.nii"))
    assert back.get_data_dtype() == np.int16
    assert back.get_fdata()[0, 0, 0] == np.iinfo(np.int16).max  # clipped
    np.testing.assert_array_equal(back.get_fdata().ravel()[1:], raw.ravel()[1:])  # rounded


def test_dicom_series_and_nrrd_match_nifti_geometry(tmp_path, write_nifti):
    data = np.round(phantom((22, 20, 6))).astype(np.int16)
    affine = make_affine("oblique", (0.8, 0.8, 2.0))
    nifti = load_volume(write_nifti("v.nii.gz", data, affine))
    image = sitk_image(data, affine)
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    sitk.WriteImage(image, str(tmp_path / "v.mha"))
    write_dicom_series(image, tmp_path / "dicom")
    for path in (tmp_path / "v.nrrd", tmp_path / "v.mha", tmp_path / "dicom"):
        vol = load_volume(path)
        assert vol.shape == nifti.shape, path
        np.testing.assert_allclose(vol.affine.numpy(), nifti.affine.numpy(), atol=1e-4)
        np.testing.assert_array_equal(vol.numpy(), nifti.numpy())


def test_bad_inputs_raise_user_errors(tmp_path):
    with pytest.raises(MRSRError, match="no such file"):
        load_volume(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a volume at all")
    with pytest.raises(MRSRError, match="junk.nii.gz: cannot be read"):
        load_volume(junk)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(MRSRError, match="unsupported format"):
        load_volume(other)


def test_atomic_write_leaves_old_file_on_failure_and_refuses_overwrite(tmp_path):
    target = tmp_path / "out.nii.gz"
    vol = meta_volume(phantom((6, 6, 3)), np.eye(4))
    save_volume(vol, target)
    before = target.read_bytes()
    with pytest.raises(MRSRError, match="already exists"):
        save_volume(vol * 2, target)
    with pytest.raises(RuntimeError), atomic_write(target, overwrite=True) as stream:
        stream.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
    save_volume(vol * 2, target, overwrite=True)
    np.testing.assert_allclose(nib.load(str(target)).get_fdata(), vol[0].numpy() * 2)


def test_bundled_sample_is_a_real_volume():
    vol = load_volume(sample_path())
    assert vol.shape == (1, 180, 216, 24)
    assert float(vol.max()) > 100 and float((vol > 20).float().mean()) > 0.3


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        out = save_volume(meta_volume(phantom((6, 6, 2)), np.eye(4)), tmp_path / "o.nii.gz")
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644


def test_checkpoints_get_the_usual_permissions_too(tmp_path):
    from mrsr.checkpoint import ModelSpec, save_checkpoint

    spec = ModelSpec.create("zerofill", 2)
    umask = os.umask(0o022)
    try:
        out = save_checkpoint(tmp_path / "m.safetensors", spec.build(), spec)
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644


def test_the_same_volume_gives_the_same_bytes_whenever_and_wherever_written(tmp_path):
    """No write time nor the temporary file's name in the gzip header: a reproduced output is
    byte-identical, and the BIDS validator finds no gzip header time."""
    volume = meta_volume(phantom((12, 10, 6)), make_affine("oblique", (1.0, 1.0, 2.0)))
    first, second = tmp_path / "a.nii.gz", tmp_path / "b" / "a.nii.gz"
    second.parent.mkdir()
    save_volume(volume, first)
    os.utime(first, (0, 0))
    save_volume(volume, second)
    raw = first.read_bytes()
    assert raw == second.read_bytes()
    assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # MTIME 0, no FNAME field
