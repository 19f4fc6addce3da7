"""report.html (mrsr.html_report): self-contained, the CSV's numbers, outliers first; and in a
real browser (headless Chromium): every figure decodes and the page is not blank."""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from conftest import phantom
from monai.data import MetaTensor
from PIL import Image

from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.evaluation import Case, iter_pairs
from mrsr.html_report import (
    OUTLIER_Z,
    Entry,
    case_section,
    outliers,
    robust_z,
    write_html_report,
)
from mrsr.provenance import record, sidecar_text
from mrsr.report import write_report

AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])


VOID = {"meta", "img", "input", "br", "hr", "link", "source", "wbr"}


class Page(HTMLParser):
    """Every tag with its attributes, and the tables as lists of rows of cells (text and
    ``data-value``), by the table's class; ``marked``: the first cells of rows marked as
    outliers. Every element must be closed, in order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.marked: list[str] = []
        self._table = self._cell = None
        self._row_marked = False
        self.feed(text)
        self.close()
        assert self.open == [], f"unclosed: {self.open}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag not in VOID:
            self.open.append(tag)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
            self._row_marked = attrs.get("class") == "outlier"
        elif tag == "td" and self._table is not None:
            self._cell = ["", attrs.get("data-value")]

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"
        if tag == "table":
            self._table = None
        elif tag == "td" and self._cell is not None:
            self._table[-1].append((self._cell[0].strip(), self._cell[1]))
            if self._row_marked and len(self._table[-1]) == 1:
                self.marked.append(self._cell[0].strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def rows(self, kind: str) -> list[list[tuple[str, str | None]]]:
        return [row for row in self.tables[kind] if row]  # less the header row


def volume(data: np.ndarray, affine: np.ndarray = AFFINE) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(data))[None], affine=affine)


def check_self_contained(text: str) -> Page:
    """No address of the network anywhere; no external script, style or frame; every image a
    PNG data URI that decodes to a picture that is not one flat colour."""
    assert "http://" not in text and "https://" not in text and "url(" not in text
    page = Page(text)
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base")
        assert attrs.get("href", "#").startswith("#")
        assert attrs.get("src", "data:").startswith("data:")
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    for src in images:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))
        assert picture.shape[0] > 50 and picture.shape[1] > 50 and picture.std() > 10
    return page


def check_tables_hold_the_csv(page: Page, folder, kinds=("metrics",)) -> None:
    """The metrics tables (the whole one; the volumes' ones in turn) hold metrics.csv, row by
    row, each number exactly (and shown rounded); the summary table holds summary.csv's means,
    sds and p."""
    with open(folder / "metrics.csv", newline="") as stream:
        expected = list(csv.DictReader(stream))
    for kind in kinds:
        check_rows(page.rows(kind), expected)
    with open(folder / "summary.csv", newline="") as stream:
        summary = list(csv.DictReader(stream))
    got = page.rows("summary")
    assert [c[0][0] for c in got] == [s["method"] for s in summary]
    for s, cells in zip(summary, got):
        numbers = [c[1] for c in cells[2:]]
        keys = [f"{m}_{k}" for m in ("psnr", "ssim", "nrmse") for k in ("mean", "std", "p")]
        assert numbers == [s[k] for k in keys]


def check_rows(got: list, expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for row, cells in zip(expected, got):
        assert [c[0] for c in cells[:2]] == [row["name"], row["method"]]
        assert [c[1] for c in cells[2:]] == [row["psnr"], row["ssim"], row["nrmse"]]
        assert cells[2][0] == f"{float(row['psnr']):.2f}"
        assert cells[3][0] == f"{float(row['ssim']):.4f}"


def test_robust_z_and_the_outlier_rule():
    values = [10.0, 10.5, 9.8, 10.2, 2.0]
    # median 10, MAD = median(0, .5, .2, .2, 8) = 0.2; z = 0.6745 (x - 10) / 0.2
    expected = [0.6745 * (v - 10.0) / 0.2 for v in values]
    assert robust_z(values) == pytest.approx(expected)
    order, flagged = outliers(values, two_sided=False)  # low is bad: 2.0 first, then 9.8
    assert list(order) == [4, 2, 0, 3, 1] and list(flagged) == [False] * 4 + [True]
    order, flagged = outliers([1.0, 1.1, 0.9, 1.0, 9.0, float("nan")], two_sided=True)
    assert order[0] == 4 and order[-1] == 5 and list(np.flatnonzero(flagged)) == [4]
    assert not outliers([3.0, 3.0, 3.0], two_sided=True)[1].any()  # MAD and mean 0: z = 0
    z = robust_z([1.0, 1.0, 1.0, 1.0, 5.0])  # MAD 0: the mean absolute deviation (0.8) scales
    assert z == pytest.approx([0, 0, 0, 0, 4 / (1.253314 * 0.8)])
    assert z[4] > OUTLIER_Z
    z = robust_z([1.0, 2.0, float("inf"), float("nan")])  # inf is infinitely far; NaN unmeasured
    assert z[2] == np.inf and np.isnan(z[3])


def cohort_case(name: str, gain: float, seed: int) -> Case:
    """A case that needs no volume (tables only): the input's and a model's rows."""
    rng = np.random.default_rng(seed)
    base = 25.0 + rng.uniform(0, 1)
    rows = [
        dict(name=name, method=method, psnr=psnr, ssim=rng.uniform(0.8, 1), nrmse=rng.uniform())
        for method, psnr in (("nearest", base), ("model", base + gain))
    ]
    return Case(name, volume(np.zeros((2, 2, 2), np.float32)), {}, None, rows)


def test_tables_are_the_csv_with_the_outlier_first(tmp_path):
    gains = {"a": 3.1, "b": 2.9, "c": 0.4, "d": 3.0, "e": 3.2, "f": 2.8}  # c gains least
    cases = [cohort_case(n, g, i) for i, (n, g) in enumerate(gains.items())]
    out = tmp_path / "report"
    write_report(out, cases, against="model", figures=False)
    text = (out / "report.html").read_text(encoding="utf-8")
    page = check_self_contained(text)
    check_tables_hold_the_csv(page, out)
    cohort = page.rows("cohort")
    assert [row[0][0] for row in cohort][0] == "c" and page.marked == ["c"]
    assert len(cohort) == len(gains)
    gain = {row[0][0]: float(row[3][1]) for row in cohort}
    rows = {(r["name"], r["method"]): r["psnr"] for case in cases for r in case.rows}
    assert gain == {n: rows[(n, "model")] - rows[(n, "nearest")] for n in gains}
    with pytest.raises(MRSRError, match="report.html.*--overwrite"):
        write_report(out, cases, figures=False)


def test_a_failing_volume_leaves_no_page(tmp_path):
    def cases():
        yield cohort_case("a", 1.0, 0)
        raise MRSRError("b.nii.gz: unreadable")

    with pytest.raises(MRSRError, match="unreadable"):
        write_report(tmp_path / "report", cases(), figures=False)
    assert not (tmp_path / "report").exists()


@pytest.fixture
def entries(tmp_path, write_nifti):
    """Two low-resolution inputs (3 mm slices) and their outputs (1.5 mm), the second output
    with its sidecar."""
    made = []
    for i in range(2):
        hr = phantom((24, 20, 8), seed=i, sigma=3.0)
        lr = write_nifti(f"in{i}.nii.gz", hr[..., ::2], np.diag([1.0, 1.0, 3.0, 1.0]))
        out = write_nifti(f"out{i}.nii.gz", hr, np.diag([1.0, 1.0, 1.5, 1.0]))
        made.append(Entry(f"sub-0{i}", out, lr))
    source, result = volume(phantom((24, 20, 4))), volume(phantom((24, 20, 8)))
    sidecar = sidecar_text(record("upscale", source, result, model="cssfn-k2", scale=2))
    (tmp_path / "out1.json").write_text(sidecar)
    return made


def test_a_report_without_reference_shows_inputs_outputs_and_sidecars(tmp_path, entries):
    path = write_html_report(tmp_path / "group", entries, title="group report")
    text = path.read_text(encoding="utf-8")
    page = check_self_contained(text)
    captions = [a["alt"] for tag, a in page.tags if tag == "img"]
    # per volume: the slider's two images, then input and output
    assert captions == ["output", "input (nearest)", "input (nearest)", "output"] * 2
    assert '"model": "cssfn-k2"' in text and text.count("provenance (JSON)") == 1
    assert [row[0][0] for row in page.rows("cohort")] != []
    assert [row[1:] for row in page.rows("grids")][:2] == [
        [("24 x 20 x 4", None), ("1 x 1 x 3", None)],
        [("24 x 20 x 8", None), ("1 x 1 x 1.5", None)],
    ]
    with pytest.raises(MRSRError, match="already exists; pass --overwrite"):
        write_html_report(tmp_path / "group", entries)
    with pytest.raises(MRSRError, match="is not an mrsr.html_report.Entry"):
        write_html_report(tmp_path / "other", ["out0.nii.gz"])
    assert not (tmp_path / "other").exists()


def test_a_prediction_shows_its_own_sidecar_and_no_input(tmp_path, write_nifti):
    ref = phantom((24, 20, 6), sigma=3.0)
    write_nifti("ref.nii.gz", ref, AFFINE)
    write_nifti("sr.nii.gz", ref + 1.0, AFFINE)
    sidecar = sidecar_text(record("upscale", volume(ref), volume(ref), model="cssfn-k2"))
    (tmp_path / "sr.json").write_text(sidecar)
    (tmp_path / "ref.json").write_text('{"Manufacturer": "the reference\'s own"}')
    (case,) = iter_pairs({"sr": tmp_path / "sr.nii.gz"}, tmp_path / "ref.nii.gz")
    page = Page(section := case_section(case))
    # no input: the slider runs from the prediction to the reference
    assert [a["alt"] for tag, a in page.tags if tag == "img"] == [
        "reference",
        "sr",
        "sr",
        "|sr - reference|",
        "reference",
    ]
    assert '"model": "cssfn-k2"' in section and "the reference's own" not in section
    # a baseline computed from the reference carries the reference's file name: no sidecar
    case.predictions["sr"].meta["filename_or_obj"] = str(tmp_path / "ref.nii.gz")
    assert "provenance" not in case_section(case)


def test_a_single_slice_shows_its_own_plane_only(tmp_path):
    slab, single = volume(phantom((24, 20, 6), sigma=3.0)), volume(phantom((24, 20, 1)))
    text = write_html_report(tmp_path, [Entry("slab", slab), Entry("slice", single)]).read_text()
    widths = [
        Image.open(io.BytesIO(base64.b64decode(a["src"].split(",", 1)[1]))).size[0]
        for tag, a in Page(text).tags
        if tag == "img"
    ]
    assert len(widths) == 2 and widths[1] < widths[0] / 2  # one panel, not three


# ---------------------------------------------------------------- in a real browser


PROBE = """window.addEventListener('load', function () {
  var c = document.querySelector('.compare'), before = c.querySelector('.before');
  var range = c.querySelector('input[type=range]');
  range.value = 20; range.dispatchEvent(new Event('input'));
  document.body.dataset.clip = getComputedStyle(before).clipPath;
  c.querySelector('.flicker').checked = true;
  var style = getComputedStyle(before);
  document.body.dataset.flicker = style.animationName + ' ' + style.clipPath;
  document.body.dataset.aligned = Array.from(document.querySelectorAll('.stack')).every(
    function (stack) {
      stack.parentNode.style.width = '900px';  // wider than the figure, as long labels make it
      var boxes = Array.from(stack.querySelectorAll('img')).map(function (i) {
        var r = i.getBoundingClientRect(); return [r.left, r.top, r.width, r.height].join();
      });
      return boxes.length == 2 && boxes[0] == boxes[1];
    });
});"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return found


def browse(html_path, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on the file, offline: no network, no first-run or sync traffic."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium'}",
        *args,
        html_path.as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=120, env=env)
    if done.returncode != 0:
        pytest.skip(f"chromium cannot run here: {done.stderr.strip().splitlines()[-1:]}")
    return done


@pytest.mark.slow
def test_the_evaluate_report_renders_in_chromium(tmp_path, write_nifti, capsys):
    (tmp_path / "ref").mkdir()
    for i, depth in enumerate((8, 1)):  # a slab, and a single slice: narrow figures
        write_nifti(f"ref/v{i}.nii.gz", phantom((40, 36, depth), seed=i, sigma=3.0), AFFINE)
    out = tmp_path / "report"
    argv = ["evaluate", "--baselines", "--ref", str(tmp_path / "ref"), "--report", str(out)]
    assert main(argv + ["--model", "zerofill", "--scale", "2"]) == 0
    capsys.readouterr()
    html_path = out / "report.html"
    text = html_path.read_text(encoding="utf-8")
    written = check_self_contained(text)
    n_images = sum(tag == "img" for tag, _ in written.tags)
    # per volume: the slider's two, then input, bicubic, zerofill (model), reference with
    # the errors of all but the reference
    assert n_images == 2 * (2 + 4 + 3)

    dom = browse(html_path, tmp_path, "--virtual-time-budget=10000", "--dump-dom").stdout
    rendered = Page(dom)
    widths = [a.get("data-natural-width") for tag, a in rendered.tags if tag == "img"]
    assert len(widths) == n_images and all(w is not None and int(w) > 0 for w in widths)
    body = next(a for tag, a in rendered.tags if tag == "body")
    assert body["data-figures-rendered"] == str(n_images)
    check_tables_hold_the_csv(rendered, out, ("metrics", "volume-metrics"))

    # the slider moved to 20% shows the input on the left fifth; flicker alternates them whole;
    # the two images of every slider cover each other exactly
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", f"<script>{PROBE}</script></body>"), "utf-8")
    body = next(
        a for tag, a in Page(browse(probe, tmp_path, "--dump-dom").stdout).tags if tag == "body"
    )
    assert body["data-clip"] == "inset(0px 80% 0px 0px)"
    assert body["data-flicker"] == "flick none" and body["data-aligned"] == "true"

    shot = tmp_path / "shot.png"
    browse(html_path, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2400, 1200)
    # not blank: contrast, many colours, and image content (dark MR background) in several
    # of the page's bands
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    bands = np.array_split(pixels.mean(axis=2), 6)[1:]
    assert sum((band < 40).mean() > 0.01 for band in bands) >= 3
