"""How a slice is shown to a reader: reoriented from its affine to one stated convention.

A slice taken along any voxel axis of a volume stored in any order (RAS, LPS, PIR, oblique...)
is drawn the way a radiologist reads it, whatever the storage order:

======== ==================== ================================================================
plane    vertical (top)       horizontal, left edge of the image
======== ==================== ================================================================
axial    anterior             radiological: the patient's right; neurological: the patient's left
coronal  superior             radiological: the patient's right; neurological: the patient's left
sagittal superior             anterior (both conventions)
======== ==================== ================================================================

The plane is named by the world axis closest to the slice normal, and every voxel axis is
matched to its closest world axis (:func:`nibabel.orientations.io_orientation`), so an oblique
volume is shown as the nearest standard plane. Pixels are drawn with their physical aspect.

>>> import numpy as np
>>> view = View.of(np.diag([-1.0, -1.0, 1.0, 1.0]), axis=2)  # LPS storage, axial slices
>>> view.labels
('R', 'L', 'A', 'P')
>>> view.show(np.arange(6.0).reshape(2, 3)).tolist()  # plane[i, j]: i runs to L, j to P
[[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import io_orientation

from mrsr.options import CONVENTIONS, OPTIONS

__all__ = ["CONVENTIONS", "View"]

_PLANES = ("sagittal", "coronal", "axial")  # by the world axis of the normal: x, y, z
_POSITIVE, _NEGATIVE = "RAS", "LPI"
# (horizontal, vertical) world axes of each plane, by the world axis of its normal
_SCREEN_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}


@dataclass(frozen=True)
class View:
    """How to draw planes ``np.take(volume, k, axis)`` of one volume, for ``imshow(...,
    origin="upper")``: :meth:`show` turns a plane ``(I, J)`` into the displayed ``(rows, cols)``.

    ``labels`` are the anatomical letters at the image's (left, right, top, bottom) edges,
    ``spacing`` the (row, column) pixel size in mm, ``plane`` the plane's name.
    """

    plane: str
    convention: str
    labels: tuple[str, str, str, str]
    spacing: tuple[float, float]
    transpose: bool
    flip_rows: bool
    flip_cols: bool

    @classmethod
    def of(cls, affine: np.ndarray, axis: int, convention: str = "radiological") -> View:
        """The view of slices along voxel ``axis`` of a volume with this 4x4 ``affine``."""
        OPTIONS["convention"].check(convention, "convention")
        affine = np.asarray(affine, dtype=np.float64)
        world, sign = io_orientation(affine).T.astype(int)
        a, b = [v for v in range(3) if v != axis]
        horizontal, vertical = _SCREEN_AXES[world[axis]]
        # the screen runs top to bottom towards -vertical (P or I); left to right towards L
        # in radiological axial and coronal views, R in neurological ones, P in sagittal ones
        rightward = -1 if horizontal == 1 or convention == "radiological" else 1
        rows, cols = (b, a) if world[b] == vertical else (a, b)
        size = np.linalg.norm(affine[:3, :3], axis=0)

        def letters(w: int, towards: int) -> tuple[str, str]:
            """(from, to): the letters at both ends of a screen direction along world axis w."""
            return (_NEGATIVE[w], _POSITIVE[w]) if towards > 0 else (_POSITIVE[w], _NEGATIVE[w])

        left, right = letters(horizontal, rightward)
        top, bottom = letters(vertical, -1)
        return cls(
            plane=_PLANES[world[axis]],
            convention=convention,
            labels=(left, right, top, bottom),
            spacing=(float(size[rows]), float(size[cols])),
            transpose=rows == b,
            flip_rows=sign[rows] > 0,
            flip_cols=sign[cols] != rightward,
        )

    def show(self, plane: np.ndarray) -> np.ndarray:
        """The plane ``(I, J)`` as displayed: ``(rows, cols)`` top-left first."""
        shown = plane.T if self.transpose else plane
        if self.flip_rows:
            shown = shown[::-1]
        if self.flip_cols:
            shown = shown[:, ::-1]
        return np.ascontiguousarray(shown)

    @property
    def aspect(self) -> float:
        """``imshow``'s aspect: a pixel's height over its width."""
        return self.spacing[0] / self.spacing[1]

    def caption(self) -> str:
        """The convention in words, for a figure's title."""
        left = {"R": "right", "L": "left", "A": "anterior", "P": "posterior"}[self.labels[0]]
        side = "the patient's " + left if left in ("right", "left") else left
        if self.plane == "sagittal":
            return f"sagittal, {side} on the image's left"
        return f"{self.plane}, {self.convention} ({side} on the image's left)"
