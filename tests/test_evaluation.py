"""mrsr evaluate, mrsr.evaluation and mrsr.report: pairing, formats, baselines, masks, figures."""

import csv
import io
import json

import matplotlib.image
import numpy as np
import pytest
from conftest import phantom
from scipy.stats import wilcoxon

from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.evaluation import baselines, evaluate_pairs, iter_compare, summarize
from mrsr.metrics import evaluate, foreground_mask
from mrsr.report import DPI, HEADER_INCHES, PANEL_INCHES, PROFILE_INCHES, ROWS, write_report
from mrsr.zoo import default

AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])  # slices along the last axis


def noisy(ref: np.ndarray, seed: int) -> np.ndarray:
    return ref + np.random.default_rng(seed).normal(0, 2, ref.shape).astype(np.float32)


@pytest.fixture
def folders(tmp_path, write_nifti):
    """ref/{a,b}: phantoms; pred/{a,b}: the same plus noise, with the other NIfTI suffix."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    refs = {}
    for i, (ref_name, pred_name) in enumerate([("a.nii", "a.nii.gz"), ("b.nii.gz", "b.nii")]):
        refs[ref_name.split(".")[0]] = ref = phantom((32, 30, 5), seed=i)
        write_nifti(f"ref/{ref_name}", ref, AFFINE)
        write_nifti(f"pred/{pred_name}", noisy(ref, i), AFFINE)
    write_nifti("pred/.a.nii.gz.x1y2.tmp.nii.gz", refs["a"], AFFINE)  # a killed write's leftover
    return tmp_path, refs


def run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folders_pair_by_name_and_match_the_metrics(folders):
    root, refs = folders
    rows = evaluate_pairs(root / "pred", root / "ref", mask="auto", shave=1)
    assert [(r["name"], r["method"]) for r in rows] == [("a", "prediction"), ("b", "prediction")]
    for i, row in enumerate(rows):
        ref = refs[row["name"]]
        expected = evaluate(noisy(ref, i), ref, mask=foreground_mask(ref), shave=1)
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-6)


def test_unpaired_files_are_named(folders, write_nifti):
    root, refs = folders
    write_nifti("pred/c.nii.gz", refs["a"], AFFINE)
    write_nifti("ref/d.nii.gz", refs["a"], AFFINE)
    with pytest.raises(MRSRError, match=r"only in .*pred: c; only in .*ref: d"):
        evaluate_pairs(root / "pred", root / "ref")
    with pytest.raises(MRSRError, match="two volume files or two folders"):
        evaluate_pairs(root / "pred" / "c.nii.gz", root / "ref")


def test_same_shape_but_another_affine_is_refused(folders, write_nifti, capsys):
    root, refs = folders
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    write_nifti("pred/b.nii", refs["b"], shifted)
    with pytest.raises(MRSRError, match="affine"):
        evaluate_pairs(root / "pred", root / "ref")
    code, out, err = run(
        ["evaluate", "--pred", str(root / "pred"), "--ref", str(root / "ref")], capsys
    )
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("mrsr: error: ") and "Traceback" not in err


def test_formats_print_only_the_data_on_stdout(folders, capsys):
    root, _ = folders
    base = ["evaluate", "--pred", str(root / "pred"), "--ref", str(root / "ref")]
    code, out, err = run(base + ["--format", "json"], capsys)
    document = json.loads(out)
    assert code == 0 and [r["name"] for r in document["rows"]] == ["a", "b"]
    assert document["summary"][0]["n"] == 2 and "a: pred" in err
    code, out, _ = run(base + ["--format", "csv"], capsys)
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in table] == ["a", "b"]
    assert float(table[0]["psnr"]) == pytest.approx(document["rows"][0]["psnr"])
    code, out, _ = run(base, capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["volume", "method", "PSNR", "(dB)", "SSIM", "NRMSE"]
    assert lines[1].split()[:2] == ["a", "pred"] and "mean ± sd" in out


def test_evaluate_has_help_and_refuses_mixed_modes(folders, capsys):
    root, _ = folders
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "mrsr evaluate --baselines --ref" in capsys.readouterr().out
    for extra in (
        [],
        ["--pred", str(root / "pred"), "--baselines"],
        ["--pred", "x", "--scale", "2"],
    ):
        code, out, err = run(["evaluate", "--ref", str(root / "ref"), *extra], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_baselines_rank_zerofill_above_nearest_with_a_paired_test(tmp_path, write_nifti, capsys):
    (tmp_path / "ref").mkdir()
    for i in range(3):
        write_nifti(f"ref/v{i}.nii.gz", phantom((32, 32, 2), seed=i, sigma=3.0), AFFINE)
    args = ["evaluate", "--baselines", "--ref", str(tmp_path / "ref"), "--format", "json"]
    code, out, _ = run(args + ["--model", "linear"], capsys)
    document = json.loads(out)
    assert code == 0 and document["test"]["against"] == "linear"
    methods = {r["method"] for r in document["rows"]}
    assert methods == {"nearest", "bicubic", "zerofill", "linear"}
    psnr = {(r["name"], r["method"]): r["psnr"] for r in document["rows"]}
    assert all(psnr[f"v{i}", "zerofill"] > psnr[f"v{i}", "nearest"] + 3 for i in range(3))
    summary = {s["method"]: s for s in document["summary"]}
    assert summary["linear"]["psnr_p"] is None  # the method every other is tested against
    assert summary["nearest"]["psnr_p"] == pytest.approx(0.25)  # exact: 3 of 3 same sign
    assert "no power" in document["test"]["note"]
    code, out, _ = run(args + ["--method", "bicubic"], capsys)  # the shipped bicubic model
    document = json.loads(out)
    name = default(2, "bicubic").name
    assert {r["method"] for r in document["rows"]} == {"nearest", "bicubic", name}
    assert document["test"]["against"] == name


def test_summary_means_sd_and_wilcoxon():
    rng = np.random.default_rng(0)
    a, b = rng.normal(30, 1, 7), rng.normal(31, 1, 7)
    rows = [
        {"name": f"v{i}", "method": m, "psnr": x, "ssim": x / 40, "nrmse": 1 / x}
        for m, values in (("model", b), ("bicubic", a))
        for i, x in enumerate(values)
    ]
    model, bicubic = summarize(rows)
    assert model["n"] == 7 and np.isnan(model["psnr_p"])
    assert bicubic["psnr_mean"] == pytest.approx(a.mean())
    assert bicubic["psnr_std"] == pytest.approx(a.std(ddof=1))
    assert bicubic["psnr_p"] == pytest.approx(wilcoxon(a, b).pvalue)
    assert np.isnan(summarize(rows[:1] + rows[7:8])[1]["psnr_p"])  # one volume: no test


def test_masks_and_shave_change_the_numbers_as_defined(folders, write_nifti):
    root, refs = folders
    auto = evaluate_pairs(root / "pred", root / "ref", mask="auto")
    (root / "masks").mkdir()
    for name, ref in refs.items():
        write_nifti(f"masks/{name}.nii.gz", foreground_mask(ref).astype(np.uint8), AFFINE)
    assert evaluate_pairs(root / "pred", root / "ref", mask=root / "masks") == auto
    one = evaluate_pairs(
        root / "pred" / "a.nii.gz", root / "ref" / "a.nii", root / "masks/a.nii.gz"
    )
    assert one == auto[:1]
    whole = evaluate_pairs(root / "pred", root / "ref", mask="none")
    ref, err = refs["a"].astype(np.float64), noisy(refs["a"], 0) - refs["a"].astype(np.float64)
    peak = np.ptp(ref) ** 2  # the whole reference's range, with or without a mask
    inside = foreground_mask(ref)
    assert auto[0]["psnr"] == pytest.approx(10 * np.log10(peak / np.mean(err[inside] ** 2)))
    assert whole[0]["psnr"] == pytest.approx(10 * np.log10(peak / np.mean(err**2)))
    assert whole[0]["psnr"] != pytest.approx(auto[0]["psnr"], abs=1e-3)
    shaved = evaluate_pairs(root / "pred", root / "ref", mask="none", shave=3)
    expected = evaluate(noisy(refs["a"], 0), refs["a"], shave=3)
    assert {k: shaved[0][k] for k in expected} == pytest.approx(expected, rel=1e-6)
    assert shaved[0]["psnr"] != pytest.approx(whole[0]["psnr"], abs=1e-3)
    write_nifti("masks/b.nii.gz", np.ones((16, 15, 5), np.uint8), AFFINE)
    with pytest.raises(MRSRError, match="b.nii.gz: not on the grid"):
        evaluate_pairs(root / "pred", root / "ref", mask=root / "masks")


@pytest.mark.slow
def test_report_has_tables_and_paper_ready_figures(tmp_path, write_nifti, capsys):
    volume = phantom((40, 36, 5), sigma=3.0)
    ref = write_nifti("v.nii.gz", volume, AFFINE)
    cases = list(iter_compare(ref, 2, baselines(2)))
    out = tmp_path / "report"
    rows = write_report(out, cases, against="zerofill")
    assert rows == cases[0].rows
    assert [r["method"] for r in csv.DictReader((out / "metrics.csv").open())] == [
        "nearest",
        "bicubic",
        "zerofill",
    ]
    most = int(foreground_mask(volume).sum(axis=(0, 1)).argmax())
    names = [f"v_slice{k:03d}{kind}.png" for k in sorted({2, most}) for kind in ("", "_profile")]
    assert sorted(p.name for p in out.glob("*.png")) == names  # central and most-foreground
    comparison, profile = (matplotlib.image.imread(str(out / name)) for name in names[:2])
    # columns: LR (the nearest baseline), bicubic, zerofill, reference
    width, height = 4 * PANEL_INCHES * DPI, (ROWS * PANEL_INCHES + HEADER_INCHES) * DPI
    assert comparison.shape[:2] == (round(height), round(width))
    assert profile.shape[:2] == (round(PROFILE_INCHES[1] * DPI), round(PROFILE_INCHES[0] * DPI))
    assert comparison[..., :3].std() > 0.05 and profile[..., :3].std() > 0.05
    assert "| v | zerofill |" in (out / "report.md").read_text(encoding="utf-8")
    with pytest.raises(MRSRError, match="--overwrite"):
        write_report(out, cases)
    code, _, err = run(["evaluate", "--baselines", "--ref", ref, "--report", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (
        run(["evaluate", "--baselines", "--ref", ref, "--report", str(out), "--overwrite"], capsys)[
            0
        ]
        == 0
    )
