"""Hostile and careless input, one class of defect at a time.

Every refusal must be: exit code 2, one line on stderr, no traceback, the inputs byte-identical
afterwards, and no file but the intended ones.
"""

import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from conftest import phantom, sitk_image, write_dicom_series
from safetensors.torch import save_file

from mrsr import Pipeline
from mrsr.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.inference import super_resolve
from mrsr.io import load_volume
from mrsr.networks import blocks, cssfn, interpolation
from mrsr.options import NETWORK_OPTIONS
from mrsr.outputs import output_name
from mrsr.pipeline import load_model
from mrsr.training import load_config

SMALL = {"channels": 8, "n_blocks": 1, "n_units": 1}


def snapshot(folder):
    """Every file below ``folder`` with its bytes (hidden temporaries and locks included)."""
    return {
        os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(folder)
        for f in files
    }


def refused(capsys, argv, words):
    """Run the command line; assert the one-line refusal that contains ``words``."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("mrsr: error: "), err
    assert words in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def nifti(path, shape=(12, 12, 3), dtype=np.float32, affine=None):
    img = nib.Nifti1Image(phantom(shape).astype(dtype), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def checkpoint(path, **fields):
    spec = ModelSpec.create("cssfn", 2, options=SMALL, info={"trained": True})
    save_checkpoint(path, spec.build(), ModelSpec(**{**spec.__dict__, **fields}))
    return path


# ---------------------------------------------------------------- 1. the output plan


def test_output_names_keep_the_whole_stem():
    assert output_name(Path("sub-01.ses-1.T1w.nrrd")) == "sub-01.ses-1.T1w.nii.gz"
    assert output_name(Path("sub-01.ses-2.T1w.MHA")) == "sub-01.ses-2.T1w.nii.gz"
    assert output_name(Path("a.b.nii")) == "a.b.nii"
    assert output_name(Path("series.1")) == "series.1.nii.gz"


def test_folder_inputs_differing_after_the_first_dot_all_survive(tmp_path, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for session in (1, 2):
        image = sitk_image(phantom((10, 10, 2), seed=session), np.eye(4))
        sitk.WriteImage(image, str(src / f"sub-01.ses-{session}.T1w.nrrd"))
    assert main(["upscale", str(src), str(dst), "--model", "zerofill", "--overwrite"]) == 0
    names = sorted(n for n in os.listdir(dst) if n.endswith(".nii.gz"))
    assert names == ["sub-01.ses-1.T1w.nii.gz", "sub-01.ses-2.T1w.nii.gz"]
    assert (dst / "sub-01.ses-1.T1w.json").is_file() and (dst / "sub-01.ses-2.T1w.json").is_file()
    a, b = (nib.load(str(dst / n)).get_fdata() for n in names)
    assert not np.allclose(a, b)


@pytest.mark.parametrize(
    "case,words",
    [
        ("folder into itself", "is the input folder"),
        ("two inputs one output", "would be written here"),
        ("degrade hr-out is output", "would be written here"),
        ("output is a folder", "is a folder"),
        ("hard link to the input", "output path equals the input"),
        ("symlink to the input", "output path equals the input"),
        ("detached data file", "output path equals the input"),
        ("inside a DICOM input", "would be written into the input folder"),
        ("unwritable folder", "cannot write here"),
    ],
)
def test_output_plan_is_refused_before_any_work(tmp_path, capsys, case, words):
    d = tmp_path / "d"
    d.mkdir()
    nifti(d / "a.nii.gz")
    args = ["upscale", d / "a.nii.gz", d / "o.nii.gz", "--model", "zerofill", "--overwrite"]
    if case == "folder into itself":
        args[1:3] = [d, d]
    elif case == "two inputs one output":
        sitk.WriteImage(sitk_image(phantom((10, 10, 2)), np.eye(4)), str(d / "b.nrrd"))
        sitk.WriteImage(sitk_image(phantom((10, 10, 2)), np.eye(4)), str(d / "b.mha"))
        args[1:3] = [d, tmp_path / "out"]
    elif case == "degrade hr-out is output":
        args = ["degrade", d / "a.nii.gz", d / "x.nii.gz", "--scale", "2"]
        args += ["--hr-out", d / "x.nii.gz", "--overwrite"]
    elif case == "output is a folder":
        (d / "o.nii.gz").mkdir()
    elif case == "hard link to the input":
        os.link(d / "a.nii.gz", d / "o.nii.gz")
    elif case == "symlink to the input":
        os.symlink(d / "a.nii.gz", d / "o.nii.gz")
    elif case == "detached data file":
        (d / "data.nii").write_bytes(phantom((8, 8, 2)).tobytes())
        header = "NDims = 3\nDimSize = 8 8 2\nElementType = MET_FLOAT\nElementDataFile = data.nii\n"
        (d / "v.mhd").write_text(header)
        args[1:3] = [d / "v.mhd", d / "data.nii"]
    elif case == "inside a DICOM input":
        write_dicom_series(sitk_image(phantom((8, 8, 3)).astype(np.int16), np.eye(4)), d / "s")
        args[1:3] = [d / "s", d / "s" / "o.nii.gz"]
    elif case == "unwritable folder":
        args[2] = "/proc/o.nii.gz"  # exists, but no file can be created there, even by root
    before = snapshot(tmp_path)
    refused(capsys, args, words)
    after = snapshot(tmp_path)
    assert after == before if case != "two inputs one output" else after.keys() <= before.keys()


# ---------------------------------------------------------------- 2. detached headers


def nhdr(folder, data_line, encoding="raw"):
    text = f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 2\nencoding: {encoding}\n"
    (folder / "v.nhdr").write_text(text + data_line + "\n\n")
    return folder / "v.nhdr"


@pytest.mark.parametrize(
    "kind",
    ["relative", "absolute", "list", "pattern", "mhd absolute", "mhd list", "symlink out"],
)
def test_detached_data_outside_the_header_folder_is_refused(tmp_path, capsys, kind):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"PASSWORD" * 8)
    d = tmp_path / "a" / "b"
    d.mkdir(parents=True)
    if kind == "relative":
        header = nhdr(d, "data file: ../../secret.raw")
    elif kind == "absolute":
        header = nhdr(d, f"data file: {secret}")
    elif kind == "list":
        (d / "ok.raw").write_bytes(bytes(16))
        header = nhdr(d, "data file: LIST\nok.raw\n../../secret.raw")
    elif kind == "pattern":
        header = nhdr(d, "data file: ../../secre%d.raw 0 1 1")
        (tmp_path / "secre0.raw").write_bytes(bytes(16))
        (tmp_path / "secre1.raw").write_bytes(bytes(16))
    elif kind.startswith("mhd"):
        target = f"{secret}" if kind == "mhd absolute" else "LIST\n../../secret.raw"
        header = d / "v.mhd"
        header.write_text(
            f"NDims = 3\nDimSize = 4 4 2\nElementType = MET_UCHAR\nElementDataFile = {target}\n"
        )
    else:
        os.symlink(secret, d / "link.raw")
        header = nhdr(d, "data file: link.raw")
    before = snapshot(tmp_path)
    out = tmp_path / "o.nii.gz"
    refused(capsys, ["upscale", header, out, "--model", "zerofill"], "outside the header's folder")
    assert snapshot(tmp_path) == before


def test_detached_data_beside_or_below_the_header_is_read(tmp_path):
    (tmp_path / "raw").mkdir()
    values = np.arange(32, dtype=np.uint8)
    (tmp_path / "raw" / "v.raw").write_bytes(values.tobytes())
    volume = Pipeline("nearest", 2)(nhdr(tmp_path, "data file: raw/v.raw"))
    assert volume.shape == (1, 8, 8, 2)
    assert float(volume.max()) == 31


# ---------------------------------------------------------------- 3. sizes


def lying_header(path, shape, compress=False):
    """A small file whose header claims ``shape``."""
    raw = bytearray(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])))
    header.set_data_shape(shape)
    raw[:348] = header.binaryblock
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    return path


MEMORY_LIMITED = textwrap.dedent(
    """
    import resource, sys
    import torch
    import mrsr.checkpoint, mrsr.io, mrsr.pipeline, mrsr.transforms
    from mrsr.cli import main
    from mrsr.memory import _meminfo
    torch.ones(8).sum()  # the thread pool and allocator are mapped before the limit
    mapped = _meminfo("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + {limit} * 2**20, resource.RLIM_INFINITY))
    sys.exit(main(sys.argv[1:]))
    """
)


def limited(argv, limit_mib=600):
    """The command line in a child process that may allocate only ``limit_mib`` more MiB."""
    code = MEMORY_LIMITED.format(limit=limit_mib)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=120
    )


def test_claimed_sizes_are_checked_against_the_file(tmp_path, capsys):
    out = tmp_path / "o.nii.gz"
    big = lying_header(tmp_path / "big.nii", (1000, 1000, 1000))
    refused(capsys, ["upscale", big, out, "--model", "zerofill"], "but the data holds only")
    bomb = lying_header(tmp_path / "bomb.nii.gz", (1000, 1000, 1000), compress=True)
    refused(capsys, ["upscale", bomb, out, "--model", "zerofill"], "decompression bomb")
    (tmp_path / "d.raw").write_bytes(bytes(100))
    header = tmp_path / "v.mhd"
    header.write_text(
        "NDims = 3\nDimSize = 900 900 900\nElementType = MET_FLOAT\nElementDataFile = d.raw\n"
    )
    refused(capsys, ["upscale", header, out, "--model", "zerofill"], "but the data holds only")
    assert not out.exists()


@pytest.mark.slow
def test_memory_bombs_are_refused_under_a_memory_limit(tmp_path):
    """A real gzip bomb (600^3 zeros: 0.2 GB in 0.2 MB) and a x16 upscale that would need
    gigabytes: each refused by the estimate, with the figure, before any allocation fails."""
    bomb = tmp_path / "bomb.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((600, 600, 600), np.uint8), np.eye(4)), str(bomb))
    small = nifti(tmp_path / "small.nii.gz", (400, 400, 8))
    wide = tmp_path / "wide.safetensors"
    spec = ModelSpec.create("cssfn", 2, options=SMALL)
    save_checkpoint(wide, spec.build(), spec)
    meta = {**spec.__dict__, "options": {**SMALL, "n_blocks": 64, "channels": 1024}}
    save_file({}, str(tmp_path / "huge.safetensors"), metadata={"mrsr": json.dumps(meta)})
    cases = [
        ([bomb, tmp_path / "o1.nii.gz", "--model", "zerofill"], "needs about"),
        ([small, tmp_path / "o2.nii.gz", "--model", "zerofill", "--scale", "16"], "needs about"),
        ([small, tmp_path / "o3.nii.gz", "--model", tmp_path / "huge.safetensors"], "needs about"),
    ]
    for argv, words in cases:
        run = limited(["upscale", *argv], limit_mib=1024)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and words in lines[0], run.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["bomb.nii.gz", "small.nii.gz", "wide.safetensors", "huge.safetensors"]
    )


@pytest.mark.parametrize(
    "options,words",
    [
        ({"n_blocks": 10_000_000}, "n_blocks must be an integer from 1 to 64"),
        ({"channels": 100_000}, "channels must be an integer from 1 to 1024"),
        ({"channels": "wide"}, "channels must be an integer"),
        ({"nonsense": 1}, "is not an option of cssfn"),
    ],
)
def test_checkpoint_spec_is_validated_before_anything_is_built(tmp_path, options, words):
    spec = ModelSpec.create("cssfn", 2, options=SMALL)
    meta = {**spec.__dict__, "options": {**SMALL, **options}}
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"mrsr": json.dumps(meta)})
    with pytest.raises(MRSRError, match=words):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "change,words",
    [
        ({"scale": 0}, "scale must be an integer from 2 to 16"),
        ({"network": "edsr"}, "is not one of"),
        ({"normalisation": {"kind": "percentile", "lower": 90, "upper": 10}}, "below upper"),
        ({"normalisation": "x"}, "must be a JSON object"),
        ({"extra": 1}, "not an mrsr model description"),
    ],
)
def test_checkpoint_spec_fields_have_declared_ranges(tmp_path, change, words):
    spec = ModelSpec.create("cssfn", 2, options=SMALL)
    path = tmp_path / "m.safetensors"
    model = spec.build()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"mrsr": json.dumps({**spec.__dict__, **change})})
    with pytest.raises(MRSRError, match=words):
        load_checkpoint(path)


# ---------------------------------------------------------------- 4. values


def header_with(path, **fields):
    raw = bytearray(nib.Nifti1Image(phantom((8, 8, 2)), np.eye(4)).to_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])))
    header.set_sform(np.eye(4), code=1)
    header.set_qform(np.eye(4), code=1)
    for key, (index, value) in fields.items():
        field = header[key]
        field[index] = value
        header[key] = field
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    "fields,words",
    [
        ({"pixdim": (1, np.nan)}, "pixdim is NaN"),
        ({"pixdim": (2, np.inf)}, "pixdim is NaN"),
        ({"srow_x": (0, np.nan)}, "sform is NaN"),
        ({"qoffset_y": ((), np.inf)}, "qoffset is NaN"),
        ({"quatern_b": ((), np.nan)}, "quaternion is NaN"),
    ],
)
def test_non_finite_geometry_is_refused(tmp_path, capsys, fields, words):
    src = header_with(tmp_path / "g.nii", **fields)
    refused(capsys, ["upscale", src, tmp_path / "o.nii.gz", "--model", "zerofill"], words)
    assert os.listdir(tmp_path) == ["g.nii"]


def test_non_finite_sitk_spacing_is_refused(tmp_path, capsys):
    (tmp_path / "d.raw").write_bytes(bytes(32))
    header = tmp_path / "v.mhd"
    header.write_text(
        "NDims = 3\nDimSize = 4 4 2\nElementSpacing = 1 nan 1\n"
        "ElementType = MET_UCHAR\nElementDataFile = d.raw\n"
    )
    refused(capsys, ["upscale", header, tmp_path / "o.nii.gz", "--model", "zerofill"], "spacing")


def test_complex_voxels_are_refused_with_what_to_do(tmp_path, capsys):
    src = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(phantom((8, 8, 2)).astype(np.complex64), np.eye(4)), str(src))
    line = refused(
        capsys, ["upscale", src, tmp_path / "o.nii.gz", "--model", "zerofill"], "complex voxels"
    )
    assert "magnitude" in line


def test_broken_weights_and_outputs_are_refused(tmp_path, capsys):
    src = nifti(tmp_path / "a.nii.gz")
    spec = ModelSpec.create("cssfn", 2, options=SMALL)
    state = {k: v.clone().contiguous() for k, v in spec.build().state_dict().items()}
    first = next(iter(state))
    meta = {"mrsr": json.dumps(spec.__dict__)}
    save_file({**state, first: state[first] * np.nan}, str(tmp_path / "nan.safetensors"), meta)
    ints = {**state, first: state[first].to(torch.int32)}
    save_file(ints, str(tmp_path / "int.safetensors"), meta)
    out = tmp_path / "o.nii.gz"
    refused(capsys, ["upscale", src, out, "--model", tmp_path / "nan.safetensors"], "NaN")
    refused(
        capsys, ["upscale", src, out, "--model", tmp_path / "int.safetensors"], "not floating point"
    )
    assert not out.exists()

    class Overflow(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2) * np.inf

    with pytest.raises(MRSRError, match="NaN or infinite voxels"):
        super_resolve(load_volume(src), Overflow(), 2)


# ---------------------------------------------------------------- 5. options and config keys


@pytest.mark.parametrize(
    "argv,words",
    [
        (["upscale", "--scale", "0"], "--scale: must be an integer from 2 to 16, got 0"),
        (["upscale", "--scale", "x"], "--scale: must be an integer"),
        (["upscale", "--data-consistency", "5"], "--data-consistency: must be a number from 0"),
        (["upscale", "--data-consistency", "nan"], "--data-consistency"),
        (["upscale", "--batch-size", "0"], "--batch-size: must be an integer from 1"),
        (["upscale", "--dtype", "nonsense"], "--dtype: must be one of"),
        (["upscale", "--device", "nonsense"], "--device: must be auto, cpu, cuda"),
        (["upscale", "--axis", "3"], "--axis"),
        (["degrade", "--scale", "1"], "--scale: must be an integer from 2"),
        (["degrade", "--scale", "2", "--axes", "5"], "--axes"),
        (["throughplane", "--max-time", "-1"], "--max-time: must be a number above 0"),
        (["throughplane", "--factor", "1"], "--factor: must be a number from 1.5"),
        (["upscale", "--voxel-size", "0"], "--voxel-size: must be a number above 0"),
        (["upscale", "--through-plane-steps", "-1"], "--through-plane-steps: must be an integ"),
        (["throughplane", "--slice-thickness", "0"], "--slice-thickness: must be a number above"),
        (["throughplane", "--steps", "0"], "--steps: must be an integer from 1"),
        (["evaluate", "--ref", "r", "--pred", "p", "--shave", "-1"], "--shave"),
    ],
)
def test_every_option_has_a_declared_range(tmp_path, capsys, argv, words):
    src = nifti(tmp_path / "a.nii.gz")
    files = [] if argv[0] == "evaluate" else [src, tmp_path / "o.nii.gz"]
    with pytest.raises(SystemExit) as exit_:
        main([argv[0], *map(str, files), *argv[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and words in err[0], err
    assert os.listdir(tmp_path) == ["a.nii.gz"]


def test_python_entry_points_check_the_same_ranges(tmp_path):
    for kwargs in ({"scale": 0}, {"batch_size": 0}, {"data_consistency": 5}, {"precision": "x"}):
        with pytest.raises(MRSRError):
            Pipeline("zerofill", **{"scale": 2, **kwargs})
    with pytest.raises(MRSRError, match="scale must be"):
        load_model(None, 0)
    with pytest.raises(MRSRError, match="channels must be"):
        Pipeline("cssfn", 2, channels=100_000)
    with pytest.raises(MRSRError, match="dtype must be"):
        Pipeline("zerofill").save(nifti(tmp_path / "a.nii.gz"), tmp_path / "o.nii.gz", dtype="x")


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("train.max_steps", "0", "train.max_steps must be an integer from 1"),
        ("train.batch_size", "0", "train.batch_size must be an integer from 1"),
        ("train.val_every", "0", "train.val_every must be an integer from 1"),
        ("train.log_every", "0", "train.log_every must be an integer from 1"),
        ("train.lr", "-1", "train.lr must be a number above 0"),
        ("train.lr_gamma", "0", "train.lr_gamma must be a number above 0"),
        ("train.patch_size", "0", "train.patch_size must be an integer from 4"),
        ("train.num_workers", "-1", "train.num_workers"),
        ("train.ema", "1.5", "train.ema"),
        ("train.grad_clip", "-1", "train.grad_clip"),
        ("train.device", "nonsense", "train.device must be auto, cpu"),
        ("train.precision", "fp8", "train.precision must be one of"),
        ("degradation.scale", "1", "degradation.scale must be an integer from 2"),
        ("degradation.noise", "-0.1", "degradation.noise"),
        ("augment.lowpass", "2", "augment.lowpass"),
        ("model.channels", "100000", "model.channels must be an integer from 1 to 1024"),
        ("data.train", "[1, 2]", "data.train must be a path or a list of paths"),
    ],
)
def test_every_config_key_has_a_declared_range(tmp_path, capsys, key, value, words):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"train": "vols"}}))
    refused(capsys, ["train", tmp_path / "c.yaml", "--set", f"{key}={value}"], words)
    assert os.listdir(tmp_path) == ["c.yaml"]


def test_declared_choices_match_the_networks():
    assert NETWORK_OPTIONS["unit"].choices == typing.get_args(cssfn.Unit)
    assert NETWORK_OPTIONS["skip"].choices == typing.get_args(blocks.Skip)
    assert NETWORK_OPTIONS["mode"].choices == typing.get_args(interpolation.Mode)


# ---------------------------------------------------------------- 6. unbounded parsing


@pytest.mark.slow
def test_billion_laughs_and_huge_values_are_bounded(tmp_path, capsys):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    (tmp_path / "lol.yaml").write_text("\n".join(lines + ["data: {train: *i}"]) + "\n")
    start = time.perf_counter()
    refused(capsys, ["train", tmp_path / "lol.yaml"], "aliases expand")
    (tmp_path / "c.yaml").write_text("data: {train: vols}\nloop: &l [*l]\n")
    line = refused(capsys, ["train", tmp_path / "c.yaml"], "unknown")
    long_value = "[" + ",".join(["1"] * 50_000) + "]"
    line2 = refused(
        capsys, ["train", tmp_path / "lol.yaml", "--set", f"train.lr={long_value}"], "expand"
    )
    (tmp_path / "ok.yaml").write_text("data: {train: vols}\n")
    line3 = refused(
        capsys, ["train", tmp_path / "ok.yaml", "--set", f"train.lr={long_value}"], "train.lr"
    )
    assert time.perf_counter() - start < 20
    assert max(len(line), len(line2), len(line3)) < 700
    with pytest.raises(MRSRError, match="at most 1 MB"):
        (tmp_path / "big.yaml").write_text("data: {train: vols}\n" + "#" * (2 << 20))
        load_config(tmp_path / "big.yaml")


# ---------------------------------------------------------------- 7. DICOM series


def test_dicom_folder_with_two_series_is_refused_naming_them(tmp_path, capsys):
    image = sitk_image(np.round(phantom((10, 10, 4))).astype(np.int16), np.eye(4))
    write_dicom_series(image, tmp_path / "s", series="1.2.3.4.111111")
    write_dicom_series(image, tmp_path / "s", series="1.2.3.4.222222")
    before = snapshot(tmp_path)
    line = refused(
        capsys,
        ["upscale", tmp_path / "s", tmp_path / "o.nii.gz", "--model", "zerofill"],
        "holds 2 DICOM series",
    )
    assert "1.2.3.4.111111" in line and "1.2.3.4.222222" in line
    assert snapshot(tmp_path) == before


def test_dicom_series_with_a_missing_slice_is_refused_saying_where(tmp_path, capsys):
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    image = sitk_image(np.round(phantom((10, 10, 6))).astype(np.int16), affine)
    write_dicom_series(image, tmp_path / "gap", skip=(3,))
    line = refused(
        capsys,
        ["upscale", tmp_path / "gap", tmp_path / "o.nii.gz", "--model", "zerofill"],
        "not evenly spaced",
    )
    assert "6 mm between slice positions 6 and 12" in line
    write_dicom_series(image, tmp_path / "whole")
    assert (
        main(
            ["upscale", str(tmp_path / "whole"), str(tmp_path / "o.nii.gz"), "--model", "zerofill"]
        )
        == 0
    )


# ---------------------------------------------------------------- 8. concurrency, partial failure

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mrsr.outputs import claim
    out = Path(sys.argv[1])
    with claim(out):
        (out.parent / f".{out.name}.inflight.tmp.nii.gz").write_bytes(b"half written")
        print("holding", flush=True)
        time.sleep(120)
    """
)


@pytest.mark.slow
def test_a_second_run_respects_the_first_runs_lock(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    for name in ("a", "b", "c"):
        nifti(src / f"{name}.nii.gz", (10, 10, 2))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(dst / "b.nii.gz")],
        stdout=subprocess.PIPE,
        encoding="utf-8",
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        cmd = [sys.executable, "-m", "mrsr", "upscale", str(src), str(dst), "--model", "zerofill"]
        second = subprocess.run(
            cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=120
        )
        assert second.returncode == 2, second.stderr
        assert "being written by another mrsr run (pid" in second.stderr
        assert "1 of 3 volumes not done" in second.stderr.splitlines()[-1]
        assert "Traceback" not in second.stderr
        assert (dst / ".b.nii.gz.inflight.tmp.nii.gz").read_bytes() == b"half written"
        done = sorted(p for p in os.listdir(dst) if not p.startswith("."))
        assert done == ["a.json", "a.nii.gz", "c.json", "c.nii.gz"]
    finally:
        holder.kill()
        holder.wait()
    third = subprocess.run(
        cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )
    assert third.returncode == 0, third.stderr
    assert sorted(os.listdir(dst)) == [f"{n}.{e}" for n in "abc" for e in ("json", "nii.gz")]


def test_a_stale_lock_of_a_dead_run_is_taken_over(tmp_path):
    src = nifti(tmp_path / "a.nii.gz")
    (tmp_path / ".o.nii.gz.lock").write_text("999999999 gone-host\n")
    (tmp_path / ".o.nii.gz.x1.tmp.nii.gz").write_bytes(b"left by a kill")
    assert main(["upscale", str(src), str(tmp_path / "o.nii.gz"), "--model", "zerofill"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz", "o.json", "o.nii.gz"]


def test_folder_run_processes_every_file_it_can_then_reports(tmp_path, capsys, monkeypatch):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a", "c", "e"):
        nifti(src / f"{name}.nii.gz")
    (src / "b.nii.gz").write_bytes(b"corrupt")
    nifti(src / "d.nii.gz")
    from mrsr.pipeline import Upscaling

    original = Upscaling.make

    def flaky(self, job):  # an unexpected failure, not a user error
        if job.path.name == "d.nii.gz":
            raise RuntimeError("something unforeseen")
        return original(self, job)

    monkeypatch.setattr(Upscaling, "make", flaky)
    before = snapshot(src)
    assert main(["upscale", str(src), str(dst), "--model", "zerofill"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "2 of 5 volumes not done (2 failed: b.nii.gz, d.nii.gz)" in err.splitlines()[-1]
    assert sorted(os.listdir(dst)) == [f"{n}.{e}" for n in "ace" for e in ("json", "nii.gz")]
    assert snapshot(src) == before


# ---------------------------------------------------------------- 9. messages


def test_a_file_name_with_a_newline_gives_one_line(tmp_path, capsys):
    bad = tmp_path / "evil\nname\x1b[2J.nii.gz"
    bad.write_bytes(b"junk")
    line = refused(
        capsys, ["upscale", bad, tmp_path / "o.nii.gz", "--model", "zerofill"], "cannot be read"
    )
    assert "evil\\nname\\x1b[2J.nii.gz" in line


def test_unexpected_failures_end_in_one_line_too(tmp_path, capsys, monkeypatch):
    from mrsr.inference import SliceInferer

    def boom(*args, **kwargs):
        raise ValueError("bug\nin two lines")

    monkeypatch.setattr(SliceInferer, "__call__", boom)
    src = nifti(tmp_path / "a.nii.gz")
    refused(
        capsys,
        ["upscale", src, tmp_path / "o.nii.gz", "--model", "zerofill"],
        "unexpected ValueError: bug\\nin two lines",
    )
    assert os.listdir(tmp_path) == ["a.nii.gz"]


# ---------------------------------------------------------------- found by a red-team battery

META = "ObjectType = Image\nNDims = 3\nDimSize = 32 32 4\nElementType = MET_SHORT\n"


@pytest.mark.parametrize(
    "name,make,words",
    [
        (
            "hex.nrrd",
            lambda d: (d / "hex.nrrd").write_bytes(
                b"NRRD0004\ntype: double\ndimension: 3\nsizes: 1024 1024 256\n"
                b"endian: little\nencoding: hex\n\n" + b"00" * 100
            ),
            "but the data holds only",
        ),
        (
            "c.mhd",
            lambda d: (
                (d / "data.raw").write_bytes(bytes(8192)),
                (d / "c.mhd").write_text(
                    META
                    + "CompressedData = True\nCompressedDataSize = 10\nElementDataFile = data.raw\n"
                ),
            ),
            "compressed data is corrupt",
        ),
        (
            "t.mha",
            lambda d: (d / "t.mha").write_bytes(
                (META + "ElementDataFile = LOCAL\n").encode() + bytes(8182)
            ),
            "data holds only",
        ),
        (
            "dim8.nii",
            lambda d: (d / "dim8.nii").write_bytes(
                (lambda raw: raw[:40] + np.array([8] * 8, "<i2").tobytes() + raw[56:])(
                    nib.Nifti1Image(phantom((8, 8, 2)), np.eye(4)).to_bytes()
                )
            ),
            "cannot be read",
        ),
    ],
)
def test_readers_lies_and_warnings_end_in_one_line(tmp_path, capsys, name, make, words):
    make(tmp_path)
    before = snapshot(tmp_path)
    refused(
        capsys, ["upscale", tmp_path / name, tmp_path / "o.nii.gz", "--model", "zerofill"], words
    )
    assert snapshot(tmp_path) == before


def test_compressed_metaimage_that_is_whole_is_read(tmp_path):
    data = np.round(phantom((12, 10, 3))).astype(np.int16)
    sitk.WriteImage(sitk_image(data, np.eye(4)), str(tmp_path / "z.mha"), True)
    assert "CompressedData = True" in (tmp_path / "z.mha").read_bytes()[:400].decode("latin-1")
    np.testing.assert_array_equal(load_volume(tmp_path / "z.mha").numpy()[0], data)


def test_checkpoint_degradation_must_fit_its_grid(tmp_path):
    spec = ModelSpec.create("zerofill", 2, "kspace")
    path = tmp_path / "m.safetensors"
    save_file(
        {}, str(path), metadata={"mrsr": json.dumps({**spec.__dict__, "degradation": "bicubic"})}
    )
    with pytest.raises(MRSRError, match="does not fit bicubic degradation"):
        load_checkpoint(path)
