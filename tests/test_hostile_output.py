"""Hostile and careless output places: names, links, pipes, full disks, aborted runs.

Every case checks that the run refuses in one line naming the file (exit code 2) or works, that
a file outside the outputs (the "victim") is byte-identical afterwards, and that nothing partial
is left: no sidecar without its volume, no half report, no empty run folder.
"""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import phantom
from test_hostile import nifti, refused, snapshot

from mrsr.cli import main
from mrsr.files import atomic_files
from mrsr.provenance import sidecar_text

ZEROFILL = ["--model", "zerofill", "-q"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def mrsr(*args, stdout=subprocess.PIPE):
    """The command line in a process of its own, stopped after 60 s (a hang fails the test)."""
    command = [sys.executable, "-m", "mrsr", *map(str, args)]
    return subprocess.run(
        command, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, check=False
    )


def one_line_refusal(done, words):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[-1].startswith("mrsr: error: ") and words in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    return lines[-1]


def folder_of_volumes(folder, names="abc"):
    folder.mkdir()
    for name in names:
        nifti(folder / f"{name}.nii.gz", (10, 10, 2))
    return folder


def training(tmp_path, **changes):
    (tmp_path / "vols").mkdir()
    for i in range(2):
        image = nib.Nifti1Image(phantom((24, 24, 3), seed=i), np.eye(4))
        nib.save(image, str(tmp_path / "vols" / f"v{i}.nii.gz"))
    cfg = {
        "data": {"train": "vols", "val": "vols/v0.nii.gz"},
        "model": {"name": "cssfn", "channels": 8, "n_blocks": 1, "n_units": 1},
        "train": {"max_steps": 2, "batch_size": 2, "patch_size": 8, "val_every": 2},
        "output_dir": "run",
        **changes,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "c.yaml"


# ---------------------------------------------------------------- 1. folder outputs named as files


@pytest.mark.parametrize(
    "case,words",
    [
        ("upscale folder", "out.nii.gz: named like a file (.nii.gz)"),
        ("upscale folder into .nii", "out.nii: named like a file (.nii)"),
        ("evaluate --report", "report.md: named like a file (.md), but --report is a folder"),
        ("demo --out", "demo.nii.gz: named like a file (.nii.gz), but --out is a folder"),
        ("train output_dir", "run.safetensors: named like a file (.safetensors)"),
        ("upscale file onto a folder", "o.nii.gz: is a folder"),
    ],
)
def test_a_folder_output_named_like_a_file_is_refused(tmp_path, capsys, case, words):
    src = folder_of_volumes(tmp_path / "lr", "ab")
    if case.startswith("upscale folder"):
        args = ["upscale", src, tmp_path / words.split(":")[0], *ZEROFILL]
    elif case == "evaluate --report":
        args = ["evaluate", "--pred", src, "--ref", src, "--report", tmp_path / "report.md"]
    elif case == "demo --out":
        args = ["demo", "--out", tmp_path / "demo.nii.gz", *ZEROFILL]
    elif case == "train output_dir":
        args = ["train", training(tmp_path, output_dir="run.safetensors")]
    else:
        (tmp_path / "o.nii.gz").mkdir()
        args = ["upscale", src / "a.nii.gz", tmp_path / "o.nii.gz", *ZEROFILL]
    before = sorted(os.listdir(tmp_path))
    refused(capsys, args, words)
    assert sorted(os.listdir(tmp_path)) == before


# ---------------------------------------------------------------- 2. planted links


@pytest.mark.parametrize(
    "command,planted",
    [
        ("upscale", ".o.nii.gz.lock"),
        ("upscale", "o.json"),
        ("upscale", "o.nii.gz"),
        ("upscale", ".o.nii.gz.0badcafe.tmp"),
        ("folder", ".a.nii.gz.lock"),
        ("folder", "a.json"),
        ("degrade", ".o.nii.gz.lock"),
        ("train", "train_log.csv"),
        ("train", "state.safetensors"),
        ("report", "metrics.csv"),
    ],
)
def test_a_planted_link_never_redirects_a_write(tmp_path, capsys, command, planted):
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"someone else's data\n")
    src = folder_of_volumes(tmp_path / "in", "ab")
    out = tmp_path / {"train": "run", "report": "report"}.get(command, "out")
    out.mkdir()
    os.symlink(victim, out / planted)
    args = {
        "upscale": ["upscale", src / "a.nii.gz", out / "o.nii.gz", *ZEROFILL, "--overwrite"],
        "folder": ["upscale", src, out, *ZEROFILL, "--overwrite"],
        "degrade": ["degrade", src / "a.nii.gz", out / "o.nii.gz", "--scale", "2"],
        "train": ["train", training(tmp_path)] + ["--resume"] * (planted == "state.safetensors"),
        "report": ["evaluate", "--pred", src, "--ref", src, "--report", out, "--overwrite"],
    }[command]
    before = snapshot(victim.parent)
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert snapshot(victim.parent) == before
    if planted.endswith(".tmp"):  # a dead run's temporary: the link goes, nothing is followed
        assert code == 0, err
        assert sorted(os.listdir(out)) == ["o.json", "o.nii.gz"]
    else:
        assert code == 2 and "Traceback" not in err, err
        assert f"{planted}: is a symbolic link" in err.strip().splitlines()[-1], err
        assert os.readlink(out / planted) == str(victim)


def test_a_link_loop_as_an_output_is_refused(tmp_path, capsys):
    src = nifti(tmp_path / "a.nii.gz")
    os.symlink("o.nii.gz", tmp_path / "o.nii.gz")
    args = ["upscale", src, tmp_path / "o.nii.gz", *ZEROFILL, "--overwrite"]
    refused(capsys, args, "o.nii.gz: is a symbolic link")


# ---------------------------------------------------------------- 3. pipes where files were


@pytest.mark.parametrize(
    "planted",
    [
        "o.json",
        ".o.nii.gz.lock",
        "o.nii.gz",
        "run/train_log.csv",
        "run/val_log.csv",
    ],
)
@pytest.mark.slow
def test_a_pipe_in_place_of_a_file_is_refused_without_opening_it(tmp_path, planted):
    src = nifti(tmp_path / "a.nii.gz")
    if planted.startswith("run/"):
        args = ["train", training(tmp_path)]
        (tmp_path / "run").mkdir()
    else:
        args = ["upscale", src, tmp_path / "o.nii.gz", *ZEROFILL]
    os.mkfifo(tmp_path / planted)
    done = mrsr(*args)
    one_line_refusal(done, f"{Path(planted).name}: is a pipe, not a regular file")


@pytest.mark.slow
def test_a_pipe_in_an_output_folder_is_refused_for_a_resumed_folder_run(tmp_path):
    src = folder_of_volumes(tmp_path / "in", "ab")
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "b.json")
    done = mrsr("upscale", src, tmp_path / "out", *ZEROFILL)
    one_line_refusal(done, "b.json: is a pipe")


# ---------------------------------------------------------------- 4. sidecars beside volumes


def full_disk_after(monkeypatch, nbytes):
    """Writing a volume fails with ENOSPC once ``nbytes`` are written."""

    def write(self, stream):
        stream.write(b"\0" * nbytes)
        raise ENOSPC

    monkeypatch.setattr(nib.Nifti1Image, "to_stream", write)


def test_a_volume_that_does_not_fit_leaves_no_sidecar(tmp_path, capsys, monkeypatch):
    src = nifti(tmp_path / "a.nii.gz")
    full_disk_after(monkeypatch, 100)
    out = tmp_path / "o.nii.gz"
    refused(capsys, ["upscale", src, out, *ZEROFILL], "o.nii.gz: cannot be written (No space")
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz"]


def test_a_failed_rename_of_the_volume_removes_its_sidecar(tmp_path, capsys, monkeypatch):
    src = nifti(tmp_path / "a.nii.gz")
    replace = os.replace

    def failing(a, b):
        if str(b).endswith(".nii.gz"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        replace(a, b)

    monkeypatch.setattr(os, "replace", failing)
    out = tmp_path / "o.nii.gz"
    refused(capsys, ["upscale", src, out, *ZEROFILL], "o.nii.gz: cannot be written")
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz"]


def test_a_folder_run_on_a_full_disk_leaves_only_finished_pairs(tmp_path, capsys, monkeypatch):
    src = folder_of_volumes(tmp_path / "in")
    out = tmp_path / "out"
    write, calls = nib.Nifti1Image.to_stream, []

    def full_for_the_second(self, stream):  # outputs are written one at a time, in order
        calls.append(1)
        if len(calls) == 2:
            stream.write(b"\0" * 100)
            raise ENOSPC
        write(self, stream)

    monkeypatch.setattr(nib.Nifti1Image, "to_stream", full_for_the_second)
    assert main(["upscale", str(src), str(out), *ZEROFILL]) == 2
    err = capsys.readouterr().err
    assert "out/b.nii.gz: cannot be written (No space left on device)" in err, err
    assert sorted(os.listdir(out)) == ["a.json", "a.nii.gz", "c.json", "c.nii.gz"]
    monkeypatch.undo()
    assert main(["upscale", str(src), str(out), *ZEROFILL]) == 0  # resumes the missing one
    assert sorted(os.listdir(out)) == [f"{n}.{e}" for n in "abc" for e in ("json", "nii.gz")]


@pytest.mark.slow
def test_an_orphan_mrsr_sidecar_of_a_killed_run_is_replaced_on_resume(tmp_path):
    src = folder_of_volumes(tmp_path / "in", "ab")
    out = tmp_path / "out"
    out.mkdir()
    orphan = sidecar_text({"operation": "upscale", "mrsr_version": "0.1.0", "source": "b"})
    (out / "b.json").write_text(orphan)  # killed between the sidecar's rename and the volume's
    done = mrsr("upscale", src, out, *ZEROFILL)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == ["a.json", "a.nii.gz", "b.json", "b.nii.gz"]
    assert json.loads((out / "b.json").read_text())["mrsr"]["output_grid"]["shape"] == [20, 20, 2]


def test_atomic_files_publish_all_or_none(tmp_path):
    with pytest.raises(RuntimeError), atomic_files() as new:
        new(tmp_path / "first.json").write(b"{}")
        new(tmp_path / "second.nii").write(b"half")
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    with atomic_files() as new:
        new(tmp_path / "first.json").write(b"{}")
        new(tmp_path / "second.nii").write(b"whole")
    assert sorted(os.listdir(tmp_path)) == ["first.json", "second.nii"]
    assert oct((tmp_path / "first.json").stat().st_mode & 0o777) == oct(0o666 & ~umask())


def umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- 5. a link loop among the inputs


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_a_link_loop_among_folder_inputs_fails_alone(tmp_path, capsys, loop):
    src = folder_of_volumes(tmp_path / "in", "ace")
    before = snapshot(src)
    if loop == "self":
        os.symlink("b.nii.gz", src / "b.nii.gz")
        bad = ["b.nii.gz"]
    else:
        os.symlink("d.nii.gz", src / "b.nii.gz")
        os.symlink("b.nii.gz", src / "d.nii.gz")
        bad = ["b.nii.gz", "d.nii.gz"]
    assert main(["upscale", str(src), str(tmp_path / "out"), *ZEROFILL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    errors = [line.split(": ")[2] for line in err if line.startswith("mrsr: error: ")]
    assert errors[:-1] == [str(src / n) for n in bad]  # one line each, naming it
    summary = f"{len(bad)} of {3 + len(bad)} volumes not done ({len(bad)} failed: "
    assert err[-1].startswith(f"mrsr: error: {summary}{', '.join(bad)})")
    outputs = sorted(os.listdir(tmp_path / "out"))
    assert outputs == [f"{n}.{e}" for n in "ace" for e in ("json", "nii.gz")]
    for name in bad:
        (src / name).unlink()
    assert snapshot(src) == before


# ---------------------------------------------------------------- 6. nothing left by a refused run


def test_a_refused_training_run_leaves_no_run_folder(tmp_path, capsys):
    config = training(tmp_path, data={"train": "vols", "val": "broken.nii.gz"})
    (tmp_path / "broken.nii.gz").write_bytes(b"not a volume")
    refused(capsys, ["train", config], "broken.nii.gz: cannot be read")
    assert not (tmp_path / "run").exists()


def test_a_refused_folder_run_leaves_no_output_folder(tmp_path, capsys):
    src = folder_of_volumes(tmp_path / "in", "ab")
    nifti(src / "b.nii", (10, 10, 2))  # b.nii.gz and b.nii: one sidecar, refused in the plan
    refused(capsys, ["upscale", src, tmp_path / "out", *ZEROFILL], "b.json is another output")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_during_a_report_leaves_no_half_report(tmp_path, capsys, monkeypatch, existing):
    ref = nifti(tmp_path / "v.nii.gz", (24, 24, 4))
    report = tmp_path / "report"
    if existing:
        report.mkdir()
        (report / "notes.txt").write_text("mine")
    savefig = matplotlib.figure.Figure.savefig
    calls = []

    def full_on_the_second(self, stream, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            stream.write(b"\x89PNG half")
            raise ENOSPC
        savefig(self, stream, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_on_the_second)
    args = ["evaluate", "--pred", ref, "--ref", ref, "--report", report, "-q"]
    refused(capsys, args, "cannot be written (No space left on device)")
    assert sorted(os.listdir(report)) == ["notes.txt"] if existing else not report.exists()


# ---------------------------------------------------------------- 7. errors name their file


@pytest.mark.slow
def test_a_full_disk_behind_standard_output_is_named(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        done = mrsr("models", stdout=full)
    assert done.stderr.strip().splitlines() == [
        "mrsr: error: standard output: cannot be written (No space left on device)"
    ]
    assert done.returncode == 2


def test_a_file_system_without_locks_is_named(tmp_path, capsys, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    src = nifti(tmp_path / "a.nii.gz")
    line = refused(capsys, ["upscale", src, tmp_path / "o.nii.gz", *ZEROFILL], "Invalid argument")
    assert ".o.nii.gz.lock: cannot be locked (Invalid argument)" in line
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz"]


def test_a_name_the_file_system_refuses_is_named(tmp_path, capsys, monkeypatch):
    """A name with characters a FAT or SMB file system refuses fails at creation (EINVAL)."""
    src = nifti(tmp_path / "a.nii.gz")
    create = os.open

    def picky(path, flags, *args, **kwargs):
        if "?" in os.fspath(path) and flags & os.O_CREAT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), os.fspath(path))
        return create(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", picky)
    out = tmp_path / "what?.nii.gz"
    line = refused(capsys, ["degrade", src, out, "--scale", "2"], "Invalid argument")
    # degrade locks its output first, as upscale does: the lock beside it is the first file
    assert f"{tmp_path / '.what?.nii.gz.lock'}: cannot be created (Invalid argument)" in line
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz"]
