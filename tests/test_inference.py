"""The slice-wise engine, mrsr.Pipeline and `mrsr upscale`: exactness, geometry, batching, files."""

import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import AFFINE_KINDS, make_affine, meta_volume, phantom, subvoxel_shift
from monai.data import MetaTensor

from mrsr import Pipeline, kspace
from mrsr.checkpoint import ModelSpec, save_checkpoint
from mrsr.cli import main
from mrsr.inference import super_resolve
from mrsr.intensity import intensity_window
from mrsr.networks import create
from mrsr.transforms import KSpaceTruncation

SMALL_CSSFN = {"channels": 8, "n_blocks": 1, "n_units": 1, "q": 2}


def band_limited(lr_shape, scale, kind="oblique", seed=0):
    """A volume on a fine grid that is exactly the zero-filled upsampling of odd-sized slices,
    so truncation followed by zero-filling must give it back to numerical precision."""
    lr = torch.from_numpy(phantom(lr_shape, seed=seed, sigma=2.0)).double()
    fine = (lr_shape[0] * scale, lr_shape[1] * scale)
    hr = kspace.zero_fill(lr, fine, dims=(0, 1))
    return meta_volume(hr.float().numpy(), make_affine(kind, (0.7, 0.7, 2.0)))


@pytest.mark.parametrize("scale", [2, 3])
def test_engine_with_the_exact_upsampler_reproduces_the_reference(scale):
    hr = band_limited((15, 13, 4), scale)
    lr = KSpaceTruncation(scale)(hr)
    out = super_resolve(lr, create("zerofill", scale=scale), scale, "kspace", batch_size=3)
    assert out.shape == hr.shape
    np.testing.assert_allclose(out.numpy(), hr.numpy(), rtol=1e-4, atol=1e-4 * float(hr.max()))
    np.testing.assert_allclose(out.affine.numpy(), hr.affine.numpy(), atol=1e-9)


def test_batch_size_and_slice_axis_do_not_change_the_result():
    torch.manual_seed(0)
    net = create("cssfn", scale=2, **SMALL_CSSFN)
    vol = meta_volume(phantom((12, 10, 7)), make_affine("ras"))
    one = super_resolve(vol, net, 2, batch_size=1)
    many = super_resolve(vol, net, 2, batch_size=5)
    torch.testing.assert_close(one.as_tensor(), many.as_tensor(), rtol=1e-5, atol=1e-5)
    # the same data with slices along axis 0 gives the same slices
    moved = meta_volume(phantom((12, 10, 7)).transpose(2, 0, 1), make_affine("ras"))
    along0 = super_resolve(moved, net, 2, axis=0, batch_size=4)
    torch.testing.assert_close(along0.as_tensor()[0].permute(1, 2, 0), one.as_tensor()[0])


def test_self_ensemble_respects_the_kspace_grid():
    """Flips mirror the coarse grid; on the k-space grid the engine must shift them back, so the
    exact upsampler gives the same volume with and without the self-ensemble."""
    vol = meta_volume(phantom((12, 10, 3), sigma=2.0), make_affine("ras"))
    net = create("zerofill", scale=3)
    plain = super_resolve(vol, net, 3, "kspace")
    tta = super_resolve(vol, net, 3, "kspace", tta=True)
    torch.testing.assert_close(tta.as_tensor(), plain.as_tensor(), rtol=1e-4, atol=1e-3)
    area = create("bicubic", scale=2, grid="area")
    plain, tta = (super_resolve(vol, area, 2, "area", tta=t).as_tensor() for t in (False, True))
    torch.testing.assert_close(tta[:, 3:-3, 3:-3], plain[:, 3:-3, 3:-3], rtol=1e-4, atol=1e-3)


def test_series_are_processed_volume_by_volume():
    data = np.stack([phantom((10, 8, 3), seed=s) for s in (1, 2)])
    vol = meta_volume(data[0], np.eye(4))
    series = MetaTensor(torch.from_numpy(data), affine=vol.affine)  # (2, X, Y, Z)
    net = create("bicubic", scale=2)
    out = super_resolve(series, net, 2)
    assert out.shape == (2, 20, 16, 3)
    torch.testing.assert_close(out.as_tensor()[:1], super_resolve(vol, net, 2).as_tensor())


def test_pipeline_accepts_paths_images_arrays(write_nifti):
    affine = make_affine("lps", (1.0, 1.0, 3.0))
    data = phantom((10, 12, 3))
    path = write_nifti("v.nii.gz", data, affine)
    pipe = Pipeline("zerofill", scale=2)
    results = [pipe(path), pipe(nib.load(path)), pipe(data, affine=affine)]
    for out in results:
        assert out.shape == (1, 20, 24, 3)
        torch.testing.assert_close(out.as_tensor(), results[0].as_tensor())
        np.testing.assert_allclose(out.affine.numpy(), results[0].affine.numpy())
    with pytest.raises(ValueError, match="affine"):
        pipe(data)


def _small_checkpoint(path, scale=2):
    torch.manual_seed(0)
    spec = ModelSpec(network="cssfn", scale=scale, options=SMALL_CSSFN, info={"trained": True})
    save_checkpoint(path, spec.build(), spec)
    return str(path)


@pytest.mark.parametrize("kind", AFFINE_KINDS)
@pytest.mark.parametrize("scale", [2, 3])
def test_degrade_then_upscale_lands_on_the_reference_grid(tmp_path, write_nifti, kind, scale):
    src = write_nifti("hr.nii.gz", phantom((37, 41, 4)), make_affine(kind, (0.9, 0.9, 3.0)))
    lr, ref, sr = (str(tmp_path / f"{n}.nii.gz") for n in ("lr", "ref", "sr"))
    assert main(["degrade", src, lr, "--scale", str(scale), "--hr-out", ref]) == 0
    model = (
        _small_checkpoint(tmp_path / "m.safetensors", scale) if kind == "oblique" else "zerofill"
    )
    assert main(["upscale", lr, sr, "--model", model, "--scale", str(scale)]) == 0
    out, reference = nib.load(sr), nib.load(ref)
    assert out.shape == reference.shape
    np.testing.assert_allclose(out.affine, reference.affine, atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms(), reference.header.get_zooms(), rtol=1e-5)


def test_upscaled_volume_overlays_the_reference_without_shift(tmp_path, write_nifti):
    src = write_nifti("hr.nii.gz", phantom((48, 44, 4), sigma=4.0), make_affine("oblique"))
    lr, ref, sr = (str(tmp_path / f"{n}.nii.gz") for n in ("lr", "ref", "sr"))
    assert main(["degrade", src, lr, "--scale", "2", "--hr-out", ref]) == 0
    assert main(["upscale", lr, sr, "--model", "bicubic", "--scale", "2"]) == 0
    shift = subvoxel_shift(nib.load(ref).get_fdata(), nib.load(sr).get_fdata(), margin=6)
    np.testing.assert_allclose(shift, 0.0, atol=0.02)


def test_scale_mismatch_and_untrained_warning(tmp_path, write_nifti, capsys):
    src = write_nifti("lr.nii.gz", phantom((10, 10, 2)), np.eye(4))
    ckpt = _small_checkpoint(tmp_path / "m.safetensors", scale=2)
    assert main(["upscale", src, str(tmp_path / "o.nii.gz"), "--model", ckpt, "--scale", "3"]) == 2
    err = capsys.readouterr().err
    assert "x2 model, but --scale 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()
    assert main(["upscale", src, str(tmp_path / "o.nii.gz"), "--model", "msrn"]) == 0
    assert "UNTRAINED" in capsys.readouterr().err


@pytest.mark.slow
def test_folder_mode_resumes_after_a_kill(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(8):
        nib.save(
            nib.Nifti1Image(phantom((96, 96, 24), seed=i), np.eye(4)), str(src / f"s{i}.nii.gz")
        )
    cmd = [sys.executable, "-m", "mrsr", "upscale", str(src), str(dst), "--model", "zerofill"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (dst.exists() and any(dst.glob("s*.nii.gz"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for f in dst.iterdir():
        if f.name.endswith(".nii.gz") and not f.name.startswith("."):
            assert nib.load(str(f)).shape == (192, 192, 24)  # every visible output is complete
    done = {f.name: f.stat().st_mtime_ns for f in dst.glob("s*.nii.gz")}
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    expected = sorted(f"s{i}.{e}" for i in range(8) for e in ("json", "nii.gz"))
    assert sorted(os.listdir(dst)) == expected  # no stray temporaries
    for name, mtime in done.items():
        assert (dst / name).stat().st_mtime_ns == mtime  # finished outputs were skipped


def test_engine_equals_a_plain_eager_loop_over_single_slices():
    torch.manual_seed(0)
    net = create("cssfn", scale=2, channels=16, n_blocks=2, n_units=2).eval()
    vol = meta_volume(phantom((30, 26, 5)), make_affine("ras"))
    lo, hi = intensity_window(vol.as_tensor()[0])
    with torch.no_grad():
        eager = [net((vol.as_tensor()[:, None, :, :, z] - lo) / (hi - lo)) for z in range(5)]
    eager = torch.stack([e[0, 0] * (hi - lo) + lo for e in eager], dim=-1)
    engine = super_resolve(vol, net, 2, batch_size=2, nonnegative=False).as_tensor()[0]
    torch.testing.assert_close(engine, eager, rtol=1e-5, atol=1e-5 * float(eager.abs().max()))
    bf16 = super_resolve(vol, net, 2, batch_size=2, precision="bf16", nonnegative=False)
    bf16 = bf16.as_tensor()[0]
    assert float((bf16 - eager).abs().mean() / eager.abs().mean()) < 1e-2


def test_upscale_with_data_consistency_reproduces_the_input_when_degraded(tmp_path, write_nifti):
    src = write_nifti("hr.nii.gz", phantom((36, 30, 3)), make_affine("oblique"))
    lr, sr, again = (str(tmp_path / f"{n}.nii.gz") for n in ("lr", "sr", "again"))
    assert main(["degrade", src, lr, "--scale", "2"]) == 0
    ckpt = _small_checkpoint(tmp_path / "m.safetensors", 2)
    assert main(["upscale", lr, sr, "--model", ckpt, "--data-consistency"]) == 0
    assert main(["degrade", sr, again, "--scale", "2"]) == 0
    a, b = nib.load(lr).get_fdata(), nib.load(again).get_fdata()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * a.max())
    np.testing.assert_allclose(nib.load(again).affine, nib.load(lr).affine, atol=1e-6)
    plain = str(tmp_path / "plain.nii.gz")
    assert main(["upscale", lr, plain, "--model", ckpt]) == 0
    assert main(["degrade", plain, str(tmp_path / "p2.nii.gz"), "--scale", "2"]) == 0
    assert np.abs(nib.load(str(tmp_path / "p2.nii.gz")).get_fdata() - a).max() > 1e-2 * a.max()


def test_output_of_non_negative_input_is_clamped_at_zero_unless_asked():
    """A sharp disc on a zero background: zero-filled k-space rings below 0 around it."""
    x = np.zeros((32, 32, 2), np.float32)
    yy, xx = np.mgrid[:32, :32]
    x[(yy - 16) ** 2 + (xx - 16) ** 2 < 64] = 100.0
    lr = KSpaceTruncation(2)(meta_volume(x, np.eye(4)))
    net = create("zerofill", scale=2)
    raw = super_resolve(lr, net, 2, nonnegative=False).as_tensor()
    assert float(raw.min()) < -1.0  # the ringing the clamp removes
    auto = super_resolve(lr, net, 2).as_tensor()
    assert float(auto.min()) == 0.0
    torch.testing.assert_close(auto, raw.clamp(min=0))
    shifted = meta_volume(lr.as_tensor()[0].numpy() - 50, np.eye(4))  # has negatives: kept
    assert float(super_resolve(shifted, net, 2).min()) < -50


@pytest.mark.parametrize(
    ("flags", "native"),
    [("fpu sse4_2 avx2 fma", False), ("avx2 avx512f avx512_bf16", True), ("avx2 amx_bf16", True)],
)
def test_bf16_is_native_only_with_avx512_bf16_or_amx_and_benchmarks_name_the_flags(
    flags, native, monkeypatch
):
    import mrsr.machine
    from mrsr.machine import native_bf16

    cpuinfo = f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
    monkeypatch.setattr(mrsr.machine, "_cpuinfo", lambda: dict(mrsr.machine.parse(cpuinfo)))
    assert native_bf16("cpu") is native
    line = mrsr.machine.describe()
    assert line.startswith("Test CPU 9000 (") and "torch kernels" in line
    shown = [f for f in mrsr.machine.SIMD_FLAGS if f in flags.split()]
    assert " ".join(shown) in line


def test_auto_device_and_precision_follow_the_machine(monkeypatch):
    from mrsr import Pipeline, machine

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cuda, mps, native = [False], [False], [False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda[0])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps[0])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: native[0])
    flags = lambda: frozenset({"avx2", "amx_bf16"} if native[0] else {"avx2"})  # noqa: E731
    monkeypatch.setattr(machine, "cpu_flags", flags)
    assert machine.resolve_device("auto") == "cpu"
    assert machine.resolve_precision("auto", "cpu") == "fp32"
    native[0] = True
    assert machine.resolve_precision("auto", "cpu") == "bf16"
    assert machine.resolve_precision("fp32", "cpu") == "fp32"  # an explicit choice stays
    mps[0] = True
    assert machine.resolve_device("auto") == "mps"
    assert machine.resolve_precision("auto", "mps") == "fp32"
    cuda[0] = True
    assert machine.resolve_device("auto") == "cuda" and machine.resolve_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert machine.resolve_device("auto") == "cuda:1"
    assert machine.resolve_precision("auto", "cuda:1") == "bf16"
    native[0] = False
    assert machine.resolve_precision("auto", "cuda:1") == "fp32"
    cuda[0] = mps[0] = False
    pipe = Pipeline("zerofill", 2)
    assert (pipe.device, pipe.precision) == ("cpu", "fp32")
    native[0] = True
    assert Pipeline("zerofill", 2).precision == "bf16"
    assert Pipeline("zerofill", 2, precision="fp32").precision == "fp32"
