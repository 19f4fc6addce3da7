"""What a user reads: progress that suits terminals and logs, warnings that say what to expect,
messages that say what happened and what to do."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom

import mrsr.machine
from mrsr import progress
from mrsr.cli import main


@pytest.fixture(autouse=True)
def normal_level():
    yield
    progress.set_level(progress.NORMAL)


def volume(path, shape=(16, 16, 3)):
    nib.save(nib.Nifti1Image(phantom(shape), np.eye(4)), str(path))
    return path


def run(argv, env=None):
    cmd = [sys.executable, "-m", "mrsr", *map(str, argv)]
    environ = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", env=environ, timeout=120)


@pytest.mark.slow
def test_logs_get_plain_lines_and_folder_runs_count_their_files(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        volume(tmp_path / "in" / f"{name}.nii.gz")
    done = run(["upscale", tmp_path / "in", tmp_path / "out", "--model", "zerofill"])
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr  # stderr is a pipe here: no carriage returns
    lines = done.stderr.splitlines()
    assert "[1/2] a.nii.gz" in lines and "[2/2] b.nii.gz" in lines
    assert "super-resolving: 3/3 slice" in lines


@pytest.mark.parametrize("how", [["-q"], ["--quiet"], "env"])
@pytest.mark.slow
def test_quiet_and_tqdm_disable_silence_progress(tmp_path, how):
    src = volume(tmp_path / "a.nii.gz")
    flags, env = ([], {"TQDM_DISABLE": "1"}) if how == "env" else (how, None)
    done = run(["upscale", src, tmp_path / "o.nii.gz", "--model", "zerofill", *flags], env)
    assert done.returncode == 0, done.stderr
    assert "super-resolving" not in done.stderr
    if how != "env":
        assert done.stderr == ""


def test_untrained_network_and_emulated_bf16_are_announced(tmp_path, capsys, monkeypatch):
    src = volume(tmp_path / "a.nii.gz")
    argv = ["upscale", str(src), str(tmp_path / "o.nii.gz"), "--model", "cssfn"]
    monkeypatch.setattr(mrsr.machine, "native_bf16", lambda device: False)
    assert main([*argv, "--precision", "bf16", "-q"]) == 0
    err = capsys.readouterr().err
    assert "'cssfn' is UNTRAINED (16.4 M random weights)" in err and "it will take about" in err
    assert "no native bfloat16" in err
    monkeypatch.setattr(mrsr.machine, "native_bf16", lambda device: True)
    assert main([*argv, "--precision", "bf16", "-q", "--overwrite"]) == 0
    assert "bfloat16" not in capsys.readouterr().err


def test_messages_say_what_happened_and_what_to_do(tmp_path, capsys):
    src = volume(tmp_path / "a.nii.gz")
    assert main(["evaluate", "--ref", str(src)]) == 2
    err = capsys.readouterr().err
    assert "neither --pred and --baselines given: pass --pred PRED" in err
    ref = tmp_path / "ref.nii.gz"
    assert (
        main(
            ["degrade", str(src), str(tmp_path / "lr.nii.gz"), "--scale", "2", "--hr-out", str(ref)]
        )
        == 0
    )
    assert f"reference (16, 16, 3) -> {ref}" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a silent copy before
        main(["degrade", str(src), str(tmp_path / "x.nii.gz"), "--scale", "1"])
    assert "--scale: must be an integer from 2" in capsys.readouterr().err


@pytest.mark.slow
def test_throughplane_training_bar_ends_at_100_percent(tmp_path):
    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(phantom((32, 32, 4)), np.diag([1.0, 1.0, 4.0, 1.0])), str(src))
    done = run(["throughplane", src, tmp_path / "iso.nii.gz", "--steps", "2"])
    assert done.returncode == 0, done.stderr
    training = [line for line in done.stderr.splitlines() if line.startswith("training:")]
    assert training[-1] == "training: 100/100 %"


def test_bars_in_a_notebook_without_widgets_are_plain_tqdm(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_widgets(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setitem(sys.modules, "ipykernel", object())
    monkeypatch.setattr(builtins, "__import__", no_widgets)
    from tqdm.std import tqdm

    assert progress._tqdm_class() is tqdm


def test_the_chosen_device_and_precision_are_said(tmp_path, capsys, monkeypatch):
    src = volume(tmp_path / "a.nii.gz")
    monkeypatch.setattr(mrsr.machine, "native_bf16", lambda device: True)
    assert (
        main(["upscale", str(src), str(tmp_path / "o.nii.gz"), "--model", "cssfn-kspace-x2"]) == 0
    )
    assert "running on device cpu (auto), precision bf16 (auto)" in capsys.readouterr().err
    record = json.loads((tmp_path / "o.json").read_text())["mrsr"]
    assert record["precision"] == "bf16"
