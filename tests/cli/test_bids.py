"""`mrsr bids`: a BIDS App whose participant level writes a derivatives dataset that the official
BIDS validator accepts, resumable and shared among ranks like `mrsr upscale` on a folder."""

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_affine, phantom

from mrsr.cli import main
from mrsr.derivatives import Source, derived_metadata, derived_name, same_axes
from mrsr.html_report import INPUT

FAST = ["--model", "zerofill", "--scale", "2", "--device", "cpu"]
# the raw images of the dataset below, and the derivatives each should give
IMAGES = {
    "sub-01/anat/sub-01_T1w.nii.gz": "sub-01/anat/sub-01_res-x2_T1w.nii.gz",
    "sub-01/anat/sub-01_acq-fast_run-1_T2w.nii.gz": (
        "sub-01/anat/sub-01_acq-fast_run-1_res-x2_T2w.nii.gz"
    ),
    "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii": "sub-02/ses-1/anat/sub-02_ses-1_res-x2_T1w.nii",
    "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz": "sub-02/ses-1/anat/sub-02_ses-1_res-x2_T2w.nii.gz",
}
NOT_PROCESSED = (
    "sub-01/anat/sub-01_part-phase_T1w.nii.gz",  # a phase image is no magnitude image
    "sub-01/anat/sub-01_T1map.nii.gz",  # not among the default suffixes
    "sub-01/func/sub-01_task-rest_bold.nii.gz",  # not anatomical
)


def _json(path, content):
    path.write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture
def dataset(tmp_path):
    """A small raw BIDS dataset: two participants, the second with a session; T1w metadata
    partly inherited from the dataset's top-level T1w.json."""
    root = tmp_path / "raw"
    root.mkdir()
    _json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.9.0"})
    (root / "README").write_text("A tiny dataset for mrsr's tests.\n")
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    _json(root / "T1w.json", {"MagneticFieldStrength": 3})  # inherited by every T1w
    for k, name in enumerate([*IMAGES, *NOT_PROCESSED]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(phantom((12, 10, 3), seed=k), make_affine("ras", (2, 2, 4)))
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, str(path))
        sidecar = {"RepetitionTime": 2.0 + k, "ReconMatrixPE": 10, "PhaseEncodingDirection": "j"}
        _json(path.parent / (name.split("/")[-1].split(".")[0] + ".json"), sidecar)
    return root


def _run(*args) -> int:
    return main(["bids", *map(str, args)])


def _outputs(folder):
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name.endswith((".nii", ".nii.gz"))
    )


@pytest.mark.slow
def test_participant_level_writes_a_derivatives_dataset(dataset, tmp_path, capsys):
    out = tmp_path / "derivatives"
    assert _run(dataset, out, "participant", *FAST) == 0
    assert _outputs(out) == sorted(IMAGES.values())

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    [generated] = description["GeneratedBy"]
    assert generated["Name"] == "mrsr" and generated["Version"]
    assert generated["Description"].startswith(f"mrsr bids {dataset} {out} participant")
    assert description["DatasetLinks"]["raw"] == dataset.resolve().as_uri()
    assert description["SourceDatasets"] == [{"URL": dataset.resolve().as_uri()}]

    for source, derived in IMAGES.items():
        sidecar = json.loads((out / derived).with_name(_stem(derived) + ".json").read_text())
        assert sidecar["Sources"] == [f"bids:raw:{source}"]
        assert set(sidecar["Resolution"]) == {"x2"}
        assert sidecar["RepetitionTime"] == 2.0 + list(IMAGES).index(source)  # its own
        assert sidecar["PhaseEncodingDirection"] == "j"  # the voxel axes are the source's
        assert "ReconMatrixPE" not in sidecar  # the matrix is no longer the source's
        assert sidecar["mrsr"]["source_metadata_left_out"] == ["ReconMatrixPE"]
        assert sidecar["SkullStripped"] is False
        assert sidecar.get("MagneticFieldStrength") == (3 if "_T1w." in source else None)
        assert sidecar["mrsr"]["model"] == "zerofill" and sidecar["mrsr"]["scale"] == 2
        sr = nib.load(str(out / derived))
        assert sr.shape == (24, 20, 3)
        np.testing.assert_allclose(sr.header.get_zooms(), (1, 1, 4))

    # the volumes are exactly those of `mrsr upscale` on the same file
    plain = tmp_path / "plain.nii.gz"
    source, derived = next(iter(IMAGES.items()))
    assert main(["upscale", str(dataset / source), str(plain), *FAST]) == 0
    np.testing.assert_array_equal(
        nib.load(str(plain)).get_fdata(), nib.load(str(out / derived)).get_fdata()
    )
    np.testing.assert_array_equal(nib.load(str(plain)).affine, nib.load(str(out / derived)).affine)
    capsys.readouterr()

    # a rerun finds everything done and leaves it alone
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert _run(dataset, out, "participant", *FAST) == 0
    assert "skipping 4 finished outputs" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before

    # the group level: one page over the derivatives, each output beside its input
    assert _run(dataset, out, "group") == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    for source, derived in IMAGES.items():
        assert _stem(derived) in page and f"bids:raw:{source}" in page
    assert page.count(INPUT) >= len(IMAGES)
    assert "report.html" in (out / ".bidsignore").read_text().splitlines()
    _validate(out)


def _stem(name: str) -> str:
    return name.split("/")[-1].split(".")[0]


def _validate(folder) -> None:
    """The official BIDS validator finds no error in ``folder``."""
    validator = shutil.which("bids-validator-deno")
    if validator is None:
        pytest.skip("bids-validator-deno is not installed (pip install -e '.[test]')")
    run = subprocess.run(
        [validator, str(folder), "--format", "json"], capture_output=True, text=True, timeout=300
    )
    try:
        issues = json.loads(run.stdout)["issues"]["issues"]
    except (ValueError, KeyError):
        pytest.skip(f"bids-validator-deno cannot run here: {run.stderr.strip()[-300:]}")
    errors = [
        (i["code"], i.get("subCode"), i.get("location")) for i in issues if i["severity"] == "error"
    ]
    assert errors == [] and run.returncode == 0


def test_participant_labels_choose_whom(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # folders given relative, as typed in a shell
    args = ["--participant-label", "sub-02", "--suffix", "T1w", *FAST]
    assert _run("raw", "d", "participant", *args) == 0
    derived = "sub-02/ses-1/anat/sub-02_ses-1_res-x2_T1w.nii"
    assert _outputs(tmp_path / "d") == [derived]
    sidecar = json.loads((tmp_path / "d" / derived).with_suffix(".json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-02/ses-1/anat/sub-02_ses-1_T1w.nii"]
    description = json.loads((tmp_path / "d" / "dataset_description.json").read_text())
    assert description["DatasetLinks"]["raw"] == dataset.resolve().as_uri()


def test_session_label_and_ranks_share_the_images(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "d"
    assert _run(dataset, out, "participant", "--session-label", "1", *FAST) == 0
    # sub-02's session 1 holds two images: the second rank makes the second of them
    assert _outputs(out) == ["sub-02/ses-1/anat/sub-02_ses-1_res-x2_T2w.nii.gz"]


def test_the_group_level_needs_the_participant_level_first(dataset, tmp_path, capsys):
    assert _run(dataset, tmp_path / "empty", "group") == 2
    assert "not a derivatives dataset of mrsr" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()


def test_a_folder_that_is_not_bids_is_refused(tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    nib.save(nib.Nifti1Image(phantom((8, 8, 2)), np.eye(4)), str(folder / "sub-01_T1w.nii.gz"))
    assert _run(folder, tmp_path / "out", "participant", *FAST) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "not a BIDS dataset (no dataset_description.json)" in line and str(folder) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--participant-label", "03"], "no participant 03 (it has 01, 02)"),
        (["--suffix", "t1w"], "--suffix t1w: not an anatomical BIDS suffix"),
        (["--session-label", "9"], "no T1w/T2w/PDw/T2starw/FLAIR images in ses-9"),
    ],
)
def test_a_selection_of_nothing_is_refused(dataset, tmp_path, capsys, options, expected):
    assert _run(dataset, tmp_path / "out", "participant", *options, *FAST) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_outputs_inside_the_dataset_go_under_derivatives(dataset, capsys):
    assert _run(dataset, dataset / "sr", "participant", *FAST) == 2
    assert "not under its derivatives/ folder" in capsys.readouterr().err
    assert _run(dataset, dataset, "participant", *FAST) == 2
    assert "is the BIDS dataset" in capsys.readouterr().err
    out = dataset / "derivatives" / "mrsr"
    args = ["--participant-label", "01", "--suffix", "T1w", *FAST]
    for _ in range(2):  # the second run does not take the derivatives for raw images
        assert _run(dataset, out, "participant", *args) == 0
    assert _outputs(out) == ["sub-01/anat/sub-01_res-x2_T1w.nii.gz"]
    assert "skipping 1 finished outputs" in capsys.readouterr().err
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"] == {"raw": "../.."}  # they move together


def test_a_finished_output_of_other_options_is_not_taken_as_done(dataset, tmp_path, capsys):
    out = tmp_path / "d"
    args = ["--participant-label", "02", "--suffix", "T2w", *FAST]
    assert _run(dataset, out, "participant", *args) == 0
    sidecar = out / "sub-02/ses-1/anat/sub-02_ses-1_res-x2_T2w.json"
    content = json.loads(sidecar.read_text())
    content["Resolution"] = {"x2": "something else"}
    sidecar.write_text(json.dumps(content))
    capsys.readouterr()
    assert _run(dataset, out, "participant", *args) == 2
    assert "made with other options" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sub-01_T1w.nii.gz", "sub-01_res-1mm_T1w.nii.gz"),
        (
            "sub-01_ses-a_acq-b_ce-c_rec-d_run-2_echo-1_part-mag_chunk-3_FLAIR.nii",
            "sub-01_ses-a_acq-b_ce-c_rec-d_run-2_echo-1_part-mag_chunk-3_res-1mm_FLAIR.nii",
        ),
        (
            "sub-01_space-orig_desc-brain_T1w.nii.gz",
            "sub-01_space-orig_res-1mm_desc-brain_T1w.nii.gz",
        ),
    ],
)
def test_the_res_entity_takes_its_place_among_every_entity(name, expected):
    assert derived_name(name, "1mm") == expected


@pytest.mark.parametrize("name", ["T1w.nii.gz", "sub-01_my_T1w.nii.gz", "sub-01_res-2_T1w.nii"])
def test_names_that_are_not_raw_bids_are_refused(name):
    with pytest.raises(ValueError, match="not a BIDS file name|res- entity already"):
        derived_name(name, "x2")


def test_the_sidecar_keeps_what_stays_true_of_the_source():
    metadata = {"EchoTime": 0.003, "ReconMatrixPE": 256, "PhaseEncodingDirection": "j"}
    metadata |= {"SkullStripped": True, "Description": "raw T1", "Sources": ["elsewhere"]}
    source = Source(Path("x.nii.gz"), "sub-01/anat/sub-01_T1w.nii.gz", metadata)
    keys, left_out = derived_metadata(source, "1mm", "1 mm voxels", same_axes=False)
    assert keys == {
        "EchoTime": 0.003,
        "SkullStripped": True,
        "Sources": ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"],
        "Resolution": {"1mm": "1 mm voxels"},
    }
    assert left_out == ["PhaseEncodingDirection", "ReconMatrixPE"]
    keys, left_out = derived_metadata(source, "1mm", "1 mm voxels", same_axes=True)
    assert keys["PhaseEncodingDirection"] == "j" and left_out == ["ReconMatrixPE"]


@pytest.mark.parametrize(("kind", "same"), [("ras", True), ("lps", False), ("permuted", False)])
def test_voxel_axes_are_compared_by_direction_not_size(kind, same):
    assert same_axes(make_affine("ras", (1, 1, 4)), make_affine(kind, (0.5, 0.5, 1))) is same
