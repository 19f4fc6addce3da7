"""Evaluation reports: tables (CSV, JSON, Markdown, text) and PNG figures ready for a paper.

:func:`write_report` writes into a folder:

- ``metrics.csv``: one row per volume and method (``name, method, psnr, ssim, nrmse``);
- ``summary.csv``: per method ``n``, mean, standard deviation and paired-test p of each metric
  (:func:`mrsr.evaluation.summarize`);
- ``report.md``: the settings and both tables in Markdown;
- ``report.html``: one self-contained page for a browser, figures embedded
  (:mod:`mrsr.html_report`);
- per volume and chosen slice, ``NAME_sliceK.png``: one column per image (the low-resolution
  input upsampled by nearest neighbour when known, each method, the reference); the images on
  the top row, each titled with its PSNR/SSIM over that slice and over the volume; below them
  the square around the foreground's centre zoomed (in a row of its own, so that it hides no
  anatomy), then the absolute error ``|method - reference|`` on a common colour scale; and
  ``NAME_sliceK_profile.png``: the intensities along the line across the strongest edge of the
  reference (marked in cyan on its panel), reference against every method.

Slices are reoriented from the affine to the radiological convention (or neurological), with
R/L, A/P, S/I letters on every edge and the convention in the title (:mod:`mrsr.orientation`);
pixels keep their physical aspect. Grey window: the reference slice's 0.5-99.5 percentiles.
The report is written all or none (:func:`mrsr.files.atomic_files`), and an existing file is
replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy.ndimage import binary_erosion

from mrsr.errors import MRSRError
from mrsr.evaluation import METRICS, Case, min_p_value, summarize
from mrsr.files import NewFile, atomic_files, check_regular, new_folder
from mrsr.geometry import slice_axis
from mrsr.metrics import data_range, foreground_mask, psnr, ssim
from mrsr.options import OPTIONS
from mrsr.orientation import View

__all__ = [
    "DPI",
    "HEADER_INCHES",
    "PANEL_INCHES",
    "PROFILE_INCHES",
    "ROWS",
    "choose_slices",
    "format_tables",
    "paired_test_note",
    "show_plane",
    "slice_figures",
    "to_csv",
    "to_json",
    "write_figures",
    "write_report",
]

DPI = 150  # dots per inch of the figures
PANEL_INCHES = 2.4  # width and height of one image panel
HEADER_INCHES = 0.6  # room for the figure title
ROWS = 3  # images, their zoomed squares, errors
PROFILE_INCHES = (6.4, 3.6)  # width and height of the intensity-profile figure
TABLES = ("metrics.csv", "summary.csv", "report.md", "report.html")
_DIGITS = {"psnr": 2, "ssim": 4, "nrmse": 4}
_CAPTION = {
    "radiological": "radiological convention: axial and coronal slices with the patient's right "
    "on the image's left, anterior (axial) or superior up; sagittal with anterior on the left",
    "neurological": "neurological convention: axial and coronal slices with the patient's right "
    "on the image's right, anterior (axial) or superior up; sagittal with anterior on the left",
}
_HALF_WINDOW = 16  # voxels shown on each side of the edge in line profiles


def _number(value: float, digits: int) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def _render(header: Sequence[str], body: Sequence[Sequence[str]], n_text: int, md: bool) -> str:
    """A table as Markdown, or as aligned text (the first ``n_text`` columns left-aligned)."""
    if md:
        rule = [":--" if i < n_text else "--:" for i in range(len(header))]
        return "\n".join("| " + " | ".join(r) + " |" for r in (header, rule, *body))
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < n_text else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        )
        for r in (header, *body)
    )


def paired_test_note(summary: Sequence[Mapping], against: str) -> str:
    """One sentence that says which test the p columns hold, and its power with few volumes."""
    n = max(s["n"] for s in summary)
    note = f"p: two-sided paired Wilcoxon signed-rank test against {against} over {n} volumes"
    if n < 2:
        return note + "; one volume: no test."
    if n < 6:
        return note + f"; with n < 6 the smallest possible p is {min_p_value(n):.3g} (no power)."
    return note + "."


def format_tables(
    rows: Sequence[Mapping], against: str | None = None, markdown: bool = False
) -> str:
    """The per-volume table, then (two volumes or more) the summary and its test note."""
    header = ["volume", "method", "PSNR (dB)", "SSIM", "NRMSE"]
    body = [[r["name"], r["method"]] + [_number(r[m], _DIGITS[m]) for m in METRICS] for r in rows]
    text = _render(header, body, 2, markdown)
    summary = summarize(rows, against)
    if max(s["n"] for s in summary) < 2:
        return text
    header = ["method", "n", "PSNR (dB)", "SSIM", "NRMSE", "p PSNR", "p SSIM", "p NRMSE"]
    body = [
        [s["method"], str(s["n"])]
        + [
            f"{_number(s[f'{m}_mean'], _DIGITS[m])} ± {_number(s[f'{m}_std'], _DIGITS[m])}"
            for m in METRICS
        ]
        + [_p(s[f"{m}_p"]) for m in METRICS]
        for s in summary
    ]
    note = paired_test_note(summary, summary[0]["method"] if against is None else against)
    table = _render(header, body, 1, markdown)
    return f"{text}\n\nSummary over volumes (mean ± sd):\n\n{table}\n\n{note}"


def to_csv(records: Sequence[Mapping]) -> str:
    """Records (rows or summary) as CSV with a header; the columns are the first record's keys."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _finite(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_json(rows: Sequence[Mapping], against: str | None = None) -> str:
    """``{"rows": [...], "summary": [...], "test": {...}}``; NaN and inf become ``null``."""
    summary = summarize(rows, against)
    against = summary[0]["method"] if against is None else against
    test = {"name": "wilcoxon signed-rank, two-sided, paired by volume", "against": against}
    document = {
        "rows": [{k: _finite(v) for k, v in r.items()} for r in rows],
        "summary": [{k: _finite(v) for k, v in s.items()} for s in summary],
        "test": {**test, "note": paired_test_note(summary, against)},
    }
    return json.dumps(document, indent=2)


def _plane(volume: object, axis: int, k: int) -> np.ndarray:
    return np.take(np.asarray(volume.as_tensor()[0], dtype=np.float64), k, axis=axis)


def _axis_and_mask(case: Case) -> tuple[int, np.ndarray]:
    """The slice axis, and the case's mask or else the auto (foreground) mask."""
    axis = slice_axis(np.asarray(case.reference.affine), case.reference.meta)
    if case.mask is not None:
        return axis, case.mask
    return axis, foreground_mask(case.reference.as_tensor()[0], axis)


def choose_slices(case: Case) -> list[int]:
    """The central slice and the slice with the most foreground (mask, else the auto mask)."""
    axis, mask = _axis_and_mask(case)
    per_slice = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(axis=1)
    return sorted({mask.shape[axis] // 2, int(np.argmax(per_slice))})


Panels = list[tuple[str, np.ndarray]]
Edge = tuple[int, int, int]
Box = tuple[int, int, int, int]


def _strongest_edge(ref: np.ndarray, mask: np.ndarray) -> Edge:
    """``(row, col, along)``: the pixel of largest gradient magnitude inside the mask eroded by
    3 pixels (else the image less a 4-pixel border), and the image axis the gradient is mostly
    along (the profile runs along it, across the edge)."""
    gi, gj = np.gradient(ref)
    inner = binary_erosion(mask, iterations=3)
    if not inner.any():
        inner = np.zeros_like(mask)
        inner[4:-4, 4:-4] = True
    i, j = np.unravel_index(np.argmax(np.hypot(gi, gj) * inner), ref.shape)
    return int(i), int(j), int(abs(gi[i, j]) < abs(gj[i, j]))


def _zoom_box(mask: np.ndarray) -> Box:
    """``(r0, r1, c0, c1)``: a square of a quarter of the smaller side, centred on the mask's
    centroid (the image's centre without foreground) and kept inside the image."""
    side = max(min(mask.shape) // 4, 2)
    centre = np.argwhere(mask).mean(axis=0) if mask.any() else np.array(mask.shape) / 2
    lo = [int(np.clip(c - side / 2, 0, n - side)) for c, n in zip(centre, mask.shape)]
    return lo[0], lo[0] + side, lo[1], lo[1] + side


def _score_line(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None, **kwargs) -> str:
    """``PSNR x dB, SSIM y`` of two planes, or of two volumes; ``-`` where a metric refuses."""
    try:
        return f"{_number(psnr(pred, ref, mask, **kwargs), 2)} dB, SSIM " + _number(
            ssim(pred, ref, mask, **kwargs), 4
        )
    except ValueError:  # e.g. no masked voxel in this slice
        return "-"


def _panels(case: Case, axis: int, k: int, view: View) -> Panels:
    """(title, displayed plane) of every column: LR input, methods, reference, each titled with
    its metrics over the slice (the volume's data range) and over the volume."""
    scores = {r["method"]: r for r in case.rows if r["name"] == case.name}
    ref = _plane(case.reference, axis, k)
    mask = None if case.mask is None else np.take(case.mask, k, axis=axis)
    volume_mask = None if case.mask is None else case.mask
    common = dict(shave=case.shave)
    try:
        common["data_range"] = data_range(
            case.reference.as_tensor()[0], volume_mask, case.shave, axis
        )
    except ValueError:
        pass

    def title(label: str, method: str | None, plane: np.ndarray) -> str:
        if method not in scores:
            return label
        s = scores[method]
        whole = f"{_number(s['psnr'], 2)} dB, SSIM {_number(s['ssim'], 4)}"
        return f"{label}\nslice: {_score_line(plane, ref, mask, **common)}\nvolume: {whole}"

    columns = []
    if case.low_res is not None:
        same = [m for m, p in case.predictions.items() if p is case.low_res]
        columns.append(("LR input (nearest)", same[0] if same else None, case.low_res))
    columns += [(m, m, p) for m, p in case.predictions.items() if p is not case.low_res]
    panels = []
    for label, method, volume in columns:
        plane = _plane(volume, axis, k)
        panels.append((title(label, method, plane), view.show(plane)))
    return panels + [("reference", view.show(ref))]


def _window(centre: int, n: int) -> tuple[int, int]:
    """First and last index of the line profile around ``centre`` on an axis of ``n`` pixels."""
    return max(centre - _HALF_WINDOW, 0), min(centre + _HALF_WINDOW, n - 1)


def show_plane(ax: object, image: np.ndarray, view: View, title: str, **style: object) -> object:
    """Draw a displayed plane (:meth:`View.show`) on ``ax`` with its physical aspect, ``title``
    and the anatomical letters at the middle of its four edges; returns the ``AxesImage``."""
    shown = ax.imshow(image, aspect=view.aspect, origin="upper", interpolation="nearest", **style)
    ax.set_title(title, fontsize=7)
    letters = dict(transform=ax.transAxes, color="yellow", fontsize=7, fontweight="bold")
    left, right, top, bottom = view.labels
    ax.text(0.01, 0.5, left, ha="left", va="center", **letters)
    ax.text(0.99, 0.5, right, ha="right", va="center", **letters)
    ax.text(0.5, 0.99, top, ha="center", va="top", **letters)
    ax.text(0.5, 0.01, bottom, ha="center", va="bottom", **letters)
    return shown


def _comparison(panels: Panels, mask: np.ndarray, view: View, edge: Edge, title: str) -> Figure:
    """Three rows: the images (the zoomed square outlined), the zoomed squares, the errors."""
    ref = panels[-1][1]
    grey = dict(cmap="gray", vmin=np.percentile(ref, 0.5), vmax=np.percentile(ref, 99.5))
    errors = [np.abs(p - ref) for _, p in panels[:-1]]
    vmax = max(float(np.percentile(errors, 99.5)), 1e-12)
    heat = dict(cmap="inferno", vmin=0, vmax=vmax)
    r0, r1, c0, c1 = _zoom_box(mask)
    n = len(panels)
    fig = Figure(figsize=(n * PANEL_INCHES, ROWS * PANEL_INCHES + HEADER_INCHES), dpi=DPI)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(ROWS, n, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for col, (name, image) in enumerate(panels):
        show_plane(axes[0, col], image, view, name, **grey)
        outline = Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="yellow")
        axes[0, col].add_patch(outline)
        zoom = image[r0:r1, c0:c1]
        axes[1, col].imshow(zoom, aspect=view.aspect, interpolation="nearest", **grey)
        axes[1, col].set_title("zoomed (yellow square)", fontsize=7)
    for col, error in enumerate(errors):
        image = show_plane(axes[2, col], error, view, "|error|", **heat)
    r, c, along = edge
    span = _window((r, c)[along], ref.shape[along])
    xs, ys = ((c, c), span) if along == 0 else (span, (r, r))
    axes[0, -1].plot(xs, ys, color="cyan", linewidth=1)  # where the line profile runs
    bar = axes[2, -1].inset_axes((0.1, 0.1, 0.08, 0.8))
    fig.colorbar(image, cax=bar, label="absolute error")
    fig.suptitle(title, fontsize=9)
    return fig


def _profile(panels: Panels, edge: Edge, view: View, title: str) -> Figure:
    r, c, along = edge
    fig = Figure(figsize=PROFILE_INCHES, dpi=DPI)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    centre = (r, c)[along]
    lo, hi = _window(centre, panels[0][1].shape[along])
    x = (np.arange(lo, hi + 1) - centre) * view.spacing[along]
    for name, image in panels:
        line = image[lo : hi + 1, c] if along == 0 else image[r, lo : hi + 1]
        style = dict(color="black", linewidth=2) if name == "reference" else dict(linewidth=1)
        ax.plot(x, line, label=name.splitlines()[0], **style)
    towards = view.labels[3] if along == 0 else view.labels[1]
    ax.set(xlabel=f"distance from the edge (mm), towards {towards}", ylabel="intensity")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def slice_figures(case: Case, k: int, convention: str = "radiological") -> tuple[Figure, Figure]:
    """The comparison and line-profile figures of slice ``k`` along the case's slice axis,
    reoriented to ``convention`` (:class:`mrsr.orientation.View`)."""
    axis, mask = _axis_and_mask(case)
    view = View.of(np.asarray(case.reference.affine), axis, convention)
    panels = _panels(case, axis, k, view)
    shown_mask = view.show(np.take(mask, k, axis=axis))
    edge = _strongest_edge(panels[-1][1], shown_mask)
    count = case.reference.shape[1 + axis]
    title = f"{case.name}: slice {k} of {count} (voxel axis {axis}), {view.caption()}"
    comparison = _comparison(panels, shown_mask, view, edge, title)
    title = f"{case.name}: profile across the strongest edge, slice {k}"
    return comparison, _profile(panels, edge, view, title)


def _figures(
    new: NewFile,
    directory: Path,
    case: Case,
    slices: Sequence[int] | None,
    overwrite: bool,
    convention: str,
) -> list[Path]:
    paths = []
    for k in choose_slices(case) if slices is None else slices:
        stem = f"{case.name}_slice{k:03d}"
        for figure, name in zip(slice_figures(case, k, convention), ("", "_profile")):
            paths.append(directory / f"{stem}{name}.png")
            with new(paths[-1], overwrite) as stream:
                figure.savefig(stream, dpi=DPI, format="png")
    return paths


def write_figures(
    directory: str | os.PathLike,
    case: Case,
    slices: Sequence[int] | None = None,
    overwrite: bool = False,
    convention: str = "radiological",
) -> list[Path]:
    """Write the comparison and line-profile PNGs of ``case`` for ``slices`` (along its slice
    axis; default :func:`choose_slices`), shown in ``convention``, all or none. Returns the
    paths."""
    with atomic_files() as new:
        return _figures(new, Path(directory), case, slices, overwrite, convention)


def write_report(
    directory: str | os.PathLike,
    cases: Iterable[Case],
    against: str | None = None,
    settings: Mapping[str, object] | None = None,
    overwrite: bool = False,
    figures: bool = True,
    convention: str = "radiological",
) -> list[dict]:
    """Write the tables (and figures) of ``cases`` into ``directory`` (created); returns the rows.

    ``cases`` may be a generator: each case is drawn and released in turn. ``settings`` (e.g.
    mask, shave, degradation) are listed at the top of ``report.md``, with the figures'
    orientation ``convention`` (radiological or neurological). ``report.html`` holds the tables
    and, with ``figures``, every volume's planes (:mod:`mrsr.html_report`). Fails before any
    work when a table file exists and ``overwrite`` is false. The report is published whole or
    not at all: every file goes to a temporary until the last is written, and a failure (a full
    disk, a bad volume) removes them, and the folder if this call created it.
    """
    OPTIONS["convention"].check(convention, "convention")
    out = Path(directory)
    clashes = [name for name in TABLES if check_regular(out / name)]
    if clashes and not overwrite:
        raise MRSRError(f"{out}: already holds {', '.join(clashes)}; pass --overwrite to replace")
    from mrsr import html_report  # here: it imports this module

    with new_folder(out), atomic_files() as new:
        rows, pictures, sections = [], [], []
        for case in cases:
            rows += case.rows
            if figures:
                pictures += _figures(new, out, case, None, overwrite, convention)
                sections.append((case.name, html_report.case_section(case, against, convention)))
        if not rows:
            raise MRSRError("nothing to report: no volumes were evaluated")
        lines = ["# mrsr evaluation", ""]
        settings = {**(settings or {}), "figures": _CAPTION[convention]} if figures else settings
        lines += [f"- {key}: {value}" for key, value in (settings or {}).items()]
        lines += ["", format_tables(rows, against, markdown=True), ""]
        lines += [f"![{p.stem}]({p.name})" for p in pictures]
        texts = {
            "metrics.csv": to_csv(rows),
            "summary.csv": to_csv(summarize(rows, against)),  # refuses an unknown against
            "report.md": "\n".join(lines) + "\n",
        }
        summary = html_report.evaluation_summary(rows, against, linked=figures)
        texts["report.html"] = html_report.page("mrsr evaluation", sections, summary, settings)
        for name, text in texts.items():
            with new(out / name, overwrite) as stream:
                stream.write(text.encode("utf-8"))
    return rows
