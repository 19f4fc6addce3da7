"""The default models that ship in mrsr/data/weights: loadable, described, better than zero-fill."""

from importlib import resources
from pathlib import Path

import pytest

from mrsr.evaluation import model_vs_baselines
from mrsr.pipeline import Pipeline
from mrsr.zoo import default, shipped

DATA = resources.files("mrsr") / "data"
# another subject's T1 slice (dipy) and a slice of another patient's clinical scan (pyradiomics)
HELDOUT = [Path(str(DATA / f"heldout_{n}.nii.gz")) for n in ("t1_coronal", "clinical_brain")]
SHIPPED = sorted(shipped())


def test_the_default_x2_model_ships():
    assert default(2).name in SHIPPED


@pytest.mark.parametrize("heldout", HELDOUT, ids=lambda p: p.name.split(".")[0])
@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.slow
def test_shipped_model_reproduces_its_card_and_beats_its_baseline_on_a_heldout_slice(name, heldout):
    pipe = Pipeline.from_pretrained(name, precision="fp32")
    model = shipped()[name]
    method = model.degradation
    assert pipe.spec.network == model.network and pipe.spec.degradation == method
    assert pipe.scale == model.scale and pipe.trained
    assert pipe.spec.grid == ("kspace" if method == "kspace" else "area")
    card = model.card
    assert card.is_file() and "Held-out volumes" in card.read_text(encoding="utf-8")
    assert "headline" in pipe.spec.info
    base = "zerofill" if method == "kspace" else "bicubic"
    scores = model_vs_baselines(pipe, heldout)
    recorded = pipe.spec.info["bundled"][heldout.name.split(".")[0]]  # written by package.py
    for method_name, got in scores.items():
        assert got["psnr"] == pytest.approx(recorded[method_name]["psnr"], abs=0.01)
        assert got["ssim"] == pytest.approx(recorded[method_name]["ssim"], abs=1e-4)
    for metric in ("psnr", "ssim"):
        assert scores["model"][metric] >= scores[base][metric], scores
