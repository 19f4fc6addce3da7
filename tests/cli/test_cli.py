"""The `mrsr` command: demo, models, help, one-line errors; README and CI stay in step."""

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom

from mrsr.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_the_whole_path(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    for name in ("zero-filled k-space", "bicubic (k-space grid)", "PSNR", "SSIM"):
        assert name in out
    sr, ref = (nib.load(str(tmp_path / "d" / f"sample_{k}.nii.gz")) for k in ("sr", "ref"))
    assert sr.shape == ref.shape == (180, 216, 24)
    np.testing.assert_allclose(sr.affine, ref.affine)
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0  # it replaces its own outputs


def test_models_lists_networks_and_baselines(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "cssfn" in out and "zerofill" in out


@pytest.mark.parametrize("command", ["degrade", "upscale", "demo", "models"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: mrsr " + command in capsys.readouterr().out


def test_bad_input_gives_one_line_and_no_output(tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b truncated gzip")
    out = tmp_path / "o.nii.gz"
    assert main(["degrade", str(bad), str(out), "--scale", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.nii.gz" in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz"]


def test_existing_output_is_untouched_without_overwrite(tmp_path, write_nifti, capsys):
    src = write_nifti("in.nii.gz", phantom((12, 12, 2)), np.eye(4))
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"user data")
    assert main(["degrade", src, str(out), "--scale", "2"]) == 2
    assert out.read_bytes() == b"user data"
    assert main(["degrade", src, str(out), "--scale", "2", "--overwrite"]) == 0
    assert nib.load(str(out)).shape == (6, 6, 2)


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", readme, re.S).group(1)
    commands = block.strip().splitlines()
    assert len(commands) == 2 and "mrsr demo" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
