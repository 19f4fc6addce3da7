"""Outputs keep what the input's header said and record what mrsr did (descrip + JSON sidecar)."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom

from mrsr.cli import main
from mrsr.provenance import short_description


def source(path, units=("mm", "msec")):
    img = nib.Nifti1Image(phantom((16, 16, 4)), np.diag([1.0, 1.0, 3.0, 1.0]))
    img.header["pixdim"][4] = 2.5
    if units is None:
        img.header["xyzt_units"] = 0
    else:
        img.header.set_xyzt_units(*units)
    img.header["cal_min"], img.header["cal_max"] = 10.0, 90.0
    img.header["descrip"] = b"T2 TSE from the scanner"
    nib.save(img, str(path))
    return path


COMMANDS = {
    "upscale": ["upscale", "{src}", "{out}", "--model", "zerofill"],
    "degrade": ["degrade", "{src}", "{out}", "--scale", "2"],
    "throughplane": ["throughplane", "{src}", "{out}", "--steps", "1", "--max-time", "60"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("units", [("mm", "msec"), None], ids=["mm-ms", "unknown"])
def test_header_fields_are_kept_and_the_operation_recorded(tmp_path, command, units):
    src = source(tmp_path / "t2.nii.gz", units)
    out = tmp_path / "t2_out.nii.gz"
    argv = [a.format(src=src, out=out) for a in COMMANDS[command]]
    assert main(argv) == 0
    header = nib.load(str(out)).header
    assert header["pixdim"][4] == pytest.approx(2.5)
    assert int(header["xyzt_units"]) == int(nib.load(str(src)).header["xyzt_units"])
    assert (float(header["cal_min"]), float(header["cal_max"])) == (10.0, 90.0)
    descrip = header["descrip"].item().decode()
    assert descrip.startswith("mrsr ") and command in descrip
    sidecar = json.loads((tmp_path / "t2_out.json").read_text())
    assert sidecar["Sources"] == ["t2.nii.gz"]
    record = sidecar["mrsr"]
    assert record["operation"] == command
    assert record["source_description"] == "T2 TSE from the scanner"
    assert record["output_grid"]["shape"] == list(nib.load(str(out)).shape)


def test_description_fits_the_header_and_folder_runs_write_sidecars(tmp_path):
    long = {"mrsr_version": "0.1.0", "operation": "upscale", "model": "m" * 200, "scale": 2}
    assert len(short_description(long).encode()) == 80
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        source(tmp_path / "in" / f"{name}.nii.gz")
    cmd = ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "zerofill"]
    assert main(cmd + ["--precision", "bf16", "--data-consistency", "0.5"]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["a.json", "a.nii.gz", "b.json", "b.nii.gz"]
    record = json.loads((tmp_path / "out" / "a.json").read_text())["mrsr"]
    assert (record["model"], record["precision"], record["data_consistency"]) == (
        "zerofill",
        "bf16",
        0.5,
    )
    descrip = nib.load(str(tmp_path / "out" / "a.nii.gz")).header["descrip"].item().decode()
    assert descrip.endswith("upscale zerofill x2 bf16 dc0.5")
    assert main(cmd + ["--precision", "fp32", "--overwrite"]) == 0
    descrip = nib.load(str(tmp_path / "out" / "a.nii.gz")).header["descrip"].item().decode()
    assert descrip.endswith("upscale zerofill x2 fp32")  # the precision that ran, always


def test_a_sidecar_mrsr_did_not_write_is_never_replaced_silently(tmp_path, capsys):
    src = source(tmp_path / "t2.nii.gz")
    (tmp_path / "o.json").write_text('{"RepetitionTime": 2.5}')
    cmd = ["upscale", str(src), str(tmp_path / "o.nii.gz"), "--model", "zerofill"]
    assert main(cmd) == 2
    assert "o.json: exists and is not an mrsr sidecar" in capsys.readouterr().err
    assert (tmp_path / "o.json").read_text() == '{"RepetitionTime": 2.5}'
    assert not (tmp_path / "o.nii.gz").exists()
    assert main(cmd + ["--overwrite"]) == 0
    assert "mrsr" in json.loads((tmp_path / "o.json").read_text())


@pytest.mark.slow
def test_the_demo_replaces_its_own_outputs_but_not_a_users_file(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", "zerofill"]) == 0
    assert main(["demo", "--out", str(out), "--model", "zerofill"]) == 0  # run again
    (out / "sample_sr.json").write_text("{}")  # no longer mrsr's
    assert main(["demo", "--out", str(out), "--model", "zerofill"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "sample_sr.json").read_text() == "{}"
