"""The model zoo: the shipped models' names, files, cards and defaults in one table."""

import os

import pytest
from test_hostile import refused

from mrsr.checkpoint import load_checkpoint
from mrsr.errors import MRSRError
from mrsr.zoo import MODELS, WEIGHTS, covering, default, find, shipped, weights_path


def test_the_zoo_lists_exactly_the_files_in_the_weights_folder():
    files = {path.name for m in MODELS for path in (m.weights, m.card)}
    assert files == set(os.listdir(WEIGHTS))
    assert list(shipped()) == [m.name for m in MODELS]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_name_resolves_to_weights_that_are_what_the_zoo_says(model):
    assert weights_path(model.name) == model.weights and find(model.name) == model
    spec, _ = load_checkpoint(weights_path(model.name))
    assert (spec.network, spec.degradation, spec.scale) == (
        model.network,
        model.degradation,
        model.scale,
    )
    assert spec.info["card"] == model.card.name


def test_the_default_model_per_scale_and_degradation():
    assert default(2).name == "cssfn-kspace-x2"
    assert default(3, "kspace").name == "cssfn-kspace-x3"
    assert default(4, "kspace").name == "cssfn-kspace-x4"
    assert default(2, "bicubic").name == "cssfn-bicubic-x2"
    with pytest.raises(MRSRError, match=r"no default model ships for bicubic x3 yet; pass --model"):
        default(3, "bicubic")


def test_the_model_covering_a_scale_is_the_smallest_at_or_above_it_else_the_largest():
    assert [covering(s).name for s in (1, 2, 3, 4, 8)] == [
        "cssfn-kspace-x2",
        "cssfn-kspace-x2",
        "cssfn-kspace-x3",
        "cssfn-kspace-x4",
        "cssfn-kspace-x4",
    ]
    assert covering(3, "bicubic").name == "cssfn-bicubic-x2"


@pytest.mark.parametrize("lookup", [weights_path, find])
def test_an_unknown_name_is_refused_naming_the_known_ones(lookup):
    with pytest.raises(MRSRError, match="cssfn-kspace-x9") as caught:
        lookup("cssfn-kspace-x9")
    message = str(caught.value)
    assert "\n" not in message and all(m.name in message for m in MODELS)


def test_the_command_line_refuses_an_unknown_model_name(capsys, tmp_path):
    src = tmp_path / "in.nii.gz"
    src.touch()
    words = "cssfn-kspace-x9: not a checkpoint file, shipped model (cssfn-bicubic-x2"
    refused(capsys, ["upscale", src, tmp_path / "out.nii.gz", "--model", "cssfn-kspace-x9"], words)
