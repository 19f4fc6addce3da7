"""Rigid registration of one volume to another with SimpleITK, as a correction of its affine.

Two stacks of one subject scanned minutes apart may have moved. :func:`register_rigid` finds
the rigid motion (``Euler3DTransform``: three rotations, three translations) that best aligns
the ``moving`` volume to the ``fixed`` one by Mattes mutual information (intensity-based, so
stacks of different orientation, resolution or scaling register), at three resolutions (shrunk
4, 2, 1 times, smoothed 2, 1, 0 mm), with a regular-step gradient descent. The motion is
returned as a 4x4 RAS matrix ``M`` that maps a point of the fixed volume's world to where the
moving scan saw it, so the moving volume's corrected affine is ``inv(M) @ affine``
(:func:`corrected`): nothing is resampled, and every later step sees the stack where it
belongs. Initial alignment: none (the stacks are meant to be in one scanner space already),
or their field-of-view centres when their fields of view do not overlap at all.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from mrsr.geometry import spacing

__all__ = ["corrected", "fields_overlap", "register_rigid"]

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
_SEED = 1  # of the metric's sampling (0 would be SimpleITK's wall clock)


def _image(volume: MetaTensor) -> sitk.Image:
    """The channel mean of ``volume`` as a float32 SimpleITK image in LPS."""
    affine = _LPS @ np.asarray(volume.affine, dtype=np.float64)
    sizes = spacing(affine)
    data = volume.as_tensor().float().mean(0).numpy()
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in sizes])
    image.SetDirection((affine[:3, :3] / sizes).ravel().tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    return image


def _corners(volume: MetaTensor) -> np.ndarray:
    """The world points (RAS) of the field of view's 8 corners (the voxels' outer edges)."""
    ends = [(-0.5, n - 0.5) for n in volume.shape[1:]]
    index = np.array([[*c, 1.0] for c in itertools.product(*ends)])
    return (index @ np.asarray(volume.affine, dtype=np.float64).T)[:, :3]


def fields_overlap(a: MetaTensor, b: MetaTensor) -> bool:
    """Whether the world bounding boxes of the two fields of view intersect."""
    ca, cb = _corners(a), _corners(b)
    return bool(np.all(ca.min(0) <= cb.max(0)) and np.all(cb.min(0) <= ca.max(0)))


def register_rigid(fixed: MetaTensor, moving: MetaTensor) -> tuple[np.ndarray, float]:
    """``(M, metric)``: the 4x4 RAS matrix taking the fixed volume's world points to the
    moving volume's, and the final Mattes mutual information (negative: lower is better).

    Both are ``(C, X, Y, Z)`` MetaTensors with their affines; their channel means are
    registered. The metric's random sampling (half of the voxels) has a fixed seed and runs
    on one thread, so that a run gives the same motion every time.
    """
    fixed_image, moving_image = _image(fixed), _image(moving)
    start = sitk.Euler3DTransform()
    if fields_overlap(fixed, moving):
        centre = fixed_image.TransformContinuousIndexToPhysicalPoint(
            [(n - 1) / 2 for n in fixed_image.GetSize()]
        )
        start.SetCenter(centre)
    else:
        start = sitk.CenteredTransformInitializer(
            fixed_image,
            moving_image,
            start,
            sitk.CenteredTransformInitializerFilter.GEOMETRY,
        )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.5, _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(start, inPlace=False)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the same motion on every run
    try:
        result = method.Execute(fixed_image, moving_image)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    found = sitk.Euler3DTransform(result.GetNthTransform(0))
    rotation = np.asarray(found.GetMatrix()).reshape(3, 3)
    centre, shift = np.asarray(found.GetCenter()), np.asarray(found.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = rotation
    lps[:3, 3] = centre + shift - rotation @ centre
    return _LPS @ lps @ _LPS, float(method.GetMetricValue())


def corrected(volume: MetaTensor, motion: np.ndarray) -> MetaTensor:
    """``volume`` with the affine ``inv(motion) @ affine``: placed where the fixed volume of
    :func:`register_rigid` sees it (the voxels are not touched)."""
    out = MetaTensor(volume.as_tensor(), meta=dict(volume.meta))
    affine = np.linalg.solve(motion, np.asarray(volume.affine, dtype=np.float64))
    out.affine = torch.as_tensor(affine)
    return out
