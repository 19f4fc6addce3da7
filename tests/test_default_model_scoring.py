"""pipelines/default_models/score.py: the default models' two protocols on folders of volumes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_affine, phantom

from mrsr.errors import MRSRError
from mrsr.evaluation import compare_methods, model_vs_baselines
from mrsr.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location(
    "default_model_score", ROOT / "pipelines" / "default_models" / "score.py"
)
score = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(score)


def untrained(**options) -> Pipeline:
    """A tiny CSSFN whose last convolution is zero: its output is its zero-filled skip."""
    return Pipeline(
        "cssfn", 2, degradation="kspace", channels=4, n_blocks=1, n_units=1, skip="kspace",
        zero_tail=True, precision="fp32", device="cpu", **options,
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path, write_nifti):
    """Two small noisy volumes in a folder, with a sites.json beside it."""
    (tmp_path / "split").mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(32, 36, 3), (28, 28, 2)]):
        data = phantom(shape, seed=i, sigma=3.0) + rng.normal(0, 2, shape).astype(np.float32)
        write_nifti(f"split/v{i}.nii.gz", data, make_affine("ras"))
    (tmp_path / "sites.json").write_text(json.dumps({"v0.nii.gz": "A", "v1.nii.gz": "B"}))
    return tmp_path / "split"


def test_untrained_zero_tail_network_scores_as_zero_filling_in_both_protocols(folder):
    pipe = untrained()
    rows = score.score_folders(pipe, [folder])
    assert {(r["volume"], r["site"]) for r in rows} == {("v0", "A"), ("v1", "B")}
    assert {r["method"] for r in rows} == {"zerofill", "bicubic", "model"}
    v = score.verdict(rows, str(folder), scale=2)
    for protocol in ("slice", "volume"):  # the same output, bit for bit
        assert v["protocols"][protocol] == {"gain": 0.0, "below": []}
    assert not v["met"]  # no gain: below every target
    text = score.report(rows, 2)
    assert "+0.00 |" in text and "| v0 | A | slice |" in text and "NOT met" in text
    # the slice protocol is model_vs_baselines', the volume protocol mrsr evaluate's
    path = folder / "v0.nii.gz"
    cards = model_vs_baselines(pipe, path)
    evaluate = {r["method"]: r for r in compare_methods([path], 2, score.methods(pipe), "kspace")}
    for r in rows:
        if r["volume"] == "v0":
            expected = (cards if r["protocol"] == "slice" else evaluate)[r["method"]]
            assert (r["psnr"], r["ssim"]) == (expected["psnr"], expected["ssim"])


def test_verdict_needs_the_gain_and_every_volume_at_or_above_in_both_protocols():
    def rows(gains: dict[str, tuple[float, float]]) -> list[dict]:
        out = []
        for volume, (g_slice, g_volume) in gains.items():
            for protocol, gain in (("slice", g_slice), ("volume", g_volume)):
                for method, psnr in (("zerofill", 30.0), ("model", 30.0 + gain)):
                    out.append(dict(folder="f", volume=volume, site="", method=method,
                                    protocol=protocol, psnr=psnr, ssim=0.9))  # fmt: skip
        return out

    assert score.verdict(rows({"a": (1.6, 1.6), "b": (1.7, 1.6)}), "f", 2)["met"]
    assert not score.verdict(rows({"a": (1.6, 1.5), "b": (1.7, 1.6)}), "f", 2)["met"]
    below = score.verdict(rows({"a": (3.3, 3.3), "b": (-0.1, 0.1)}), "f", 2)
    assert not below["met"] and below["protocols"]["slice"]["below"] == ["b PSNR"]
    assert score.verdict(rows({"a": (1.3, 1.3)}), "f", 3)["met"]
    assert not score.verdict(rows({"a": (1.25, 1.3)}), "f", 3)["met"]


def test_a_run_folder_without_weights_is_one_line_error(tmp_path):
    with pytest.raises(MRSRError, match="last.safetensors"):
        score.checkpoint(tmp_path)


def test_the_card_has_a_site_out_split_and_whole_volume_tables(folder, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines" / "default_models"))  # its `import score`
    spec = importlib.util.spec_from_file_location(
        "default_model_package", ROOT / "pipelines" / "default_models" / "package.py"
    )
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    pipe = untrained()
    rows = score.score_folders(pipe, [folder, folder.parent / "split"])
    for r in rows[len(rows) // 2 :]:
        r["folder"] = "siteout"
    bundled = [{"volume": "slice", "zerofill": {"psnr": 30.0, "ssim": 0.9}}]
    text, headline = package.card(
        "cssfn-kspace-x2", pipe.spec, 1.0, rows, bundled, 100, str(folder), "siteout"
    )
    held, site = text.split("## Held-out volumes")[1].split("## Site-out volumes")
    for split in (held, site):
        assert "| volume | site | source | zerofill | bicubic | model | gain (dB) |" in split
        assert "| volume | site | zerofill | bicubic | model | gain (dB) |" in split
        assert "Target x2 (mean gain at least +1.6 dB" in split and "NOT met" in split
    assert (
        headline == "PSNR vs zerofill per slice: +0.00 dB on held-out; +0.00 dB on site-out volumes"
    )
