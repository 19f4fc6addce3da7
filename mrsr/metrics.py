"""Image-quality metrics of a super-resolved volume against its reference: PSNR, SSIM, NRMSE.

Common rules (every metric here):

- Inputs are NumPy arrays or torch tensors of one shape: a volume ``(X, Y, Z)`` or ``(1, X, Y, Z)``,
  or a single 2D slice ``(X, Y)``, evaluated in float64. Anything else (complex or boolean
  values, other shapes, NaN or inf) and arguments out of range raise
  :class:`~mrsr.errors.MRSRError` (a ``ValueError``) naming the argument.
- ``axis`` is the slice axis, 0-based over ``(X, Y, Z)`` (-1: the last); ignored for 2D input.
- ``shave`` voxels are removed at both ends of the two in-plane axes (never along ``axis``) first;
  SR papers use ``shave = scale``. An optional boolean ``mask`` of the same shape is shaved alike.
- The *evaluated voxels* are those left after shaving, and inside the mask when one is given.
- The data range ``R`` is ``max(ref) - min(ref)`` over the whole reference volume (before shaving
  and masking), as scikit-image's ``peak_signal_noise_ratio(data_range=ref.max() - ref.min())``
  and MONAI's metrics take it and papers report it; ``range_over="evaluated"`` takes it over the
  evaluated voxels instead (lower for a masked foreground without the background's zeros), and a
  number passed as ``data_range`` is used as it is. A constant reference (``R = 0``) raises
  :class:`~mrsr.errors.MRSRError`.

SSIM is Wang et al. (2004) per 2D slice, with an 11-tap Gaussian window of sigma 1.5 (filtered with
``scipy.ndimage.gaussian_filter(truncate=3.5, mode="reflect")``), population (co)variances,
``K1 = 0.01`` and ``K2 = 0.03``: the same map as scikit-image's ``structural_similarity(
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=R, full=True)``.
``monai.metrics.SSIMMetric`` is not used: it casts to float32 (errors near 1e-4 on MR intensities),
gives no same-size map to average under a mask, and a zero sigma along the slice axis yields NaN.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes, gaussian_filter, generate_binary_structure
from skimage.filters import threshold_otsu

from mrsr.errors import MRSRError
from mrsr.geometry import slice_axis
from mrsr.options import OPTIONS, check_options

__all__ = [
    "RANGE_OVER",
    "data_range",
    "evaluate",
    "foreground_mask",
    "nrmse",
    "psnr",
    "score",
    "slice_scores",
    "ssim",
]

RANGE_OVER = ("reference", "evaluated")  # where the data range R is taken (module docstring)
_SIGMA = 1.5
_RADIUS = 5  # of the 11-tap window: int(3.5 * _SIGMA + 0.5), scipy's default truncation
_K1, _K2 = 0.01, 0.03

Array = Union[np.ndarray, torch.Tensor]
Mask = Optional[Array]


def _volume(x: Array, name: str) -> np.ndarray:
    """``x`` as a float64 ``(X, Y, Z)`` array; a 2D slice becomes ``(X, Y, 1)``."""
    from mrsr.io import as_values

    v = as_values(x, name, torch.float64, mask=name == "mask").numpy()
    if v.ndim == 4 and v.shape[0] == 1:
        v = v[0]
    elif v.ndim == 2:
        v = v[..., None]
    if v.ndim != 3:
        raise MRSRError(f"{name} must be (X, Y), (X, Y, Z) or (1, X, Y, Z); got {v.shape}")
    return v


def _prepare(pred: Array, ref: Array, mask: Mask, shave: int, axis: int) -> list:
    """Validate, put the slices on the last axis, shave; returns ``(pred, ref, mask or None,
    the whole reference's max - min)``."""
    p, r = _volume(pred, "pred"), _volume(ref, "ref")
    if p.shape != r.shape:
        raise MRSRError(f"pred and ref shapes differ: {np.shape(pred)} vs {np.shape(ref)}")
    if not (np.isfinite(p).all() and np.isfinite(r).all()):
        raise MRSRError("pred and ref must not contain NaN or inf")
    check_options({"shave": shave}, OPTIONS, "")
    axis = -1 if np.ndim(ref) == 2 else OPTIONS["slice_axis"].check(axis, "axis")
    if 2 * shave >= min(np.delete(r.shape, axis)):
        raise MRSRError(f"shave={shave} leaves no in-plane voxels of shape {r.shape}")
    m = None
    if mask is not None:
        m = _volume(mask, "mask").astype(bool)
        if m.shape != r.shape:
            raise MRSRError(f"mask shape {np.shape(mask)} differs from ref {np.shape(ref)}")
    inner = (slice(shave, -shave or None),) * 2
    vols = [None if v is None else np.moveaxis(v, axis, -1)[inner] for v in (p, r, m)]
    if m is not None and not vols[2].any():
        raise MRSRError("mask selects no voxel after shaving")
    return [*vols, float(r.max() - r.min())]


def _range(prepared: list, data_range: float | None = None, range_over: str = "reference") -> float:
    """``R`` of :func:`_prepare`'s output: ``data_range`` if given, else per ``range_over``."""
    _, ref, mask, whole = prepared
    if range_over not in RANGE_OVER:
        raise MRSRError(f"range_over must be one of {RANGE_OVER}; got {range_over!r}")
    if data_range is not None:
        return OPTIONS["data_range"].check(data_range, "data_range")
    if range_over == "reference":
        data_range = whole
    else:
        values = ref if mask is None else ref[mask]
        data_range = float(values.max() - values.min())
    if data_range <= 0:
        raise MRSRError(f"data range is 0 (constant reference over the {range_over} voxels)")
    return data_range


def data_range(
    ref: Array, mask: Mask = None, shave: int = 0, axis: int = -1, range_over: str = "reference"
) -> float:
    """``R``, the data range the metrics use by default (module docstring)."""
    return _range(_prepare(ref, ref, mask, shave, axis), None, range_over)


def _mse(p: np.ndarray, r: np.ndarray, m: np.ndarray | None) -> float:
    err = (p - r) ** 2
    return float(err.mean() if m is None else err[m].mean())


def psnr(
    pred: Array,
    ref: Array,
    mask: Mask = None,
    shave: int = 0,
    axis: int = -1,
    data_range: float | None = None,
    range_over: str = "reference",
) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(R**2 / MSE)``.

    MSE is the mean squared error over the evaluated voxels and ``R`` the data range (see the
    module docstring): by default the whole reference's ``max - min``, as scikit-image and
    papers use; ``inf`` when ``pred`` equals ``ref`` there.
    """
    prepared = _prepare(pred, ref, mask, shave, axis)
    p, r, m, _ = prepared
    data_range, mse = _range(prepared, data_range, range_over), _mse(p, r, m)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def nrmse(
    pred: Array,
    ref: Array,
    mask: Mask = None,
    shave: int = 0,
    axis: int = -1,
    range_over: str = "reference",
) -> float:
    """Root mean squared error over the evaluated voxels divided by the data range ``R``
    (min-max normalisation; 0 when ``pred`` equals ``ref`` there)."""
    prepared = _prepare(pred, ref, mask, shave, axis)
    p, r, m, _ = prepared
    return float(np.sqrt(_mse(p, r, m)) / _range(prepared, None, range_over))


def _ssim_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """The SSIM map of one 2D slice, same shape (reflect-padded Gaussian filtering)."""
    mu_x, mu_y, xx, yy, xy = gaussian_filter(
        np.stack([x, y, x * x, y * y, x * y]), (0, _SIGMA, _SIGMA), mode="reflect", truncate=3.5
    )
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    return num / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(
    pred: Array,
    ref: Array,
    mask: Mask = None,
    shave: int = 0,
    axis: int = -1,
    data_range: float | None = None,
    range_over: str = "reference",
) -> float:
    """Mean over slices along ``axis`` of the 2D SSIM (window and constants: module docstring).

    Without a mask each slice scores the mean of its SSIM map over the valid window positions,
    i.e. the map cropped by the window radius (5) on every in-plane side, as scikit-image does;
    the shaved slice must then be at least 11 x 11. With a mask each slice scores the mean of its
    full-size map over its masked voxels, and slices without masked voxels are skipped. The
    slice scores are averaged with equal weight. ``R`` is one number for the whole volume.
    """
    prepared = _prepare(pred, ref, mask, shave, axis)
    p, r, m, _ = prepared
    data_range = _range(prepared, data_range, range_over)
    if m is None:
        m = np.zeros(r.shape, dtype=bool)
        m[_RADIUS:-_RADIUS, _RADIUS:-_RADIUS] = True
    scores = [
        _ssim_map(p[..., k], r[..., k], data_range)[m[..., k]].mean()
        for k in range(r.shape[-1])
        if m[..., k].any()
    ]
    if not scores:
        raise MRSRError(f"unmasked SSIM needs slices of at least 11 x 11; got {r.shape[:2]}")
    return float(np.mean(scores))


def evaluate(
    pred: Array,
    ref: Array,
    mask: Mask = None,
    shave: int = 0,
    axis: int = -1,
    range_over: str = "reference",
) -> dict[str, float]:
    """``{"psnr": ..., "ssim": ..., "nrmse": ...}`` with the data range per ``range_over``."""
    kwargs = dict(mask=mask, shave=shave, axis=axis, range_over=range_over)
    return {
        "psnr": psnr(pred, ref, **kwargs),
        "ssim": ssim(pred, ref, **kwargs),
        "nrmse": nrmse(pred, ref, **kwargs),
    }


def foreground_mask(ref: Array, axis: int = -1) -> np.ndarray:
    """The ``auto`` mask: ``ref`` above its Otsu threshold, holes filled in each slice along
    ``axis`` (in-plane 4-connectivity). Returns a bool array of the volume's spatial shape."""
    v = _volume(ref, "ref")
    structure = np.expand_dims(generate_binary_structure(2, 1), -1 if np.ndim(ref) == 2 else axis)
    filled = binary_fill_holes(v > threshold_otsu(v.ravel()), structure=structure)
    return filled[..., 0] if np.ndim(ref) == 2 else filled


def slice_scores(
    pred: Array,
    ref: Array,
    axis: int = -1,
    percentile: float = 99.5,
    min_foreground: float = 0.10,
) -> dict[str, float]:
    """The default models' held-out protocol: PSNR/SSIM per slice, averaged over slices.

    Both volumes are divided by the reference's ``percentile`` (so the data range is 1); only
    slices whose share of voxels above 0.1 (normalised) exceeds ``min_foreground`` count.
    """
    p, r, _, _ = _prepare(pred, ref, None, 0, axis)
    top = float(np.percentile(r, percentile))
    p, r = p / top, r / top
    keep = [z for z in range(r.shape[-1]) if (r[..., z] > 0.1).mean() > min_foreground]
    if not keep:
        raise MRSRError("no slice has enough foreground to score")
    scores = [
        (psnr(p[..., z], r[..., z], data_range=1.0), ssim(p[..., z], r[..., z], data_range=1.0))
        for z in keep
    ]
    return {
        "psnr": float(np.mean([s[0] for s in scores])),
        "ssim": float(np.mean([s[1] for s in scores])),
        "slices": len(keep),
    }


def score(
    pred: Any, ref: Any, mask: Any = "auto", shave: int = 0, range_over: str = "reference"
) -> dict:
    """:func:`evaluate` of two channel-first MetaTensors on the same grid (shape and affine,
    else :class:`~mrsr.errors.MRSRError`), along the reference's slice axis; ``mask``
    ``"auto"`` is :func:`foreground_mask`, ``"none"`` or ``None`` every voxel, else an array."""
    name = ref.meta.get("filename_or_obj", "reference")
    if pred.shape[0] != ref.shape[0]:
        raise MRSRError(
            f"{name}: the prediction holds {pred.shape[0]} volumes (channels or a 4D series) "
            f"where the reference holds {ref.shape[0]}; compare one volume with one"
        )
    if tuple(pred.shape) != tuple(ref.shape):
        raise MRSRError(
            f"{name}: grid {tuple(ref.shape[1:])} differs from the prediction's "
            f"{tuple(pred.shape[1:])}"
        )
    if not np.allclose(np.asarray(pred.affine), np.asarray(ref.affine), atol=1e-3):
        raise MRSRError(f"{name}: affine differs from the prediction's; not the same grid")
    axis = slice_axis(np.asarray(ref.affine), ref.meta)
    reference = ref.as_tensor()[0]
    if isinstance(mask, str):
        mask = foreground_mask(reference, axis) if mask == "auto" else None
    return evaluate(
        pred.as_tensor()[0], reference, mask=mask, shave=shave, axis=axis, range_over=range_over
    )
