"""The job runner every command that writes volumes goes through (:mod:`mrsr.batch`): one
output plan, the outputs' locks, one header read per input, per-job failures, one provenance
vocabulary."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections import Counter

import numpy as np
import pytest
from test_hostile import nifti, refused, snapshot

import mrsr.batch
import mrsr.io
import mrsr.pipeline
from mrsr.batch import Batch, Job, Steps
from mrsr.errors import MRSRError
from mrsr.io import load_volume
from mrsr.outputs import OutputBusy, plan_outputs


@contextlib.contextmanager
def held(output):
    """The lock of ``output`` held as a live run holds it."""
    with open(output.parent / f".{output.name}.lock", "w") as lock:
        lock.write("4242 other-host\n")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.mark.parametrize(
    ("command", "locked"),
    [
        (["degrade", "{src}", "{out}/lr.nii.gz", "--scale", "2"], "lr.nii.gz"),
        (
            ["degrade", "{src}", "{out}/lr.nii.gz", "--scale", "2", "--hr-out", "{out}/hr.nii.gz"],
            "hr.nii.gz",
        ),
        (["throughplane", "{src}", "{out}/iso.nii.gz", "--steps", "1"], "iso.nii.gz"),
        (["demo", "--out", "{out}", "--model", "zerofill"], "sample_sr.nii.gz"),
        (["upscale", "{src}", "{out}/sr.nii.gz", "--model", "zerofill"], "sr.nii.gz"),
    ],
)
def test_every_command_leaves_an_output_a_live_run_is_writing_alone(
    tmp_path, capsys, command, locked
):
    out = tmp_path / "out"
    out.mkdir()
    src = nifti(tmp_path / "a.nii.gz", (12, 12, 4))
    argv = [a.format(src=src, out=out) for a in command]
    with held(out / locked):
        before = snapshot(out)
        refused(
            capsys, argv, f"{locked}: being written by another mrsr run (pid 4242 on other-host)"
        )
        assert snapshot(out) == before  # nothing written, not even the other outputs


def test_each_input_header_is_read_once_by_the_runner(tmp_path, capsys, monkeypatch):
    """The runner reads each header once and passes it on (the reader's own check aside), and
    the voxels are read once, also when the model is chosen from the volume's grid
    (--voxel-size without --model)."""
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a", "b"):
        nifti(src / f"{name}.nii.gz", (12, 12, 3))
    headers, reads = Counter(), Counter()

    def counted(counter, function):
        def call(x, *args, **kwargs):
            if isinstance(x, (str, os.PathLike)):
                counter[os.path.basename(x)] += 1
            return function(x, *args, **kwargs)

        return call

    inspect = counted(headers, mrsr.io.inspect_volume)
    for module in (mrsr.io, mrsr.batch, mrsr.pipeline):
        monkeypatch.setattr(module, "inspect_volume", inspect)
    monkeypatch.setattr(mrsr.io, "load_volume", counted(reads, mrsr.io.load_volume))
    monkeypatch.setattr(mrsr.pipeline, "as_volume", counted(reads, mrsr.io.as_volume))
    from mrsr.cli import main

    assert main(["upscale", str(src), str(dst), "--model", "zerofill", "-q"]) == 0
    assert headers == reads == {"a.nii.gz": 1, "b.nii.gz": 1}
    headers.clear(), reads.clear()
    argv = ["upscale", str(src / "a.nii.gz"), str(tmp_path / "a.nii.gz"), "--voxel-size", "0.5"]
    assert main([*argv, "0.5", "1", "-q"]) == 0
    assert headers == reads == {"a.nii.gz": 1}


def _steps(tmp_path, fail: str) -> Steps:
    def make(job):
        if job.path.name == fail:
            raise MRSRError(f"{job.path.name}: cannot be made")
        return [(job.data, {"operation": "copy"})]

    return Steps(lambda job: load_volume(job.path), make)


def test_a_failed_job_releases_its_locks_and_the_next_job_is_written(tmp_path):
    names = ("a", "b", "c")
    jobs = [Job(nifti(tmp_path / f"{n}.nii.gz"), (tmp_path / f"{n}_out.nii.gz",)) for n in names]
    batch = Batch(_steps(tmp_path, "b.nii.gz"))
    plan = plan_outputs([(job.source, job.outputs[0]) for job in jobs])
    outcomes = dict(batch.each(jobs, plan))
    assert outcomes[0] == tmp_path / "a_out.nii.gz" and outcomes[2] == tmp_path / "c_out.nii.gz"
    assert str(outcomes[1]) == "b.nii.gz: cannot be made"
    assert sorted(p for p in os.listdir(tmp_path) if "out" in p) == [
        "a_out.json",
        "a_out.nii.gz",
        "c_out.json",
        "c_out.nii.gz",
    ]
    with held(tmp_path / "c_out.nii.gz"):
        busy = Batch(_steps(tmp_path, ""), overwrite=True).each(jobs[2:], overlap=False)
        assert isinstance(next(busy)[1], OutputBusy)


def test_a_job_writes_each_of_its_outputs_with_its_record_and_plans_them_all(tmp_path):
    src = nifti(tmp_path / "a.nii.gz")
    outputs = (tmp_path / "one.nii.gz", tmp_path / "two.nii.gz")

    def make(job):
        return [(job.data, {"operation": "first"}), (job.data * 2, {"operation": "second"})]

    Batch(Steps(lambda job: load_volume(job.path), make)).one(Job(src, outputs))
    first, second = (load_volume(p).as_tensor() for p in outputs)
    np.testing.assert_array_equal(second.numpy(), 2 * first.numpy())
    operations = [
        json.loads(p.read_text())["mrsr"]["operation"]
        for p in (tmp_path / "one.json", tmp_path / "two.json")
    ]
    assert operations == ["first", "second"]
    with pytest.raises(MRSRError, match="one.nii.gz: already exists"):
        Batch(Steps(lambda job: load_volume(job.path), make)).one(Job(src, outputs))


def test_throughplane_records_its_settings_under_the_keys_upscale_uses(tmp_path):
    """The through-plane step's steps, time cap, seed, thickness and profile have one set of
    keys (:func:`mrsr.provenance.through_plane_settings` and the facts of
    :func:`mrsr.throughplane.super_resolve_through_plane`), whichever command ran it."""
    from mrsr.cli import main

    src = nifti(tmp_path / "thick.nii.gz", (12, 12, 4), affine=np.diag([1.0, 1.0, 3.0, 1.0]))
    args = ["--max-time", "500", "--steps", "1", "--seed", "3", "--slice-thickness", "2", "-q"]
    assert main(["throughplane", str(src), str(tmp_path / "iso.nii.gz"), *args]) == 0
    record = json.loads((tmp_path / "iso.json").read_text())["mrsr"]
    assert record["through_plane_max_time_s"] == 500.0 and record["through_plane_steps"] == 1
    assert record["through_plane_seed"] == 3 and record["slice_thickness_mm"] == 2.0
    assert record["slice_profile"] == "box"
    assert not {"max_time_s", "steps", "seed"} & set(record)
