"""Every bad input gets a clear answer; nothing is lost; no file can run code."""

import gzip
import os
import pickle
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import make_affine, meta_volume, phantom
from hypothesis import given, settings
from hypothesis import strategies as st

from mrsr import Pipeline
from mrsr.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.inference import sr_affine, super_resolve
from mrsr.io import load_volume
from mrsr.networks import create
from mrsr.training.state import load_state
from mrsr.transforms import KSpaceTruncation, degrade

SMALL = {"channels": 8, "n_blocks": 1, "n_units": 1}


def nifti(path, data, affine=None, **header):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


def checkpoint(path, scale=2, network="cssfn", options=SMALL, **fields):
    spec = ModelSpec.create(network, scale, options=options, info={"trained": True})
    model = spec.build()
    spec = ModelSpec(**{**spec.__dict__, **fields})
    save_checkpoint(path, model, spec)
    return path


def bad_file(tmp, name, content: bytes):
    (tmp / name).write_bytes(content)
    return tmp / name


def truncated(tmp):
    good = nifti(tmp / "good.nii.gz", phantom((20, 20, 4)))
    data = good.read_bytes()
    good.unlink()
    return bad_file(tmp, "cut.nii.gz", data[: len(data) // 2])


def corrupt_header(tmp):
    raw = bytearray(nib.Nifti1Image(phantom((8, 8, 2)), np.eye(4)).to_bytes())
    raw[70:72] = (12345).to_bytes(2, "little")  # datatype: no such code
    return bad_file(tmp, "hdr.nii.gz", gzip.compress(bytes(raw)))


def singular(tmp):
    img = nib.Nifti1Image(phantom((8, 8, 2)), None)
    a = np.eye(4)
    a[1, 1] = 0
    img.header.set_sform(a, code=1)
    img.header.set_qform(None, code=0)
    nib.save(img, str(tmp / "sing.nii.gz"))
    return tmp / "sing.nii.gz"


def with_nan(tmp):
    data = phantom((8, 8, 2))
    data[1, 2, 0] = np.nan
    data[3, 3, 1] = np.inf
    return nifti(tmp / "nan.nii.gz", data)


# (name, make input, extra args, expected exit code, expected words in the one-line error)
FAILING = [
    ("missing", lambda t: t / "none.nii.gz", [], "no such file"),
    ("empty", lambda t: bad_file(t, "e.nii.gz", b""), [], "cannot be read"),
    ("text", lambda t: bad_file(t, "t.nii.gz", b"hello, world\n" * 50), [], "cannot be read"),
    ("random", lambda t: bad_file(t, "r.nii.gz", os.urandom(4096)), [], "cannot be read"),
    ("truncated gzip", truncated, [], "cannot be read"),
    ("corrupt header", corrupt_header, [], "cannot be read"),
    ("nan", with_nan, [], "2 voxels are NaN or infinite"),
    ("singular affine", singular, [], "affine is singular"),
    ("unknown format", lambda t: bad_file(t, "v.png", b"\x89PNG"), [], "unsupported format"),
    ("other scale", None, ["--model", "ckpt:3", "--scale", "2"], "x3 model, but --scale 2"),
    ("other network", None, ["--model", "ckpt:msrn-spec"], "do not match network"),
    ("newer version", None, ["--model", "ckpt:v99"], "newer than this mrsr"),
    ("truncated checkpoint", None, ["--model", "ckpt:cut"], "not a readable safetensors"),
    ("pickle checkpoint", None, ["--model", "ckpt:pt"], "pickle-based checkpoints are refused"),
    ("unknown model", None, ["--model", "edsr"], "not a checkpoint file"),
]


def make_model(tmp, kind):
    if kind == "3":
        return str(checkpoint(tmp / "m3.safetensors", scale=3))
    if kind == "msrn-spec":  # CSSFN weights labelled as MSRN
        path = checkpoint(tmp / "m.safetensors")
        spec, model = load_checkpoint(path)
        bad = ModelSpec("msrn", 2, {"channels": 8, "n_blocks": 1})
        save_checkpoint(path, model, bad)
        return str(path)
    if kind == "v99":
        return str(checkpoint(tmp / "v.safetensors", version="99.0.0"))
    if kind == "cut":
        path = checkpoint(tmp / "c.safetensors")
        path.write_bytes(path.read_bytes()[:100])
        return str(path)
    if kind == "pt":
        torch.save({"weights": torch.zeros(2)}, tmp / "model.pt")
        return str(tmp / "model.pt")
    raise AssertionError(kind)


@pytest.mark.parametrize("name,make,extra,words", FAILING, ids=[f[0] for f in FAILING])
def test_catalogue_failures_give_one_line_and_leave_no_file(
    tmp_path, capsys, name, make, extra, words
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = make(inputs) if make else nifti(inputs / "ok.nii.gz", phantom((12, 12, 2)))
    extra = [make_model(tmp_path, a[5:]) if a.startswith("ckpt:") else a for a in extra]
    before = sorted(os.listdir(inputs))
    out = tmp_path / "out"
    out.mkdir()
    code = main(["upscale", str(src), str(out / "o.nii.gz"), *(extra or ["--model", "zerofill"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    errors = [line for line in err if line.startswith("mrsr: error:")]
    assert len(errors) == 1 and words in errors[0], err
    assert not any("Traceback" in line for line in err)
    assert os.listdir(out) == [] and sorted(os.listdir(inputs)) == before


def test_python_api_raises_the_error_type(tmp_path):
    for make in (truncated, corrupt_header, singular, with_nan):
        with pytest.raises(MRSRError):
            load_volume(make(tmp_path))
    with pytest.raises(MRSRError, match="pickle"):
        Pipeline.from_pretrained(make_model(tmp_path, "pt"))
    with pytest.raises(MRSRError, match="newer"):
        load_checkpoint(make_model(tmp_path, "v99"))
    data = phantom((8, 8, 2))
    data[0, 0, 0] = np.nan
    with pytest.raises(MRSRError, match="NaN"):
        Pipeline("zerofill")(data, affine=np.eye(4))


# (name, data, affine, header, output shape for x2 zero-fill)
HANDLED = [
    ("2D image", phantom((12, 10)), np.diag([0.5, 0.5, 1.0, 1]), {}, (24, 20, 1)),
    (
        "4D series",
        np.stack([phantom((12, 10, 3), seed=s) for s in (1, 2)], -1),
        None,
        {},
        (24, 20, 3, 2),
    ),
    ("5D vector", phantom((12, 10, 3))[..., None, None].repeat(2, -1), None, {}, (24, 20, 3, 2)),
    ("all zero", np.zeros((12, 10, 3), np.float32), None, {}, (24, 20, 3)),
    ("constant", np.full((12, 10, 3), 7.0, np.float32), None, {}, (24, 20, 3)),
    ("negative", phantom((12, 10, 3)) - 80, None, {}, (24, 20, 3)),
    ("tiny", phantom((2, 3, 1)), None, {}, (4, 6, 1)),
    ("odd size", phantom((13, 11, 3)), None, {}, (26, 22, 3)),
    ("big-endian int", np.arange(360, dtype=">i2").reshape(12, 10, 3), None, {}, (24, 20, 3)),
    (
        "no affine codes",
        phantom((12, 10, 3)),
        None,
        {"qform_code": 0, "sform_code": 0},
        (24, 20, 3),
    ),
    ("oblique", phantom((12, 10, 3)), make_affine("oblique"), {}, (24, 20, 3)),
]


@pytest.mark.parametrize("name,data,affine,header,shape", HANDLED, ids=[h[0] for h in HANDLED])
def test_catalogue_inputs_that_work(tmp_path, name, data, affine, header, shape):
    src = nifti(tmp_path / "in.nii.gz", data, affine, **header)
    out = tmp_path / "out.nii.gz"
    assert main(["upscale", str(src), str(out), "--model", "zerofill"]) == 0
    result = nib.load(str(out))
    assert result.shape == shape
    values = result.get_fdata()
    assert np.isfinite(values).all()
    if name in ("all zero", "constant"):
        np.testing.assert_allclose(values, data.max(), atol=1e-4)


def test_scaled_integers_and_small_network_on_a_tiny_volume(tmp_path):
    img = nib.Nifti1Image(np.arange(12, dtype=np.int16).reshape(2, 3, 2), np.eye(4))
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    ckpt = checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "o.nii.gz"
    assert main(["upscale", str(tmp_path / "s.nii.gz"), str(out), "--model", str(ckpt)]) == 0
    assert nib.load(str(out)).shape == (4, 6, 2)


@pytest.mark.parametrize(
    "target,words",
    [
        ("missing/o.nii.gz", "output folder does not exist"),
        ("file.txt/o.nii.gz", "output folder does not exist"),
        ("exists.nii.gz", "already exists"),
        ("in.nii.gz", "output path equals the input"),
    ],
)
def test_bad_output_paths(tmp_path, capsys, target, words):
    src = nifti(tmp_path / "in.nii.gz", phantom((8, 8, 2)))
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "exists.nii.gz").write_bytes(b"precious")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main(["upscale", str(src), str(tmp_path / target), "--model", "zerofill"]) == 2
    assert words in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


class Payload:
    """Unpickling this creates the marker file: the proof that a loader ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_no_entry_point_unpickles(tmp_path, write_nifti):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(Payload(marker))
    for name in ("evil.pt", "evil.pth", "evil.safetensors", "evil.bin"):
        (tmp_path / name).write_bytes(payload)
    torch.save({"x": Payload(marker)}, tmp_path / "torchsave.safetensors")
    src = write_nifti("lr.nii.gz", phantom((8, 8, 2)), np.eye(4))
    for name in ("evil.pt", "evil.pth", "evil.safetensors", "evil.bin", "torchsave.safetensors"):
        path = tmp_path / name
        with pytest.raises(MRSRError):
            load_checkpoint(path)
        with pytest.raises(MRSRError):
            Pipeline.from_pretrained(path)
        assert main(["upscale", src, str(tmp_path / "o.nii.gz"), "--model", str(path)]) == 2
        with pytest.raises(MRSRError):
            load_state(path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.safetensors").write_bytes(payload)
    (tmp_path / "vols").mkdir()
    nib.save(nib.Nifti1Image(phantom((24, 24, 3)), np.eye(4)), str(tmp_path / "vols" / "v.nii.gz"))
    config = {
        "data": {"train": "vols"},
        "model": {"name": "cssfn", **SMALL},
        "train": {"patch_size": 8, "max_steps": 2},
        "output_dir": "run",
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml"), "--resume"]) == 2
    assert not marker.exists()


def test_engine_retries_in_smaller_batches_when_memory_runs_out():
    net = create("zerofill", scale=2)
    vol = meta_volume(phantom((10, 8, 7)), np.eye(4))
    expected = super_resolve(vol, net, 2, batch_size=1)

    class Greedy(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 2:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")
            return net(x)

    got = super_resolve(vol, Greedy(), 2, batch_size=8)
    torch.testing.assert_close(got.as_tensor(), expected.as_tensor())

    class Hopeless(torch.nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(MRSRError, match="one 10x8 slice does not fit"):
        super_resolve(vol, Hopeless(), 2)


@pytest.mark.slow
def test_killed_training_resumes_and_every_file_loads(tmp_path):
    (tmp_path / "vols").mkdir()
    for i in range(2):
        image = nib.Nifti1Image(phantom((40, 40, 4), seed=i), np.eye(4))
        nib.save(image, str(tmp_path / "vols" / f"v{i}.nii.gz"))
    config = {
        "data": {"train": "vols"},
        "model": {"name": "cssfn", "channels": 64, "n_blocks": 2, "n_units": 2},
        "train": {"patch_size": 8, "batch_size": 2, "max_steps": 400, "val_every": 1},
        "output_dir": "run",
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "mrsr", "train", str(tmp_path / "c.yaml")]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    state = tmp_path / "run" / "state.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not state.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    visible = [p for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")]
    for path in visible:
        if path.name.endswith(".safetensors") and path.name != "state.safetensors":
            load_checkpoint(path)
    assert load_state(state)["step"] >= 1
    resumed = subprocess.run(
        cmd + ["--resume", "--set", "train.max_steps=" + str(load_state(state)["step"] + 2)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
    )
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(4, 20), st.integers(4, 20), st.integers(1, 4)),
    scale=st.integers(2, 4),
    zooms=st.tuples(st.floats(0.3, 2.0), st.floats(0.3, 2.0)),
    angles=st.tuples(st.floats(-180, 180), st.floats(-90, 90), st.floats(-180, 180)),
    flip=st.booleans(),
)
def test_degrade_and_exact_upsampling_keep_world_coordinates(shape, scale, zooms, angles, flip):
    """Property: for any grid, LR voxel i sits at HR voxel s*i in world space, and the engine
    puts the super-resolved grid exactly on the (cropped) reference grid."""
    from conftest import rotation

    affine = np.eye(4)
    affine[:3, :3] = rotation(angles) @ np.diag([*zooms, 4.0]) @ np.diag([-1 if flip else 1, 1, 1])
    affine[:3, 3] = [3.0, -7.0, 11.0]
    if min(shape[:2]) < scale:
        return
    lr, hr = degrade(meta_volume(phantom(shape, sigma=2.0), affine), scale, "kspace")
    a_lr, a_hr = lr.affine.numpy(), hr.affine.numpy()
    i = np.array([1, 2, 0, 1.0])
    np.testing.assert_allclose(a_lr @ i, a_hr @ (i * [scale, scale, 1, 1]), atol=1e-9)
    out = super_resolve(lr, create("zerofill", scale=scale), scale, "kspace", axis=2)
    assert out.shape == hr.shape
    np.testing.assert_allclose(out.affine.numpy(), a_hr, atol=1e-9)
    np.testing.assert_allclose(sr_affine(a_lr, 2, scale, "kspace"), a_hr, atol=1e-9)
    assert np.isfinite(out.numpy()).all()


@settings(max_examples=30, deadline=None)
@given(m=st.integers(3, 12), n=st.integers(3, 12), scale=st.integers(2, 4))
def test_truncation_of_band_limited_data_is_exact(m, n, scale):
    """Property: truncating the zero-filled upsampling of odd-sized data gives the data back."""
    from mrsr import kspace

    m, n = m | 1, n | 1
    x = torch.from_numpy(phantom((m, n), sigma=1.5)).double()
    up = kspace.zero_fill(x, (m * scale, n * scale), dims=(0, 1))
    back = KSpaceTruncation(scale, axes=(0, 1))(up[None].float())[0]
    torch.testing.assert_close(back.as_tensor().double(), x, rtol=1e-4, atol=1e-3)


def test_folder_overlap_gives_the_same_outputs_in_order_and_reports_failures(tmp_path):
    """Read-ahead and write-behind change nothing in the outputs; outcomes come in job order,
    a bad volume among them reported in its place."""
    from mrsr import Pipeline

    src = tmp_path / "in"
    src.mkdir()
    for k in range(4):
        nib.save(
            nib.Nifti1Image(phantom((20, 18, 3), seed=k), np.eye(4)), str(src / f"v{k}.nii.gz")
        )
    (src / "v2.nii.gz").write_bytes(b"not a volume")
    pipe = Pipeline.from_pretrained("cssfn-kspace-x2", precision="fp32")
    results = {}
    for overlap in (True, False):
        out = tmp_path / f"out_{overlap}"
        out.mkdir()
        jobs = [(src / f"v{k}.nii.gz", out / f"v{k}.nii.gz") for k in range(4)]
        outcomes = list(pipe.save_each(jobs, overlap=overlap))
        assert [k for k, _ in outcomes] == [0, 1, 2, 3]
        assert isinstance(outcomes[2][1], Exception) and "v2.nii.gz" in str(outcomes[2][1])
        assert [o for k, o in outcomes if k != 2] == [jobs[k][1] for k in (0, 1, 3)]
        results[overlap] = out
        assert sorted(os.listdir(out)) == sorted(
            f"v{k}.{e}" for k in (0, 1, 3) for e in ("json", "nii.gz")
        )
    for k in (0, 1, 3):
        a, b = (nib.load(results[o] / f"v{k}.nii.gz") for o in (True, False))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
        assert a.header.binaryblock == b.header.binaryblock
        sidecars = [(results[o] / f"v{k}.json").read_text() for o in (True, False)]
        assert sidecars[0] == sidecars[1]


# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
PEAK = """
import sys
from mrsr.cli import main
from mrsr import Pipeline
Pipeline("zerofill", 2)
code = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(code, int(peak) * 1024)
"""


def peak_rss(*argv: str) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True)
    code, peak = done.stdout.split()
    assert code == "0", done.stderr
    return int(peak)


@pytest.mark.slow
def test_upscale_memory_stays_near_the_data(tmp_path):
    """Peak resident memory beyond what importing mrsr takes is at most twice the input plus
    the output array (384 x 384 x 64 float32 -> x2 zero-fill: 180 MiB of arrays); the engine
    that normalised a whole copy, checked the whole output at once and ran 8 slices of 768 x
    768 per batch took 3.5 times."""
    shape = (384, 384, 64)
    data = phantom(shape, sigma=20.0)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "in.nii.gz"))
    arrays = data.nbytes * (1 + 4)
    extra = (
        peak_rss(
            "upscale",
            str(tmp_path / "in.nii.gz"),
            str(tmp_path / "o.nii.gz"),
            "--model",
            "zerofill",
            "-q",
        )
        - peak_rss()
    )
    assert extra <= 2 * arrays, (
        f"{extra / 2**20:.0f} MiB beyond imports for {arrays / 2**20:.0f} MiB"
    )


def test_a_killed_sidecar_write_leaves_nothing_after_the_rerun(tmp_path):
    """A kill can hit the sidecar's write as well as the volume's (the background writer makes
    that likelier): the rerun removes both kinds of temporary under the output's lock."""
    from mrsr.cli import main

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    nib.save(nib.Nifti1Image(phantom((12, 10, 3)), np.eye(4)), str(src / "s0.nii.gz"))
    (dst / ".s0.json.k1ll3d.tmp.json").write_text("{")
    (dst / ".s0.nii.gz.k1ll3d.tmp.nii.gz").write_bytes(b"partial")
    assert main(["upscale", str(src), str(dst), "--model", "zerofill", "-q"]) == 0
    assert sorted(os.listdir(dst)) == ["s0.json", "s0.nii.gz"]


def test_a_kill_after_the_rename_leaves_no_lock_behind_a_finished_output(tmp_path):
    """A kill between the volume's rename and the lock's removal leaves a finished output with
    its lock file: the rerun skips that output and tidies its lock, unless a live run holds it."""
    import fcntl

    from mrsr.cli import main

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(phantom((12, 10, 3)), np.eye(4)), str(src / f"s{i}.nii.gz"))
    assert main(["upscale", str(src), str(dst), "--model", "zerofill", "-q"]) == 0
    (dst / ".s0.nii.gz.lock").write_text("4242 killed-host\n")
    (dst / ".s0.nii.gz.k1ll3d.tmp.nii.gz").write_bytes(b"partial")
    held = open(dst / ".s1.nii.gz.lock", "w")  # a live run still holds s1's lock
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        assert main(["upscale", str(src), str(dst), "--model", "zerofill", "-q"]) == 0
        names = sorted(os.listdir(dst))
    finally:
        held.close()
    assert names == [".s1.nii.gz.lock", "s0.json", "s0.nii.gz", "s1.json", "s1.nii.gz"]


@pytest.mark.parametrize("new_input", [False, True])
def test_a_rerun_removes_the_write_probe_a_killed_run_left(tmp_path, new_input):
    """A kill while the output folder's write probe exists leaves it; the next run removes it,
    whether it has outputs to write there or finds them all finished."""
    from mrsr.cli import main

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    nib.save(nib.Nifti1Image(phantom((12, 10, 3)), np.eye(4)), str(src / "s0.nii.gz"))
    assert main(["upscale", str(src), str(dst), "--model", "zerofill", "-q"]) == 0
    (dst / ".mrsr-write-test.k1ll3d").write_bytes(b"")
    if new_input:
        nib.save(nib.Nifti1Image(phantom((12, 10, 3)), np.eye(4)), str(src / "s1.nii.gz"))
    assert main(["upscale", str(src), str(dst), "--model", "zerofill", "-q"]) == 0
    expected = ["s0.json", "s0.nii.gz"] + (["s1.json", "s1.nii.gz"] if new_input else [])
    assert sorted(os.listdir(dst)) == expected
