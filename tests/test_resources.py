"""Resources: memory estimated from the network before it runs or trains, and progress lines in
logs."""

import re
import time

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import meta_volume, phantom
from torch.profiler import ProfilerActivity, profile

import mrsr.memory
from mrsr import Pipeline, progress
from mrsr.checkpoint import ModelSpec
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.inference import peak_bytes, super_resolve
from mrsr.networks import create
from mrsr.networks.footprint import footprint

GiB = 1 << 30
SMALL = {"channels": 16, "n_blocks": 1}


@pytest.fixture(autouse=True)
def normal_level():
    yield
    progress.set_level(progress.NORMAL)


def available(monkeypatch, n):
    """Pretend the machine has ``n`` bytes free, whatever it has."""
    monkeypatch.setattr(mrsr.memory, "available_bytes", lambda: int(n))


def error_line(capsys, argv):
    """Exit code 2 and the one error line of a command line that must be refused."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("mrsr: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def allocator_peak(fn):
    """Peak bytes PyTorch's CPU allocator holds while ``fn()`` runs (its profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    sizes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    held = np.cumsum([n for _, n in sizes])
    return int(held.max(initial=0))


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize(
    "name,scale,options",
    [
        ("cssfn", 2, SMALL),
        ("cssfn", 4, {**SMALL, "skip": "kspace"}),
        ("msrn", 3, {"channels": 16, "n_blocks": 2}),
        ("csn", 2, {**SMALL, "n_stages": 1}),
    ],
)
@pytest.mark.parametrize("train", [False, True])
def test_the_estimate_bounds_the_real_peak(name, scale, options, train):
    """Against PyTorch's allocator, channels-last as inference and training run."""
    network = create(name, scale, **options).to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    target = torch.rand(4, 1, 32 * scale, 32 * scale)

    def run():
        if train:
            F.l1_loss(network(x), target).backward()
        else:
            with torch.inference_mode():
                network(x)

    run()  # first-call buffers (and the gradients) are not the pass's
    network.zero_grad(set_to_none=True)
    real = allocator_peak(run)
    estimate = footprint(network, x.shape, train=train).peak
    assert real <= estimate <= 2 * real
    assert all(p.device.type == "cpu" for p in network.parameters())  # untouched


@pytest.mark.slow
def test_an_upscale_too_big_for_memory_is_refused_before_it_runs(tmp_path, capsys, monkeypatch):
    """cssfn x16 on 1024 x 1024 slices needs hundreds of GiB: refused at once, with the
    figure, instead of minutes of failing allocations."""
    src = tmp_path / "wide.nii.gz"
    nib.save(nib.Nifti1Image(phantom((1024, 1024, 2)), np.eye(4)), str(src))
    out = tmp_path / "o.nii.gz"
    available(monkeypatch, 8 * GiB)
    start = time.monotonic()
    line = error_line(capsys, ["upscale", src, out, "--model", "cssfn", "--scale", "16"])
    assert time.monotonic() - start < 10
    assert "CSSFN x16 on one 1024x1024 slice" in line and "per output pixel" in line
    assert "but only 8.0 GiB is available" in line and "smaller scale or network" in line
    assert not out.exists()


def test_the_batch_is_lowered_to_what_fits_and_said(capsys, monkeypatch):
    volume = meta_volume(phantom((48, 40, 6)), np.eye(4))
    network = create("cssfn", 2, **SMALL)
    expected = super_resolve(volume, network, 2, batch_size=6)
    assert "per batch" not in capsys.readouterr().err
    one = footprint(network, (1, 1, 48, 40)).peak
    available(monkeypatch, peak_bytes(volume.numel(), 1, 2) + 2.5 * one)
    lowered = super_resolve(volume, network, 2, batch_size=6)
    assert "2 slices per batch instead of 6, to fit in memory" in capsys.readouterr().err
    torch.testing.assert_close(lowered.as_tensor(), expected.as_tensor())


def training_config(folder, **model):
    (folder / "vols").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(phantom((40, 36, 5)), np.eye(4)), str(folder / "vols" / "a.nii"))
    cfg = {
        "data": {"train": "vols"},
        "model": {"name": "cssfn", **model},
        "train": {"max_steps": 2, "batch_size": 4, "patch_size": 10, "val_every": 2},
        "output_dir": "run",
    }
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_training_too_big_for_memory_is_refused_naming_the_keys(tmp_path, capsys, monkeypatch):
    config = training_config(tmp_path, channels=1024, n_blocks=64)
    available(monkeypatch, 16 * GiB)
    start = time.monotonic()
    line = error_line(capsys, ["train", config])
    assert time.monotonic() - start < 10
    assert "training cssfn x2" in line and "but only 16.0 GiB is available" in line
    assert "lower model.channels, model.n_blocks, train.batch_size or train.patch_size" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", ["pipeline", "spec"])
def test_a_named_network_too_big_is_refused_before_it_is_built(tmp_path, capsys, monkeypatch, make):
    """``Pipeline("cssfn", channels=1024, n_blocks=64)`` or ``--model cssfn`` with such options
    (or a spec built directly) sizes the weights on the meta device first: a clean refusal,
    no allocation."""
    available(monkeypatch, 1 * GiB)
    start = time.monotonic()
    if make == "pipeline":
        with pytest.raises(MRSRError, match="a network of .* weights .* but only 1.0 GiB"):
            Pipeline("cssfn", 2, channels=1024, n_blocks=64)
    else:
        spec = ModelSpec.create("cssfn", 2, options={"channels": 1024, "n_blocks": 64})
        with pytest.raises(MRSRError, match="but only 1.0 GiB"):
            spec.build()
    assert time.monotonic() - start < 10


def test_training_that_fits_runs(tmp_path, capsys, monkeypatch):
    config = training_config(tmp_path, **SMALL)
    available(monkeypatch, 1 * GiB)
    assert main(["train", str(config), "-q"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "last.safetensors").is_file()


# ---------------------------------------------------------------- progress lines

STATUS = r"(\d+)/(\d+) (\S+), \d\d:\d\d elapsed, about (\d\d:\d\d|\?) left"


@pytest.fixture
def every_step(monkeypatch):
    """Status lines at every step, not every 30 s."""
    monkeypatch.setattr(progress, "INTERVAL", 0.0)


def status_lines(err, stage, extra=""):
    pattern = re.compile(f"^{stage}: {STATUS}{extra}$")
    return [m for m in map(pattern.match, err.splitlines()) if m]


def test_a_throughplane_run_with_bars_off_prints_status_lines(
    tmp_path, capsys, monkeypatch, every_step
):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(phantom((32, 32, 4)), np.diag([1.0, 1.0, 4.0, 1.0])), str(src))
    assert main(["throughplane", str(src), str(tmp_path / "iso.nii.gz"), "--steps", "3"]) == 0
    err = capsys.readouterr().err
    training = status_lines(err, "training", r", step (\d+), loss \d+\.\d{4}")
    assert {m[5] for m in training} >= {"1", "2", "3"}, err
    slices = status_lines(err, "super-resolving")
    assert slices and {m[2] for m in slices} == {"32"}, err  # 32 planes, each orientation
    assert "training: 0/100 %" not in err.splitlines()  # no log milestones: the bars are off


def test_training_prints_the_running_mean_of_its_loss(tmp_path, capsys, every_step):
    config = training_config(tmp_path, **SMALL)
    assert main(["train", str(config)]) == 0
    err = capsys.readouterr().err
    lines = status_lines(err, "training", r", loss (\d+\.\d{4})")
    assert [m[1] for m in lines if m[1] == m[2]], err
    last = [m for m in lines if m[1] == "2"][-1]  # step 2 of 2: the log's mean of steps 1-2
    logged = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[-1].split(",")
    assert logged[0] == "2" and float(last[5]) == pytest.approx(float(logged[1]), abs=1e-4)


def test_evaluate_counts_its_volumes(tmp_path, capsys, monkeypatch, every_step):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(phantom((16, 16, 3)), np.eye(4)), str(ref))
    assert main(["evaluate", "--pred", str(ref), "--ref", str(ref)]) == 0
    last = status_lines(capsys.readouterr().err, "evaluating")[-1]
    assert last.groups()[:3] == ("1", "1", "volume")


def test_a_step_slower_than_the_interval_still_gets_lines(capsys, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.05)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with progress.bar(4, "upscaling", "slice") as bar:
        time.sleep(0.3)  # one slow step
        bar.update()
    during = capsys.readouterr().err
    assert len(status_lines(during, "upscaling")) >= 3, during
    time.sleep(0.2)
    assert capsys.readouterr().err == ""  # closed: no line after the stage
