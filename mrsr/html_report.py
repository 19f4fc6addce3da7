"""``report.html``: one self-contained page to look at a cohort's super-resolution in a browser.

In the manner of MRIQC's and fMRIPrep's reports, the page holds, for every volume:

- the input (when known), every output and (when there is one) the reference, each in three
  orthogonal planes through the centre of the volume's foreground (a single slice: its own
  plane) at one physical scale, reoriented to one stated convention with R/L, A/P, S/I letters
  on every edge (:class:`mrsr.orientation.View`), on one grey window (the 0.5-99.5 percentiles
  of the reference's planes, else of the main output's);
- the absolute error ``|output - reference|`` of each image on a common colour scale, with a
  reference;
- a before/after comparison: a slider (and a flicker switch) between the input and the main
  output, else, without an input, between the main output and the reference;
- its metrics table and its provenance: the JSON sidecar of each output read from a file
  (:mod:`mrsr.provenance`), in a collapsible block;

and, for two volumes or more, a cohort table with the **outliers first** (:func:`outliers`).
Figures are PNGs embedded as ``data:`` URIs, CSS and the few lines of JavaScript are inline:
the page needs no network and no other file, and can be mailed or archived alone.

:func:`mrsr.report.write_report` writes it beside the tables (``mrsr evaluate --report``);
:func:`write_html_report` writes it for volumes without a reference (inputs and outputs only),
e.g. a BIDS derivatives dataset.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from matplotlib.figure import Figure
from monai.data import MetaTensor
from scipy import ndimage

from mrsr import __version__
from mrsr.errors import MRSRError, shown
from mrsr.evaluation import METRICS, Case, summarize
from mrsr.files import atomic_files, check_regular, new_folder, read_regular
from mrsr.io import load_volume
from mrsr.metrics import foreground_mask
from mrsr.options import OPTIONS
from mrsr.orientation import View
from mrsr.provenance import sidecar_path
from mrsr.report import paired_test_note, show_plane
from mrsr.resample import index_map

__all__ = [
    "INPUT",
    "OUTLIER_Z",
    "OUTPUT",
    "Entry",
    "case_cohort",
    "case_section",
    "entry_section",
    "evaluation_summary",
    "metrics_table",
    "on_grid",
    "outliers",
    "page",
    "robust_z",
    "write_html_report",
]

OUTLIER_Z = 3.5  # robust z-score beyond which a volume is an outlier (Iglewicz & Hoaglin 1993)
DPI = 100  # dots per inch of the page's figures (a row of three planes: ~540 px wide)
PANEL_INCHES = 1.8  # height of a row of planes, and its width per plane
INPUT = "input (nearest)"  # the caption of an input's figures
OUTPUT = "output"  # the caption of an output's figures
_PLANE_ORDER = ("sagittal", "coronal", "axial")
_SIDECAR_BYTES = 1 << 20
PathLike = Union[str, os.PathLike]


@dataclass
class Entry:
    """One volume of a report without a reference: ``output`` (a file or a MetaTensor),
    the ``input`` it was made from (optional; any grid: it is shown on the output's grid by
    nearest neighbour), and its ``provenance`` (default: the output file's JSON sidecar)."""

    name: str
    output: PathLike | MetaTensor
    input: PathLike | MetaTensor | None = None
    provenance: Mapping[str, Any] | None = None


def robust_z(values: Sequence[float]) -> np.ndarray:
    """The modified z-score ``0.6745 (x - median) / MAD`` of Iglewicz and Hoaglin (1993) over
    the finite values; when the MAD is 0, ``(x - median) / (1.2533 mean|x - median|)``; 0 when
    both are (all equal). ``+-inf`` get ``+-inf``, NaN (not measured) stays NaN."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    z = np.where(np.isinf(x), x, np.nan)
    if not finite.any():
        return z
    deviation = x[finite] - np.median(x[finite])
    mad = np.median(np.abs(deviation))
    if mad > 0:
        z[finite] = 0.6745 * deviation / mad
    elif np.abs(deviation).mean() > 0:
        z[finite] = deviation / (1.253314 * np.abs(deviation).mean())
    else:
        z[finite] = 0.0
    return z


def outliers(values: Sequence[float], two_sided: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(order, flagged)``: the volumes from the most to the least suspect, and whether each is
    an outlier, by the robust z-score (:func:`robust_z`). One-sided (``two_sided=False``, a
    measure where low is bad such as the PSNR gain): suspicion is ``-z`` and an outlier has
    ``z < -3.5``; two-sided: ``|z| > 3.5``. Volumes not measured (NaN) come last, unflagged."""
    z = robust_z(values)
    suspicion = np.abs(z) if two_sided else -z
    suspicion = np.where(np.isnan(suspicion), -np.inf, suspicion)
    order = np.argsort(-suspicion, kind="stable")
    return order, suspicion > OUTLIER_Z


Cell = Union[str, tuple[float, str], tuple[str, str]]  # text, (number, format), (text, link)
_FORMATS = {"psnr": ".2f", "ssim": ".4f", "nrmse": ".4f"}


def _cell(cell: Cell) -> str:
    """A table cell; a number shows rounded and carries its exact value, as the CSV writes it,
    in ``data-value``."""
    if isinstance(cell, str):
        return f"<td>{html.escape(cell)}</td>"
    if isinstance(cell[0], str):
        return f'<td><a href="{html.escape(cell[1], quote=True)}">{html.escape(cell[0])}</a></td>'
    value, spec = float(cell[0]), cell[1]  # a numpy float's repr would name its type
    text = f"{value:{spec}}" if math.isfinite(value) else "-"
    return f'<td class="num" data-value="{value!r}">{text}</td>'


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Cell]], kind: str, marked: Sequence[bool] = ()
) -> str:
    """An HTML table of class ``kind``; rows whose ``marked`` entry is true get class outlier."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    marks = list(marked)
    body = "".join(
        ('<tr class="outlier">' if i < len(marks) and marks[i] else "<tr>")
        + "".join(_cell(c) for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<table class="{kind}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def metrics_table(rows: Sequence[Mapping], kind: str = "metrics") -> str:
    """The rows (``name, method, psnr, ssim, nrmse``) as an HTML table of class ``kind``: what
    metrics.csv holds."""
    header = ["volume", "method", "PSNR (dB)", "SSIM", "NRMSE"]
    body = ([r["name"], r["method"]] + [(r[m], _FORMATS[m]) for m in METRICS] for r in rows)
    return _table(header, body, kind)


def _summary_table(rows: Sequence[Mapping], against: str | None) -> str:
    """Per method mean, sd and p (summary.csv), with the test's note; empty below 2 volumes."""
    summary = summarize(rows, against)
    if max(s["n"] for s in summary) < 2:
        return ""
    stats = (("mean", None), ("std", None), ("p", ".3g"))
    header = ["method", "n"] + [f"{m.upper()} {s}" for m in METRICS for s, _ in stats]
    body = (
        [s["method"], str(s["n"])]
        + [(s[f"{m}_{k}"], spec or _FORMATS[m]) for m in METRICS for k, spec in stats]
        for s in summary
    )
    note = paired_test_note(summary, summary[0]["method"] if against is None else against)
    table = _table(header, body, "summary")
    return f"<h3>Summary over volumes</h3>{table}<p class=note>{html.escape(note)}</p>"


def _png(figure: Figure) -> str:
    stream = io.BytesIO()
    figure.savefig(stream, dpi=DPI, format="png")
    data = base64.b64encode(stream.getvalue()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _data(volume: MetaTensor) -> np.ndarray:
    return np.asarray(volume.as_tensor()[0].detach().cpu(), dtype=np.float64)


def on_grid(volume: MetaTensor, grid: MetaTensor) -> np.ndarray:
    """``volume``'s first channel sampled by nearest neighbour on ``grid``'s voxels (0 outside
    its field of view), for display; the data itself when both share a grid."""
    shape, affine = tuple(grid.shape[1:]), np.asarray(grid.affine, dtype=np.float64)
    source = np.asarray(volume.affine, dtype=np.float64)
    if tuple(volume.shape[1:]) == shape and np.allclose(source, affine, atol=1e-6):
        return _data(volume)
    m = index_map(source, affine)
    return ndimage.affine_transform(
        _data(volume), m[:3, :3], m[:3, 3], output_shape=shape, order=0, cval=0.0
    )


class _Planes:
    """The three orthogonal planes of one grid through its foreground's centre (those of
    one pixel's width left out: a single slice shows only its own plane)."""

    def __init__(self, grid: MetaTensor, convention: str) -> None:
        affine = np.asarray(grid.affine, dtype=np.float64)
        data = _data(grid)
        mask = foreground_mask(data)
        centre = np.argwhere(mask).mean(axis=0) if mask.any() else (np.array(data.shape) - 1) / 2
        self.points = [int(round(c)) for c in centre]
        views = [View.of(affine, axis, convention) for axis in range(3)]
        wide = [a for a in range(3) if min(np.delete(data.shape, a)) > 1] or [2]
        self.axes = sorted(wide, key=lambda a: _PLANE_ORDER.index(views[a].plane))
        self.views = [views[a] for a in self.axes]
        self.shape = data.shape

    def of(self, data: np.ndarray) -> list[np.ndarray]:
        return [
            view.show(np.take(data, self.points[a], axis=a))
            for a, view in zip(self.axes, self.views)
        ]

    def titles(self) -> list[str]:
        return [
            f"{view.plane}, slice {self.points[a]} of {self.shape[a]}"
            for a, view in zip(self.axes, self.views)
        ]

    def figure(self, planes: list[np.ndarray], colorbar: bool = False, **style) -> str:
        """One row: the three planes drawn with ``style`` (cmap, vmin, vmax) at one physical
        scale where the height allows, and its colour scale with ``colorbar``, as a data URI."""
        bar, ticks = (0.12, 0.45) if colorbar else (0.0, 0.0)  # inches
        width = len(planes) * PANEL_INCHES
        fig = Figure(figsize=(width + bar + ticks, PANEL_INCHES + 0.25), dpi=DPI)
        widths = [p.shape[1] * v.spacing[1] for p, v in zip(planes, self.views)]  # mm
        ratios = [width * w / sum(widths) for w in widths] + ([bar] if colorbar else [])
        grid = fig.add_gridspec(1, len(ratios), width_ratios=ratios, wspace=0.06)
        grid.update(left=0.01, right=0.99 - ticks / fig.get_figwidth(), bottom=0.05, top=0.9)
        for i, (plane, view, title) in enumerate(zip(planes, self.views, self.titles())):
            ax = fig.add_subplot(grid[0, i])
            ax.set_axis_off()
            image = show_plane(ax, plane, view, title, **style)
        if colorbar:
            fig.colorbar(image, cax=fig.add_subplot(grid[0, -1]))
        return _png(fig)


def _figure(uri: str, caption: str) -> str:
    alt = html.escape(caption, quote=True)
    return f'<figure><figcaption>{alt}</figcaption><img src="{uri}" alt="{alt}"></figure>'


def _slider(before: tuple[str, str], after: tuple[str, str]) -> str:
    """Two aligned images: ``after`` below, ``before`` on top clipped at the slider, or
    alternating with the flicker switch."""
    (b_label, b_uri), (a_label, a_uri) = before, after
    b, a = html.escape(b_label), html.escape(a_label)
    return (
        '<div class="compare"><input type="checkbox" class="flicker" title="flicker"> flicker'
        f'<div class="stack"><img class="after" src="{a_uri}" alt="{a}">'
        f'<img class="before" src="{b_uri}" alt="{b}"></div>'
        '<input type="range" min="0" max="100" value="50" oninput="slide(this)" '
        f'aria-label="{b} / {a}"><div class="ends"><span>&larr; {b}</span>'
        f"<span>{a} &rarr;</span></div></div>"
    )


def _provenance(records: Mapping[str, Any]) -> str:
    if not records:
        return ""
    text = html.escape(json.dumps(records, indent=2, default=str), quote=False)
    return f"<details><summary>provenance (JSON)</summary><pre>{text}</pre></details>"


def _read_sidecar(volume: MetaTensor, exclude: object = None) -> dict | None:
    """The JSON sidecar beside the file ``volume`` was read from (not when that file is
    ``exclude``), else ``None``."""
    name = volume.meta.get("filename_or_obj")
    if not name or (exclude is not None and str(name) == str(exclude)):
        return None
    path = sidecar_path(str(name))
    if not check_regular(path):
        return None
    try:
        return json.loads(read_regular(path, _SIDECAR_BYTES))
    except (MRSRError, ValueError) as exc:
        return {"unreadable sidecar": f"{path}: {exc}"}


def _section(
    name: str,
    grid: MetaTensor,
    images: Mapping[str, MetaTensor],
    reference: MetaTensor | None,
    before_after: tuple[str, str] | None,
    tables: str,
    provenance: Mapping[str, Any],
    convention: str,
) -> str:
    """One volume's section (its inner HTML): ``tables``, the slider between the two labels of
    ``before_after`` (keys of ``images`` or ``"reference"``; none without), ``images`` (label:
    volume, any grid) shown on ``grid``'s planes in the reference's grey window (else the last
    image's), each beside its error against ``reference``, and the provenance."""
    planes = _Planes(grid, convention)
    drawn = {label: planes.of(on_grid(v, grid)) for label, v in images.items()}
    if reference is not None:
        drawn["reference"] = planes.of(on_grid(reference, grid))
    window = drawn["reference" if reference is not None else list(images)[-1]]
    pixels = np.concatenate([p.ravel() for p in window])
    grey = dict(cmap="gray", vmin=np.percentile(pixels, 0.5), vmax=np.percentile(pixels, 99.5))
    uris = {label: planes.figure(p, **grey) for label, p in drawn.items()}
    errors = {}
    if reference is not None:
        errors = {
            label: [np.abs(p - r) for p, r in zip(drawn[label], drawn["reference"])]
            for label in drawn
            if label != "reference"
        }
        every = np.concatenate([e.ravel() for p in errors.values() for e in p])
        heat = dict(cmap="inferno", vmin=0, vmax=max(float(np.percentile(every, 99.5)), 1e-12))
    figures = []
    for label, uri in uris.items():  # each image beside its error map
        pair = _figure(uri, label)
        if label in errors:
            error = planes.figure(errors[label], colorbar=True, **heat)
            pair += _figure(error, f"|{label} - reference|")
        figures.append(f'<div class="pair">{pair}</div>')
    slider = ""
    if before_after:
        before, after = before_after
        slider = "<h3>Before / after</h3>" + _slider((before, uris[before]), (after, uris[after]))
    return (
        f"<h2>{html.escape(name)}</h2>{tables}{slider}<h3>Planes</h3>"
        f'<div class="figures">{"".join(figures)}</div>{_provenance(provenance)}'
    )


def case_section(case: Case, against: str | None = None, convention: str = "radiological") -> str:
    """The section of one evaluated volume (:class:`mrsr.evaluation.Case`): its input (the
    low-resolution volume on the reference grid, when known), every method, the reference, the
    errors, a slider between the input (else the reference) and method ``against`` (default:
    the first), its metrics and the sidecars of the predictions read from files."""
    images: dict[str, MetaTensor] = {}
    if case.low_res is not None:
        images[INPUT] = case.low_res
    images.update({m: p for m, p in case.predictions.items() if p is not case.low_res})
    main = against if against in case.predictions else next(iter(case.predictions))
    main = INPUT if case.predictions[main] is case.low_res else main
    before_after = (INPUT, main) if INPUT in images and main != INPUT else (main, "reference")
    reference_file = case.reference.meta.get("filename_or_obj")
    records = {
        m: rec
        for m, p in case.predictions.items()
        if (rec := _read_sidecar(p, exclude=reference_file)) is not None
    }
    tables = "<h3>Metrics</h3>" + metrics_table(case.rows, "volume-metrics")
    return _section(
        case.name, case.reference, images, case.reference, before_after, tables, records, convention
    )


def _load(volume: PathLike | MetaTensor) -> MetaTensor:
    return volume if isinstance(volume, MetaTensor) else load_volume(volume)


def entry_section(entry: Entry, convention: str = "radiological") -> tuple[str, float]:
    """The section of one volume without a reference, and its change from its input: the RMS
    of ``output - input`` (the input on the output's grid by nearest neighbour) over the
    output's foreground, over the input's range (NaN without an input)."""
    output = _load(entry.output)
    images = {}
    change = float("nan")
    if entry.input is not None:
        images[INPUT] = source = _load(entry.input)
        out, nearest = _data(output), on_grid(source, output)
        mask = foreground_mask(out)
        span = float(np.ptp(_data(source)))
        if mask.any() and span > 0:
            change = float(np.sqrt(np.mean((out - nearest)[mask] ** 2)) / span)
    images[OUTPUT] = output
    records = entry.provenance
    if records is None:
        records = _read_sidecar(output) or {}
    before_after = (INPUT, OUTPUT) if entry.input is not None else None
    grids = _table(
        ["image", "shape", "voxel size (mm)"],
        ([label, *_grid(v)] for label, v in images.items()),
        "grids",
    )
    return _section(
        entry.name, output, images, None, before_after, grids, records, convention
    ), change


def _grid(volume: MetaTensor) -> list[str]:
    size = np.linalg.norm(np.asarray(volume.affine, dtype=np.float64)[:3, :3], axis=0)
    return [" x ".join(str(int(n)) for n in volume.shape[1:]), " x ".join(f"{v:.3g}" for v in size)]


def _cohort(
    names: Sequence[str],
    measure: tuple[str, Sequence[float]],
    two_sided: bool,
    columns: Mapping[str, Sequence[float]],
    linked: bool,
    spec: str = ".2f",
) -> str:
    """The cohort table, most suspect volume first, outliers marked, and the rule in words:
    ``measure`` is (its name, one value per volume), ``columns`` more numbers shown, numbers
    formatted by ``spec``; ``linked``: each name links to its section (:func:`page`)."""
    if len(names) < 2:
        return ""
    label, values = measure
    order, flagged = outliers(values, two_sided)
    z = robust_z(values)
    header = ["volume", *columns, label, "robust z", "outlier"]
    body = [
        [(names[i], f"#v{i}") if linked else names[i]]
        + [(float(v[i]), spec) for v in (*columns.values(), values)]
        + [(float(z[i]), ".2f"), "yes" if flagged[i] else ""]
        for i in order
    ]
    side = "|z| > " if two_sided else "z < -"
    rule = (
        f"Volumes from the most to the least suspect by the robust z-score of {label}, "
        "z = 0.6745 (x - median) / MAD (Iglewicz and Hoaglin, 1993); an outlier has "
        f"{side}{OUTLIER_Z:g}."
    )
    table = _table(header, body, "cohort", [bool(flagged[i]) for i in order])
    return f"<h3>Cohort, outliers first</h3>{table}<p class=note>{html.escape(rule)}</p>"


def case_cohort(rows: Sequence[Mapping], against: str | None = None, linked: bool = True) -> str:
    """The cohort table of evaluated volumes: per volume the PSNR gain of method ``against``
    (default: the first) over the ``nearest`` baseline (the input) when the rows hold it, else
    its PSNR; low is suspect (one-sided). ``linked``: the names link to the volumes' sections."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    main = methods[0] if against is None else against
    psnr = {m: {r["name"]: r["psnr"] for r in rows if r["method"] == m} for m in methods}
    names = list(psnr[main])
    ours = [psnr[main][n] for n in names]
    if "nearest" in psnr and main != "nearest" and set(names) <= set(psnr["nearest"]):
        base = [psnr["nearest"][n] for n in names]
        gain = [a - b for a, b in zip(ours, base)]
        columns = {f"PSNR {main} (dB)": ours, "PSNR nearest (dB)": base}
        measure = (f"PSNR gain of {main} over nearest (dB)", gain)
        return _cohort(names, measure, False, columns, linked)
    return _cohort(names, (f"PSNR of {main} (dB)", ours), False, {}, linked)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:12px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}nav{padding:8px 24px;background:#e8eef3;font-size:14px}
nav a{margin-right:12px}main{padding:0 24px 24px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:16px 0;padding:8px 16px}
h2{font-size:18px;margin:8px 0}h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{border:1px solid #ccc;padding:2px 8px}th{background:#eef2f5}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr.outlier td{background:#fde2e1;font-weight:600}
.note{font-size:12px;color:#555}.figures,.pair{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0}figure img{display:block;max-width:100%}figcaption{font-size:12px;color:#444}
.compare{display:inline-block;min-width:min(100%,400px);font-size:12px}.stack{position:relative}
.stack img{display:block;width:100%}
.stack .before{position:absolute;top:0;left:0;width:100%;clip-path:inset(0 50% 0 0)}
.compare input[type=range]{width:100%;margin:4px 0}
.ends{display:flex;justify-content:space-between;gap:12px}
.flicker:checked~.stack .before{clip-path:none!important;animation:flick 1.2s infinite}
@keyframes flick{0%,49%{opacity:1}50%,100%{opacity:0}}
details{margin:8px 0}pre{font-size:12px;background:#f4f4f4;padding:8px;overflow:auto}
"""
# the slider; and, once loaded, every figure's decoded width noted on it (0: did not render)
_JS = """
function slide(r){r.parentNode.querySelector('.before').style.clipPath=
'inset(0 '+(100-r.value)+'% 0 0)';}
window.addEventListener('load',function(){var n=0;
document.querySelectorAll('img').forEach(function(i){i.dataset.naturalWidth=i.naturalWidth;
if(i.naturalWidth>0)n++;});document.body.dataset.figuresRendered=n;});
"""


def page(
    title: str,
    sections: Sequence[tuple[str, str]],
    summary: str,
    settings: Mapping[str, object] | None = None,
) -> str:
    """The whole page: a header, links to the ``sections`` (name, inner HTML; the ``i``-th gets
    the anchor ``#vi``), the ``summary`` HTML (tables), the ``settings`` as JSON, then the
    sections."""
    links = "".join(f'<a href="#v{i}">{html.escape(n)}</a>' for i, (n, _) in enumerate(sections))
    bodies = "".join(
        f'<section class="volume" id="v{i}">{body}</section>'
        for i, (_, body) in enumerate(sections)
    )
    listed = ""
    if settings:
        text = html.escape(json.dumps(dict(settings), indent=2, default=str), quote=False)
        listed = f"<details><summary>settings (JSON)</summary><pre>{text}</pre></details>"
    volumes = f"{len(sections)} volume{'s' if len(sections) != 1 else ''}" if sections else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>mrsr {html.escape(__version__)}"
        f"{' &middot; ' + volumes if volumes else ''}</p></header>"
        f"{'<nav>' + links + '</nav>' if links else ''}<main>"
        f'<section id="summary"><h2>Summary</h2>{summary}{listed}</section>'
        f"{bodies}</main><script>{_JS}</script></body></html>\n"
    )


def evaluation_summary(
    rows: Sequence[Mapping], against: str | None = None, linked: bool = True
) -> str:
    """The summary of an evaluation: the cohort table (outliers first; ``linked`` to the
    volumes' sections), every row, the per-method summary."""
    return (
        case_cohort(rows, against, linked)
        + "<h3>Metrics</h3>"
        + metrics_table(rows)
        + _summary_table(rows, against)
    )


def write_html_report(
    directory: PathLike,
    entries: Iterable[Entry],
    title: str = "mrsr report",
    settings: Mapping[str, object] | None = None,
    overwrite: bool = False,
    convention: str = "radiological",
    filename: str = "report.html",
) -> Path:
    """Write ``directory/filename``: the report of volumes without a reference; returns its path.

    ``entries``: :class:`Entry` items (a name, the output, optionally its input and its
    provenance), drawn one at a time (a generator keeps one volume in memory). Each volume gets
    its input and output in three orthogonal planes shown in ``convention``, a slider between
    them, their grids and its provenance (default: the output's JSON sidecar); two volumes or
    more get a cohort table ordered by the robust z-score of each output's change from its
    input (:func:`entry_section`), two-sided, outliers first. ``settings`` are listed as JSON.
    The folder is created; the file is written whole or not at all, and an existing one is
    replaced only with ``overwrite``.

    >>> write_html_report("derivatives/mrsr", [Entry("sub-01_T1w", "sub-01_res-hi_T1w.nii.gz",
    ...     "sub-01_T1w.nii.gz")])  # doctest: +SKIP
    """
    OPTIONS["convention"].check(convention, "convention")
    path = Path(directory) / filename
    if check_regular(path) and not overwrite:
        raise MRSRError(f"{path}: already exists; pass --overwrite to replace it")
    sections, names, changes = [], [], []
    for entry in entries:
        if not isinstance(entry, Entry):
            raise MRSRError(
                f"entries: {shown(entry)} is not an mrsr.html_report.Entry (name, output, input)"
            )
        body, change = entry_section(entry, convention)
        sections.append((entry.name, body))
        names.append(entry.name)
        changes.append(change)
    if not sections:
        raise MRSRError("nothing to report: no volumes were given")
    summary = ""
    if any(math.isfinite(c) for c in changes):
        measure = ("change from the input (RMS over the input's range)", changes)
        summary = _cohort(names, measure, True, {}, True, ".4f")
    with new_folder(path.parent), atomic_files() as new:
        with new(path, overwrite) as stream:
            stream.write(page(title, sections, summary, settings).encode("utf-8"))
    return path
