"""Evaluation reports: tables (CSV, JSON, Markdown, text) and PNG figures ready for a paper.

:func:`write_report` writes into a folder:

- ``metrics.csv``: one row per volume and method (``name, method, psnr, ssim, nrmse``);
- ``summary.csv``: per method ``n``, mean, standard deviation and paired-test p of each metric
  (:func:`mrsr.evaluation.summarize`);
- ``report.md``: the settings and both tables in Markdown;
- per volume and chosen slice, ``NAME_sliceK.png``: one column per image (the low-resolution
  input upsampled by nearest neighbour when known, each method, the reference), the images on
  the top row with a zoomed inset of the foreground's centre, the absolute error
  ``|method - reference|`` on a common colour scale below; and ``NAME_sliceK_profile.png``: the
  intensities along the line across the strongest edge of the reference (marked in cyan on its
  panel), reference against every method.

Images are drawn as stored, first in-plane axis to the right, second upwards
(``imshow(plane.T, origin="lower")``), grey window = the reference slice's 0.5-99.5 percentiles.
Every file is written atomically and an existing file is replaced only with ``overwrite=True``.
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
from scipy.ndimage import binary_erosion

from mrsr.errors import MRSRError
from mrsr.evaluation import METRICS, Case, min_p_value, summarize
from mrsr.geometry import slice_axis
from mrsr.io import atomic_path
from mrsr.metrics import foreground_mask

__all__ = [
    "DPI",
    "HEADER_INCHES",
    "PANEL_INCHES",
    "PROFILE_INCHES",
    "choose_slices",
    "format_tables",
    "paired_test_note",
    "to_csv",
    "to_json",
    "write_figures",
    "write_report",
]

DPI = 150
PANEL_INCHES = 2.4  # width and height of one image panel
HEADER_INCHES = 0.6  # room for the figure title
PROFILE_INCHES = (6.4, 3.6)
TABLES = ("metrics.csv", "summary.csv", "report.md")
_DIGITS = {"psnr": 2, "ssim": 4, "nrmse": 4}
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


def _strongest_edge(ref: np.ndarray, mask: np.ndarray) -> Edge:
    """``(i, j, along)``: the voxel of largest gradient magnitude inside the mask eroded by 3
    voxels (else the plane less a 4-voxel border), and the in-plane axis the gradient is mostly
    along (the profile runs along it, across the edge)."""
    gi, gj = np.gradient(ref)
    inner = binary_erosion(mask, iterations=3)
    if not inner.any():
        inner = np.zeros_like(mask)
        inner[4:-4, 4:-4] = True
    i, j = np.unravel_index(np.argmax(np.hypot(gi, gj) * inner), ref.shape)
    return int(i), int(j), int(abs(gi[i, j]) < abs(gj[i, j]))


def _zoom_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(i0, i1, j0, j1)``: a square of a quarter of the smaller side, centred on the mask's
    centroid (the plane's centre without foreground) and kept inside the plane."""
    side = max(min(mask.shape) // 4, 2)
    centre = np.argwhere(mask).mean(axis=0) if mask.any() else np.array(mask.shape) / 2
    lo = [int(np.clip(c - side / 2, 0, n - side)) for c, n in zip(centre, mask.shape)]
    return lo[0], lo[0] + side, lo[1], lo[1] + side


def _panels(case: Case, axis: int, k: int) -> Panels:
    """(title, plane) of every column: LR input, methods, reference, with their volume metrics."""
    scores = {r["method"]: r for r in case.rows if r["name"] == case.name}

    def title(label: str, method: str | None) -> str:
        if method not in scores:
            return label
        s = scores[method]
        return f"{label}\nPSNR {_number(s['psnr'], 2)} dB, SSIM {_number(s['ssim'], 4)}"

    panels = []
    if case.low_res is not None:
        same = [m for m, p in case.predictions.items() if p is case.low_res]
        panels.append((title("LR input (nearest)", same[0] if same else None), case.low_res))
    panels += [(title(m, m), p) for m, p in case.predictions.items() if p is not case.low_res]
    panels.append(("reference", case.reference))
    return [(t, _plane(v, axis, k)) for t, v in panels]


def _window(centre: int, n: int) -> tuple[int, int]:
    """First and last index of the line profile around ``centre`` on an axis of ``n`` voxels."""
    return max(centre - _HALF_WINDOW, 0), min(centre + _HALF_WINDOW, n - 1)


def _comparison(panels: Panels, box: tuple[int, int, int, int], edge: Edge, title: str) -> Figure:
    ref = panels[-1][1]
    grey = dict(cmap="gray", vmin=np.percentile(ref, 0.5), vmax=np.percentile(ref, 99.5))
    errors = [np.abs(p - ref) for _, p in panels[:-1]]
    heat = dict(cmap="inferno", vmin=0, vmax=max(float(np.percentile(errors, 99.5)), 1e-12))
    n = len(panels)
    fig = Figure(figsize=(n * PANEL_INCHES, 2 * PANEL_INCHES + HEADER_INCHES), dpi=DPI)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for col, (name, plane) in enumerate(panels):
        axes[0, col].imshow(plane.T, origin="lower", **grey)
        axes[0, col].set_title(name, fontsize=8)
        inset = axes[0, col].inset_axes((0.6, 0.0, 0.4, 0.4))
        inset.imshow(plane.T, origin="lower", **grey)
        inset.set(xlim=box[:2], ylim=box[2:], xticks=[], yticks=[])
        axes[0, col].indicate_inset_zoom(inset, edgecolor="yellow")
    for col, error in enumerate(errors):
        image = axes[1, col].imshow(error.T, origin="lower", **heat)
        axes[1, col].set_title("|error|", fontsize=8)
    i, j, along = edge
    span = _window((i, j)[along], ref.shape[along])
    xs, ys = (span, (j, j)) if along == 0 else ((i, i), span)
    axes[0, -1].plot(xs, ys, color="cyan", linewidth=1)  # where the line profile runs
    bar = axes[1, -1].inset_axes((0.1, 0.1, 0.08, 0.8))
    fig.colorbar(image, cax=bar, label="absolute error")
    fig.suptitle(title, fontsize=10)
    return fig


def _profile(panels: Panels, edge: Edge, spacing: float, title: str) -> Figure:
    i, j, along = edge
    fig = Figure(figsize=PROFILE_INCHES, dpi=DPI)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    centre = (i, j)[along]
    lo, hi = _window(centre, panels[0][1].shape[along])
    x = (np.arange(lo, hi + 1) - centre) * spacing
    for name, plane in panels:
        line = plane[lo : hi + 1, j] if along == 0 else plane[i, lo : hi + 1]
        style = dict(color="black", linewidth=2) if name == "reference" else dict(linewidth=1)
        ax.plot(x, line, label=name.splitlines()[0], **style)
    ax.set(xlabel="distance from the edge (mm)", ylabel="intensity")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def _save(fig: Figure, path: Path, overwrite: bool) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


def write_figures(
    directory: str | os.PathLike,
    case: Case,
    slices: Sequence[int] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the comparison and line-profile PNGs of ``case`` for ``slices`` (along its slice
    axis; default :func:`choose_slices`). Returns the paths."""
    axis, mask = _axis_and_mask(case)
    in_plane = [a for a in range(3) if a != axis]
    spacings = np.linalg.norm(np.asarray(case.reference.affine)[:3, in_plane], axis=0)
    paths = []
    for k in choose_slices(case) if slices is None else slices:
        panels, plane_mask = _panels(case, axis, k), np.take(mask, k, axis=axis)
        edge = _strongest_edge(panels[-1][1], plane_mask)
        stem = Path(directory) / f"{case.name}_slice{k:03d}"
        title = f"{case.name}: slice {k} (axis {axis})"
        figure = _comparison(panels, _zoom_box(plane_mask), edge, title)
        paths.append(_save(figure, stem.with_suffix(".png"), overwrite))
        title = f"{case.name}: profile across the strongest edge, slice {k}"
        figure = _profile(panels, edge, float(spacings[edge[2]]), title)
        paths.append(_save(figure, stem.parent / f"{stem.name}_profile.png", overwrite))
    return paths


def write_report(
    directory: str | os.PathLike,
    cases: Iterable[Case],
    against: str | None = None,
    settings: Mapping[str, object] | None = None,
    overwrite: bool = False,
    figures: bool = True,
) -> list[dict]:
    """Write the tables (and figures) of ``cases`` into ``directory`` (created); returns the rows.

    ``cases`` may be a generator: each case is drawn and released in turn. ``settings`` (e.g.
    mask, shave, degradation) are listed at the top of ``report.md``. Fails before any work when
    a table file exists and ``overwrite`` is false.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    clashes = [name for name in TABLES if (out / name).exists()]
    if clashes and not overwrite:
        raise MRSRError(f"{out}: already holds {', '.join(clashes)}; pass --overwrite to replace")
    rows, pictures = [], []
    for case in cases:
        rows += case.rows
        if figures:
            pictures += write_figures(out, case, overwrite=overwrite)
    if not rows:
        raise MRSRError("nothing to report: no volumes were evaluated")
    lines = ["# mrsr evaluation", ""]
    lines += [f"- {key}: {value}" for key, value in (settings or {}).items()]
    lines += ["", format_tables(rows, against, markdown=True), ""]
    lines += [f"![{p.stem}]({p.name})" for p in pictures]
    texts = {
        "metrics.csv": to_csv(rows),
        "summary.csv": to_csv(summarize(rows, against)),
        "report.md": "\n".join(lines) + "\n",
    }
    for name, text in texts.items():
        with atomic_path(out / name, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return rows
