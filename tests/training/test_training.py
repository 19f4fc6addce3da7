"""Training: a tiny run end to end, exact resume, torchrun DDP, config errors by key name."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import phantom
from safetensors import safe_open
from safetensors.torch import load_file

from mrsr import Pipeline
from mrsr.checkpoint import ModelSpec
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.training import load_config, resolve_config, train
from mrsr.training.data import PatchPairs
from mrsr.training.state import load_state, save_state
from mrsr.training.trainer import StepIndices
from mrsr.transforms import KSpaceTruncation

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "data": {"train": "vols", "val": "vols/v0.nii.gz"},
    "degradation": {"method": "kspace", "scale": 2},
    "model": {"name": "cssfn", "channels": 8, "n_blocks": 1, "n_units": 1},
    "train": {"max_steps": 6, "batch_size": 4, "patch_size": 10, "val_every": 3, "lr": 1e-3},
    "output_dir": "run",
}


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "vols").mkdir()
    for i in range(3):
        image = nib.Nifti1Image(phantom((40, 36, 5), seed=i, sigma=3.0), np.diag([1, 1, 3, 1.0]))
        nib.save(image, str(tmp_path / "vols" / f"v{i}.nii.gz"))
    return tmp_path


def write_config(folder, cfg=TINY, name="c.yaml"):
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_tiny_run_writes_a_checkpoint_that_upscale_uses(workdir, capsys):
    assert main(["train", write_config(workdir)]) == 0
    run = workdir / "run"
    assert {"best.safetensors", "last.safetensors", "state.safetensors"} <= {
        p.name for p in run.iterdir()
    }
    log = (run / "val_log.csv").read_text(encoding="utf-8").splitlines()
    assert log[0] == "step,method,psnr,ssim,nrmse" and any(",zerofill," in r for r in log)
    lr = str(workdir / "lr.nii.gz")
    assert main(["degrade", str(workdir / "vols" / "v1.nii.gz"), lr, "--scale", "2"]) == 0
    out = str(workdir / "sr.nii.gz")
    assert main(["upscale", lr, out, "--model", str(run / "best.safetensors")]) == 0
    assert nib.load(out).shape == (40, 36, 5)
    assert "untrained" not in capsys.readouterr().err


@pytest.mark.slow
def test_resume_is_exact(workdir):
    straight = resolve_config(TINY, base=workdir)
    straight["output_dir"] = str(workdir / "straight")
    train(straight, progress=False)
    halves = resolve_config(TINY, ["train.max_steps=3"], base=workdir)
    train(halves, progress=False)
    state_path = workdir / "run" / "state.safetensors"
    save_state(state_path, {**load_state(state_path), "seconds": 1000.0})  # a long first half
    halves["train"]["max_steps"] = 6
    train(halves, resume=True, progress=False)
    a = load_file(str(workdir / "straight" / "last.safetensors"))
    b = load_file(str(workdir / "run" / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and the first half really was a different (earlier) model
    train_log = (workdir / "run" / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in train_log[1:]] == ["3", "6"]
    assert float(train_log[2].split(",")[3]) >= 1000.0  # the time counts both halves


def test_step_indices_give_each_rank_its_own_samples():
    ranks = [list(StepIndices(5, 9, 4, rank, 2)) for rank in range(2)]
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == list(StepIndices(5, 9, 8, 0, 1))


def test_patch_pairs_are_aligned_and_reproducible():
    slab = torch.from_numpy(phantom((4, 40, 36), sigma=3.0)) / 100
    pairs = PatchPairs([slab], scale=2, patch_size=8, method="bicubic", seed=3)
    lr, hr = pairs[17]
    assert lr.shape == (1, 8, 8) and hr.shape == (1, 16, 16)
    torch.testing.assert_close(pairs[17][0], lr)
    # bicubic pairs: the LR patch is the area-downsampled HR patch up to border effects
    down = torch.nn.functional.avg_pool2d(hr[None], 2)[0]
    assert float((down - lr)[:, 2:-2, 2:-2].abs().max()) < 0.05


def _whole_slice_pairs(slab: torch.Tensor, **augment) -> PatchPairs:
    """Pairs whose patch is the whole slice (so the HR patch is the augmented HR slice)."""
    return PatchPairs([slab], scale=2, patch_size=slab.shape[-1] // 2, seed=1, **augment)


def _outer_energy(image: torch.Tensor) -> float:
    """Share of the spectrum's energy outside the central half band on both axes."""
    power = torch.fft.fftshift(torch.fft.fft2(image), dim=(-2, -1)).abs() ** 2
    n = image.shape[-1]
    return float(1 - power[..., n // 4 : 3 * n // 4, n // 4 : 3 * n // 4].sum() / power.sum())


def test_hr_noise_is_added_before_degradation():
    slab = torch.zeros(2, 32, 32)
    slab[:, 8:24, 8:24] = 1.0
    pairs = _whole_slice_pairs(slab, hr_noise=0.05)
    lr, hr = pairs[4]
    assert float(hr[0, :4, :4].std()) > 0.005  # the target has a noise floor where slab is 0
    # the input is the truncation of the noisy target, not of the clean slice
    torch.testing.assert_close(lr, KSpaceTruncation(2, axes=(0, 1))(hr).as_tensor())
    torch.testing.assert_close(pairs[4][1], hr)


def test_lowpass_augmentation_removes_fine_detail_from_the_target():
    slab = torch.from_numpy(np.random.default_rng(0).random((2, 32, 32), dtype=np.float32))
    clean = [_outer_energy(_whole_slice_pairs(slab)[i][1]) for i in range(8)]
    blurred = [_outer_energy(_whole_slice_pairs(slab, lowpass=1.0)[i][1]) for i in range(8)]
    assert np.mean(blurred) < 0.8 * np.mean(clean)
    lr, hr = _whole_slice_pairs(slab, lowpass=1.0)[3]
    torch.testing.assert_close(lr, KSpaceTruncation(2, axes=(0, 1))(hr).as_tensor())


def test_gamma_changes_contrast_within_the_normalised_range():
    slab = torch.from_numpy(np.random.default_rng(0).random((1, 32, 32), dtype=np.float32))
    slab = slab.expand(2, -1, -1)

    def changed(h: torch.Tensor) -> bool:  # turns and flips keep the sorted intensities
        return not torch.allclose(h.flatten().sort()[0], slab[0].flatten().sort()[0])

    assert not any(changed(_whole_slice_pairs(slab)[i][1]) for i in range(6))
    hrs = [_whole_slice_pairs(slab, gamma=0.7)[i][1] for i in range(6)]
    assert all(0.0 <= float(h.min()) and float(h.max()) <= 1.0 for h in hrs)
    assert all(changed(h) for h in hrs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(workdir, config: str, nodes: int) -> None:
    """``mrsr train`` under torchrun: one node with two processes, or two nodes (two torchrun
    agents meeting by c10d rendezvous on 127.0.0.1) with one process each."""
    run = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        launches = [run + ["--standalone", "--nproc_per_node=2"]]
    else:
        meet = [f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_backend=c10d"]
        launches = [run + ["--nnodes=2", "--nproc_per_node=1", "--rdzv_id=mrsr", *meet]] * 2
    agents = [
        subprocess.Popen(
            cmd + ["-m", "mrsr", "train", config],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
        )
        for cmd in launches
    ]
    for agent in agents:
        _, err = agent.communicate(timeout=600)
        assert agent.returncode == 0, err[-2000:]


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.slow
def test_torchrun_on_two_processes_equals_one_process_with_the_union_batch(workdir, nodes):
    cfg = dict(TINY, train={**TINY["train"], "max_steps": 3, "val_every": 3, "batch_size": 2})
    cfg["output_dir"] = "ddp"
    torchrun(workdir, write_config(workdir, cfg, "ddp.yaml"), nodes)
    single = dict(cfg, train={**cfg["train"], "batch_size": 4}, output_dir="single")
    train(resolve_config(single, base=workdir), progress=False)
    a = load_file(str(workdir / "ddp" / "last.safetensors"))
    b = load_file(str(workdir / "single" / "last.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert Pipeline.from_pretrained(workdir / "ddp" / "last.safetensors").trained


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lrr=1", "'train.lrr' is unknown"),
        ("train.batch_size=big", "'train.batch_size' must be int"),
        ("model.widht=3", "'model.widht' is not an option of cssfn"),
        ("model.scale=3", "model.scale 3 disagrees with degradation.scale 2"),
        ("data.train=nowhere", "data.train: no volumes found"),
        ("degradation.method=blur", "degradation.method must be one of"),
        ("train.loss=huber", "train.loss must be one of"),
        ("train.patch_size=64", "train.patch_size 64 at scale 2 needs slices of at least 128"),
    ],
)
def test_bad_configs_fail_at_once_naming_the_key(workdir, override, message):
    with pytest.raises(MRSRError, match=message):
        train(load_config(write_config(workdir), [override]), progress=False)
    assert not (workdir / "run").exists()


def test_training_data_that_is_no_volume_is_refused_naming_the_key_and_file(workdir):
    """A text file, or a volume whose voxels are unusable: one line naming data.train and the
    file, not MONAI's wrapped 'applying transform <LoadVolumed object at 0x...>'."""
    (workdir / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    bad = phantom((40, 36, 5))
    bad[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(workdir / "nan.nii.gz"))
    for name, words in (("passwd", "unsupported format"), ("nan.nii.gz", "NaN or infinite")):
        with pytest.raises(MRSRError) as caught:
            train(load_config(write_config(workdir), [f"data.train={name}"]), progress=False)
        text = str(caught.value)
        assert words in text and name in text and "LoadVolumed" not in text
        assert not (workdir / "run").exists()


@pytest.mark.slow
def test_loss_choice_is_the_loss_minimised(workdir):
    first = {}
    for loss in ("l1", "l2"):
        cfg = dict(TINY, train={**TINY["train"], "max_steps": 1, "loss": loss}, output_dir=loss)
        train(resolve_config(cfg, base=workdir), progress=False)
        log = (workdir / loss / "train_log.csv").read_text(encoding="utf-8").splitlines()
        first[loss] = float(log[1].split(",")[1])
    # the same network, batch and errors e at step 1: mean e^2 lies in [mean|e|^2, mean|e|)
    assert first["l1"] ** 2 <= first["l2"] < first["l1"]


def test_pipeline_fit_trains_and_loads_the_weights(workdir):
    pipe = Pipeline("cssfn", 2, channels=8, n_blocks=1, n_units=1)
    before = [p.detach().clone() for p in pipe.network.parameters()]
    path = pipe.fit(str(workdir / "vols"), output_dir=workdir / "fit", max_steps=3, patch_size=8)
    assert path.exists() and pipe.trained
    after = list(pipe.network.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_shipped_pipeline_configs_are_valid():
    configs = sorted((ROOT / "pipelines").rglob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        assert cfg["data"]["train"] and Path(cfg["output_dir"]).is_absolute()
        spec = ModelSpec.create(
            cfg["model"]["name"],
            cfg["degradation"]["scale"],
            cfg["degradation"]["method"],
            {k: v for k, v in cfg["model"].items() if k != "name"},
        )
        assert spec.build().scale == cfg["degradation"]["scale"]
        if path.stem.endswith("_finetune"):  # the second stage starts where the first ended
            first = load_config(path.with_name(path.stem.removesuffix("_finetune") + ".yaml"))
            assert Path(cfg["train"]["init"]) == Path(first["output_dir"]) / "last.safetensors"
            assert cfg["model"] == first["model"] and cfg["data"] == first["data"]


@pytest.mark.slow
def test_ixi_prepare_splits_subjects_and_crops(tmp_path):
    ixi = tmp_path / "IXI"
    ixi.mkdir()
    for n in range(7):
        for contrast in ("T1", "T2", "PD"):
            data = np.full((244, 242, 98), n, dtype=np.int16)
            image = nib.Nifti1Image(data, np.diag([0.9, 0.9, 1.2, 1]))
            nib.save(image, str(ixi / f"IXI{n:03d}-Guys-0000-{contrast}.nii.gz"))
    nib.save(image, str(ixi / "IXI099-Guys-0000-T1.nii.gz"))  # T1 only: left out
    script = ROOT / "pipelines" / "ixi_prepare.py"
    out = tmp_path / "ixi"
    subprocess.run(
        [sys.executable, str(script), str(ixi), str(out), "--counts", "4", "2", "1"], check=True
    )
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    ids = split["train"] + split["test"] + split["val"]
    assert len(ids) == len(set(ids)) == 7 and "IXI099" not in ids
    for contrast in ("T1", "T2", "PD"):
        files = sorted(p.name for p in (out / contrast / "train").iterdir())
        assert files == [f"{s}.nii.gz" for s in split["train"]]
    assert nib.load(str(out / "PD" / "val" / f"{split['val'][0]}.nii.gz")).shape == (240, 240, 96)


@pytest.mark.slow
def test_adjacent_slices_as_channels(workdir):
    slab = torch.from_numpy(phantom((6, 40, 36), sigma=3.0)) / 100
    flat = PatchPairs([slab], scale=2, patch_size=8, seed=5)
    deep = PatchPairs([slab], scale=2, patch_size=8, seed=5, context=3)
    for index in (0, 7, 21):
        (lr1, hr1), (lr3, hr3) = flat[index], deep[index]
        assert lr3.shape == (3, 8, 8) and hr3.shape == (1, 16, 16)
        torch.testing.assert_close(lr3[1:2], lr1)  # the centre channel is the 2D sample
        torch.testing.assert_close(hr3, hr1)
    with pytest.raises(MRSRError, match="odd"):
        PatchPairs([slab], scale=2, patch_size=8, context=2)
    cfg = dict(TINY, model={**TINY["model"], "in_channels": 3}, output_dir="deep")
    path = train(resolve_config(cfg, base=workdir), progress=False)
    pipe = Pipeline.from_pretrained(path)
    assert pipe.network.esc.channels == slice(1, 2)  # the skip reads the centre slice
    assert pipe(str(workdir / "vols" / "v0.nii.gz")).shape == (1, 80, 72, 5)


def test_pairs_degraded_on_the_device_in_batches_equal_the_loader_s(workdir):
    """``train.degrade_on: device``: the loader only augments, the device degrades one batch per
    slice size; with slices of three sizes, 2.5D input, the skip, and noise before and after
    degradation, every pair is the loader's pair, in the batch's order."""
    from mrsr.training.data import collate_slices, device_pairs
    from mrsr.training.trainer import _whole_slice_skip

    slabs = [
        phantom(shape, seed=k)
        for k, shape in enumerate([(3, 40, 36), (2, 48, 48), (4, 40, 36), (2, 32, 44)])
    ]
    slabs = [torch.as_tensor(s) / s.max() for s in slabs]
    spec = ModelSpec.create("cssfn", 2, "kspace", {"channels": 8, "n_blocks": 1, "n_units": 1})
    options = dict(noise=0.01, hr_noise=0.02, gamma=0.2, lowpass=0.5, context=3, seed=4)
    skip = _whole_slice_skip(spec.build())
    on_loader = PatchPairs(slabs, 2, 8, upsample=skip, **options)
    on_device = PatchPairs(slabs, 2, 8, upsample=skip, on_device=True, **options)
    indices = range(40, 56)
    expected = [torch.stack(f) for f in zip(*(on_loader[i] for i in indices))]
    items = collate_slices([on_device[i] for i in indices])
    assert len({tuple(hr.shape) for hr, _ in items}) > 1  # several sizes in one batch
    got = device_pairs(on_device, items, torch.device("cpu"))
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize(
    ("setting", "device", "where"),
    [
        ("auto", "cuda:0", "device"),
        ("auto", "cpu", "loader"),
        ("auto", "mps", "loader"),
        ("loader", "cuda", "loader"),
        ("device", "cpu", "device"),
    ],
)
def test_degrade_on_auto_is_the_device_on_cuda_only(setting, device, where):
    from mrsr.training.trainer import degrade_on

    assert degrade_on(setting, torch.device(device)) == where


@pytest.mark.slow
def test_a_run_degrading_on_the_device_trains_the_same_weights(workdir):
    weights = []
    for where in ("loader", "device"):
        cfg = {**TINY, "output_dir": f"run-{where}"}
        cfg["train"] = {**TINY["train"], "degrade_on": where}
        assert main(["train", write_config(workdir, cfg, f"{where}.yaml"), "-q"]) == 0
        weights.append(load_file(str(workdir / f"run-{where}" / "last.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key])


def _tiny_run(workdir, name: str, **train_keys) -> dict[str, torch.Tensor]:
    cfg = {**TINY, "output_dir": name, "train": {**TINY["train"], **train_keys}}
    train(resolve_config(cfg, base=workdir), progress=False)
    return load_file(str(workdir / name / "last.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("ema", [None, 0.999])
def test_init_starts_from_a_checkpoint_s_weights(workdir, ema):
    """Also the average of the weights (``train.ema``), which the checkpoint holds: it starts
    from the initial weights, not from the random ones they replaced."""
    first = _tiny_run(workdir, "first")
    # one step at a negligible learning rate: the weights are the initial ones, to ~1e-12
    keys = dict(init="first/last.safetensors", max_steps=1, lr=1e-12, ema=ema)
    tuned = _tiny_run(workdir, "tuned", **keys)
    fresh = _tiny_run(workdir, "fresh", max_steps=1, lr=1e-12)
    assert first.keys() == tuned.keys()
    for key in first:
        torch.testing.assert_close(tuned[key], first[key], rtol=0, atol=1e-8)
    assert any(not torch.allclose(fresh[k], first[k], atol=1e-4) for k in first)
    with safe_open(str(workdir / "tuned" / "last.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["mrsr"])["info"]["init"] == {
            "file": "last.safetensors",
            "steps": 6,
        }


@pytest.mark.parametrize(
    "init, message",
    [
        ("first/last.safetensors", r"holds cssfn x2 kspace .*but this run trains cssfn x2 kspace"),
        ("nothing.safetensors", "neither a checkpoint file nor a shipped model"),
        ("cssfn-kspace-x2", "holds cssfn x2 kspace with options"),
    ],
)
@pytest.mark.slow
def test_init_from_another_network_fails_naming_both(workdir, init, message):
    _tiny_run(workdir, "first")
    cfg = {**TINY, "output_dir": "other", "train": {**TINY["train"], "init": init}}
    cfg["model"] = {**TINY["model"], "channels": 12}
    with pytest.raises(MRSRError, match=message):
        train(resolve_config(cfg, base=workdir), progress=False)
    assert not (workdir / "other").exists()


def test_init_paths_resolve_against_the_config_and_shipped_names_stay(workdir):
    for init, expected in (
        ("w/a.safetensors", str(workdir / "w" / "a.safetensors")),
        ("cssfn-kspace-x2", "cssfn-kspace-x2"),
    ):
        cfg = {**TINY, "train": {**TINY["train"], "init": init}}
        assert resolve_config(cfg, base=workdir)["train"]["init"] == expected
    with pytest.raises(MRSRError, match="train.init must be a string"):
        resolve_config({**TINY, "train": {**TINY["train"], "init": 3}}, base=workdir)


def test_pipeline_fit_fine_tunes_a_pretrained_pipeline(workdir):
    first = _tiny_run(workdir, "first")
    pipe = Pipeline.from_pretrained(workdir / "first" / "last.safetensors")
    path = pipe.fit(
        str(workdir / "vols"), output_dir=workdir / "ft", max_steps=1, lr=1e-12, patch_size=8
    )
    assert pipe.weights == path and pipe.spec.info["init"]["file"] == "last.safetensors"
    for key, value in pipe.network.state_dict().items():
        torch.testing.assert_close(value, first[key], rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["best.safetensors", "last.safetensors", "state.safetensors"])
@pytest.mark.slow
def test_a_new_run_never_replaces_a_checkpoint_in_its_output_dir(workdir, name):
    _tiny_run(workdir, "first")
    (workdir / "mine").mkdir()
    kept = workdir / "mine" / name
    kept.write_bytes((workdir / "first" / name).read_bytes())
    before = kept.read_bytes()
    cfg = {**TINY, "output_dir": "mine", "train": {**TINY["train"], "init": f"mine/{name}"}}
    with pytest.raises(MRSRError, match=f"holds a training run already \\({name}\\)"):
        train(resolve_config(cfg, base=workdir), progress=False)
    assert kept.read_bytes() == before and sorted(p.name for p in kept.parent.iterdir()) == [name]


def test_a_config_extends_another_whose_paths_stay_its_own(workdir):
    (workdir / "base").mkdir()
    parent = write_config(workdir / "base", {**TINY, "data": {"train": "../vols"}}, "parent.yaml")
    child = workdir / "child.yaml"
    child.write_text(
        "extends: base/parent.yaml\ntrain: {max_steps: 2, init: run/last.safetensors}\n"
        "output_dir: tuned\n"
    )
    cfg = load_config(child)
    assert Path(cfg["data"]["train"][0]).resolve() == (workdir / "vols").resolve()
    assert cfg["train"]["max_steps"] == 2 and cfg["train"]["batch_size"] == 4  # merged
    assert cfg["train"]["init"] == str(workdir.resolve() / "run" / "last.safetensors")
    assert cfg["output_dir"] == str(workdir.resolve() / "tuned")
    assert load_config(parent)["output_dir"] == str((workdir / "base").resolve() / "run")


@pytest.mark.parametrize(
    "text, message",
    [
        ("extends: c.yaml\n", "leads back to c.yaml"),
        ("extends: d.yaml\n", "leads back to c.yaml"),
        ("extends: [a, b]\n", "extends must be the path of another config"),
        ("extends: none.yaml\n", "none.yaml: no such config file"),
    ],
)
def test_extends_loops_and_bad_values_are_refused(workdir, text, message):
    (workdir / "c.yaml").write_text(text)
    (workdir / "d.yaml").write_text("extends: c.yaml\n")
    with pytest.raises(MRSRError, match=message):
        load_config(workdir / "c.yaml")
