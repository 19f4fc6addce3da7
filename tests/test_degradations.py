"""The degradation and slice-profile registries drive every choice, default and dispatch."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import meta_volume, phantom
from safetensors.torch import save_file

from mrsr import Pipeline, evaluation
from mrsr.checkpoint import ModelSpec, load_checkpoint
from mrsr.cli import build_parser
from mrsr.degradations import DEGRADATIONS, Degradation, consistent_grids, degrade
from mrsr.errors import MRSRError
from mrsr.geometry import resampled_affine
from mrsr.options import OPTIONS
from mrsr.slice_profiles import PROFILES, Profile, SliceProfile
from mrsr.training.data import PatchPairs
from mrsr.transforms import BicubicDownsample, CropToMultiple, KSpaceTruncation

# a made-up degradation: bicubic's transform under another name, undone by linear interpolation
BLUR = Degradation("blur", BicubicDownsample, ("linear",), False, "a test degradation")


@pytest.fixture
def blur(monkeypatch):
    monkeypatch.setitem(DEGRADATIONS, "blur", BLUR)
    return BLUR


def parses(argv):
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize(
    "argv",
    [
        ["degrade", "in.nii.gz", "out.nii.gz", "--scale", "2", "--method", "blur"],
        ["evaluate", "--ref", "r.nii.gz", "--baselines", "--method", "blur"],
    ],
)
def test_a_registered_degradation_is_a_choice_of_the_command_line(blur, monkeypatch, capsys, argv):
    assert parses(argv)
    with pytest.raises(SystemExit):
        build_parser().parse_args([argv[0], "--help"])
    assert "blur (a test degradation)" in " ".join(capsys.readouterr().out.split())
    monkeypatch.delitem(DEGRADATIONS, "blur")
    assert not parses(argv)


@pytest.mark.parametrize("key", ["degradation", "degradation.method"])
def test_a_registered_degradation_is_in_the_options_table(blur, monkeypatch, key):
    assert OPTIONS[key].check("blur", key) == "blur"
    assert "blur" in OPTIONS[key].describe()
    monkeypatch.delitem(DEGRADATIONS, "bicubic")
    with pytest.raises(MRSRError, match=f"{key} must be one of kspace, blur, got 'bicubic'"):
        OPTIONS[key].check("bicubic", key)


def test_evaluation_baselines_are_nearest_and_the_entrys(blur):
    assert list(evaluation.baselines(2, "blur")) == ["nearest", "linear"]
    assert list(evaluation.baselines(2, "kspace")) == ["nearest", "bicubic", "zerofill"]
    assert list(evaluation.baselines(2, "bicubic")) == ["nearest", "bicubic"]


def test_a_checkpoint_of_a_registered_degradation_is_read_on_its_grid(blur, tmp_path):
    spec = ModelSpec.create("bicubic", 2, "blur")
    assert spec.grid == spec.options["grid"] == "area"
    path = tmp_path / "m.safetensors"
    save_file({}, str(path), metadata={"mrsr": json.dumps(dataclasses.asdict(spec))})
    assert load_checkpoint(path)[0].degradation == "blur"
    DEGRADATIONS.pop("blur")
    with pytest.raises(MRSRError, match=r"m.safetensors: metadata degradation must be one of"):
        load_checkpoint(path)


def test_data_consistency_applies_where_the_registry_says(monkeypatch):
    volume = meta_volume(phantom((8, 8, 2)), np.eye(4))
    Pipeline("zerofill", 2, data_consistency=1.0)(volume)  # k-space truncation: it applies
    with pytest.raises(MRSRError, match="data consistency needs"):
        Pipeline("bicubic", 2, degradation="bicubic", data_consistency=1.0)(volume)
    kspace = dataclasses.replace(DEGRADATIONS["kspace"], data_consistency=False)
    monkeypatch.setitem(DEGRADATIONS, "kspace", kspace)
    assert consistent_grids() == set()
    with pytest.raises(MRSRError, match="data consistency needs"):
        Pipeline("zerofill", 2, data_consistency=1.0)(volume)


def test_training_pairs_refuse_an_unknown_degradation():
    slab = torch.rand(3, 16, 16)
    with pytest.raises(MRSRError, match="degradation.method must be one of kspace, bicubic"):
        PatchPairs([slab], scale=2, patch_size=4, method="bicubc")


def test_training_pairs_use_the_entrys_transform(blur):
    pairs = PatchPairs([torch.rand(3, 16, 16)], scale=2, patch_size=4, method="blur")
    assert isinstance(pairs.degrade, BicubicDownsample)


@pytest.mark.parametrize("method,transform", [("kspace", KSpaceTruncation), ("bicubic", None)])
def test_degrade_is_the_entrys_transform_of_the_crop(method, transform):
    volume = meta_volume(phantom((13, 11, 3)), np.diag([0.9, 0.9, 3.0, 1.0]))
    lr, hr = degrade(volume, 3, method)
    crop = CropToMultiple(3, (0, 1))(volume)
    expected = (transform or BicubicDownsample)(3, (0, 1))(crop)
    assert torch.equal(hr.as_tensor(), crop.as_tensor())
    assert torch.equal(lr.as_tensor(), expected.as_tensor())
    grid = DEGRADATIONS[method].grid
    np.testing.assert_allclose(
        lr.affine.numpy(), resampled_affine(hr.affine.numpy(), [3, 3, 1], grid), atol=1e-12
    )


def test_an_unknown_degradation_is_refused_naming_the_choices():
    with pytest.raises(MRSRError, match=r"expected one of \('kspace', 'bicubic'\)"):
        degrade(meta_volume(phantom((8, 8, 2)), np.eye(4)), 2, "cubic")


def test_a_registered_slice_profile_is_a_choice_and_acquires(monkeypatch):
    def tent(lo, hi, c, thickness):
        return np.clip(1 - np.abs((lo + hi) / 2 - c) / thickness, 0.0, None)

    monkeypatch.setitem(PROFILES, "tent", Profile("tent", tent, "a test profile"))
    assert OPTIONS["profile"].check("tent", "--profile") == "tent"
    argv = ["throughplane", "in.nii.gz", "out.nii.gz", "--profile", "tent"]
    assert build_parser().parse_args(argv).profile == "tent"
    weights = SliceProfile(2.0, 2.0, "tent").acquisition(6, 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert weights[1, 2] == weights[1, 3] > weights[1, 1] > weights[1, 0] == 0  # centre 2.5
    monkeypatch.delitem(PROFILES, "tent")
    with pytest.raises(MRSRError, match="slice profile must be one of box, gaussian"):
        SliceProfile(2.0, 2.0, "tent")
