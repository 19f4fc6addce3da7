"""The Python API and the options at its boundary: right or refused.

Every misuse of a public entry point raises :class:`mrsr.errors.MRSRError` (a ``ValueError``) with
one line naming the argument; options given explicitly are never silently overridden; label
maps are refused wherever a volume would be super-resolved or degraded.
"""

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import phantom
from test_hostile import refused

from mrsr import Pipeline
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.io import load_volume, save_volume
from mrsr.metrics import nrmse, psnr, ssim

# ---------------------------------------------------------------- the error type


def test_user_errors_are_value_errors_and_bugs_stay_unexpected(tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match="batch_size must be"):  # old `except ValueError` code
        Pipeline("zerofill", batch_size=0)
    src = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(phantom((8, 8, 2)), np.eye(4)), str(src))
    from mrsr.inference import SliceInferer

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(SliceInferer, "__call__", bug)
    argv = ["upscale", src, tmp_path / "o.nii.gz", "--model", "zerofill"]
    refused(capsys, argv, "unexpected ValueError: a bug (rerun with --debug")

    def user_error(*args, **kwargs):
        raise MRSRError("a.nii.gz: something the user can fix")

    monkeypatch.setattr(SliceInferer, "__call__", user_error)
    line = refused(capsys, argv, "a.nii.gz: something the user can fix")
    assert "unexpected" not in line


# ---------------------------------------------------------------- validation at the boundary

AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])
ZEROFILL = Pipeline("zerofill")


@pytest.fixture
def files(tmp_path):
    """An input volume, a reference on another grid, and an output path."""
    src, other = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(phantom((12, 12, 3)), AFFINE), str(src))
    nib.save(nib.Nifti1Image(phantom((10, 10, 3)), AFFINE), str(other))
    return {"src": src, "other": other, "out": tmp_path / "o.nii.gz"}


def volume(shape=(12, 12, 3), dtype=np.float32):
    return phantom(shape).astype(dtype)


MISUSES = {
    # the volume: Pipeline.__call__, save, plan, evaluate, like=
    "complex array": (lambda f: ZEROFILL(volume().astype(np.complex64), AFFINE), "np.abs(x)"),
    "3x3 affine": (lambda f: ZEROFILL(volume(), np.eye(3)), "affine must be a 4x4"),
    "singular affine": (lambda f: ZEROFILL(volume(), np.diag([1.0, 0, 1, 1])), "affine is sing"),
    "NaN affine": (lambda f: ZEROFILL(volume(), np.full((4, 4), np.nan)), "affine holds NaN"),
    "None": (lambda f: ZEROFILL(None), "x must be a path"),
    "bytes path": (lambda f: ZEROFILL(bytes(f["src"])), "os.fsdecode"),
    "empty array": (lambda f: ZEROFILL(np.zeros((0, 12, 3)), AFFINE), "x is empty"),
    "0-D array": (lambda f: ZEROFILL(np.array(1.0), AFFINE), "x has shape ()"),
    "1-D array": (lambda f: ZEROFILL(np.ones(12), AFFINE), "x has shape (12,)"),
    "5-D array": (lambda f: ZEROFILL(np.ones((4, 4, 2, 2, 2)), AFFINE), "x has shape"),
    "object array": (lambda f: ZEROFILL(volume().astype(object), AFFINE), "x holds object"),
    "bool array": (lambda f: ZEROFILL(volume() > 50, AFFINE), "x is boolean"),
    "meta tensor": (
        lambda f: ZEROFILL(torch.ones(12, 12, 3, device="meta"), AFFINE),
        "x is on the meta device",
    ),
    "list": (lambda f: ZEROFILL([[1.0, 2.0]], AFFINE), "x must be a path"),
    "array without affine": (lambda f: ZEROFILL(volume()), "x is a bare array"),
    "path with affine": (lambda f: ZEROFILL(f["src"], AFFINE), "affine is only for"),
    "voxel size text": (lambda f: ZEROFILL(f["src"], voxel_size="1"), "--voxel-size must be"),
    "two voxel sizes": (lambda f: ZEROFILL(f["src"], voxel_size=[1, 1]), "--voxel-size needs"),
    "like an array": (lambda f: ZEROFILL(f["src"], like=volume()), "like is a bare array"),
    "plan of None": (lambda f: ZEROFILL.plan(None, voxel_size=1), "volume must be a path"),
    # options of Pipeline and from_pretrained, the same table as the command line's
    "negative batch size": (lambda f: Pipeline("zerofill", batch_size=-1), "batch_size must"),
    "unknown device": (lambda f: Pipeline("zerofill", device="tpu"), "device must be"),
    "device number": (lambda f: Pipeline("zerofill", device=0), "device must be"),
    "precision": (lambda f: Pipeline("zerofill", precision="fp16"), "precision must be"),
    "scale 0": (lambda f: Pipeline("zerofill", 0), "scale must be"),
    "scale 1.5": (lambda f: Pipeline("zerofill", 1.5), "scale must be"),
    "scale text": (lambda f: Pipeline("zerofill", "2"), "scale must be"),
    "axis out of range": (lambda f: Pipeline("zerofill", axis=3), "axis must be"),
    "tta text": (lambda f: Pipeline("zerofill", tta="yes"), "tta must be"),
    "nonnegative number": (lambda f: Pipeline("zerofill", nonnegative=0), "nonnegative must"),
    "data consistency 2": (lambda f: Pipeline("zerofill", data_consistency=2), "data_consistency"),
    "steps text": (lambda f: Pipeline("zerofill", through_plane_steps="2"), "through_plane_s"),
    "max time 0": (lambda f: Pipeline("zerofill", through_plane_max_time=0), "through_plane_m"),
    "profile": (lambda f: Pipeline("zerofill", slice_profile="sinc"), "slice_profile must"),
    "degradation": (lambda f: Pipeline("zerofill", degradation="blur"), "degradation must"),
    "unknown network": (lambda f: Pipeline(network="nope"), "network must be"),
    "shipped model as network": (lambda f: Pipeline("cssfn-kspace-x2"), "from_pretrained"),
    "misspelt option": (lambda f: Pipeline("zerofill", batchsize=4), "'batchsize' is not"),
    "network size": (lambda f: Pipeline("cssfn", channels=0), "channels must be"),
    "from_pretrained(None)": (lambda f: Pipeline.from_pretrained(None), "name_or_path must"),
    "from_pretrained(123)": (lambda f: Pipeline.from_pretrained(123), "name_or_path must"),
    "pretrained other scale": (
        lambda f: Pipeline.from_pretrained("cssfn-kspace-x2", scale=3),
        "a x2 model, but --scale 3",
    ),
    "pretrained options": (
        lambda f: Pipeline.from_pretrained("cssfn-kspace-x2", batch_size=0),
        "batch_size must",
    ),
    "pretrained network options": (
        lambda f: Pipeline.from_pretrained("cssfn-kspace-x2", channels=4),
        "channels: network options",
    ),
    # outputs
    "save to None": (lambda f: ZEROFILL.save(f["src"], None), "path must be a str"),
    "save to a number": (lambda f: ZEROFILL.save(f["src"], 123), "path must be a str"),
    "save to bytes": (lambda f: ZEROFILL.save(f["src"], bytes(f["out"])), "os.fsdecode"),
    "save overwrite text": (
        lambda f: ZEROFILL.save(f["src"], f["out"], overwrite="no"),
        "overwrite must be",
    ),
    "save_all lists": (lambda f: ZEROFILL.save_all([f["src"]], [f["out"]]), "jobs[0] must"),
    "save_all unpaired": (lambda f: ZEROFILL.save_all([(f["src"],)]), "jobs[0] must"),
    "save_all one path": (lambda f: ZEROFILL.save_all(str(f["src"])), "jobs must be"),
    "fit output_dir": (lambda f: ZEROFILL.fit(str(f["src"]), output_dir=None), "output_dir"),
    # evaluate
    "evaluate other grid": (lambda f: ZEROFILL.evaluate(f["src"], f["other"]), "differs"),
    "evaluate bare ref": (lambda f: ZEROFILL.evaluate(f["src"], volume()), "ref is a bare"),
    "evaluate shave": (lambda f: ZEROFILL.evaluate(f["src"], f["src"], shave=-1), "shave must"),
    "evaluate mask type": (lambda f: ZEROFILL.evaluate(f["src"], f["src"], mask=5), "mask must"),
    # mrsr.io and mrsr.metrics
    "load None": (lambda f: load_volume(None), "path must be a str"),
    "save_volume no affine": (lambda f: save_volume(volume(), f["out"]), "affine is needed"),
    "save_volume dtype": (
        lambda f: save_volume(volume(), f["out"], AFFINE, dtype="int"),
        "dtype must be",
    ),
    "save_volume complex": (
        lambda f: save_volume(volume().astype(np.complex64), f["out"], AFFINE),
        "volume holds complex",
    ),
    "psnr complex": (lambda f: psnr(volume().astype(np.complex64), volume()), "pred holds"),
    "psnr shapes": (lambda f: psnr(volume(), volume((10, 12, 3))), "pred and ref shapes"),
    "psnr data range": (lambda f: psnr(volume(), volume(), data_range=-1.0), "data_range must"),
    "ssim axis": (lambda f: ssim(volume(), volume(), axis=3), "axis must be"),
    "nrmse shave": (lambda f: nrmse(volume(), volume(), shave=-1), "shave must be"),
    "nrmse mask": (lambda f: nrmse(volume(), volume(), mask=np.ones((2, 2))), "mask shape"),
}


@pytest.mark.parametrize("case", MISUSES)
def test_misuse_of_the_api_is_refused_naming_the_argument(files, case):
    misuse, words = MISUSES[case]
    with pytest.raises(MRSRError) as error:
        misuse(files)
    assert isinstance(error.value, ValueError)
    text = str(error.value)
    assert words in text and "\n" not in text, text
    assert not files["out"].exists()


def test_accepted_inputs_need_no_conversion_by_the_user(files):
    """What the boundary takes instead of refusing: NumPy numbers for options, a tensor that
    requires grad (detached), big-endian and flipped arrays, integer arrays (their type kept
    for dtype='input'), a nibabel image, a path-like."""
    expected = ZEROFILL(files["src"])
    data = nib.load(str(files["src"])).get_fdata(dtype=np.float32)
    tensor = torch.from_numpy(data).requires_grad_()
    np.testing.assert_allclose(ZEROFILL(tensor, AFFINE).numpy(), expected.numpy(), rtol=1e-6)
    assert tensor.grad is None and tensor.requires_grad
    flipped = np.ascontiguousarray(data[::-1])[::-1].astype(">f4")
    np.testing.assert_allclose(ZEROFILL(flipped, AFFINE).numpy(), expected.numpy(), rtol=1e-6)
    image = nib.Nifti1Image(data, AFFINE)
    np.testing.assert_allclose(ZEROFILL(image).numpy(), expected.numpy(), rtol=1e-6)
    pipe = Pipeline("zerofill", np.int64(2), batch_size=np.int32(4), tta=np.bool_(False))
    assert pipe.settings.batch_size == 4 and pipe.scale == 2
    integers = np.round(data * 10).astype(np.int16)
    out = pipe.save(integers, str(files["out"]), AFFINE, dtype="input")
    assert nib.load(str(out)).get_data_dtype() == np.int16
    assert ZEROFILL.save_all([(files["src"], files["out"].with_name("p.nii.gz"))])[0].is_file()


# ---------------------------------------------------------------- options given explicitly


def fine_scan(tmp_path):
    """A 0.5 x 0.5 x 2 mm scan."""
    src = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(phantom((24, 24, 3)), np.diag([0.5, 0.5, 2.0, 1.0])), str(src))
    return src


def test_a_scale_the_target_grid_does_not_need_is_refused_not_ignored(tmp_path, capsys):
    src, out = fine_scan(tmp_path), tmp_path / "o.nii.gz"
    line = refused(
        capsys,
        ["upscale", src, out, "--scale", "3", "--voxel-size", "1", "-q"],
        "--scale 3 and --voxel-size 1 1 1 disagree",
    )
    assert "x0.50 in-plane" in line and "needs no network" in line
    argv = ["upscale", src, out, "--model", "zerofill", "--scale", "3", "--like", src]
    refused(capsys, argv, f"--scale 3 and --like {src} disagree")
    argv = ["upscale", src, out, "--model", "zerofill", "--scale", "4", "--voxel-size", "0.25"]
    refused(capsys, [*argv, "0.25", "2"], "needs the network at x2, not the network at x4")
    assert not out.exists()
    with pytest.raises(MRSRError, match="--scale 3 and --voxel-size 1 1 2 disagree"):
        Pipeline("zerofill", 3)(src, voxel_size=(1, 1, 2))
    with pytest.raises(MRSRError, match="--scale 3 and --voxel-size"):
        Pipeline.from_pretrained("cssfn-kspace-x3", scale=3)(src, voxel_size=(1, 1, 2))
    # agreeing, or left to the grid: done
    argv = ["upscale", src, out, "--model", "zerofill", "--scale", "2", "-q"]
    assert main([*map(str, argv), "--voxel-size", "0.25", "0.25", "2"]) == 0
    assert nib.load(str(out)).shape == (48, 48, 3)
    assert Pipeline("zerofill")(src, voxel_size=(1, 1, 2)).shape == (1, 12, 12, 3)
    assert Pipeline.from_pretrained("cssfn-kspace-x3")(src, voxel_size=(1, 1, 2)).shape[1] == 12


@pytest.mark.parametrize(
    "flags",
    [["--slice-thickness", "3"], ["--profile", "gaussian"], ["--through-plane-steps", "5"]],
)
def test_through_plane_options_without_a_target_grid_are_refused(tmp_path, capsys, flags):
    src, out = fine_scan(tmp_path), tmp_path / "o.nii.gz"
    argv = ["upscale", src, out, "--model", "zerofill", *flags]
    refused(capsys, argv, f"{flags[0]}: only used with --voxel-size or --like")
    assert not out.exists()


# ---------------------------------------------------------------- label maps


def segmentation(shape=(24, 24, 4)) -> np.ndarray:
    seg = np.zeros(shape, np.int16)
    seg[4:16, 4:16] = 1
    seg[8:12, 6:22] = 2
    seg[18:22, 2:10] = 3
    return seg


def save(path, data, affine=AFFINE, intent=None):
    image = nib.Nifti1Image(data, affine)
    if intent is not None:
        image.header.set_intent(intent)
    nib.save(image, str(path))
    return path


@pytest.mark.parametrize("command", ["upscale", "folder", "degrade", "throughplane", "baselines"])
def test_label_maps_are_refused_by_every_command_that_resamples(tmp_path, capsys, command):
    seg = save(tmp_path / "seg.nii.gz", segmentation())
    out = tmp_path / "o.nii.gz"
    argv = {
        "upscale": ["upscale", seg, out, "--model", "zerofill"],
        "degrade": ["degrade", seg, out, "--scale", "2"],
        "throughplane": ["throughplane", seg, out, "--steps", "1"],
        "baselines": ["evaluate", "--baselines", "--ref", seg, "--model", "zerofill", "-q"],
    }
    if command == "folder":
        folder = tmp_path / "in"
        folder.mkdir()
        seg.rename(folder / "seg.nii.gz")
        save(folder / "t1.nii.gz", phantom((24, 24, 4)))
        assert main(["upscale", str(folder), str(tmp_path / "out"), "--model", "zerofill"]) == 2
        err = capsys.readouterr().err
        assert "seg.nii.gz: a label map (int16 data with only 4 distinct values)" in err
        assert "1 of 2 volumes not done (1 failed: seg.nii.gz)" in err
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t1.json", "t1.nii.gz"]
        return
    line = refused(capsys, argv[command], "seg.nii.gz: a label map (int16 data with only 4")
    assert "nearest neighbour" in line and "mri_convert -rt nearest" in line
    assert not out.exists()


def test_label_maps_are_refused_in_python_and_read_where_they_belong(tmp_path, capsys):
    from mrsr.throughplane import super_resolve_through_plane
    from mrsr.transforms import degrade

    seg = segmentation()
    with pytest.raises(MRSRError, match="x: a label map"):
        ZEROFILL(seg, AFFINE)
    labelled = nib.Nifti1Image(seg.astype(np.float32), AFFINE)
    labelled.header.set_intent("label")
    with pytest.raises(MRSRError, match=r"NIFTI_INTENT_LABEL \(1002\)"):
        ZEROFILL(labelled)
    named = save(tmp_path / "names.nii.gz", seg.astype(np.float32), intent="neuroname")
    with pytest.raises(MRSRError, match="names.nii.gz: a label map"):
        ZEROFILL.save(named, tmp_path / "o.nii.gz")
    with pytest.raises(MRSRError, match="a label map"):
        super_resolve_through_plane(named, steps=1)
    with pytest.raises(MRSRError, match="a label map"):
        degrade(load_volume(named), 2)
    assert not (tmp_path / "o.nii.gz").exists()
    # a mask file is a label map, and that is what evaluate --mask reads
    image = save(tmp_path / "t1.nii.gz", phantom((24, 24, 4)))
    mask = save(tmp_path / "mask.nii.gz", (segmentation() > 0).astype(np.uint8))
    assert main(["evaluate", "--pred", str(image), "--ref", str(image), "--mask", str(mask)]) == 0
    assert "t1: t1 inf dB" in capsys.readouterr().err


def test_the_label_rule_passes_real_mr_stored_as_integers():
    from monai.data import MetaTensor

    from mrsr.io import sample_path
    from mrsr.labels import label_map_reason

    sample = load_volume(sample_path())  # uint8, 181 distinct values
    assert sample.meta["source_dtype"] == "uint8" and label_map_reason(sample) is None
    data = sample.as_tensor()
    for dtype, levels in (("int16", 4000), ("uint8", 255), ("uint8", 16 + 1)):
        quantised = torch.round(data / data.max() * (levels - 1))
        cast = MetaTensor(quantised, meta={"source_dtype": dtype})
        assert label_map_reason(cast) is None, (dtype, levels)
    many = torch.zeros(1, 96, 96, 8)  # a parcellation: 144 labels in regions
    for k in range(144):
        x, y = divmod(k, 12)
        many[0, 8 * x : 8 * x + 8, 8 * y : 8 * y + 8, : 2 + k % 6] = k + 1
    reason = label_map_reason(MetaTensor(many, meta={"source_dtype": "int32"}))
    assert reason is not None and "145 distinct values, piecewise constant" in reason
