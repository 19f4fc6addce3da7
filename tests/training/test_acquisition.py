"""The scanner model of training pairs (complex coil images), site-balanced volume draws and
several patches per degraded slice."""

import json

import numpy as np
import pytest
import torch
from conftest import phantom

from mrsr import kspace
from mrsr.errors import MRSRError
from mrsr.training import resolve_config, train
from mrsr.training.acquisition import ScannerImage, lr_and_target
from mrsr.training.data import PatchPairs, collate_pairs, site_labels
from mrsr.transforms import KSpaceTruncation


def _slab(n: int = 3, size: int = 48, seed: int = 0) -> torch.Tensor:
    slab = torch.from_numpy(phantom((n, size, size), seed=seed, sigma=2.0))
    return slab / slab.max()


def test_complex_truncation_keeps_the_phase_and_matches_magnitude_truncation():
    x = torch.rand(2, 20, 16)
    phase = torch.linspace(0, 2, 16)
    z = kspace.truncate(x * torch.exp(1j * phase), [10, 8], (-2, -1))
    assert z.is_complex() and float(z.imag.abs().max()) > 0.1
    torch.testing.assert_close(
        kspace.truncate(x.to(torch.complex64), [10, 8], (-2, -1)).abs(),
        kspace.truncate(x, [10, 8], (-2, -1)),
    )


def test_a_noiseless_real_scanner_image_reduces_to_the_magnitude_truncation():
    hr = _slab()[:1]
    channels = ScannerImage(coils=1)(hr, np.random.default_rng(0))
    lr, target = lr_and_target(channels[None], scale=2)
    torch.testing.assert_close(target[0], hr)
    torch.testing.assert_close(lr[0], KSpaceTruncation(2, axes=(0, 1))(hr).as_tensor())


def test_smooth_phase_changes_the_acquisition_but_not_the_target():
    hr = _slab()[:1]
    scanner = ScannerImage(phase=3.0)
    channels = scanner(hr, np.random.default_rng(3))
    lr, target = lr_and_target(channels[None], scale=2)
    torch.testing.assert_close(target[0], hr)  # |m exp(i phi)| = m
    magnitude_lr = KSpaceTruncation(2, axes=(0, 1))(hr).as_tensor()
    assert float((lr[0] - magnitude_lr).abs().max()) > 1e-3
    # smooth: neighbouring pixels' phases differ little
    phase = torch.angle(channels[0, 0])[hr[0] > 0.2]
    assert float(phase.std()) > 0.05
    step = torch.angle(channels[0, 0, :, 1:] * channels[0, 0, :, :-1].conj())
    assert float(step[hr[0, :, 1:] > 0.2].abs().max()) < 0.5


def test_coil_noise_is_non_central_chi_with_up_to_the_given_coils():
    empty = torch.zeros(1, 32, 32)
    scanner = ScannerImage(hr_noise=0.05, coils=4)
    counts = set()
    for seed in range(40):
        channels = scanner(empty, np.random.default_rng(seed))
        active = int((channels.abs().flatten(1).amax(1) > 0).sum())
        counts.add(active)
        _, target = lr_and_target(channels[None], scale=2)
        torch.testing.assert_close(target[0] ** 2, channels.abs().square().sum(0))
    assert counts == {1, 2, 3, 4}


def test_partial_fourier_removes_one_side_of_one_axis():
    hr = 0.5 + torch.rand(
        1, 48, 48, generator=torch.Generator().manual_seed(0)
    )  # broadband: no frequency is empty by itself
    scanner = ScannerImage(partial_fourier=1.0)
    for seed in range(6):
        channels = scanner(hr, np.random.default_rng(seed))
        power = torch.fft.fftshift(torch.fft.fft2(channels[0, 0])).abs()
        floor = 1e-5 * float(power.max())  # float32 rounding of the two transforms
        empty_rows = (power.amax(1) < floor).float().mean()
        empty_cols = (power.amax(0) < floor).float().mean()
        missing = max(float(empty_rows), float(empty_cols))
        assert 0.12 <= missing <= 0.46
        assert min(float(empty_rows), float(empty_cols)) == 0.0  # one axis only
        axis = 1 if empty_rows > 0 else 0
        empty = torch.nonzero(power.amax(axis) < floor).flatten().tolist()
        n = power.shape[1 - axis]
        assert empty in (list(range(len(empty))), list(range(n - len(empty), n)))  # one side


def test_pairs_with_the_scanner_model_are_aligned_and_reproducible():
    slabs = [_slab(seed=k) for k in range(2)]
    options = dict(phase=1.0, coils=3, hr_noise=0.02, lowpass=0.5, partial_fourier=0.5, seed=2)
    pairs = PatchPairs(slabs, 2, 8, **options)
    lr, hr = pairs[5]
    assert lr.shape == (1, 8, 8) and hr.shape == (1, 16, 16) and not hr.is_complex()
    torch.testing.assert_close(PatchPairs(slabs, 2, 8, **options)[5][0], lr)
    on_device = PatchPairs(slabs, 2, 8, on_device=True, **options)
    from mrsr.training.data import collate_slices, device_pairs

    got = device_pairs(on_device, collate_slices([on_device[5]]), torch.device("cpu"))
    torch.testing.assert_close(got[0][0], lr)
    with pytest.raises(MRSRError, match="kspace"):
        PatchPairs(slabs, 2, 8, method="bicubic", phase=1.0)


def test_site_groups_balance_the_volume_draws():
    slabs = [torch.full((2, 32, 32), float(k + 1)) / 4 for k in range(4)]
    flat = PatchPairs(slabs, 2, 8, seed=1)
    grouped = PatchPairs(slabs, 2, 8, seed=1, groups=["a", "a", "a", "b"])

    def share_of_last(pairs):
        return np.mean([float(pairs[i][1].mean()) == 1.0 for i in range(400)])

    assert 0.18 < share_of_last(flat) < 0.32
    assert 0.42 < share_of_last(grouped) < 0.58


def test_site_labels_name_the_volume_without_a_site(tmp_path):
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps({"a.nii.gz": "site-1"}))
    assert site_labels([tmp_path / "a.nii.gz"], sites) == ["site-1"]
    with pytest.raises(MRSRError, match=r"no site for training volume\(s\) b.nii.gz"):
        site_labels([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"], sites)
    sites.write_text("[1, 2]")
    with pytest.raises(MRSRError, match="JSON object"):
        site_labels([tmp_path / "a.nii.gz"], sites)


def test_several_patches_per_slice_come_from_one_slice_and_train(tmp_path):
    slabs = [torch.full((1, 32, 32), (k + 1) / 4) for k in range(3)]  # the value names the slab
    pairs = PatchPairs(slabs, 2, 8, seed=0, patches=4)
    lr, hr = pairs[3]
    assert lr.shape == (4, 1, 8, 8) and hr.shape == (4, 1, 16, 16)
    sources = [{round(float(v), 4) for v in pairs[i][1].flatten(1).mean(1)} for i in range(12)]
    assert all(len(s) == 1 for s in sources)  # an item's patches share one slice
    assert len(set().union(*sources)) == 3
    assert [t.shape[0] for t in collate_pairs([pairs[0], pairs[1]])] == [8, 8]
    import nibabel as nib

    (tmp_path / "vols").mkdir()
    for i in range(2):
        image = nib.Nifti1Image(phantom((40, 36, 5), seed=i, sigma=3.0), np.diag([1, 1, 3, 1.0]))
        nib.save(image, str(tmp_path / "vols" / f"v{i}.nii.gz"))
    (tmp_path / "sites.json").write_text(json.dumps({"v0.nii.gz": "a", "v1.nii.gz": "b"}))
    cfg = {
        "data": {"train": "vols", "sites": "sites.json"},
        "degradation": {"method": "kspace", "scale": 2},
        "augment": {"phase": 1.0, "coils": 2, "partial_fourier": 0.3, "hr_noise": 0.01},
        "model": {"name": "cssfn", "channels": 8, "n_blocks": 1, "n_units": 1},
        "train": {"max_steps": 3, "batch_size": 8, "patches_per_slice": 4, "patch_size": 10},
        "output_dir": "run",
    }
    run = train(resolve_config(cfg, base=tmp_path), progress=False)
    log = (run.parent / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert log[-1].startswith("3,")
    with pytest.raises(MRSRError, match="multiple of train.patches_per_slice 3"):
        resolve_config(cfg, ["train.patches_per_slice=3"], base=tmp_path)


def test_lr_from_magnitude_truncates_the_scanner_target():
    slab = _slab(n=1)
    options = dict(phase=3.0, coils=3, hr_noise=0.03, partial_fourier=0.5, seed=4)
    lr, hr = PatchPairs([slab], 2, 24, lr_from="magnitude", **options)[2]  # the whole slice
    torch.testing.assert_close(lr, KSpaceTruncation(2, axes=(0, 1))(hr).as_tensor())
    coil_lr, coil_hr = PatchPairs([slab], 2, 24, **options)[2]
    torch.testing.assert_close(coil_hr, hr)  # the same scan
    assert float((coil_lr - lr).abs().max()) > 1e-3  # reconstructed from the coils instead
