"""The config that trains (or fine-tunes) a given network: ``mrsr.training.model_config``, which
``Pipeline.fit`` runs."""

from pathlib import Path

import pytest

from mrsr import Pipeline
from mrsr.checkpoint import ModelSpec
from mrsr.errors import MRSRError
from mrsr.training import DEFAULTS, model_config


def test_model_config_trains_the_spec_s_network_from_its_initial_weights(tmp_path):
    spec = ModelSpec.create("cssfn", 3, "bicubic", {"channels": 8, "n_blocks": 1})
    weights = tmp_path / "w.safetensors"
    cfg = model_config(spec, "vols", output_dir=tmp_path / "o", init=weights)
    assert cfg["model"] == {"name": "cssfn", **spec.options} and cfg["model"]["channels"] == 8
    assert cfg["degradation"] == {**DEFAULTS["degradation"], "method": "bicubic", "scale": 3}
    assert cfg["train"] == {**DEFAULTS["train"], "init": str(weights)}
    assert cfg["data"]["train"] == [str(Path.cwd() / "vols")]
    assert cfg["output_dir"] == str(tmp_path / "o")


def test_model_config_s_train_options_override_the_initial_weights(tmp_path):
    spec = ModelSpec.create("cssfn", 2, "kspace", {})
    cfg = model_config(
        spec, "vols", init="a.safetensors", train_options={"init": None, "max_steps": 7}
    )
    assert cfg["train"]["init"] is None and cfg["train"]["max_steps"] == 7
    assert model_config(spec, "vols")["train"]["init"] is None  # from scratch


def test_fit_refuses_an_unknown_train_option_naming_it_before_any_folder(tmp_path):
    pipe = Pipeline("cssfn", 2, channels=8, n_blocks=1, n_units=1)
    with pytest.raises(MRSRError, match=r"Pipeline\.fit: config key 'train\.lrr' is unknown"):
        pipe.fit(str(tmp_path), output_dir=tmp_path / "run", lrr=1)
    assert not (tmp_path / "run").exists()
