"""Evaluate super-resolved volumes: pair files by name, score, compare methods, summarise.

A *row* is one volume scored for one method: ``{"name", "method", "psnr", "ssim", "nrmse"}``
(definitions in :mod:`mrsr.metrics`). A :class:`Case` holds one volume's reference, predictions,
mask and rows, for figures (:mod:`mrsr.report`).

Pairing rules: two files make one pair whatever their names; two folders pair their volumes by
name, the file name less its volume suffix (:func:`mrsr.io.volume_stem`: ``a.nii.gz``,
``a.nii``, ``a.nrrd`` and ``a.mha`` all pair as ``a``). Hidden files (atomic-write temporaries)
are ignored; a name found on one side
only, or twice on one side, is an error. Paired volumes must share their grid (shape and affine).

Summary: per method, the mean and sample standard deviation (``ddof=1``) over volumes, and a
two-sided paired Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of each method against one
method, ``against``, over the same volumes. It is rank-based, so it needs no normality of the
differences, but with ``n`` volumes its smallest possible p-value is ``2 / 2**n``: below 6
volumes no difference can reach ``p < 0.05``. p is NaN with fewer than 2 volumes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from monai.data import MetaTensor
from scipy.stats import wilcoxon

from mrsr.degradations import DEFAULT, degrade, get
from mrsr.errors import MRSRError
from mrsr.geometry import slice_axis
from mrsr.io import FORMATS, is_volume_path, list_volumes, load_volume, volume_stem
from mrsr.metrics import foreground_mask, score, slice_scores
from mrsr.pipeline import Pipeline
from mrsr.progress import bar as progress_bar
from mrsr.transforms import CropToMultiple

__all__ = [
    "METRICS",
    "Case",
    "baselines",
    "compare_methods",
    "evaluate_pairs",
    "iter_compare",
    "iter_pairs",
    "min_p_value",
    "model_vs_baselines",
    "pair_volumes",
    "summarize",
]

METRICS = ("psnr", "ssim", "nrmse")  # what every evaluation scores
PathLike = Union[str, os.PathLike]
MaskArg = Union[str, os.PathLike, None]


@dataclass
class Case:
    """One reference volume with every method's prediction on its grid, for tables and figures.

    ``mask`` is the boolean foreground the metrics used (``None``: every voxel); ``low_res`` is the
    low-resolution input upsampled by nearest neighbour onto the reference grid, for display (the
    prediction itself when a method is the ``nearest`` baseline); ``shave`` the in-plane border
    the metrics left out.
    """

    name: str
    reference: MetaTensor
    predictions: dict[str, MetaTensor]
    mask: np.ndarray | None
    rows: list[dict] = field(default_factory=list)
    low_res: MetaTensor | None = None
    shave: int = 0


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not is_volume_path(path)


def _volumes(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in list_volumes(folder):
        key = volume_stem(p)
        if key in found:
            raise MRSRError(f"{folder}: {found[key].name} and {p.name} have the same name {key!r}")
        found[key] = p
    if not found:
        raise MRSRError(f"{folder}: no volumes found ({FORMATS})")
    return found


def _listing(path: PathLike) -> dict[str, Path]:
    """``{name: path}`` of one volume file or of every volume in a folder."""
    p = Path(path)
    if not p.exists():
        raise MRSRError(f"{p}: no such file or folder")
    return _volumes(p) if _is_folder(p) else {volume_stem(p): p}


def pair_volumes(pred: PathLike, ref: PathLike) -> list[tuple[str, Path, Path]]:
    """``(name, pred_path, ref_path)`` for two files, or for two folders paired by name."""
    pred, ref = Path(pred), Path(ref)
    if _is_folder(pred) != _is_folder(ref):
        raise MRSRError(f"{pred} and {ref}: give two volume files or two folders")
    preds, refs = _listing(pred), _listing(ref)
    if not _is_folder(ref):
        return [(volume_stem(ref), preds.popitem()[1], refs[volume_stem(ref)])]
    only_pred, only_ref = sorted(set(preds) - set(refs)), sorted(set(refs) - set(preds))
    if only_pred or only_ref:
        sides = [
            f"only in {d}: {', '.join(n)}" for d, n in ((pred, only_pred), (ref, only_ref)) if n
        ]
        raise MRSRError(f"unpaired volumes ({'; '.join(sides)})")
    return [(name, preds[name], refs[name]) for name in sorted(refs)]


def _check_grid(volume: MetaTensor, ref: MetaTensor, what: str) -> None:
    """The same grid check as :func:`mrsr.pipeline.score`, for masks."""
    same = tuple(volume.shape[1:]) == tuple(ref.shape[1:]) and np.allclose(
        np.asarray(volume.affine), np.asarray(ref.affine), atol=1e-3
    )
    if not same:
        raise MRSRError(f"{what}: not on the grid (shape and affine) of its reference")


class _Masks:
    """Resolves ``mask``: ``"auto"``, ``"none"``/``None``, a file shared by every volume, or a
    folder of masks paired with the references by name."""

    def __init__(self, mask: MaskArg) -> None:
        self.kind = "none" if mask is None else str(mask)
        self.paths = {} if self.kind in ("auto", "none") else _listing(self.kind)
        self.shared = bool(self.paths) and not _is_folder(Path(self.kind))

    def __call__(
        self, name: str, ref: MetaTensor, crop: CropToMultiple | None
    ) -> np.ndarray | None:
        """The boolean mask of reference ``ref``, which ``crop`` (when given) made from the
        mask file's grid."""
        if self.kind == "none":
            return None
        if self.kind == "auto":
            return foreground_mask(ref.as_tensor()[0], slice_axis(np.asarray(ref.affine), ref.meta))
        path = next(iter(self.paths.values())) if self.shared else self.paths.get(name)
        if path is None:
            raise MRSRError(f"{self.kind}: no mask named {name!r}")
        mask = load_volume(path) if crop is None else crop(load_volume(path))
        _check_grid(mask, ref, str(path))
        return mask.as_tensor()[0].numpy() != 0


def _score_case(case: Case, shave: int) -> Case:
    case.shave = shave
    for method, pred in case.predictions.items():
        try:
            values = score(pred, case.reference, mask=case.mask, shave=shave)
        except ValueError as exc:  # metrics refuse e.g. an empty mask or a too-wide shave
            raise MRSRError(f"{case.name}, {method}: {exc}") from exc
        case.rows.append({"name": case.name, "method": method, **values})
    return case


def iter_pairs(
    pred: PathLike | Mapping[str, PathLike],
    ref: PathLike,
    mask: MaskArg = "auto",
    shave: int = 0,
    progress: bool = False,
) -> Iterator[Case]:
    """Score predictions against references, one :class:`Case` per reference volume.

    ``pred``: a file or folder (method ``"prediction"``), or ``{method: file or folder}`` to
    score several methods' outputs against the same references. ``progress``: count the
    volumes on stderr (:func:`mrsr.progress.bar`).
    """
    preds = pred if isinstance(pred, Mapping) else {"prediction": pred}
    pairs = {method: pair_volumes(p, ref) for method, p in preds.items()}
    masks = _Masks(mask)
    # every method pairs the same references in the same (sorted) order
    listing = next(iter(pairs.values()))
    with progress_bar(len(listing), "evaluating", "volume", enabled=progress) as bar:
        for i, (name, _, ref_path) in enumerate(listing):
            reference = load_volume(ref_path)
            predictions = {method: load_volume(pairs[method][i][1]) for method in preds}
            case = _score_case(
                Case(name, reference, predictions, masks(name, reference, None)), shave
            )
            bar.update()
            yield case


def evaluate_pairs(
    pred: PathLike | Mapping[str, PathLike], ref: PathLike, mask: MaskArg = "auto", shave: int = 0
) -> list[dict]:
    """The rows of :func:`iter_pairs`: one per reference volume (and method)."""
    return [row for case in iter_pairs(pred, ref, mask, shave) for row in case.rows]


def iter_compare(
    refs: PathLike | Sequence[PathLike],
    scale: int,
    methods: Mapping[str, Pipeline],
    degradation: str = DEFAULT,
    mask: MaskArg = "auto",
    shave: int | None = None,
    progress: bool = False,
) -> Iterator[Case]:
    """Degrade each reference, super-resolve it with every method, score: one Case per volume.

    ``refs``: a file, a folder, or a list of files. Each reference is centre-cropped to a multiple
    of ``scale`` in-plane and degraded by ``degradation`` (:func:`mrsr.degradations.degrade`); the
    metrics compare each method's output with the cropped reference. ``shave`` defaults to
    ``scale``. A mask file is given on the uncropped reference's grid and cropped alike.
    ``progress``: count the volumes on stderr (:func:`mrsr.progress.bar`).
    """
    paths = [refs] if isinstance(refs, (str, os.PathLike)) else list(refs)
    found = [item for path in paths for item in _listing(path).items()]
    listing = dict(found)
    if len(listing) < len(found):
        raise MRSRError("references must have distinct names (they name the table's rows)")
    masks = _Masks(mask)
    nearest = Pipeline("nearest", scale, degradation=degradation)
    with progress_bar(len(listing), "evaluating", "volume", enabled=progress) as bar:
        for name, path in listing.items():
            lr, hr = degrade(load_volume(path), scale, degradation)
            predictions = {method: pipe(lr) for method, pipe in methods.items()}
            shown = [
                predictions[m] for m, pipe in methods.items() if pipe.spec.network == "nearest"
            ]
            case = Case(name, hr, predictions, masks(name, hr, CropToMultiple(scale)))
            case.low_res = shown[0] if shown else nearest(lr)
            case = _score_case(case, scale if shave is None else shave)
            bar.update()
            yield case


def compare_methods(
    refs: PathLike | Sequence[PathLike],
    scale: int,
    methods: Mapping[str, Pipeline],
    degradation: str = DEFAULT,
    mask: MaskArg = "auto",
    shave: int | None = None,
) -> list[dict]:
    """The rows of :func:`iter_compare`: one per reference volume and method."""
    cases = iter_compare(refs, scale, methods, degradation, mask, shave)
    return [row for case in cases for row in case.rows]


def baselines(scale: int, degradation: str = DEFAULT) -> dict[str, Pipeline]:
    """The interpolation baselines for a degradation: nearest (the input as it is), then its
    entry's (:class:`mrsr.degradations.Degradation`): bicubic, and for k-space truncation
    zerofill, the band-limited (sinc) interpolator that is its exact inverse model.
    """
    names = ["nearest", *get(degradation).baselines]
    return {name: Pipeline(name, scale, degradation=degradation) for name in names}


def model_vs_baselines(
    pipe: Pipeline, path: PathLike, consistency: bool = False
) -> dict[str, dict[str, float]]:
    """Per-slice PSNR/SSIM (:func:`mrsr.metrics.slice_scores`) of ``pipe`` and of its
    degradation's baselines (strongest first) on reference volume ``path``,
    degraded by ``pipe``'s own degradation: the default models' protocol (their cards and
    ``tests/test_shipped_models.py``). ``consistency`` adds ``"model + data consistency"``.
    """
    spec = pipe.spec
    lr, hr = degrade(load_volume(path), spec.scale, spec.degradation)
    ref = hr.as_tensor()[0]
    names = reversed(get(spec.degradation).baselines)
    interpolators = baselines(spec.scale, spec.degradation)
    scores = {name: slice_scores(interpolators[name](lr).as_tensor()[0], ref) for name in names}
    scores["model"] = slice_scores(pipe(lr).as_tensor()[0], ref)
    if consistency and get(spec.degradation).data_consistency:
        consistent = pipe.inferer(data_consistency=1.0)(lr)
        scores["model + data consistency"] = slice_scores(consistent.as_tensor()[0], ref)
    return scores


def min_p_value(n: int) -> float:
    """The smallest two-sided p-value the exact signed-rank test can give with ``n`` pairs."""
    return 2.0 / 2**n


def _paired_p(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    with warnings.catch_warnings():  # scipy warns on ties and zero differences; p stays valid
        warnings.simplefilter("ignore")
        return float(wilcoxon(a, b).pvalue)


def summarize(rows: Sequence[dict], against: str | None = None) -> list[dict]:
    """Per method (in order of first appearance): ``n``, ``<metric>_mean``, ``<metric>_std`` and
    ``<metric>_p``, the paired test against method ``against`` (default: the first method) over
    the volumes both have (NaN for ``against`` itself and below 2 volumes)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    against = methods[0] if against is None else against
    if against not in methods:
        raise MRSRError(f"{against!r} is not among the methods ({', '.join(methods)})")
    table = {m: {r["name"]: r for r in rows if r["method"] == m} for m in methods}
    out = []
    for method in methods:
        values = table[method]
        summary: dict = {"method": method, "n": len(values)}
        common = sorted(set(values) & set(table[against]))
        for metric in METRICS:
            x = np.array([r[metric] for r in values.values()], dtype=np.float64)
            summary[f"{metric}_mean"] = float(x.mean())
            summary[f"{metric}_std"] = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
            a, b = (np.array([table[m][k][metric] for k in common]) for m in (method, against))
            summary[f"{metric}_p"] = float("nan") if method == against else _paired_p(a, b)
        out.append(summary)
    return out
