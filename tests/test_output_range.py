"""One output-range rule for every command, consistency that agrees with it, signed inputs kept
signed, and metrics as papers define them."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import phantom

from mrsr import kspace
from mrsr.cli import main
from mrsr.provenance import sidecar_path
from mrsr.transforms import KSpaceTruncation


def edged(shape=(32, 32, 8)) -> np.ndarray:
    """A magnitude volume with sharp edges against a zero background: ringing goes below 0."""
    data = np.zeros(shape, dtype=np.float32)
    data[8:24, 6:26] = 100.0
    data[12:18, 10:14] = 400.0
    return data


def written(tmp_path, name, data, zooms=(1.0, 1.0, 1.0)) -> str:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), str(path))
    return str(path)


def record(path) -> dict:
    return json.loads(sidecar_path(path).read_text())["mrsr"]


# each command that writes a volume made from the input, with options that make it fast
COMMANDS = {
    "upscale": (["upscale", "--model", "zerofill", "--scale", "2"], (1.0, 1.0, 1.0)),
    "degrade": (["degrade", "--scale", "2", "--method", "bicubic"], (1.0, 1.0, 1.0)),
    "throughplane": (["throughplane", "--steps", "2", "--factor", "3"], (1.0, 1.0, 3.0)),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_clamps_a_magnitude_input_at_zero_unless_negative(tmp_path, command):
    args, zooms = COMMANDS[command]
    src = written(tmp_path, "in.nii.gz", edged(), zooms)
    out, raw = tmp_path / "out.nii.gz", tmp_path / "raw.nii.gz"
    assert main([args[0], src, str(out), *args[1:]]) == 0
    assert main([args[0], src, str(raw), *args[1:], "--negative"]) == 0
    assert nib.load(str(out)).get_fdata().min() >= 0
    assert nib.load(str(raw)).get_fdata().min() < 0  # the rule had something to clamp
    assert record(out)["clamped_at_zero"] is True
    assert record(raw)["clamped_at_zero"] is False


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_keeps_the_sign_of_a_signed_input(tmp_path, command):
    args, zooms = COMMANDS[command]
    data = edged() - 150.0  # a difference map: mostly negative
    src = written(tmp_path, "in.nii.gz", data, zooms)
    out = tmp_path / "out.nii.gz"
    assert main([args[0], src, str(out), *args[1:]]) == 0
    result = nib.load(str(out)).get_fdata()
    assert result.min() < -100 and result.max() > 100
    assert record(out)["clamped_at_zero"] is False


def test_kspace_truncation_of_a_signed_image_is_odd_not_its_magnitude():
    """The real part keeps the sign: truncating -x gives minus the truncation of x."""
    x = torch.from_numpy(edged() - 150.0)[None]
    down = KSpaceTruncation(scale=2, axes=(0, 1))
    np.testing.assert_allclose(down(-x), -down(x), atol=1e-3)
    # a magnitude image still gives the scanner's magnitude image
    m = torch.from_numpy(edged())[None]
    expected = kspace.truncate(m, (16, 16), (1, 2), magnitude=True)
    np.testing.assert_array_equal(np.asarray(down(m)), np.asarray(expected))


def test_data_consistency_and_the_clamp_agree_and_the_residual_is_recorded(tmp_path):
    """Output >= 0 and degraded again it reproduces the input to the residual it records."""
    hr = written(tmp_path, "hr.nii.gz", edged((48, 48, 6)))
    lr, out = tmp_path / "lr.nii.gz", tmp_path / "sr.nii.gz"
    assert main(["degrade", hr, str(lr), "--scale", "2"]) == 0
    argv = ["upscale", str(lr), str(out), "--model", "bicubic", "--scale", "2"]
    assert main([*argv, "--data-consistency"]) == 0
    sr = torch.from_numpy(nib.load(str(out)).get_fdata())
    measured = torch.from_numpy(nib.load(str(lr)).get_fdata())
    again = kspace.truncate(sr, measured.shape[:2], (0, 1))
    residual = float(torch.linalg.norm(again - measured) / torch.linalg.norm(measured))
    rec = record(out)
    assert sr.min() >= 0 and rec["clamped_at_zero"] is True
    assert rec["consistency_residual"] == pytest.approx(residual, abs=2e-4)
    # the alternation makes it consistent where a clamp after the projection was not
    assert residual < 2e-3


def test_throughplane_consistency_residual_is_recorded(tmp_path):
    src = written(tmp_path, "in.nii.gz", edged((24, 24, 6)), (1.0, 1.0, 3.0))
    out = tmp_path / "out.nii.gz"
    assert main(["throughplane", src, str(out), "--steps", "2", "--factor", "3"]) == 0
    rec = record(out)
    assert nib.load(str(out)).get_fdata().min() >= 0
    assert 0 <= rec["consistency_residual"] < 0.05


def test_psnr_takes_the_whole_reference_range_under_a_mask(tmp_path, capsys):
    """As scikit-image and papers: R is the reference's max - min, not the masked voxels'."""
    rng = np.random.default_rng(0)
    ref = phantom((32, 32, 8))
    ref[0, 0, 0] = 1000.0  # the peak lies outside the mask
    pred = ref + rng.normal(0, 2, ref.shape).astype(np.float32)
    mask = np.zeros(ref.shape, dtype=np.uint8)
    mask[8:24, 8:24] = 1
    paths = [written(tmp_path, n, d) for n, d in (("p.nii.gz", pred), ("r.nii.gz", ref))]
    mask_path = written(tmp_path, "m.nii.gz", mask)
    argv = ["evaluate", "--pred", paths[0], "--ref", paths[1], "--mask", mask_path]
    assert main([*argv, "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    inside = mask.astype(bool)
    expected = 10 * np.log10(
        float(ref.max() - ref.min()) ** 2
        / np.mean((pred[inside].astype(np.float64) - ref[inside]) ** 2)
    )
    assert row["psnr"] == pytest.approx(expected, abs=1e-6)


def test_a_4d_prediction_against_a_3d_reference_says_so(tmp_path, capsys):
    ref = phantom((32, 32, 3))
    pred = np.stack([ref, ref], axis=-1)
    p, r = written(tmp_path, "p.nii.gz", pred), written(tmp_path, "r.nii.gz", ref)
    assert main(["evaluate", "--pred", p, "--ref", r]) == 2
    err = capsys.readouterr().err
    assert "2 volumes" in err and "holds 1" in err
