"""``mrsr export-bundle`` and the MONAI bundle it writes: the layout MONAI's specification and
model zoo ask for, weights that stay safetensors, a config that MONAI's own parser and runner
execute, and outputs equal to ``mrsr upscale``'s."""

import contextlib
import errno
import hashlib
import itertools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_affine, phantom
from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_METADATA
from safetensors import safe_open
from test_hostile import checkpoint, refused, snapshot

import mrsr
from mrsr import bundle, zoo
from mrsr.checkpoint import load_checkpoint
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.io import sample_path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "cssfn-kspace-x2"
FILES = {
    "LICENSE",
    "configs/inference.json",
    "configs/logging.conf",
    "configs/metadata.json",
    "docs/README.md",
    "models/model.safetensors",
}
# the tensor format keys of MONAI's bundle specification (docs: mb_specification)
TENSOR_KEYS = {"type", "format", "modality", "num_channels", "spatial_shape", "dtype"}
TENSOR_KEYS |= {"value_range", "is_patch_data", "channel_def"}


def export(tmp_path, model=MODEL, name="bundle", *flags):
    folder = tmp_path / name
    assert main(["export-bundle", str(model), str(folder), *flags]) == 0
    return folder


def files_of(folder):
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def parser_of(folder):
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser.read_meta(str(folder / "configs" / "metadata.json"))
    return parser


def test_export_writes_the_layout_with_the_weights_copied_and_the_card(tmp_path):
    folder = export(tmp_path)
    assert files_of(folder) == FILES  # nothing else: no temporaries, no pickle
    shipped = zoo.find(MODEL)
    weights = folder / "models" / "model.safetensors"
    assert weights.read_bytes() == shipped.weights.read_bytes()
    for path in folder.rglob("*"):  # pickles (and torch.save's zip archives) start so
        if path.is_file():
            assert not path.read_bytes().startswith((b"\x80", b"PK\x03\x04")), path
    card = (folder / "docs" / "README.md").read_text("utf-8")
    assert card.startswith(shipped.card.read_text("utf-8").rstrip())
    assert "python -m monai.bundle run" in card
    license_text = (folder / "LICENSE").read_text("utf-8")
    assert mrsr_license() in license_text and MODEL in license_text


def mrsr_license():
    import importlib.metadata

    return importlib.metadata.metadata("mrsr")["License"]


def test_metadata_has_the_keys_monai_and_the_model_zoo_require(tmp_path):
    folder = export(tmp_path)
    meta = json.loads((folder / "configs" / "metadata.json").read_text("utf-8"))
    assert set(DEFAULT_METADATA) <= set(meta)  # MONAI's own bundle template
    assert meta["version"] in meta["changelog"]  # the model zoo's check
    assert meta["monai_version"] == __import__("monai").__version__
    assert meta["required_packages_version"]["mrsr"] == mrsr.__version__
    for kind in ("inputs", "outputs"):
        [tensor] = meta["network_data_format"][kind].values()
        assert TENSOR_KEYS <= set(tensor), kind
    with safe_open(str(zoo.find(MODEL).weights), framework="pt") as f:
        spec = json.loads(f.metadata()["mrsr"])
    assert meta["mrsr"]["model"] == spec
    weights = (folder / "models" / "model.safetensors").read_bytes()
    assert meta["mrsr"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert "2x finer" in meta["task"] and "slice axis" in meta["pred_classes"]


def test_monai_config_parser_loads_the_weights_through_mrsr_never_pickle(tmp_path, monkeypatch):
    folder = export(tmp_path)
    parser = parser_of(folder)
    for key in ("bundle_root", "dataset_dir", "output_dir", "ckpt_path", "device", "run"):
        assert key in parser, key
    parser["bundle_root"] = str(folder)
    parser.parse()
    assert parser.get_parsed_content("ckpt_path") == f"{folder}/models/model.safetensors"
    assert parser.get_parsed_content("output_dir") == f"{folder}/eval"

    def unpickling(*args, **kwargs):
        raise AssertionError("the bundle unpickled something")

    monkeypatch.setattr(torch, "load", unpickling)
    monkeypatch.setattr(pickle, "load", unpickling)
    monkeypatch.setattr(pickle, "loads", unpickling)
    pipe = parser.get_parsed_content("pipeline")
    assert isinstance(pipe, mrsr.Pipeline) and pipe.spec.scale == 2
    _, expected = load_checkpoint(zoo.find(MODEL).weights)
    got = parser.get_parsed_content("network_def").state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.state_dict().items())


def test_monai_verifies_the_network_against_the_metadata(tmp_path):
    from monai.bundle import verify_net_in_out

    folder = export(tmp_path)
    config, meta = folder / "configs" / "inference.json", folder / "configs" / "metadata.json"
    verify_net_in_out(  # channels and dtype of network_def against network_data_format
        net_id="network_def", config_file=str(config), meta_file=str(meta), bundle_root=str(folder)
    )
    parser = parser_of(folder)
    parser["bundle_root"] = str(folder)
    parser.parse()
    network = parser.get_parsed_content("network_def")
    assert network(torch.rand(1, 1, 12, 10)).shape == (1, 1, 24, 20)  # x2, slice by slice


def test_a_relative_bundle_root_elsewhere_says_what_to_pass(tmp_path, monkeypatch):
    folder = export(tmp_path)
    monkeypatch.chdir(tmp_path)  # bundle_root "." is not the bundle
    parser = parser_of(folder)
    parser.parse()
    with pytest.raises(RuntimeError) as caught:
        parser.get_parsed_content("pipeline")
    cause = caught.value.__cause__
    assert isinstance(cause, MRSRError) and "--bundle_root" in str(cause)


def small_inputs(folder):
    """A crop of the bundled sample, and a phantom on an oblique grid with 3 mm slices."""
    folder.mkdir()
    nib.save(nib.load(sample_path()).slicer[60:100, 70:118, 8:11], str(folder / "crop.nii.gz"))
    oblique = make_affine("oblique", (0.9, 0.9, 3.0))
    nib.save(nib.Nifti1Image(phantom((36, 40, 3)), oblique), str(folder / "oblique.nii.gz"))
    return sorted(folder.iterdir())


@pytest.mark.slow
def test_monai_runner_writes_what_mrsr_upscale_writes(tmp_path):
    pytest.importorskip("fire", reason="python -m monai.bundle needs fire (the test extra)")
    folder = export(tmp_path)
    inputs = small_inputs(tmp_path / "in")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai.bundle", "run"]
    command += ["--config_file", folder / "configs" / "inference.json", "--bundle_root", folder]
    command += ["--dataset_dir", tmp_path / "in", "--output_dir", out, "--device", "cpu"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for src in inputs:
        expected = tmp_path / f"upscale_{src.name}"
        assert main(["upscale", str(src), str(expected), "--model", MODEL, "--device", "cpu"]) == 0
        got, want = nib.load(out / src.name), nib.load(expected)
        nx, ny, nz = nib.load(src).shape  # the slice axis is the last in both
        assert got.shape == want.shape == (2 * nx, 2 * ny, nz)
        assert np.array_equal(got.affine, want.affine)
        np.testing.assert_allclose(got.get_fdata(), want.get_fdata(), rtol=0, atol=1e-5)
        sidecar = json.loads((out / src.name.replace(".nii.gz", ".json")).read_text("utf-8"))
        assert sidecar["mrsr"]["model"] == "model.safetensors"


@pytest.mark.filterwarnings("ignore:parsing config_file")  # MONAI: trust configs you run
def test_a_rerun_skips_finished_outputs_and_a_missing_folder_is_refused(
    tmp_path, capsys, monkeypatch
):
    from monai.bundle import run

    monkeypatch.setattr(sys, "path", sys.path[:])  # MONAI's run puts the bundle on it
    folder = export(tmp_path)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(phantom((12, 14, 2)), np.eye(4)), str(tmp_path / "in" / "a.nii"))
    monkeypatch.chdir(folder)  # bundle_root "." and output_dir bundle_root/eval as they are
    config = "configs/inference.json"
    run(config_file=config, logging_file=False, dataset_dir=str(tmp_path / "in"))
    before = snapshot(folder / "eval")
    assert set(before) == {"a.nii", "a.json"}
    capsys.readouterr()
    ids = dict(config_file=config, bundle_root=str(folder), logging_file=False)  # pytest logs
    run(**ids, dataset_dir=str(tmp_path / "in"), output_dir=str(folder / "eval"))
    assert "skipping 1 finished outputs" in capsys.readouterr().err
    assert snapshot(folder / "eval") == before
    if not Path("/workspace/data").exists():  # the default dataset_dir
        with pytest.raises(RuntimeError) as caught:
            run(**ids, output_dir=str(tmp_path / "out2"))
        assert "--dataset_dir" in str(caught.value.__cause__)
        assert not (tmp_path / "out2").exists()


@pytest.mark.filterwarnings("ignore:parsing config_file")
def test_one_bad_volume_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    from monai.bundle import run

    monkeypatch.setattr(sys, "path", sys.path[:])  # MONAI's run puts the bundle on it

    folder = export(tmp_path)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(phantom((12, 14, 2)), np.eye(4)), str(tmp_path / "in" / "a.nii"))
    (tmp_path / "in" / "b.nii.gz").write_bytes(b"not a volume")
    config = str(folder / "configs" / "inference.json")
    with pytest.raises(RuntimeError) as caught:
        run(
            config_file=config,
            bundle_root=str(folder),
            logging_file=False,
            dataset_dir=str(tmp_path / "in"),
            output_dir=str(tmp_path / "out"),
        )
    assert "1 of 2 volumes not saved" in str(caught.value.__cause__)
    assert set(snapshot(tmp_path / "out")) == {"a.nii", "a.json"}
    said = [line for line in capsys.readouterr().err.splitlines() if "mrsr: error:" in line]
    assert len(said) == 1 and "b.nii.gz" in said[0]


def test_export_refuses_an_existing_folder_without_overwrite(tmp_path, capsys):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    refused(capsys, ["export-bundle", MODEL, folder], "already exists; pass --overwrite")
    refused(capsys, ["export-bundle", MODEL, folder, "--overwrite"], "not a bundle mrsr wrote")
    assert snapshot(folder) == {"notes.txt": b"mine"}


@pytest.mark.parametrize("kind", ["unknown", "pickle"])
def test_export_refuses_an_unknown_model_and_a_pickle(tmp_path, capsys, kind):
    model = "cssfn-kspace-x9"
    if kind == "pickle":
        model = tmp_path / "model.pt"
        torch.save({"w": torch.zeros(2)}, model)
    words = "neither a checkpoint file nor a shipped model" if kind == "unknown" else "pickle"
    refused(capsys, ["export-bundle", model, tmp_path / "bundle"], words)
    assert not (tmp_path / "bundle").exists()


def test_a_failed_export_leaves_nothing(tmp_path, capsys, monkeypatch):
    real = bundle.atomic_files

    @contextlib.contextmanager
    def disk_full_at_the_fourth_file():
        with real() as new:
            count = itertools.count()

            def new_or_full(path, overwrite=False):
                if next(count) == 3:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return new(path, overwrite)

            yield new_or_full

    monkeypatch.setattr(bundle, "atomic_files", disk_full_at_the_fourth_file)
    refused(capsys, ["export-bundle", MODEL, tmp_path / "new" / "bundle"], "No space left")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_bundle_and_a_checkpoint_gets_a_card(tmp_path, capsys):
    folder = export(tmp_path)
    mine = checkpoint(tmp_path / "mine.safetensors")
    capsys.readouterr()
    assert export(tmp_path, mine, "bundle", "--overwrite") == folder
    assert "LICENSE: states no license" in capsys.readouterr().err
    assert files_of(folder) == FILES
    assert (folder / "models" / "model.safetensors").read_bytes() == mine.read_bytes()
    meta = json.loads((folder / "configs" / "metadata.json").read_text("utf-8"))
    assert meta["mrsr"]["source"] == "mine" and meta["authors"] == "not stated"
    assert (folder / "docs" / "README.md").read_text("utf-8").startswith("# mine\n")
    assert "No license was stated" in (folder / "LICENSE").read_text("utf-8")


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda d: bundle.export_bundle(2, d), "model must be"),
        (lambda d: bundle.export_bundle(MODEL, d, overwrite="yes"), "overwrite must be"),
        (lambda d: bundle.upscale_folder("cssfn", d, d / "out"), "pipe must be an mrsr.Pipeline"),
        (lambda d: bundle.load_bundle_model(d / "models" / "model.safetensors"), "--bundle_root"),
    ],
)
def test_the_python_api_refuses_bad_arguments(tmp_path, call, words):
    with pytest.raises(MRSRError, match=words):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []
